//! The audit trail: one [`Record`] per mutating call, and the [`Audit`] sink it goes to. It sits
//! beside the access log at the end of the request path (`telemetry` hands each finished
//! mutating call here), and the process (`server`, `cli`) reopens it for logrotate.
//!
//! Without `[audit] file` a record is a log event (target `audit`) on stderr, as it always was.
//! With it, records are JSON lines appended to that file by one writer thread:
//!
//! - a call never writes to disk itself: it hands its line to a bounded channel and goes on;
//! - when the channel is full (the disk stalls for thousands of records) the call waits for a
//!   free slot rather than drop its record: an audit trail with holes is worse than a slow call;
//! - the writer appends (`O_APPEND`) each batch with whole lines only, so a line is never torn,
//!   and a reopen happens between batches, so each record is in exactly one file;
//! - a line it cannot write (disk full) goes to stderr as an error event, never nowhere.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use serde_json::{Map, Value};

/// Records waiting for the writer at most; beyond that calls wait (see the module doc).
const QUEUE: usize = 16 * 1024;
/// Bytes written in one go at most: a large backlog is written in several appends.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One mutating call, as the audit trail keeps it. Absent values are left out of the line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    /// When the call was answered (or abandoned).
    pub timestamp: SystemTime,
    pub request_id: &'a str,
    /// The call's W3C trace id (32 hex digits).
    pub trace_id: Option<&'a str>,
    /// The caller's configured name, or `addr:IP` for unnamed callers.
    pub caller: Option<&'a str>,
    /// The connection's peer address.
    pub client_addr: Option<SocketAddr>,
    pub app: Option<&'a str>,
    pub operation: &'a str,
    pub room: Option<&'a str>,
    pub user_ids: Option<&'a [String]>,
    /// `allowed`, `allowed:shadow-refused`, `refused:CODE` or `abandoned:caller-disconnected`.
    pub decision: &'a str,
    pub status: u16,
    pub upstream_request_id: Option<&'a str>,
}

impl Record<'_> {
    /// The record as one JSON object: numbers as numbers, the user ids as an array.
    fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let time = humantime::format_rfc3339_millis(self.timestamp).to_string();
        m.insert("timestamp".into(), time.into());
        m.insert("request_id".into(), self.request_id.into());
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                m.insert(key.into(), value);
            }
        };
        put("trace_id", self.trace_id.map(Into::into));
        put("caller", self.caller.map(Into::into));
        put("client_addr", self.client_addr.map(|a| a.to_string().into()));
        put("app", self.app.map(Into::into));
        put("operation", Some(self.operation.into()));
        put("room", self.room.map(Into::into));
        put("user_ids", self.user_ids.map(|ids| ids.iter().map(|id| Value::from(id.as_str())).collect()));
        put("decision", Some(self.decision.into()));
        put("status", Some(self.status.into()));
        put("upstream_request_id", self.upstream_request_id.map(Into::into));
        m
    }

    fn line(&self) -> Vec<u8> {
        // Serialising a map of strings and numbers cannot fail; an empty object would still
        // be a whole line.
        let mut line = serde_json::to_vec(&self.json()).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }

    /// The record as a log event on stderr: the same fields, absent ones left out, the user ids
    /// joined with commas (a log field holds no array).
    fn log(&self) {
        tracing::info!(
            target: "audit",
            request_id = self.request_id,
            trace_id = self.trace_id,
            caller = self.caller,
            client_addr = self.client_addr.map(|a| a.to_string()),
            app = self.app,
            operation = self.operation,
            room = self.room,
            user_ids = self.user_ids.map(|ids| ids.join(",")),
            decision = self.decision,
            status = self.status,
            upstream_request_id = self.upstream_request_id,
        );
    }
}

/// Where audit records go: the log, or a file of their own.
pub(crate) struct Audit {
    file: Option<FileSink>,
}

struct FileSink {
    queue: SyncSender<Command>,
    /// Set while calls are waiting for the writer, so the warning is said once per episode.
    behind: AtomicBool,
}

enum Command {
    Line(Vec<u8>),
    Reopen,
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Audit {
    /// Records as log events on stderr.
    pub(crate) fn log() -> Audit {
        Audit { file: None }
    }

    /// Records appended to `path` (created `0640` if missing) by a writer thread of their own.
    pub(crate) fn file(path: &Path) -> std::io::Result<Audit> {
        let file = open(path)?;
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let path = path.to_owned();
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || Writer { file, path, rx }.run())?;
        Ok(Audit { file: Some(FileSink { queue, behind: AtomicBool::new(false) }) })
    }

    /// Hands the record over; returns at once unless the writer is thousands of records behind.
    pub(crate) fn write(&self, record: &Record<'_>) {
        let Some(sink) = &self.file else {
            return record.log();
        };
        let line = Command::Line(record.line());
        let left = match sink.queue.try_send(line) {
            Ok(()) => {
                if sink.behind.load(Ordering::Relaxed) {
                    sink.behind.store(false, Ordering::Relaxed);
                }
                return;
            }
            Err(TrySendError::Full(line)) => {
                if !sink.behind.swap(true, Ordering::Relaxed) {
                    tracing::warn!("the audit file writer is behind; calls wait for it to catch up");
                }
                sink.queue.send(line).err().map(|e| e.0)
            }
            Err(TrySendError::Disconnected(line)) => Some(line),
        };
        if let Some(Command::Line(line)) = left {
            unwritten(&line, "the audit writer has stopped");
        }
    }

