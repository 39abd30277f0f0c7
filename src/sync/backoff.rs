//! Timing policies: self-heal backoff, `spec.syncPolicy.retry` backoff, and the polling interval.
//!
//! Place in the data flow: the engine's scheduler asks these functions when the next attempt
//! for an Application may run.
//!
//! Architecture invariant: pure (randomness is passed in), and every delay is bounded, so a
//! fight with another writer costs at most one apply per cap interval, never a hot loop.

use std::time::Duration;

use super::app::RetryPolicy;

/// Self-heal backoff, as Argo does it: 2 s, then ×3 per consecutive self-heal, at most 5 min.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfHealBackoff {
    /// First delay.
    pub base: Duration,
    /// Multiplier.
    pub factor: u32,
    /// Cap.
    pub max: Duration,
}

impl Default for SelfHealBackoff {
    fn default() -> Self {
        SelfHealBackoff {
            base: Duration::from_secs(2),
            factor: 3,
            max: Duration::from_secs(300),
        }
    }
}

impl SelfHealBackoff {
    /// Delay before self-heal number `attempt` (0-based: the first self-heal after a sync waits
    /// `base`).
    pub fn delay(&self, attempt: u32) -> Duration {
        exponential(self.base, self.factor, self.max, attempt)
    }
}

/// Delay before retry number `attempt` (0-based) of a failed sync, or `None` when the policy's
/// limit is spent (a negative limit never runs out).
pub fn retry_delay(policy: &RetryPolicy, attempt: u32) -> Option<Duration> {
    if policy.limit >= 0 && i64::from(attempt) >= policy.limit {
        return None;
    }
    Some(exponential(
        policy.duration,
        policy.factor,
        policy.max_duration,
        attempt,
    ))
}

fn exponential(base: Duration, factor: u32, max: Duration, attempt: u32) -> Duration {
    let mut d = base;
    for _ in 0..attempt {
        d = d.saturating_mul(factor.max(1));
        if d >= max {
            return max;
        }
    }
    d.min(max)
}

/// The polling fallback: `base` plus up to 20 % jitter (from `random`, any u64), so many
/// engines or apps do not fetch in lockstep.
pub fn poll_interval(base: Duration, random: u64) -> Duration {
    let spread = base.as_millis() as u64 / 5;
    if spread == 0 {
        return base;
    }
    base + Duration::from_millis(random % spread)
}

/// Default polling interval (Argo polls every 3 min; we poll every 2 min, and the webhook makes
/// it rarely matter).
pub const DEFAULT_POLL: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_heal_is_2s_times_3_capped_at_5_min() {
        let b = SelfHealBackoff::default();
        let secs: Vec<u64> = (0..7).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![2, 6, 18, 54, 162, 300, 300]);
        assert_eq!(b.delay(1000).as_secs(), 300);
    }

    #[test]
    fn retry_follows_the_policy_and_its_limit() {
        let p = RetryPolicy::default();
        let secs: Vec<Option<u64>> = (0..6)
            .map(|n| retry_delay(&p, n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            secs,
            vec![Some(5), Some(10), Some(20), Some(40), Some(80), None]
        );
        let unlimited = RetryPolicy { limit: -1, ..p };
        assert_eq!(retry_delay(&unlimited, 50), Some(Duration::from_secs(180)));
        let none = RetryPolicy { limit: 0, ..p };
        assert_eq!(retry_delay(&none, 0), None);
    }

    #[test]
    fn polling_has_bounded_jitter() {
        let base = Duration::from_secs(120);
        for r in [0u64, 1, 23_999, u64::MAX] {
            let d = poll_interval(base, r);
            assert!(d >= base && d < base + Duration::from_secs(24), "{d:?}");
        }
        assert_ne!(poll_interval(base, 1), poll_interval(base, 5000));
    }
}
