//! A real `redis-server` for the tests: installed from Debian's packages when missing (never
//! skipped), started on a free loopback port, killed and restarted on demand, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::data;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    tls: bool,
    password: Option<String>,
    dir: PathBuf,
}

/// Installs redis-server (and redis-cli) when this machine lacks it: the tests need the real
/// thing, so a missing binary is provisioned, not a reason to skip.
fn ensure_installed() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut done = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *done || Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success()) {
        *done = true;
        return;
    }
    eprintln!("redis-server is missing: installing it from Debian's packages");
    let apt = |args: &[&str]| {
        Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status().unwrap_or_else(|e| {
            panic!("redis-server is not installed and apt-get cannot run ({e}); install redis-server")
        })
    };
    apt(&["update", "-qq"]);
    let status = apt(&["install", "-y", "-qq", "--no-install-recommends", "redis-server"]);
    assert!(status.success(), "apt-get install redis-server failed; install it by hand and rerun the tests");
    *done = true;
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

impl RedisServer {
    pub fn start() -> Self {
        RedisServer::launch(false, None)
    }

    /// TLS only (`rediss://`), with the test CA's server certificate.
    pub fn start_tls() -> Self {
        RedisServer::launch(true, None)
    }

    /// Plain, with `requirepass`.
    pub fn start_with_password(password: &str) -> Self {
        RedisServer::launch(false, Some(password.to_owned()))
    }

    fn launch(tls: bool, password: Option<String>) -> Self {
        ensure_installed();
        let dir = std::env::temp_dir().join(format!("sparkrtc-gw-redis-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        // The port is free when chosen; if another process takes it first, try another.
        for _ in 0..5 {
            let mut server =
                RedisServer { child: None, port: free_port(), tls, password: password.clone(), dir: dir.clone() };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on five free ports");
    }

    /// Starts redis-server on `self.port` and waits for its "Ready to accept connections" line.
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "notice"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--dir".to_owned(), self.dir.display().to_string()]);
        if self.tls {
            args.extend(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"].map(str::to_owned));
            for (flag, file) in
                [("--tls-cert-file", "server.pem"), ("--tls-key-file", "server.key"), ("--tls-ca-cert-file", "ca.pem")]
            {
                args.extend([flag.to_owned(), data(&format!("certs/{file}")).display().to_string()]);
            }
        } else {
            args.extend(["--port".to_owned(), port]);
        }
        if let Some(password) = &self.password {
            args.extend(["--requirepass".to_owned(), password.clone()]);
        }
        let mut child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server: {e}"));
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.by_ref().map_while(Result::ok).any(|line| line.contains("Ready to accept connections"));
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        // Keep draining its output so redis never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
        true
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: no goodbye to clients, as when a node dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not restart on port {}", self.port);
    }

    /// Runs redis-cli against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.tls {
            cmd.args(["--tls", "--cacert", &data("certs/ca.pem").display().to_string()]);
        }
        if let Some(password) = &self.password {
            cmd.env("REDISCLI_AUTH", password);
        }
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many times Redis has run `command` (from `INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats.lines().find_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok()).unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