    /// Opens the configured file again, for logrotate: records already handed over go to the
    /// previous file, later ones to the new one. A file that cannot be opened keeps the
    /// previous one in use.
    pub(crate) fn reopen(&self) {
        if let Some(sink) = &self.file {
            let _ = sink.queue.send(Command::Reopen);
        }
    }

    /// Resolves once every record handed over before the call is written (at shutdown).
    pub(crate) async fn flush(&self) {
        if let Some(sink) = &self.file {
            let (done, written) = tokio::sync::oneshot::channel();
            if sink.queue.send(Command::Flush(done)).is_ok() {
                let _ = written.await;
            }
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    // Audit records name users and callers: readable by the gateway and its log group only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path)
}

/// A line that could not reach the file is logged instead of lost.
fn unwritten(line: &[u8], why: &str) {
    let record = String::from_utf8_lossy(line);
    tracing::error!(target: "audit", record = record.trim_end(), "{why}; audit record logged here instead");
}

struct Writer {
    file: File,
    path: PathBuf,
    rx: Receiver<Command>,
}

impl Writer {
    /// Until every sender is gone: take what is queued, append it in one write, answer flushes.
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH_BYTES);
        let mut flushed = Vec::new();
        while let Ok(first) = self.rx.recv() {
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Line(line) => batch.extend_from_slice(&line),
                    Command::Reopen => {
                        self.append(&mut batch);
                        self.reopen();
                    }
                    Command::Flush(done) => flushed.push(done),
                }
                if batch.len() < MAX_BATCH_BYTES {
                    next = self.rx.try_recv().ok();
                }
            }
            self.append(&mut batch);
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Appends whole lines. Bytes a failed write left behind are logged, and the file gets a
    /// line break so the next record starts a line of its own.
    fn append(&mut self, batch: &mut Vec<u8>) {
        let mut written = 0;
        while written < batch.len() {
            match self.file.write(&batch[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(file = %self.path.display(), error = %e, "cannot write the audit file");
                    break;
                }
            }
        }
        if written < batch.len() {
            let torn_from = batch[..written].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if torn_from < written {
                let _ = self.file.write_all(b"\n");
            }
            for line in batch[torn_from..].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                unwritten(line, "cannot write the audit file");
            }
        }
        batch.clear();
    }

    fn reopen(&mut self) {
        match open(&self.path) {
            Ok(file) => {
                self.file = file;
                tracing::info!(file = %self.path.display(), "audit file reopened");
            }
            Err(e) => tracing::error!(
                file = %self.path.display(),
                error = %e,
                "audit file not reopened; still appending to the previous one"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(user_ids: Option<&'a [String]>, upstream: Option<&'a str>) -> Record<'a> {
        Record {
            timestamp: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            request_id: "req-1",
            trace_id: None,
            caller: Some("svc"),
            client_addr: "127.0.0.1:4000".parse().ok(),
            app: Some("app-1"),
            operation: "RemoveUsers",
            room: Some("r1"),
            user_ids,
            decision: "allowed",
            status: 202,
            upstream_request_id: upstream,
        }
    }

    #[test]
    fn a_record_is_typed_json_without_absent_fields() {
        let ids = vec!["u1".to_owned(), "u,2".to_owned()];
        let line = String::from_utf8(record(Some(&ids), Some("up-1")).line()).unwrap_or_default();
        assert_eq!(
            line,
            "{\"timestamp\":\"2023-11-14T22:13:20.123Z\",\"request_id\":\"req-1\",\"caller\":\"svc\",\
             \"client_addr\":\"127.0.0.1:4000\",\"app\":\"app-1\",\"operation\":\"RemoveUsers\",\"room\":\"r1\",\
             \"user_ids\":[\"u1\",\"u,2\"],\"decision\":\"allowed\",\"status\":202,\"upstream_request_id\":\"up-1\"}\n"
        );
        let bare = record(None, None).json();
        assert!(
            !bare.contains_key("user_ids")
                && !bare.contains_key("upstream_request_id")
                && !bare.contains_key("trace_id")
        );
    }

    #[tokio::test]
    async fn records_reach_the_file_in_order_and_a_reopen_starts_a_new_one() {
        let dir = std::env::temp_dir().join(format!("sparkrtc-gw-audit-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let audit = Audit::file(&path).unwrap_or_else(|e| panic!("{e}"));
        audit.write(&record(None, Some("a")));
        audit.flush().await;
        std::fs::rename(&path, dir.join("audit.jsonl.1")).unwrap_or_else(|e| panic!("{e}"));
        audit.reopen();
        audit.write(&record(None, Some("b")));
        audit.flush().await;
        let old = std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap_or_default();
        let new = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(old.lines().count() == 1 && old.contains("\"upstream_request_id\":\"a\""), "{old}");
        assert!(new.lines().count() == 1 && new.contains("\"upstream_request_id\":\"b\""), "{new}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
            assert_eq!(mode & 0o007, 0, "no access for others: {mode:o}");
        }
    }
}
