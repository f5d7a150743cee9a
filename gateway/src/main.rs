//! The `holdfast` binary: parse the command line, set up logging, validate the config before
//! binding anything, then serve.

use clap::Parser;
use holdfast::cli::{Cli, Command};
use holdfast::control;
use holdfast::server::{self, ProcessOptions, StartError};
use std::io::IsTerminal;
use std::process::ExitCode;

/// The allocator. With the system allocator the proxy served about a quarter fewer requests per
/// second (`../shared/pingora-performance.md`; BENCHMARKS.md has holdfast's own figure).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `EX_CONFIG`-style exit code for an invalid config (sysexits' EX_USAGE/EX_DATAERR family).
const EXIT_INVALID_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // No transparent huge pages for this process, where the kernel gives them unasked
    // (`always`): a 2 MB page is resident whole however little of it is used, which cost 11 MB
    // at rest and a third of an idle h2 connection's memory (BENCHMARKS.md). The allocator is
    // built not to ask for them (`no_thp`). The flag is the process's (threads started later
    // inherit it). Best effort: an error leaves things as they were.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // rustls warns of what a client sent wrong (an IP address as SNI, as wrk and many probes
    // send it): a line per connection that the operator can do nothing about. Only its errors,
    // unless HOLDFAST_LOG says otherwise of rustls.
    if !std::env::var("HOLDFAST_LOG").is_ok_and(|f| f.contains("rustls")) {
        if let Ok(quiet) = "rustls=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // `[log] format = "json"` in the config a process serves: its events as JSON lines.
    let json = match &cli.command {
        Command::Run { config, .. } => control::json_log(config),
        _ => false,
    };
    match json {
        true => log.json().flatten_event(true).init(),
        false => log
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }

    match cli.command {
        Command::Check { config } => match holdfast_config::load(&config) {
            Ok(c) => {
                println!("{}: ok: {}", config.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "{}: {} problem(s) found",
                    config.display(),
                    e.problems.len()
                );
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            threads,
            upgrade,
            upgrade_sock,
            state_file,
            control_sock,
        } => {
            let mut options = ProcessOptions {
                upgrade,
                upgrade_sock,
                state_file,
                control_sock,
                relaunch: true,
                ..ProcessOptions::default()
            };
            if let Some(threads) = threads {
                options.threads = threads;
            }
            match server::run(config, options) {
                Err(StartError::Config(e)) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_INVALID_CONFIG)
                }
                other => report(other),
            }
        }
        Command::Reload { running } => {
            let target = control::target(&running.config, running.admin, running.control_sock);
            ExitCode::from(control::reload(&running.config, &target))
        }
        Command::Upgrade { running } => {
            let target = control::target(&running.config, running.admin, running.control_sock);
            ExitCode::from(control::upgrade(&target))
        }
        Command::Backend {
            action,
            pool,
            backend,
            running,
            force,
        } => {
            let target = control::target(&running.config, running.admin, running.control_sock);
            ExitCode::from(control::backend(&target, (&action, &pool, &backend), force))
        }
        Command::Status {
            config,
            admin,
            control_sock,
            all,
            quiet,
        } => ExitCode::from(match (all.is_empty(), config) {
            (false, _) => control::status_all(&all, quiet),
            (true, Some(config)) => {
                control::status(&control::target(&config, admin, control_sock), quiet)
            }
            (true, None) => 2,
        }),
        Command::Doctor {
            running,
            json,
            from_outside,
        } => {
            let target = control::target(&running.config, running.admin, running.control_sock);
            let options = holdfast::doctor::Options { json, from_outside };
            ExitCode::from(holdfast::doctor::run(&running.config, &target, &options))
        }
        Command::Demo {
            listen,
            admin,
            cycle,
        } => report(holdfast::demo::run(listen, admin, cycle)),
    }
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: {e}");
            ExitCode::FAILURE
        }
    }
}
