//! The real binary as a child process, and its JSON log events, so tests synchronise on what
//! it says it did rather than on time. Every line it writes to stderr is checked against the
//! log schema ([`super::logline`]); a line that fails it fails the test when the process is
//! dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// A generous bound on any one wait, so a broken build fails instead of hanging CI.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Process {
    child: Child,
    events: Receiver<Value>,
    /// Lines that failed the schema.
    bad_lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    /// `serve --config CONFIG`, under `ulimit -n DESCRIPTORS` when given.
    pub fn serve(config: &std::path::Path, descriptors: Option<u32>) -> Process {
        Process::serve_logging(config, descriptors, None)
    }

    /// Like [`Process::serve`], with `RUST_LOG` set to `rust_log` when given.
    pub fn serve_logging(config: &std::path::Path, descriptors: Option<u32>, rust_log: Option<&str>) -> Process {
        let bin = env!("CARGO_BIN_EXE_sparkrtc-gateway");
        let mut command = match descriptors {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" serve --config \"$1\"")).arg(bin).arg(config);
                sh
            }
            None => {
                let mut direct = Command::new(bin);
                direct.args(["serve", "--config"]).arg(config);
                direct
            }
        };
        command.env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let (tx, events) = mpsc::channel();
        let bad_lines = Arc::new(Mutex::new(Vec::new()));
        let bad = bad_lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match super::logline::check(&line) {
                    // The test may have stopped listening; the rest is still checked.
                    Ok(event) => drop(tx.send(event)),
                    Err(problem) => bad.lock().unwrap_or_else(|e| panic!("{e}")).push(problem),
                }
            }
        });
        Process { child, events, bad_lines, reader: Some(reader) }
    }

    /// The next log event that `matches`.
    pub fn wait_until(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let event = self.events.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("no {what} in the log"));
            if matches(&event) {
                return event;
            }
        }
    }

    /// Waits for the process to exit (after a stop signal) and checks every line it wrote.
    pub fn exit(self) -> std::process::ExitStatus {
        self.exit_with_events().0
    }

    /// Like [`Process::exit`], with every event not yet waited for.
    pub fn exit_with_events(mut self) -> (std::process::ExitStatus, Vec<Value>) {
        let status = self.child.wait().unwrap_or_else(|e| panic!("{e}"));
        self.check_lines();
        (status, self.events.try_iter().collect())
    }

    fn check_lines(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let bad = std::mem::take(&mut *self.bad_lines.lock().unwrap_or_else(|e| panic!("{e}")));
        if !bad.is_empty() && !std::thread::panicking() {
            panic!("{} log line(s) fail the schema:\n{}", bad.len(), bad.join("\n"));
        }
    }

    /// The next log event whose message starts with `message`.
    pub fn wait_for(&self, message: &str) -> Value {
        loop {
            let event = self.events.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("no {message:?} in the log"));
            if event["message"].as_str().is_some_and(|m| m.starts_with(message)) {
                return event;
            }
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success());
    }

    /// File descriptors the process holds now (Linux).
    pub fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map(|d| d.count()).unwrap_or(usize::MAX)
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.check_lines();
    }
}
