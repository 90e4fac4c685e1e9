//! Reads a parsed TOML document key by key, collecting every problem instead of stopping at the
//! first, which is what serde's derive would do. Each problem names the key path, the value found
//! and what to write instead.

use std::collections::BTreeSet;
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

/// One TOML table and the keys read from it so far.
pub(super) struct Table<'a> {
    path: String,
    table: Option<&'a toml::Table>,
    read: BTreeSet<&'a str>,
}

impl<'a> Table<'a> {
    pub(super) fn root(table: &'a toml::Table) -> Self {
        Table { path: String::new(), table: Some(table), read: BTreeSet::new() }
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
        let (k, v) = self.table?.get_key_value(key)?;
        self.read.insert(k.as_str());
        Some(v)
    }

    pub(super) fn has(&self, key: &str) -> bool {
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
        Table { path, table, read: BTreeSet::new() }
    }

    /// The sub-tables of this table by name, e.g. every `[profiles.NAME]`.
    pub(super) fn entries(&mut self, problems: &mut Problems) -> Vec<(&'a str, Table<'a>)> {
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
                toml::Value::Table(t) => {
                    out.push(Table { path: format!("{path}[{i}]"), table: Some(t), read: BTreeSet::new() })
                }
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

    /// A duration written as `500ms`, `3s`, `2m` or `1h`, within `min..=max`.
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
                    format!("{} is not a duration; write it like \"500ms\", \"3s\" or \"2m\"", show(value)),
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

pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3_600).map(Duration::from_secs),
        _ => None,
    }
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
        assert_eq!(parse_duration("3"), None);
        assert_eq!(parse_duration("3 sec"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
