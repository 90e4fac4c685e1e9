//! Rate limits: the phase after authorization, so that refused calls spend no app's budget.
//! Limits nest: per operation inside an app, per app, and per caller; a call must pass every
//! one that applies. Each may run in shadow mode: a would-be refusal is counted and logged, and
//! the call goes on.
//!
//! Two backends keep the state, chosen by `[limits] backend`:
//! - `local`: in this process (governor's GCRA). Each replica counts alone, so N replicas let
//!   N times the quota through; right for a single gateway or a sidecar per pod.
//! - `redis`: shared by every replica through one Redis, one round trip per call: a
//!   server-side script runs the same GCRA over every limit that applies, on Redis's clock.
//!
//! This module knows nothing of the configuration file: the config builds a [`LimitPlan`] and
//! a [`Backend`], and the limiter is made from those alone.

mod local;
mod redis;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};

pub(crate) use self::redis::{BackendError, RedisSpec};

/// `count` calls per `per`, with bursts of up to `burst` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl Rate {
    /// Parses `"10/s"`, `"600/m"`, `"1000/h"`; the burst defaults to the count.
    pub fn parse(s: &str, burst: Option<NonZeroU32>) -> Option<Rate> {
        let (count, unit) = s.trim().split_once('/')?;
        let count: NonZeroU32 = count.trim().parse().ok()?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3_600),
            _ => return None,
        };
        Some(Rate { count, per, burst: burst.unwrap_or(count) })
    }

    /// GCRA's emission interval: one call replenishes every this long.
    fn interval(&self) -> Duration {
        (self.per / self.count.get()).max(Duration::from_nanos(1))
    }

    /// The window of the `RateLimit-Policy` field: the time a full burst takes to replenish.
    pub fn window_secs(&self) -> u64 {
        let nanos = self.per.as_nanos() * u128::from(self.burst.get()) / u128::from(self.count.get());
        u64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX).max(1)
    }
}

/// What a call gets when the shared backend cannot decide (Redis down or slow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnBackendError {
    /// Forward the call uncounted, and warn (at most once a minute).
    #[default]
    Allow,
    /// Refuse it: 503 `RTCGW.5031` with `Retry-After`, no upstream call.
    Deny,
}

/// One limit: its rate and burst, and what it does when the shared backend cannot decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    pub rate: Rate,
    pub shadow: bool,
    pub on_backend_error: OnBackendError,
}

/// Every limit of a configuration, by what it applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitPlan {
    /// By app id; account-level operations under the empty id (no app id is empty).
    pub apps: BTreeMap<String, AppLimits>,
    /// Named callers' limits.
    pub callers: BTreeMap<Arc<str>, LimitSpec>,
    /// Unnamed callers: one bucket per client address.
    pub per_address: Option<LimitSpec>,
}

/// The limits of one app: on the whole app, and on each of its operations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppLimits {
    pub app: Option<LimitSpec>,
    pub operations: BTreeMap<&'static str, LimitSpec>,
}

impl LimitPlan {
    /// Whether any limit on calls to `app` refuses them when the backend cannot decide.
    pub fn denies_on_backend_error(&self, app: &str) -> bool {
        let deny = |s: &LimitSpec| s.on_backend_error == OnBackendError::Deny;
        let own = self.apps.get(app).is_some_and(|a| a.app.iter().chain(a.operations.values()).any(deny));
        own || self.callers.values().any(deny) || self.per_address.iter().any(deny)
    }
}

/// Where limiter state lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Local,
    Redis(RedisSpec),
}

/// A call over a limit. `policy` names the limit in `RateLimit-Policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    pub policy: &'static str,
    pub rate: Rate,
    /// Whole seconds until a call could pass, rounded up, at least 1.
    pub retry_after_secs: u64,
}

impl Limited {
    fn new(policy: &'static str, rate: Rate, wait: Duration) -> Self {
        Limited { policy, rate, retry_after_secs: crate::clock::retry_after_secs(wait) }
    }
}

/// Why a call may not go on.
#[derive(Debug)]
pub enum Refusal {
    Over(Limited),
    /// The shared backend could not decide and a limit that applies says `deny`.
    BackendDown(BackendError),
}

/// How a decision was reached, for the metrics.
#[derive(Debug)]
pub enum Via {
    /// In this process: the local backend, or no limit applied.
    Process,
    /// Refused by the Redis backend's local pre-check, without a round trip.
    Precheck,
    /// Decided by Redis in this long.
    Redis(Duration),
    /// Redis could not decide; the verdict follows `on_backend_error`.
    BackendFailed { error_kind: &'static str, admitted: bool },
}

/// A limiter decision: `Ok` carries the shadow-mode limits that would have refused the call.
#[derive(Debug)]
pub struct Checked {
    pub verdict: Result<Vec<Limited>, Refusal>,
    pub via: Via,
}

/// Who is calling, as far as limits care.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub caller: Option<&'a str>,
    pub address: IpAddr,
}

