//! The series every Prometheus client library exports about its process (`process_*`), read
//! from `/proc/self` on Linux and absent elsewhere, and the build's identity, so dashboards and
//! alerts built for other services work on the gateway too.

use std::fmt::Write;

/// The version and commit this binary was built from (the commit is "unknown" outside git).
const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMMIT: &str = env!("SPARKRTC_GATEWAY_COMMIT");

/// Linux reports CPU times in /proc in USER_HZ, which its ABI fixes at 100 per second on every
/// architecture (`sysconf(_SC_CLK_TCK)` answers 100).
const TICKS_PER_SECOND: f64 = 100.0;

pub(super) fn render(out: &mut String) {
    let _ = writeln!(out, "# HELP sparkrtc_gateway_build_info The version and commit of the running binary.\n# TYPE sparkrtc_gateway_build_info gauge\nsparkrtc_gateway_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\"}} 1");
    if let Some(s) = Stat::read() {
        let cpu = (s.utime + s.stime) as f64 / TICKS_PER_SECOND;
        series(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", cpu);
        if let Some(boot) = boot_time() {
            let start = boot as f64 + s.start_ticks as f64 / TICKS_PER_SECOND;
            series(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                start,
            );
        }
    }
    if let Some(kb) = status_kb("VmRSS:") {
        series(out, "process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.", (kb * 1024) as f64);
    }
    if let Some(kb) = status_kb("VmSize:") {
        series(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.", (kb * 1024) as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        series(out, "process_open_fds", "gauge", "Open file descriptors.", fds.count() as f64);
    }
    if let Some(max) = max_fds() {
        series(out, "process_max_fds", "gauge", "The soft limit on open file descriptors.", max as f64);
    }
}

fn series(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// The fields of `/proc/self/stat` used here (proc(5): 14 utime, 15 stime, 22 starttime).
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse().ok();
        Some(Stat { utime: field(14)?, stime: field(15)?, start_ticks: field(22)? })
    }
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

fn status_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn max_fds() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_series_describe_this_process() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{out}"));
            line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
        };
        assert!(out.contains(&format!("sparkrtc_gateway_build_info{{version=\"{VERSION}\",commit=\"")));
        assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0, "a running test binary holds megabytes");
        assert!(value("process_open_fds") >= 3.0, "stdin, stdout, stderr at least");
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let started = value("process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 86_400.0, "started {started}, now {now}");
    }
}
