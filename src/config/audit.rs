//! `[audit]`: where the audit trail goes. Without it, audit records are log events (target
//! `audit`) on stderr, mixed with everything else; with `file`, they are JSON lines appended to
//! a file of their own, reopened on SIGHUP or SIGUSR1 for logrotate.
//!
//! The file is checked here, so `check` refuses what `serve` could not open: the directory must
//! exist and the gateway's user must be able to write there.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::reader::{Problems, Table};

/// `[audit]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// The JSON-lines file; `None`: records are log events on stderr (target `audit`).
    pub file: Option<PathBuf>,
}

/// Reads `[audit]`; `file` is relative to the config file.
pub(super) fn audit(t: &mut Table<'_>, base: &Path, p: &mut Problems) -> Audit {
    let Some(text) = t.string("file", p) else {
        return Audit::default();
    };
    let file = base.join(text);
    let fix = "or remove audit.file to log audit records on stderr";
    match usable(text, &file) {
        Ok(()) => Audit { file: Some(file) },
        Err(why) => {
            p.push(t.key_path("file"), format!("{:?} {why}; {fix}", file.display().to_string()));
            Audit::default()
        }
    }
}

/// Whether the gateway can append to `file`, creating it if need be. An existing file is opened
/// for appending (nothing written); a missing one is probed by creating and removing a file
/// beside it, so `check` leaves nothing behind.
fn usable(text: &str, file: &Path) -> Result<(), String> {
    if text.is_empty() || text.ends_with('/') {
        return Err("is not a file path; give one like \"/var/log/sparkrtc-gateway/audit.jsonl\"".to_owned());
    }
    if file.is_dir() {
        return Err("is a directory; name a file in it, like \"audit.jsonl\"".to_owned());
    }
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.exists() && !dir.is_dir() {
        return Err(format!("cannot be created: {:?} is not a directory", dir.display().to_string()));
    }
    if !dir.is_dir() {
        return Err(format!(
            "cannot be created: the directory {:?} does not exist; create it, writable by the gateway's user",
            dir.display().to_string()
        ));
    }
    if file.exists() {
        return OpenOptions::new()
            .append(true)
            .open(file)
            .map(drop)
            .map_err(|e| format!("cannot be opened for appending ({e}); let the gateway's user write it"));
    }
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let probe = dir.join(format!(".{name}.check-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot be created: the directory {:?} is not writable ({e}); let the gateway's user write there",
            dir.display().to_string()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(audit: &str) -> Result<crate::Config, String> {
        let text = format!("{audit}\n[profiles.p]\naccess_key = \"ak\"\nsecret_key = \"sk\"\nproject_id = \"p1\"\n");
        crate::Config::parse(&text, "t.toml", Path::new("/"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn no_audit_table_means_the_log() {
        let config = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.audit.file, None);
    }

    #[test]
    fn a_file_in_a_writable_directory_is_taken_relative_to_the_config_and_nothing_is_left() {
        let dir = std::env::temp_dir().join(format!("sparkrtc-gw-audit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let text = format!("[audit]\nfile = \"{}/audit.jsonl\"", dir.display());
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.audit.file.as_deref(), Some(dir.join("audit.jsonl").as_path()));
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")).collect();
        assert!(left.is_empty(), "check must not create files: {left:?}");
    }

    #[test]
    fn unusable_paths_name_the_key_the_value_and_the_fix() {
        let cases = [
            ("/nonexistent-sparkrtc-dir/audit.jsonl", "directory \"/nonexistent-sparkrtc-dir\" does not exist"),
            ("/etc/hosts/audit.jsonl", "\"/etc/hosts\" is not a directory"),
            ("/tmp", "is a directory"),
            ("", "is not a file path"),
            ("/proc/audit.jsonl", "is not writable"),
        ];
        for (path, why) in cases {
            let err = parse(&format!("[audit]\nfile = \"{path}\"")).err().unwrap_or_default();
            assert!(err.contains("audit.file") && err.contains(why), "{path}: {err}");
            assert!(err.contains("remove audit.file to log audit records on stderr"), "{err}");
        }
        let err = parse("[audit]\nfile = 3\nrotate = true").err().unwrap_or_default();
        assert!(err.contains("audit.file: expected a string") && err.contains("audit.rotate: unknown key"), "{err}");
    }
}
