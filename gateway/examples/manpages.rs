//! Writes holdfast's man pages into the directory given: `holdfast.1` and one page per command
//! (`holdfast-run.1`, ...), from the command line's own definitions. The Debian package ships
//! them (`deploy/deb/build.sh`).

use clap::CommandFactory;
use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args_os().nth(1).unwrap_or_else(|| "man".into()));
    std::fs::create_dir_all(&dir)?;
    let cli = holdfast::cli::Cli::command();
    write(&dir, "holdfast", &cli)?;
    for sub in cli.get_subcommands() {
        // clap names are `&'static str` without its `string` feature; this program ends here.
        let name: &'static str = Box::leak(format!("holdfast-{}", sub.get_name()).into_boxed_str());
        write(&dir, name, &sub.clone().name(name))?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, command: &clap::Command) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)
}
