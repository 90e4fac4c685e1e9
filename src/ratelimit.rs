//! Per-app rate limits (GCRA, via governor): the third phase, after authorization so that
//! refused calls spend no app's budget. Limits nest: per operation inside an app, per app, and
//! per caller; a call must pass every one that applies. Each may run in shadow mode: a would-be
//! refusal is counted and logged, and the call goes on.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::Config;
use crate::policy::Identity;

/// Address-keyed state is pruned of fully replenished keys every this many checks...
const PRUNE_EVERY: u64 = 4_096;
/// ...and never holds more keys than this: beyond it, unnamed callers share one bucket.
const MAX_ADDRESS_KEYS: usize = 65_536;

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

    fn quota(&self) -> Quota {
        let interval = (self.per / self.count.get()).max(Duration::from_nanos(1));
        Quota::with_period(interval).map_or_else(|| Quota::per_second(self.count), |q| q.allow_burst(self.burst))
    }

    /// The window of the `RateLimit-Policy` field: the time a full burst takes to replenish.
    pub fn window_secs(&self) -> u64 {
        let nanos = self.per.as_nanos() * u128::from(self.burst.get()) / u128::from(self.count.get());
        u64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX).max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    pub rate: Rate,
    pub shadow: bool,
}

/// A call over a limit. `policy` names the limit in `RateLimit-Policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    pub policy: &'static str,
    pub rate: Rate,
    /// Whole seconds until a call could pass, rounded up, at least 1.
    pub retry_after_secs: u64,
}

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type ByAddress<C> = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Limit<C: Clock> {
    spec: LimitSpec,
    limiter: Direct<C>,
}

impl<C: Clock + Clone> Limit<C> {
    fn new(spec: LimitSpec, clock: &C) -> Self {
        Limit { spec, limiter: RateLimiter::direct_with_clock(spec.rate.quota(), clock.clone()) }
    }
}

/// Every limiter of a configuration. Limiters are shared (`Arc`) so that a reload can carry
/// over the state of every limit whose key and spec did not change.
pub struct Limits<C: Clock = DefaultClock> {
    clock: C,
    /// By app id; account-level operations under [`ACCOUNT`].
    apps: HashMap<String, Arc<Limit<C>>>,
    operations: HashMap<String, HashMap<&'static str, Arc<Limit<C>>>>,
    callers: HashMap<Arc<str>, Arc<Limit<C>>>,
    addresses: Option<Arc<(LimitSpec, ByAddress<C>)>>,
    checks: AtomicU64,
}

/// The key of account-level limits: no app id is empty (the catalog never yields one that a
/// config could serve), so it cannot collide.
const ACCOUNT: &str = "";

/// The previous limiter for `key` if its spec is unchanged, else a fresh one.
fn carried<K: std::hash::Hash + Eq + ?Sized, Q: std::borrow::Borrow<K> + std::hash::Hash + Eq, C: Clock + Clone>(
    previous: Option<&HashMap<Q, Arc<Limit<C>>>>,
    key: &K,
    spec: LimitSpec,
    clock: &C,
) -> Arc<Limit<C>> {
    match previous.and_then(|p| p.get(key)) {
        Some(limit) if limit.spec == spec => limit.clone(),
        _ => Arc::new(Limit::new(spec, clock)),
    }
}

