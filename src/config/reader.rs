//! Reads a parsed TOML document key by key, collecting every problem instead of stopping at the
//! first, which is what serde's derive would do. Each problem names the key path, the value found
//! and what to write instead.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Default)]
pub(super) struct Problems(pub Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }
}

/// The keys the reader asks for, as patterns (`profiles.*.project_id`, `apps.*.allow[].callers`,
/// `<limit>.rate` for the keys of a value of a shape), while [`record`] runs. It is how
/// `config::known_keys` learns which keys exist without a second list that could drift.
#[derive(Debug, Default)]
pub struct Recorded {
    pub keys: BTreeSet<String>,
    /// Keys whose value is a table of a shape read in several places (`limits.per_app` ->
    /// `<limit>`), so its keys are listed once.
    pub shapes: BTreeMap<String, String>,
}

thread_local! {
    static RECORDING: RefCell<Option<Recorded>> = const { RefCell::new(None) };
}

/// Runs `read` and returns every key pattern the reader asked for (read or tested) meanwhile.
pub(super) fn record(read: impl FnOnce()) -> Recorded {
    RECORDING.with(|r| *r.borrow_mut() = Some(Recorded::default()));
    read();
    RECORDING.with(|r| r.borrow_mut().take()).unwrap_or_default()
}

fn note(update: impl FnOnce(&mut Recorded)) {
    RECORDING.with(|r| {
        if let Some(recorded) = r.borrow_mut().as_mut() {
            update(recorded);
        }
    });
}

fn join(pattern: &str, key: &str) -> String {
    if pattern.is_empty() {
        key.to_owned()
    } else {
        format!("{pattern}.{key}")
    }
}

/// One TOML table and the keys read from it so far.
pub(super) struct Table<'a> {
    path: String,
    /// The path with names replaced by `*` (see [`Recorded`]).
    pattern: String,
    /// The keys of this table are names (profiles, apps, operations), not settings.
    named: bool,
    table: Option<&'a toml::Table>,
    read: BTreeSet<&'a str>,
}

impl<'a> Table<'a> {
    pub(super) fn root(table: &'a toml::Table) -> Self {
        Table { path: String::new(), pattern: String::new(), named: false, table: Some(table), read: BTreeSet::new() }
    }

    fn sub(&self, key: &str, path: String, table: Option<&'a toml::Table>) -> Table<'a> {
        Table { path, pattern: self.key_pattern(key), named: false, table, read: BTreeSet::new() }
    }

    fn key_pattern(&self, key: &str) -> String {
        join(&self.pattern, if self.named { "*" } else { key })
    }

    /// Marks this table's keys as names (`operation_limits = { RemoveUsers = ... }`).
    pub(super) fn keyed_by_name(&mut self) {
        self.named = true;
    }

    /// Declares that `key`, when present, is a table of a shape read in several places (a
    /// limit): its keys are recorded once, as `<shape>.KEY`.
    pub(super) fn shaped(&self, key: &str, shape: &str) {
        note(|r| {
            r.shapes.insert(self.key_pattern(key), format!("<{shape}>"));
        });
    }

    /// The sub-table `key`, of a shape (see [`Table::shaped`]).
    pub(super) fn shaped_table(&mut self, key: &str, shape: &str, problems: &mut Problems) -> Table<'a> {
        self.shaped(key, shape);
        let mut table = self.table(key, problems);
        table.pattern = format!("<{shape}>");
        table
    }

