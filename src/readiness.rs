//! What `/readyz` answers. A replica is ready while it can serve calls: by default while at
//! least one served app can be served, so one account's IAM outage does not take every replica
//! of a central gateway out of its Service and with them the apps whose credentials still work.
//! `[admin] readiness = "all"` asks for every app (a sidecar serving one app).
//!
//! An app can be served when its profile has usable credentials and, if a limit it meets says
//! `on_backend_error = "deny"`, the shared limiter backend answers.

use std::collections::BTreeMap;
use std::fmt::Write;

/// `[admin] readiness`: when `/readyz` answers 200.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Readiness {
    /// While at least one served app can be served: a central gateway keeps serving the apps
    /// whose credentials work while one account's IAM is down.
    #[default]
    Any,
    /// Only while every served app can be served: a sidecar for one app.
    All,
}

/// One served app: its id (empty for account-level operations) and its profile's name.
pub(crate) struct ServedApp<'a> {
    pub id: &'a str,
    pub profile: &'a str,
    /// A limit on it refuses calls while the limiter backend is down.
    pub needs_backend: bool,
}

/// The verdict and the text `/readyz` shows.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub text: String,
}

pub(crate) fn draining() -> Report {
    Report { ready: false, text: "not ready: draining\n".to_owned() }
}

/// `profiles`: each profile's state (`Err` says why it is unusable). `backend_up`: `None` for
/// the local limiter, else whether Redis answers.
pub(crate) fn assess(
    mode: Readiness,
    apps: &[ServedApp<'_>],
    profiles: &BTreeMap<&str, Result<(), String>>,
    backend_up: Option<bool>,
) -> Report {
    let servable = |app: &ServedApp<'_>| {
        let usable = profiles.get(app.profile).is_some_and(Result::is_ok);
        usable && !(app.needs_backend && backend_up == Some(false))
    };
    let can = apps.iter().filter(|a| servable(a)).count();
    let ready = match mode {
        Readiness::Any => can > 0 || apps.is_empty(),
        Readiness::All => can == apps.len(),
    };
    let mut text = match (ready, mode) {
        (true, _) => format!("ready: {can} of {} apps can be served\n", apps.len()),
        (false, Readiness::Any) => "not ready: no served app can be served\n".to_owned(),
        (false, Readiness::All) => {
            format!("not ready: {} of {} apps cannot be served (readiness = \"all\")\n", apps.len() - can, apps.len())
        }
    };
    for app in apps.iter().filter(|a| !servable(a)) {
        let name = if app.id.is_empty() { "account-level operations".to_owned() } else { format!("app {:?}", app.id) };
        let _ = writeln!(text, "{name}: cannot be served");
    }
    for (name, state) in profiles {
        let _ = match state {
            Ok(()) => writeln!(text, "profile {name:?}: usable"),
            Err(why) => writeln!(text, "profile {name:?}: unusable: {why}"),
        };
    }
    let _ = match backend_up {
        None => writeln!(text, "limiter: local"),
        Some(true) => writeln!(text, "limiter: redis reachable"),
        Some(false) => {
            writeln!(text, "limiter: redis unreachable; limits with on_backend_error = \"deny\" refuse calls")
        }
    };
    Report { ready, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Vec<ServedApp<'static>> {
        vec![
            ServedApp { id: "a", profile: "keys", needs_backend: false },
            ServedApp { id: "b", profile: "iam", needs_backend: false },
        ]
    }

    fn profiles(iam: Result<(), String>) -> BTreeMap<&'static str, Result<(), String>> {
        BTreeMap::from([("keys", Ok(())), ("iam", iam)])
    }

    #[test]
    fn one_broken_profile_leaves_the_replica_ready_and_says_which() {
        let r = assess(Readiness::Any, &apps(), &profiles(Err("no valid IAM token: IAM down".into())), None);
        assert!(r.ready, "{}", r.text);
        assert!(r.text.starts_with("ready: 1 of 2 apps can be served\n"), "{}", r.text);
        assert!(r.text.contains("app \"b\": cannot be served\n"), "{}", r.text);
        assert!(r.text.contains("profile \"iam\": unusable: no valid IAM token: IAM down\n"), "{}", r.text);
        assert!(r.text.contains("profile \"keys\": usable\n"), "{}", r.text);
    }

    #[test]
    fn readiness_all_fails_on_any_broken_profile() {
        let r = assess(Readiness::All, &apps(), &profiles(Err("x".into())), None);
        assert!(!r.ready);
        assert!(r.text.starts_with("not ready: 1 of 2 apps cannot be served (readiness = \"all\")"), "{}", r.text);
        assert!(assess(Readiness::All, &apps(), &profiles(Ok(())), None).ready);
    }

    #[test]
    fn no_servable_app_is_not_ready() {
        let broken = BTreeMap::from([("keys", Err("expired".to_owned())), ("iam", Err("down".to_owned()))]);
        let r = assess(Readiness::Any, &apps(), &broken, None);
        assert!(!r.ready);
        assert!(r.text.starts_with("not ready: no served app can be served\n"), "{}", r.text);
    }

    #[test]
    fn a_down_backend_blocks_only_apps_whose_limits_deny() {
        let mut apps = apps();
        apps[0].needs_backend = true;
        let r = assess(Readiness::Any, &apps, &profiles(Ok(())), Some(false));
        assert!(r.ready, "b needs no backend");
        assert!(r.text.contains("app \"a\": cannot be served"), "{}", r.text);
        assert!(r.text.contains("limiter: redis unreachable"), "{}", r.text);
        apps[1].needs_backend = true;
        assert!(!assess(Readiness::Any, &apps, &profiles(Ok(())), Some(false)).ready);
        assert!(assess(Readiness::Any, &apps, &profiles(Ok(())), Some(true)).ready);
    }
}
