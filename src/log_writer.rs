//! Where log lines go: stderr, through a buffer. A line at `info` or below (the access log,
//! audit records without a file of their own) waits at most [`FLUSH_DELAY`] in memory, so a
//! busy gateway writes many lines per system call instead of one each; a warning or an error is
//! written at once, after everything buffered before it. The buffer is also written out when it
//! fills, when the [`LogGuard`] is dropped (the command ends; later lines are written at once) and
//! when a thread panics.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait for company before it is written anyway.
pub(crate) const FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Written at once when this full, however recent the lines.
const CAPACITY: usize = 64 * 1024;

/// The buffered stderr writer the subscriber formats into.
#[derive(Clone)]
pub(crate) struct LogWriter {
    shared: Arc<Shared>,
    /// False when the flusher thread could not start: every line is then written at once.
    buffered: bool,
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Signalled when `pending` stops being empty.
    filled: Condvar,
    /// Where lines go (stderr). Held while writing, so batches leave in the order they were
    /// buffered even when the flusher and a serving thread write at the same time.
    out: Mutex<Out>,
    /// Set when the guard is dropped: lines from tasks still running as the process ends are
    /// written at once, as there is no later flush to wait for.
    closed: AtomicBool,
}

impl Shared {
    fn flush(&self) {
        // `out` before `pending`: a batch taken later cannot be written earlier.
        let mut out = lock(&self.out);
        let out = &mut *out;
        std::mem::swap(&mut out.spare, &mut *lock(&self.pending));
        if !out.spare.is_empty() {
            // Nowhere to report a failed write: the log is where it would be reported.
            let _ = out.sink.write_all(&out.spare);
            out.spare.clear();
        }
    }
}

/// The sink, and the buffer that takes `pending`'s place while its lines are written, so that
/// neither is ever allocated again.
struct Out {
    sink: Box<dyn Write + Send>,
    spare: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves only bytes behind, still worth writing.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogWriter {
    /// The writer and the guard that writes out what is left when dropped. A flusher thread that
    /// cannot start leaves every line written at once.
    pub(crate) fn start() -> (LogWriter, LogGuard) {
        let (writer, guard) = LogWriter::to(Box::new(std::io::stderr()), FLUSH_DELAY);
        let flush_on_panic = writer.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush_on_panic.shared.flush();
            previous(info);
        }));
        (writer, guard)
    }

    /// Lines into `out`, each waiting up to `delay` unless urgent.
    fn to(out: Box<dyn Write + Send>, delay: Duration) -> (LogWriter, LogGuard) {
        let pending = Mutex::new(Vec::with_capacity(CAPACITY));
        let out = Mutex::new(Out { sink: out, spare: Vec::with_capacity(CAPACITY) });
        let shared = Arc::new(Shared { pending, filled: Condvar::new(), out, closed: AtomicBool::new(false) });
        let flusher = Arc::clone(&shared);
        let started =
            std::thread::Builder::new().name("log-flusher".into()).spawn(move || flush_forever(&flusher, delay));
        let writer = LogWriter { shared, buffered: started.is_ok() };
        (writer.clone(), LogGuard { writer: Some(writer) })
    }
}

/// The flusher: waits for a first pending line, gives others `delay` to join it, writes them out.
fn flush_forever(shared: &Shared, delay: Duration) {
    loop {
        drop(shared.filled.wait_while(lock(&shared.pending), |p| p.is_empty()).unwrap_or_else(PoisonError::into_inner));
        std::thread::sleep(delay);
        shared.flush();
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { shared: &self.shared, now: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        // tracing orders levels by verbosity: WARN and ERROR compare below INFO.
        let now = !self.buffered || *meta.level() <= Level::WARN || self.shared.closed.load(Ordering::Relaxed);
        Line { shared: &self.shared, now }
    }
}

/// One event's bytes on their way into the buffer.
pub(crate) struct Line<'a> {
    shared: &'a Shared,
    /// Written out as soon as the event is complete.
    now: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = lock(&self.shared.pending);
        if pending.is_empty() && !self.now {
            self.shared.filled.notify_one();
        }
        pending.extend_from_slice(buf);
        if pending.len() >= CAPACITY {
            self.now = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.shared.flush();
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.now {
            self.shared.flush();
        }
    }
}

/// Writes out the lines still buffered when the command ends.
#[must_use = "lines still buffered are written when the guard is dropped"]
pub(crate) struct LogGuard {
    writer: Option<LogWriter>,
}

impl LogGuard {
    /// For a subscriber that was already installed: nothing of ours to write out.
    pub(crate) fn none() -> LogGuard {
        LogGuard { writer: None }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.shared.closed.store(true, Ordering::Relaxed);
            writer.shared.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What reached the sink so far.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// The messages written so far, in order.
        fn messages(&self) -> Vec<String> {
            let text = String::from_utf8_lossy(&lock(&self.0)).into_owned();
            text.lines().filter_map(|l| l.rsplit_once(": ").map(|(_, m)| m.to_owned())).collect()
        }
    }

    /// The flusher waits an hour here: whatever reaches the sink got there without it.
    const NEVER: Duration = Duration::from_secs(3600);

    /// Runs `f` with a subscriber writing through `writer`, as `telemetry::init` sets it up.
    fn logging(writer: &LogWriter, f: impl FnOnce()) {
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn info_waits_and_a_warning_takes_it_along_in_order() {
        let sink = Sink::default();
        let (writer, _guard) = LogWriter::to(Box::new(sink.clone()), NEVER);
        logging(&writer, || {
            tracing::info!("access 1");
            tracing::info!("access 2");
        });
        assert!(sink.messages().is_empty(), "info lines are buffered: {:?}", sink.messages());
        logging(&writer, || tracing::warn!("warning"));
        assert_eq!(sink.messages(), ["access 1", "access 2", "warning"]);
    }

    #[test]
    fn a_full_buffer_and_the_dropped_guard_write_out_and_later_lines_go_at_once() {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::to(Box::new(sink.clone()), NEVER);
        let long = "a".repeat(1000);
        let mut sent = 0;
        logging(&writer, || {
            while sink.messages().is_empty() {
                assert!(sent * long.len() <= CAPACITY, "{sent} lines of 1 KB and nothing written");
                tracing::info!("{long}");
                sent += 1;
            }
        });
        let written = lock(&sink.0).len();
        assert!(written >= CAPACITY, "{written} bytes written after {sent} lines, before the buffer filled");
        assert_eq!(sink.messages().len(), sent, "the whole buffer is written, the last line with it");
        logging(&writer, || tracing::info!("last before exit"));
        drop(guard);
        assert_eq!(sink.messages().last().map(String::as_str), Some("last before exit"));
        logging(&writer, || tracing::info!("from a task still running"));
        assert_eq!(sink.messages().last().map(String::as_str), Some("from a task still running"));
    }
}