/// The limiter of a configuration.
pub struct Limits<C: Clock = DefaultClock> {
    plan: Arc<LimitPlan>,
    kind: Kind<C>,
    clock: C,
}

enum Kind<C: Clock> {
    Local(local::Limits<C>),
    Redis(Arc<redis::Limits>),
}

impl Limits<DefaultClock> {
    /// Builds the limiter. For Redis this connects lazily: no round trip happens here.
    pub fn new(plan: LimitPlan, backend: &Backend) -> Result<Self, BackendError> {
        Limits::build(plan, backend, DefaultClock::default(), None)
    }
}

impl<C: Clock + Clone> Limits<C> {
    fn build(plan: LimitPlan, backend: &Backend, clock: C, previous: Option<&Limits<C>>) -> Result<Self, BackendError> {
        let kind = match (backend, previous.map(|p| &p.kind)) {
            (Backend::Local, Some(Kind::Local(old))) => Kind::Local(local::Limits::new(&plan, &clock, Some(old))),
            (Backend::Local, _) => Kind::Local(local::Limits::new(&plan, &clock, None)),
            (Backend::Redis(spec), Some(Kind::Redis(old))) if old.spec() == spec => Kind::Redis(old.clone()),
            (Backend::Redis(spec), _) => Kind::Redis(Arc::new(redis::Limits::new(spec.clone())?)),
        };
        Ok(Limits { kind, plan: Arc::new(plan), clock })
    }

    /// The limiter of a reloaded configuration. Local limits whose key and spec are unchanged
    /// keep their state; a Redis backend keeps its connection while its settings are unchanged
    /// (the state is in Redis, keyed by each limit's spec, so it carries over by itself).
    pub(crate) fn reloaded(&self, plan: LimitPlan, backend: &Backend) -> Result<Self, BackendError> {
        Limits::build(plan, backend, self.clock.clone(), Some(self))
    }

    /// Checks every limit that applies to a call, most specific first.
    pub async fn check(&self, app: Option<&str>, operation: &'static str, who: Subject<'_>) -> Checked {
        let app = app.unwrap_or("");
        match &self.kind {
            Kind::Local(local) => {
                Checked { verdict: local.check(app, operation, who).map_err(Refusal::Over), via: Via::Process }
            }
            Kind::Redis(redis) => redis.check(&self.plan, app, operation, who).await,
        }
    }

    /// `None` for the local backend; else whether Redis answered its last command.
    pub(crate) fn backend_up(&self) -> Option<bool> {
        match &self.kind {
            Kind::Local(_) => None,
            Kind::Redis(r) => Some(r.up()),
        }
    }

    /// Asks the shared backend whether it is there, so readiness and reconnection do not wait
    /// for a call. Does nothing for the local backend.
    pub(crate) async fn probe(&self) {
        if let Kind::Redis(r) = &self.kind {
            r.probe().await;
        }
    }

    pub(crate) fn plan(&self) -> &LimitPlan {
        &self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_the_time_a_full_burst_takes_to_refill() {
        let r = |s: &str, b: Option<u32>| Rate::parse(s, b.and_then(NonZeroU32::new)).map(|r| r.window_secs());
        assert_eq!(r("10/s", None), Some(1));
        assert_eq!(r("2/s", Some(4)), Some(2));
        assert_eq!(r("60/m", None), Some(60));
        assert_eq!(r("3/s", Some(1)), Some(1));
        assert_eq!(Rate::parse("0/s", None), None);
        assert_eq!(Rate::parse("5/d", None), None);
    }

    #[test]
    fn deny_on_backend_error_follows_every_limit_a_call_meets() {
        let spec = |on_backend_error| LimitSpec {
            rate: Rate::parse("1/s", None).unwrap_or_else(|| panic!()),
            shadow: false,
            on_backend_error,
        };
        let mut plan = LimitPlan::default();
        plan.apps.insert("a".into(), AppLimits { app: Some(spec(OnBackendError::Allow)), ..AppLimits::default() });
        plan.apps.insert(
            "b".into(),
            AppLimits { app: None, operations: [("RemoveUsers", spec(OnBackendError::Deny))].into() },
        );
        assert!(!plan.denies_on_backend_error("a"));
        assert!(plan.denies_on_backend_error("b"));
        plan.per_address = Some(spec(OnBackendError::Deny));
        assert!(plan.denies_on_backend_error("a"), "every unnamed caller meets the per-address limit");
    }
}
