//! The in-process backend: governor's GCRA, one limiter per limit. Each replica counts alone.

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{LimitPlan, LimitSpec, Limited, Rate, Subject};

/// Address-keyed state is pruned of fully replenished keys every this many checks...
const PRUNE_EVERY: u64 = 4_096;
/// ...and never holds more keys than this: beyond it, unnamed callers share one bucket.
const MAX_ADDRESS_KEYS: usize = 65_536;

fn quota(rate: &Rate) -> Quota {
    Quota::with_period(rate.interval()).map_or_else(|| Quota::per_second(rate.count), |q| q.allow_burst(rate.burst))
}

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type ByAddress<C> = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Limit<C: Clock> {
    spec: LimitSpec,
    limiter: Direct<C>,
}

impl<C: Clock + Clone> Limit<C> {
    fn new(spec: LimitSpec, clock: &C) -> Self {
        Limit { spec, limiter: RateLimiter::direct_with_clock(quota(&spec.rate), clock.clone()) }
    }
}

/// Every limiter of a configuration. Limiters are shared (`Arc`) so that a reload can carry
/// over the state of every limit whose key and spec did not change.
pub(super) struct Limits<C: Clock> {
    clock: C,
    /// By app id; account-level operations under the empty id.
    apps: HashMap<String, Arc<Limit<C>>>,
    operations: HashMap<String, HashMap<&'static str, Arc<Limit<C>>>>,
    callers: HashMap<Arc<str>, Arc<Limit<C>>>,
    addresses: Option<Arc<(LimitSpec, ByAddress<C>)>>,
    checks: AtomicU64,
}

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

impl<C: Clock + Clone> Limits<C> {
    /// The limiters of `plan`; with `previous`, every limit whose key and spec are unchanged
    /// keeps its state.
    pub(super) fn new(plan: &LimitPlan, clock: &C, previous: Option<&Limits<C>>) -> Self {
        let mut apps = HashMap::new();
        let mut operations = HashMap::new();
        for (id, app) in &plan.apps {
            if let Some(spec) = app.app {
                apps.insert(id.clone(), carried(previous.map(|p| &p.apps), id, spec, clock));
            }
            let before = previous.and_then(|p| p.operations.get(id));
            let ops: HashMap<_, _> =
                app.operations.iter().map(|(op, spec)| (*op, carried(before, op, *spec, clock))).collect();
            if !ops.is_empty() {
                operations.insert(id.clone(), ops);
            }
        }
        let callers = plan
            .callers
            .iter()
            .map(|(name, spec)| (name.clone(), carried(previous.map(|p| &p.callers), name, *spec, clock)))
            .collect();
        let addresses = plan.per_address.map(|spec| match previous.and_then(|p| p.addresses.as_ref()) {
            Some(old) if old.0 == spec => old.clone(),
            _ => Arc::new((spec, RateLimiter::hashmap_with_clock(quota(&spec.rate), clock.clone()))),
        });
        Limits { clock: clock.clone(), apps, operations, callers, addresses, checks: AtomicU64::new(0) }
    }