impl Limits<DefaultClock> {
    pub fn new(config: &Config) -> Self {
        Limits::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(config: &Config, clock: C) -> Self {
        Limits::build(config, clock, None)
    }

    /// The limits of a reloaded `config`, keeping the state of every unchanged limit.
    pub fn reloaded(&self, config: &Config) -> Self {
        Limits::build(config, self.clock.clone(), Some(self))
    }

    fn build(config: &Config, clock: C, previous: Option<&Limits<C>>) -> Self {
        let mut apps = HashMap::new();
        let mut operations = HashMap::new();
        let served =
            config.apps.iter().map(|(id, app)| (id.as_str(), app)).chain(config.account.iter().map(|a| (ACCOUNT, a)));
        for (id, app) in served {
            if let Some(spec) = app.limit.or(config.limits.per_app) {
                apps.insert(id.to_owned(), carried(previous.map(|p| &p.apps), id, spec, &clock));
            }
            let before = previous.and_then(|p| p.operations.get(id));
            let mut ops = HashMap::new();
            for (op, spec) in &app.operation_limits {
                ops.insert(*op, carried(before, op, *spec, &clock));
            }
            if !ops.is_empty() {
                operations.insert(id.to_owned(), ops);
            }
        }
        let mut callers = HashMap::new();
        for c in &config.callers.named {
            if let Some(spec) = config.caller_limits.get(&c.name).copied().or(config.limits.per_caller) {
                callers.insert(c.name.clone(), carried(previous.map(|p| &p.callers), &c.name, spec, &clock));
            }
        }
        let addresses = config.limits.per_caller.map(|spec| match previous.and_then(|p| p.addresses.as_ref()) {
            Some(old) if old.0 == spec => old.clone(),
            _ => Arc::new((spec, RateLimiter::hashmap_with_clock(spec.rate.quota(), clock.clone()))),
        });
        Limits { clock, apps, operations, callers, addresses, checks: AtomicU64::new(0) }
    }

    /// Checks every limit that applies, most specific first. `Ok` carries the shadow-mode limits
    /// that would have refused the call.
    pub fn check(&self, app: Option<&str>, operation: &'static str, who: &Identity) -> Result<Vec<Limited>, Limited> {
        let app = app.unwrap_or(ACCOUNT);
        let mut shadowed = Vec::new();
        let direct = [
            ("operation", self.operations.get(app).and_then(|ops| ops.get(operation))),
            ("app", self.apps.get(app)),
            ("caller", who.name.as_ref().and_then(|n| self.callers.get(n))),
        ];
        for (policy, limit) in direct {
            let Some(limit) = limit else { continue };
            if let Err(not_until) = limit.limiter.check() {
                let limited = self.limited(policy, limit.spec.rate, not_until.wait_time_from(self.clock.now()));
                self.refuse_or_shadow(limit.spec, limited, &mut shadowed)?;
            }
        }
        if let (None, Some((spec, by_address))) = (&who.name, self.addresses.as_deref()) {
            let key = self.address_key(who.address, by_address);
            if let Err(not_until) = by_address.check_key(&key) {
                let limited = self.limited("caller", spec.rate, not_until.wait_time_from(self.clock.now()));
                self.refuse_or_shadow(*spec, limited, &mut shadowed)?;
            }
        }
        Ok(shadowed)
    }

    fn refuse_or_shadow(&self, spec: LimitSpec, limited: Limited, shadowed: &mut Vec<Limited>) -> Result<(), Limited> {
        if spec.shadow {
            shadowed.push(limited);
            Ok(())
        } else {
            Err(limited)
        }
    }

    fn limited(&self, policy: &'static str, rate: Rate, wait: Duration) -> Limited {
        let secs = wait.as_nanos().div_ceil(1_000_000_000);
        Limited { policy, rate, retry_after_secs: u64::try_from(secs).unwrap_or(u64::MAX).max(1) }
    }

    /// Keeps address-keyed state bounded: fully replenished keys are pruned every
    /// [`PRUNE_EVERY`] checks, and past [`MAX_ADDRESS_KEYS`] new addresses share one bucket
    /// rather than grow the map. IPv6 clients are keyed by their /64, the block one host holds.
    fn address_key(&self, address: IpAddr, by_address: &ByAddress<C>) -> IpAddr {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            by_address.retain_recent();
            by_address.shrink_to_fit();
        }
        if by_address.len() >= MAX_ADDRESS_KEYS {
            return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        }
        match address.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            v4 => v4,
        }
    }

    /// Address keys currently held.
    pub fn address_keys(&self) -> usize {
        self.addresses.as_ref().map_or(0, |a| a.1.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Via;
    use governor::clock::FakeRelativeClock;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[profiles.p]\naccess_key = \"AK\"\nsecret_key = \"SK\"\nproject_id = \"p1\"\n[callers.ops]\naddresses = [\"10.1.0.0/16\"]\n{extra}"
        );
        Config::parse(&text, "t.toml", std::path::Path::new("."), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn anon(last: u8) -> Identity {
        Identity { name: None, address: IpAddr::from([192, 0, 2, last]), via: Via::Unidentified }
    }

    fn ops() -> Identity {
        Identity { name: Some("ops".into()), address: IpAddr::from([10, 1, 0, 1]), via: Via::Address }
    }

    /// `true` for each admitted call of `n` made at the same instant.
    fn admits(
        limits: &Limits<FakeRelativeClock>,
        app: Option<&str>,
        op: &'static str,
        who: &Identity,
        n: usize,
    ) -> Vec<bool> {
        (0..n).map(|_| limits.check(app, op, who).is_ok()).collect()
    }

    #[test]
    fn rate_and_burst_admit_exactly_then_replenish() {
        let clock = FakeRelativeClock::default();
        let c = config("[apps.a]\nprofile = \"p\"\nlimit = { rate = \"2/s\", burst = 4 }\nallow = []\n");
        let limits = Limits::with_clock(&c, clock.clone());
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &ops(), 5), [true, true, true, true, false]);
        clock.advance(Duration::from_millis(499));
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &ops(), 1), [false]);
        clock.advance(Duration::from_millis(1));
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &ops(), 2), [true, false]);
        clock.advance(Duration::from_secs(2));
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &ops(), 5), [true, true, true, true, false]);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_never_zero() {
        let clock = FakeRelativeClock::default();
        let c = config("[apps.a]\nprofile = \"p\"\nlimit = { rate = \"1/m\" }\nallow = []\n");
        let limits = Limits::with_clock(&c, clock.clone());
        assert!(limits.check(Some("a"), "ShowApp", &ops()).is_ok());
        let denied = limits.check(Some("a"), "ShowApp", &ops());
        assert_eq!(denied.map_err(|l| (l.policy, l.retry_after_secs)), Err(("app", 60)));
        clock.advance(Duration::from_millis(59_500));
        assert_eq!(limits.check(Some("a"), "ShowApp", &ops()).map_err(|l| l.retry_after_secs), Err(1));
        let fast = config("[apps.b]\nprofile = \"p\"\nlimit = { rate = \"1000/s\", burst = 1 }\nallow = []\n");
        let limits = Limits::with_clock(&fast, FakeRelativeClock::default());
        assert!(limits.check(Some("b"), "ShowApp", &ops()).is_ok());
        assert_eq!(
            limits.check(Some("b"), "ShowApp", &ops()).map_err(|l| l.retry_after_secs),
            Err(1),
            "1 ms rounds up to 1 s"
        );
    }

    #[test]
    fn operation_limits_are_tighter_inside_the_app_limit() {
        let clock = FakeRelativeClock::default();
        let c = config("[apps.a]\nprofile = \"p\"\nlimit = { rate = \"10/s\" }\noperation_limits = { RemoveUsers = { rate = \"1/s\" } }\nallow = []\n");
        let limits = Limits::with_clock(&c, clock);
        assert_eq!(admits(&limits, Some("a"), "RemoveUsers", &ops(), 2), [true, false]);
        assert_eq!(limits.check(Some("a"), "RemoveUsers", &ops()).map_err(|l| l.policy), Err("operation"));
        // ShowApp still has the app's budget: 10 minus the one RemoveUsers admitted.
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &ops(), 10).iter().filter(|ok| **ok).count(), 9);
    }

    #[test]
    fn per_caller_limits_apply_by_name_or_by_address() {
        let clock = FakeRelativeClock::default();
        let c = config("[limits]\nper_caller = { rate = \"1/s\" }\n[apps.a]\nprofile = \"p\"\nallow = []\n");
        let limits = Limits::with_clock(&c, clock.clone());
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &ops(), 2), [true, false]);
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &anon(1), 2), [true, false]);
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &anon(2), 1), [true], "each address has its own bucket");
        assert_eq!(limits.address_keys(), 2);
    }

    #[test]
    fn shadow_limits_report_but_admit() {
        let clock = FakeRelativeClock::default();
        let c = config("[apps.a]\nprofile = \"p\"\nlimit = { rate = \"1/s\", shadow = true }\nallow = []\n");
        let limits = Limits::with_clock(&c, clock);
        assert_eq!(limits.check(Some("a"), "ShowApp", &ops()), Ok(vec![]));
        let second = limits.check(Some("a"), "ShowApp", &ops()).unwrap_or_default();
        assert_eq!(second.iter().map(|l| l.policy).collect::<Vec<_>>(), ["app"]);
    }

    #[test]
    fn address_state_is_pruned_once_replenished() {
        let clock = FakeRelativeClock::default();
        let c = config("[limits]\nper_caller = { rate = \"1/s\" }\n[apps.a]\nprofile = \"p\"\nallow = []\n");
        let limits = Limits::with_clock(&c, clock.clone());
        for i in 0..=255u8 {
            let _ = limits.check(Some("a"), "ShowApp", &anon(i));
        }
        assert_eq!(limits.address_keys(), 256);
        clock.advance(Duration::from_secs(2));
        for _ in 0..PRUNE_EVERY {
            let _ = limits.check(Some("a"), "ShowApp", &anon(7));
        }
        assert!(limits.address_keys() <= 1, "stale keys kept: {}", limits.address_keys());
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_limits_only() {
        let clock = FakeRelativeClock::default();
        let app = |rate: &str| {
            format!("[apps.a]\nprofile = \"p\"\nlimit = {{ rate = \"{rate}\" }}\nallow = []\n[apps.b]\nprofile = \"p\"\nlimit = {{ rate = \"1/m\" }}\nallow = []\n")
        };
        let limits = Limits::with_clock(&config(&app("1/m")), clock.clone());
        assert_eq!(admits(&limits, Some("a"), "ShowApp", &ops(), 1), [true]);
        assert_eq!(admits(&limits, Some("b"), "ShowApp", &ops(), 1), [true]);
        let reloaded = limits.reloaded(&config(&app("2/m")));
        assert_eq!(
            admits(&reloaded, Some("b"), "ShowApp", &ops(), 1),
            [false],
            "b is unchanged: its spent call stays spent"
        );
        assert_eq!(
            admits(&reloaded, Some("a"), "ShowApp", &ops(), 3),
            [true, true, false],
            "a changed: a fresh limiter"
        );
    }

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
}
