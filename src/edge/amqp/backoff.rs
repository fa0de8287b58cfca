//! When to reconnect and when to renew the token: small pure schedules, so that the
//! connection loop only sleeps for what they say.
//!
//! Reconnection: exponential back-off with "equal jitter" (half fixed, half random) from
//! `min` to a cap, reset after a connection that worked. The jitter keeps a fleet of devices
//! whose edgeHub restarted from reconnecting in lockstep; the fixed half keeps one device
//! from retrying in a tight loop.
//!
//! Token renewal: the C SDK renews at 80 % of the lifetime, the C# SDK at 85 %; we renew at
//! 80 %, so that a renewal that fails and is retried once still lands before expiry.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; `random` is uniform in [0, 1).
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let full = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        half + half.mul_f64(random.clamp(0.0, 1.0))
    }

    /// A connection worked: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A random number in [0, 1) from the OS (via a v4 UUID's random bits).
pub fn random_unit() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    (u64::from_le_bytes(n) >> 11) as f64 / (1u64 << 53) as f64
}

/// How long after issuing a token to renew it.
pub fn renew_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.8)
}

/// When to renew a token issued at `issued`. Checked: a lifetime an `Instant` cannot carry
/// (1.2e19 s passed the settings once and panicked here, killing the sender) renews a day
/// later, the longest lifetime the settings now allow.
pub fn renew_at(issued: Instant, lifetime: Duration) -> Instant {
    issued
        .checked_add(renew_after(lifetime))
        .or_else(|| issued.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_time_is_checked() {
        let now = Instant::now();
        assert_eq!(
            renew_at(now, Duration::from_secs(3600)),
            now + Duration::from_secs(2880)
        );
        assert_eq!(
            renew_at(now, Duration::from_secs(12_000_000_000_000_000_000)),
            now + Duration::from_secs(86_400)
        );
        assert_eq!(
            renew_at(now, Duration::MAX),
            now + Duration::from_secs(86_400)
        );
    }

    #[test]
    fn doubles_up_to_the_cap_with_half_fixed() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let lo: Vec<_> = (0..6).map(|_| b.next_delay(0.0).as_millis()).collect();
        assert_eq!(lo, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        let hi: Vec<_> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(hi, [1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(b.attempts(), 6);
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next_delay(0.99) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.iter().any(|x| (x - xs[0]).abs() > 1e-9));
    }

    #[test]
    fn renews_at_80_percent() {
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            renew_after(Duration::from_secs(20)),
            Duration::from_secs(16)
        );
    }
}