    /// Checks every limit that applies, most specific first. `Ok` carries the shadow-mode limits
    /// that would have refused the call.
    pub(super) fn check(&self, app: &str, operation: &'static str, who: Subject<'_>) -> Result<Vec<Limited>, Limited> {
        let mut shadowed = Vec::new();
        let direct = [
            ("operation", self.operations.get(app).and_then(|ops| ops.get(operation))),
            ("app", self.apps.get(app)),
            ("caller", who.caller.and_then(|n| self.callers.get(n))),
        ];
        for (policy, limit) in direct {
            let Some(limit) = limit else { continue };
            if let Err(not_until) = limit.limiter.check() {
                let limited = Limited::new(policy, limit.spec.rate, not_until.wait_time_from(self.clock.now()));
                self.refuse_or_shadow(limit.spec, limited, &mut shadowed)?;
            }
        }
        if let (None, Some((spec, by_address))) = (who.caller, self.addresses.as_deref()) {
            let key = self.address_key(who.address, by_address);
            if let Err(not_until) = by_address.check_key(&key) {
                let limited = Limited::new("caller", spec.rate, not_until.wait_time_from(self.clock.now()));
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
    #[cfg(test)]
    pub(super) fn address_keys(&self) -> usize {
        self.addresses.as_ref().map_or(0, |a| a.1.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{AppLimits, OnBackendError};
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn spec(rate: &str, burst: Option<u32>) -> LimitSpec {
        let rate = Rate::parse(rate, burst.and_then(NonZeroU32::new)).unwrap_or_else(|| panic!("{rate}"));
        LimitSpec { rate, shadow: false, on_backend_error: OnBackendError::Allow }
    }

    fn app_limit(app: &str, limit: LimitSpec) -> LimitPlan {
        let mut plan = LimitPlan::default();
        plan.apps.insert(app.into(), AppLimits { app: Some(limit), ..AppLimits::default() });
        plan
    }

    fn anon(last: u8) -> Subject<'static> {
        Subject { caller: None, address: IpAddr::from([192, 0, 2, last]) }
    }

    fn ops() -> Subject<'static> {
        Subject { caller: Some("ops"), address: IpAddr::from([10, 1, 0, 1]) }
    }

    /// `true` for each admitted call of `n` made at the same instant.
    fn admits(
        limits: &Limits<FakeRelativeClock>,
        app: &str,
        op: &'static str,
        who: Subject<'_>,
        n: usize,
    ) -> Vec<bool> {
        (0..n).map(|_| limits.check(app, op, who).is_ok()).collect()
    }

    #[test]
    fn rate_and_burst_admit_exactly_then_replenish() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::new(&app_limit("a", spec("2/s", Some(4))), &clock, None);
        assert_eq!(admits(&limits, "a", "ShowApp", ops(), 5), [true, true, true, true, false]);
        clock.advance(Duration::from_millis(499));
        assert_eq!(admits(&limits, "a", "ShowApp", ops(), 1), [false]);
        clock.advance(Duration::from_millis(1));
        assert_eq!(admits(&limits, "a", "ShowApp", ops(), 2), [true, false]);
        clock.advance(Duration::from_secs(2));
        assert_eq!(admits(&limits, "a", "ShowApp", ops(), 5), [true, true, true, true, false]);
    }

    #[test]
    fn retry_after_counts_down_to_the_next_admission() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::new(&app_limit("a", spec("1/m", None)), &clock, None);
        assert!(limits.check("a", "ShowApp", ops()).is_ok());
        let denied = limits.check("a", "ShowApp", ops());
        assert_eq!(denied.map_err(|l| (l.policy, l.retry_after_secs)), Err(("app", 60)));
        clock.advance(Duration::from_millis(59_500));
        assert_eq!(limits.check("a", "ShowApp", ops()).map_err(|l| l.retry_after_secs), Err(1));
        let limits = Limits::new(&app_limit("b", spec("1000/s", Some(1))), &FakeRelativeClock::default(), None);
        assert!(limits.check("b", "ShowApp", ops()).is_ok());
        assert_eq!(
            limits.check("b", "ShowApp", ops()).map_err(|l| l.retry_after_secs),
            Err(1),
            "1 ms rounds up to 1 s"
        );
    }

    #[test]
    fn operation_limits_are_tighter_inside_the_app_limit() {
        let clock = FakeRelativeClock::default();
        let mut plan = app_limit("a", spec("10/s", None));
        if let Some(a) = plan.apps.get_mut("a") {
            a.operations.insert("RemoveUsers", spec("1/s", None));
        }
        let limits = Limits::new(&plan, &clock, None);
        assert_eq!(admits(&limits, "a", "RemoveUsers", ops(), 2), [true, false]);
        assert_eq!(limits.check("a", "RemoveUsers", ops()).map_err(|l| l.policy), Err("operation"));
        // ShowApp still has the app's budget: 10 minus the one RemoveUsers admitted.
        assert_eq!(admits(&limits, "a", "ShowApp", ops(), 10).iter().filter(|ok| **ok).count(), 9);
    }

    #[test]
    fn per_caller_limits_apply_by_name_or_by_address() {
        let clock = FakeRelativeClock::default();
        let mut plan = LimitPlan { per_address: Some(spec("1/s", None)), ..LimitPlan::default() };
        plan.callers.insert("ops".into(), spec("1/s", None));
        let limits = Limits::new(&plan, &clock, None);
        assert_eq!(admits(&limits, "a", "ShowApp", ops(), 2), [true, false]);
        assert_eq!(admits(&limits, "a", "ShowApp", anon(1), 2), [true, false]);
        assert_eq!(admits(&limits, "a", "ShowApp", anon(2), 1), [true], "each address has its own bucket");
        assert_eq!(limits.address_keys(), 2);
    }

    #[test]
    fn shadow_limits_report_but_admit() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::new(&app_limit("a", LimitSpec { shadow: true, ..spec("1/s", None) }), &clock, None);
        assert_eq!(limits.check("a", "ShowApp", ops()), Ok(vec![]));
        let second = limits.check("a", "ShowApp", ops()).unwrap_or_default();
        assert_eq!(second.iter().map(|l| l.policy).collect::<Vec<_>>(), ["app"]);
    }

    #[test]
    fn address_state_is_pruned_once_replenished() {
        let clock = FakeRelativeClock::default();
        let plan = LimitPlan { per_address: Some(spec("1/s", None)), ..LimitPlan::default() };
        let limits = Limits::new(&plan, &clock, None);
        for i in 0..=255u8 {
            let _ = limits.check("a", "ShowApp", anon(i));
        }
        assert_eq!(limits.address_keys(), 256);
        clock.advance(Duration::from_secs(2));
        for _ in 0..PRUNE_EVERY {
            let _ = limits.check("a", "ShowApp", anon(7));
        }
        assert!(limits.address_keys() <= 1, "stale keys kept: {}", limits.address_keys());
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_limits_only() {
        let clock = FakeRelativeClock::default();
        let plan = |rate: &str| {
            let mut plan = app_limit("a", spec(rate, None));
            plan.apps.insert("b".into(), AppLimits { app: Some(spec("1/m", None)), ..AppLimits::default() });
            plan
        };
        let limits = Limits::new(&plan("1/m"), &clock, None);
        assert_eq!(admits(&limits, "a", "ShowApp", ops(), 1), [true]);
        assert_eq!(admits(&limits, "b", "ShowApp", ops(), 1), [true]);
        let reloaded = Limits::new(&plan("2/m"), &clock, Some(&limits));
        assert_eq!(admits(&reloaded, "b", "ShowApp", ops(), 1), [false], "b is unchanged: its spent call stays spent");
        assert_eq!(admits(&reloaded, "a", "ShowApp", ops(), 3), [true, true, false], "a changed: a fresh limiter");
    }
}