    pub(super) fn key_path(&self, key: &str) -> String {
        let quoted = if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            key.to_owned()
        } else {
            format!("{key:?}")
        };
        if self.path.is_empty() {
            quoted
        } else {
            format!("{}.{quoted}", self.path)
        }
    }

    fn value(&mut self, key: &str) -> Option<&'a toml::Value> {
        note(|r| {
            r.keys.insert(self.key_pattern(key));
        });
        let (k, v) = self.table?.get_key_value(key)?;
        self.read.insert(k.as_str());
        Some(v)
    }

    pub(super) fn has(&self, key: &str) -> bool {
        note(|r| {
            r.keys.insert(self.key_pattern(key));
        });
        self.table.is_some_and(|t| t.contains_key(key))
    }

    /// A sub-table; a missing one reads as empty, a non-table is a problem.
    pub(super) fn table(&mut self, key: &str, problems: &mut Problems) -> Table<'a> {
        let path = self.key_path(key);
        let table = match self.value(key) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(other) => {
                problems.push(&path, format!("expected a table ([{path}]), found {}", show(other)));
                None
            }
        };
        self.sub(key, path, table)
    }

    /// The sub-tables of this table by name, e.g. every `[profiles.NAME]`.
    pub(super) fn entries(&mut self, problems: &mut Problems) -> Vec<(&'a str, Table<'a>)> {
        self.named = true;
        let Some(table) = self.table else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for key in table.keys() {
            let sub = self.table(key, problems);
            if sub.table.is_some() {
                out.push((key.as_str(), sub));
            }
        }
        out
    }

    pub(super) fn string(&mut self, key: &str, problems: &mut Problems) -> Option<&'a str> {
        match self.value(key)? {
            toml::Value::String(s) => Some(s),
            other => {
                problems.push(self.key_path(key), format!("expected a string in quotes, found {}", show(other)));
                None
            }
        }
    }

    /// A list of strings; a missing key is `None`.
    pub(super) fn strings(&mut self, key: &str, problems: &mut Problems) -> Option<Vec<&'a str>> {
        let value = self.value(key)?;
        let list: Option<Vec<&str>> = value.as_array().and_then(|a| a.iter().map(toml::Value::as_str).collect());
        if list.is_none() {
            problems.push(
                self.key_path(key),
                format!("expected a list of strings like [\"a\", \"b\"], found {}", show(value)),
            );
        }
        list
    }

    /// A list of tables (`allow = [{ ... }, { ... }]`); a missing key is `None`.
    pub(super) fn tables(&mut self, key: &str, problems: &mut Problems) -> Option<Vec<Table<'a>>> {
        let path = self.key_path(key);
        let value = self.value(key)?;
        let Some(list) = value.as_array() else {
            problems.push(&path, format!("expected a list of tables like [{{ ... }}], found {}", show(value)));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in list.iter().enumerate() {
            match item {
                toml::Value::Table(t) => out.push(Table {
                    path: format!("{path}[{i}]"),
                    pattern: format!("{}[]", self.key_pattern(key)),
                    named: false,
                    table: Some(t),
                    read: BTreeSet::new(),
                }),
                other => {
                    problems.push(format!("{path}[{i}]"), format!("expected a table {{ ... }}, found {}", show(other)))
                }
            }
        }
        Some(out)
    }

    /// The keys of this table, in file order.
    pub(super) fn keys(&self) -> Vec<String> {
        self.table.map(|t| t.keys().cloned().collect()).unwrap_or_default()
    }

    /// Whether this table exists in the file at all.
    pub(super) fn present(&self) -> bool {
        self.table.is_some()
    }

    /// Like [`Table::string`], but a value of the wrong type is not shown.
    pub(super) fn secret_string(&mut self, key: &str, problems: &mut Problems) -> Option<&'a str> {
        match self.value(key)? {
            toml::Value::String(s) => Some(s),
            _ => {
                problems.push(self.key_path(key), "expected a string in quotes");
                None
            }
        }
    }

    pub(super) fn has_any(&self) -> bool {
        self.table.is_some_and(|t| !t.is_empty())
    }

    pub(super) fn boolean(&mut self, key: &str, problems: &mut Problems) -> Option<bool> {
        match self.value(key)? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                problems.push(self.key_path(key), format!("expected true or false, found {}", show(other)));
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub(super) fn integer(&mut self, key: &str, min: u64, max: u64, problems: &mut Problems) -> Option<u64> {
        let value = self.value(key)?;
        match value.as_integer().and_then(|i| u64::try_from(i).ok()) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                problems
                    .push(self.key_path(key), format!("{} must be a whole number from {min} to {max}", show(value)));
                None
            }
        }
    }

    /// A number from 0 to 1 (`1` and `0.25` alike).
    pub(super) fn fraction(&mut self, key: &str, problems: &mut Problems) -> Option<f64> {
        let value = self.value(key)?;
        let number = value.as_float().or_else(|| value.as_integer().map(|i| i as f64));
        match number {
            Some(n) if (0.0..=1.0).contains(&n) => Some(n),
            _ => {
                problems.push(self.key_path(key), format!("{} must be a number from 0 to 1, like 0.25", show(value)));
                None
            }
        }
    }

    /// A duration such as `500ms`, `3s`, `1m30s`, `1h` or `1d`, within `min..=max`.
    pub(super) fn duration(
        &mut self,
        key: &str,
        min: Duration,
        max: Duration,
        problems: &mut Problems,
    ) -> Option<Duration> {
        let value = self.value(key)?;
        let parsed = value.as_str().and_then(parse_duration);
        match parsed {
            Some(d) if d >= min && d <= max => Some(d),
            Some(_) => {
                problems.push(
                    self.key_path(key),
                    format!("{} must be between {} and {}", show(value), show_duration(min), show_duration(max)),
                );
                None
            }
            None => {
                problems.push(
                    self.key_path(key),
                    format!("{} is not a duration; write it like \"500ms\", \"3s\", \"1m30s\" or \"1d\"", show(value)),
                );
                None
            }
        }
    }

    /// Reports keys present in the file that nothing read: typos, or keys in the wrong table.
    pub(super) fn finish(self, problems: &mut Problems) {
        let Some(table) = self.table else { return };
        for key in table.keys() {
            if !self.read.contains(key.as_str()) {
                problems
                    .push(self.key_path(key), "unknown key; check the spelling against config/gateway.example.toml");
            }
        }
    }
}

/// humantime's grammar: numbers with units, summed (`"250ms"`, `"1m30s"`, `"1h 15m"`, `"1d"`),
/// which covers every form accepted before (`"500ms"`, `"3s"`, `"2m"`, `"1h"`). A bare number
/// is refused: seconds or milliseconds would be a guess.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// A value as the operator wrote it, for messages. Never used on secret keys.
pub(super) fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Table(_) => "a table".to_owned(),
        toml::Value::Array(_) => "a list".to_owned(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse_duration(" 3s "), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("3"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-3s"), None);
    }

    #[test]
    fn durations_combine_units_and_take_days() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 15m"), Some(Duration::from_secs(4_500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
    }
}
