//! The access log (`[log] access`): one line per request and per h2 stream ([`line`]), written
//! by a thread of its own so that a slow disk or a full pipe never holds up a request.
//!
//! The data path formats its line and appends it to a shared buffer of at most
//! `log.access_queue` lines (a lock held for one copy); when the buffer is full the line is
//! dropped and counted (`holdfast_access_log_dropped_total{reason="queue_full"}`), never waited
//! for. The writer takes the whole buffer every [`TICK`] (as nginx's `buffer=` with `flush=`)
//! and writes it with one `write` to a file opened for appending: a line is never torn, two
//! processes of an upgrade appending to one file never cut into each other's lines, and a
//! request costs no system call and no wake-up of the writer.
//!
//! Rotation (logrotate's `postrotate`, as for nginx): move the file away, then send SIGUSR1. The
//! writer finishes the batch it has to the file it has (the moved one), opens the path anew and
//! writes every line after to it: nothing is lost between the two. A file that cannot be
//! opened again leaves the writer on the one it has, and says so.

pub mod line;

use holdfast_config::{AccessLog as Settings, AccessTarget};
use line::Record;
use prometheus::IntCounter;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How often the writer takes what was logged: the longest a line waits to be written.
pub const TICK: Duration = Duration::from_millis(50);

/// The counters the access log keeps.
#[derive(Clone)]
pub struct Counters {
    /// Lines dropped because the queue was full.
    pub queue_full: IntCounter,
    /// Lines lost because the write failed (disk full, file gone read-only).
    pub write_failed: IntCounter,
}

/// Lines logged and not yet taken by the writer.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    /// Told once everything before them is written.
    flushed: Vec<SyncSender<()>>,
}

/// What the data path and the writer share.
struct Shared {
    pending: Mutex<Pending>,
    /// Lines the buffer takes at most.
    queue: usize,
    reopen: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Plain appends and swaps under this lock: a panic cannot leave it half-done.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

thread_local! {
    /// Where a worker thread formats a line before it is copied into the buffer.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// The access log of a process: where lines go and how they look.
pub struct AccessLog {
    shared: Arc<Shared>,
    json: bool,
    query_max: usize,
    counters: Counters,
    writer: Thread,
    target: AccessTarget,
}

impl AccessLog {
    /// Opens the target (a file is created if missing, mode 0640) and starts the writer.
    /// `Err`: the file cannot be opened, with why.
    pub fn open(settings: &Settings, json: bool, counters: Counters) -> io::Result<AccessLog> {
        let out = Output::open(&settings.to)?;
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            queue: settings.queue,
            reopen: AtomicBool::new(false),
        });
        let mut writer = Writer {
            out,
            target: settings.to.clone(),
            shared: shared.clone(),
            write_failed: counters.write_failed.clone(),
            last_warning: None,
        };
        let thread = std::thread::Builder::new()
            .name("access log".into())
            .spawn(move || writer.run())?;
        Ok(AccessLog {
            shared,
            json,
            query_max: settings.query_max,
            counters,
            writer: thread.thread().clone(),
            target: settings.to.clone(),
        })
    }

    /// Logs `record`'s line; dropped and counted when the buffer is full. Never waits (but
    /// for the lock, held by others for one copy or one swap).
    pub fn write(&self, record: &Record) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            match self.json {
                true => record.json(self.query_max, line),
                false => record.text(self.query_max, line),
            }
            let taken = {
                let mut pending = self.shared.pending();
                let room = pending.lines < self.shared.queue;
                if room {
                    pending.bytes.extend_from_slice(line);
                    pending.lines += 1;
                }
                room
            };
            if !taken {
                self.counters.queue_full.inc();
            }
            // A line grown huge (a hostile target cut only at its query) is not kept.
            if line.capacity() > 64 * 1024 {
                *line = Vec::with_capacity(512);
            }
        });
    }

    /// Asks the writer to open the file again (after logrotate moved it).
    pub fn reopen(&self) {
        match &self.target {
            AccessTarget::File(path) => {
                tracing::info!(file = %path.display(), "SIGUSR1: reopening the access log");
                self.shared.reopen.store(true, Ordering::Release);
                self.writer.unpark();
            }
            AccessTarget::Stdout => {
                tracing::info!("SIGUSR1: the access log goes to standard output; nothing to reopen")
            }
        }
    }

    /// Waits (blocking, up to `timeout`) until every line logged before is written: before the
    /// process exits.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, written) = mpsc::sync_channel(1);
        self.shared.pending().flushed.push(done);
        self.writer.unpark();
        written.recv_timeout(timeout).is_ok()
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
    shared: Arc<Shared>,
    write_failed: IntCounter,
    /// When a failure was last reported (at most one warning a minute).
    last_warning: Option<Instant>,
}

impl Writer {
    fn run(&mut self) {
        let mut batch = Vec::new();
        loop {
            std::thread::park_timeout(TICK);
            // The access log is gone (only in tests: a process keeps its own to the end).
            if Arc::strong_count(&self.shared) == 1 {
                return;
            }
            let (lines, flushed) = {
                let mut pending = self.shared.pending();
                std::mem::swap(&mut pending.bytes, &mut batch);
                let lines = std::mem::take(&mut pending.lines);
                (lines, std::mem::take(&mut pending.flushed))
            };
            // The batch was logged before the writer woke: before the file moved, or about
            // when it did. It goes to the file the writer has; the file is opened anew after.
            if !batch.is_empty() {
                if let Err(e) = self.out.write(&batch) {
                    self.write_failed.inc_by(lines as u64);
                    self.warn(&e);
                }
                batch.clear();
                // A burst's buffer is not kept for good.
                if batch.capacity() > 4 * 1024 * 1024 {
                    batch = Vec::new();
                }
            }
            if self.shared.reopen.swap(false, Ordering::AcqRel) {
                self.open_again();
            }
            for done in flushed {
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
