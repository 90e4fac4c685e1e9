//! The real binary as a child process, and its JSON log events, so tests synchronise on what
//! it says it did rather than on time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use serde_json::Value;

/// A generous bound on any one wait, so a broken build fails instead of hanging CI.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Process {
    child: Child,
    events: Receiver<Value>,
}

impl Process {
    /// `serve --config CONFIG`, under `ulimit -n DESCRIPTORS` when given.
    pub fn serve(config: &std::path::Path, descriptors: Option<u32>) -> Process {
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
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        Process { child, events }
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
    }
}
