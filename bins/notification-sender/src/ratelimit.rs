//! Per-channel rate limits: a token bucket per (org, channel) in memory. A delivery takes a
//! token; when none is left it waits for the next one (its partition waits with it, nothing
//! is dropped).
//!
//! `rate_limit_per_minute = n` refills `n / 60` tokens per second into a bucket of
//! `max(1, ceil(n / 60))` tokens: one second's worth of burst, then a steady `n` per
//! minute. `None` (and values ≤ 0) mean unlimited; a channel is switched off with
//! `enabled = false`, not with a zero rate. The buckets live in one process: replicas of the
//! stage own different orgs' partitions (keyed by org), so an org's channels are limited
//! by one bucket at a time.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// One token bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    per_minute: u32,
    capacity: f64,
    /// Tokens now; negative when deliveries have reserved future tokens.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket for `per_minute` deliveries a minute (at least 1).
    pub fn new(per_minute: u32, now: Instant) -> Bucket {
        let per_minute = per_minute.max(1);
        let capacity = f64::from(per_minute.div_ceil(60).max(1));
        Bucket {
            per_minute,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    /// Take a token at `now`: how long to wait before using it (zero when one is there).
    /// Reservations queue up: each caller waits for its own future token.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second()).min(self.capacity);
        self.at = now.max(self.at);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second())
        }
    }
}

/// The buckets of every (org, channel) seen.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(i64, String), Bucket>>,
}

impl RateLimiter {
    /// How long a delivery to `(org_id, channel_id)` limited to `per_minute` must wait
    /// (taking its token now). A changed limit starts a fresh bucket.
    pub fn reserve(
        &self,
        org_id: i64,
        channel_id: &str,
        per_minute: Option<i32>,
        now: Instant,
    ) -> Duration {
        let Some(per_minute) = per_minute
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
        else {
            return Duration::ZERO;
        };
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets
            .entry((org_id, channel_id.to_owned()))
            .or_insert_with(|| Bucket::new(per_minute, now));
        if bucket.per_minute != per_minute {
            *bucket = Bucket::new(per_minute, now);
        }
        bucket.reserve(now)
    }

    /// Wait for a token of `(org_id, channel_id)`.
    pub async fn acquire(&self, org_id: i64, channel_id: &str, per_minute: Option<i32>) {
        let wait = self.reserve(org_id, channel_id, per_minute, Instant::now());
        if !wait.is_zero() {
            tracing::info!(
                org_id,
                channel_id,
                wait_ms = wait.as_millis() as u64,
                "channel rate limit: waiting for a token"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let r = RateLimiter::default();
        let now = Instant::now();
        for limit in [None, Some(0), Some(-5)] {
            for _ in 0..1_000 {
                assert_eq!(r.reserve(1, "c", limit, now), Duration::ZERO);
            }
        }
    }

    #[test]
    fn sixty_a_minute_is_one_a_second_after_a_burst_of_one() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(r.reserve(1, "c", Some(60), t0), Duration::ZERO);
        // The next ones queue one second apart.
        assert_eq!(r.reserve(1, "c", Some(60), t0), Duration::from_secs(1));
        assert_eq!(r.reserve(1, "c", Some(60), t0), Duration::from_secs(2));
        // After the queue drained and a second passed, a token is there again.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(r.reserve(1, "c", Some(60), later), Duration::ZERO);
    }

    #[test]
    fn burst_is_one_seconds_worth_and_the_steady_rate_holds() {
        let t0 = Instant::now();
        let mut b = Bucket::new(600, t0);
        for _ in 0..10 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        let wait = b.reserve(t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Over a minute of steady demand, about 600 go through without waiting.
        let mut b = Bucket::new(600, t0);
        let mut free = 0;
        for ms in (0..60_000).step_by(10) {
            if b.reserve(t0 + Duration::from_millis(ms)).is_zero() {
                free += 1;
            } else {
                // Give the reservation back (the caller would have waited).
                b.tokens += 1.0;
            }
        }
        assert!((600..=611).contains(&free), "{free}");
    }

    #[test]
    fn channels_and_orgs_have_their_own_buckets_and_a_new_limit_resets() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        assert!(r.reserve(1, "c", Some(1), t0).is_zero());
        assert!(!r.reserve(1, "c", Some(1), t0).is_zero());
        assert!(r.reserve(2, "c", Some(1), t0).is_zero());
        assert!(r.reserve(1, "d", Some(1), t0).is_zero());
        assert!(r.reserve(1, "c", Some(120), t0).is_zero());
    }
}
