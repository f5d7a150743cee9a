//! The access log (`[log] access`): one line per request and per h2 stream ([`line`]), written
//! by a thread of its own so that a slow disk or a full pipe never holds up a request.
//!
//! The data path formats its line and hands it over a bounded queue (`log.access_queue`
//! lines); when the queue is full the line is dropped and counted
//! (`holdfast_access_log_dropped_total{reason="queue_full"}`), never waited for. The writer
//! takes what is queued, in order, and writes it in batches of whole lines, each batch with one
//! `write` to a file opened for appending: a line is never torn, and two processes of an
//! upgrade appending to one file never cut into each other's lines.
//!
//! Rotation (logrotate's `postrotate`, as for nginx): move the file away, then send SIGUSR1. The
//! writer finishes the batch it has to the file it has (the moved one), opens the path anew and
//! writes every line after to it: nothing is lost between the two. A file that cannot be
//! opened again leaves the writer on the one it has, and says so.

pub mod line;

use holdfast_config::{AccessLog as Settings, AccessTarget};
use line::Record;
use prometheus::IntCounter;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch is written once it holds this much, or when the queue is empty.
const BATCH: usize = 64 * 1024;

/// How often an idle writer looks for a SIGUSR1 it was told of.
const IDLE_WAKE: Duration = Duration::from_millis(200);

/// What goes over the queue.
enum Message {
    Line(Vec<u8>),
    /// Write everything before this, then say so.
    Flush(SyncSender<()>),
}

/// The counters the access log keeps.
#[derive(Clone)]
pub struct Counters {
    /// Lines dropped because the queue was full.
    pub queue_full: IntCounter,
    /// Lines lost because the write failed (disk full, file gone read-only).
    pub write_failed: IntCounter,
}

/// The access log of a process: where lines go and how they look.
pub struct AccessLog {
    queue: SyncSender<Message>,
    json: bool,
    query_max: usize,
    counters: Counters,
    reopen: Arc<AtomicBool>,
    target: AccessTarget,
}

impl AccessLog {
    /// Opens the target (a file is created if missing, mode 0640) and starts the writer.
    /// `Err`: the file cannot be opened, with why.
    pub fn open(settings: &Settings, json: bool, counters: Counters) -> io::Result<AccessLog> {
        let out = Output::open(&settings.to)?;
        let (queue, lines) = mpsc::sync_channel(settings.queue);
        let reopen = Arc::new(AtomicBool::new(false));
        let mut writer = Writer {
            out,
            target: settings.to.clone(),
            lines,
            reopen: reopen.clone(),
            write_failed: counters.write_failed.clone(),
            last_warning: None,
        };
        std::thread::Builder::new()
            .name("access log".into())
            .spawn(move || writer.run())?;
        Ok(AccessLog {
            queue,
            json,
            query_max: settings.query_max,
            counters,
            reopen,
            target: settings.to.clone(),
        })
    }

    /// Queues `record`'s line; dropped and counted when the queue is full. Never waits.
    pub fn write(&self, record: &Record) {
        let mut line = Vec::with_capacity(384);
        match self.json {
            true => record.json(self.query_max, &mut line),
            false => record.text(self.query_max, &mut line),
        }
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Message::Line(line)) {
            self.counters.queue_full.inc();
        }
    }

    /// Asks the writer to open the file again (after logrotate moved it).
    pub fn reopen(&self) {
        match &self.target {
            AccessTarget::File(path) => {
                tracing::info!(file = %path.display(), "SIGUSR1: reopening the access log");
                self.reopen.store(true, Ordering::Release);
            }
            AccessTarget::Stdout => {
                tracing::info!("SIGUSR1: the access log goes to standard output; nothing to reopen")
            }
        }
    }

    /// Waits (blocking, up to `timeout`) until every line queued before is written: before the
    /// process exits.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, written) = mpsc::sync_channel(1);
        let until = Instant::now() + timeout;
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < until => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        written
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// Where the writer writes.
enum Output {
    Stdout,
    File(File),
}

impl Output {
    fn open(target: &AccessTarget) -> io::Result<Output> {
        match target {
            AccessTarget::Stdout => Ok(Output::Stdout),
            AccessTarget::File(path) => OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .open(path)
                .map(Output::File)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }

    /// One batch of whole lines, in one write where the system takes it whole (a regular file
    /// always does, short of a full disk).
    fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(batch)?;
                out.flush()
            }
            Output::File(file) => file.write_all(batch),
        }
    }
}

/// The writer thread's state.
struct Writer {
    out: Output,
    target: AccessTarget,
    lines: Receiver<Message>,
    reopen: Arc<AtomicBool>,
    write_failed: IntCounter,
    /// When a failure was last reported (at most one warning a minute).
    last_warning: Option<Instant>,
}

impl Writer {
    fn run(&mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut lines = 0u64;
        let mut acks = Vec::new();
        loop {
            let first = match self.lines.recv_timeout(IDLE_WAKE) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Whatever came before the signal was taken, in order, into batches written to the
            // old file; what is taken from now on goes to the new one.
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.open_again();
            }
            let mut next = first;
            while let Some(message) = next {
                match message {
                    Message::Line(line) => {
                        batch.extend_from_slice(&line);
                        lines += 1;
                    }
                    Message::Flush(done) => acks.push(done),
                }
                if batch.len() >= BATCH {
                    break;
                }
                next = self.lines.try_recv().ok();
            }
            if !batch.is_empty() {
                if let Err(e) = self.out.write(&batch) {
                    self.write_failed.inc_by(lines);
                    self.warn(&e);
                }
                batch.clear();
                lines = 0;
            }
            for done in acks.drain(..) {
                let _ = done.try_send(());
            }
        }
    }

    fn open_again(&mut self) {
        match Output::open(&self.target) {
            Ok(out) => self.out = out,
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the access log; writing on to the file it had")
            }
        }
    }

    fn warn(&mut self, e: &io::Error) {
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.last_warning = Some(Instant::now());
        let file = match &self.target {
            AccessTarget::File(path) => path.clone(),
            AccessTarget::Stdout => PathBuf::from("(standard output)"),
        };
        tracing::warn!(file = %file.display(), error = %e, "access log lines lost: cannot write them (counted in holdfast_access_log_dropped_total)");
    }
}
