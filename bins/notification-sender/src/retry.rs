//! Per-channel retry policy: which delivery failures are worth another attempt (HTTP status
//! classes, SMTP reply classes, transport errors) and the exponential backoff with jitter
//! between attempts.

use std::time::Duration;

use rand::Rng as _;

/// Why one delivery attempt to a channel failed. Messages never hold a channel's target
/// (URL, e-mail address) or a secret: they are logged, stored and written to DLQ headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The peer answered with an HTTP status that is not a success.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The peer did not answer in time.
    #[error("timed out")]
    Timeout,
    /// No connection to the peer (refused, reset, DNS).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The SMTP server refused the message for now (4xx reply).
    #[error("SMTP transient reply {0}")]
    SmtpTransient(String),
    /// The SMTP server refused the message for good (5xx reply).
    #[error("SMTP permanent reply {0}")]
    SmtpPermanent(String),
    /// The channel cannot be delivered as configured (bad URL or address, missing secret).
    #[error("channel misconfigured: {0}")]
    Config(String),
    /// Another transport error.
    #[error("transport error: {0}")]
    Transport(String),
}

impl DeliveryError {
    /// Stable code for logs and the deliveries table.
    pub fn code(&self) -> &'static str {
        match self {
            DeliveryError::Status(_) => "NOTIFY_HTTP_STATUS",
            DeliveryError::Timeout => "NOTIFY_TIMEOUT",
            DeliveryError::Connect(_) => "NOTIFY_CONNECT",
            DeliveryError::SmtpTransient(_) => "NOTIFY_SMTP_TRANSIENT",
            DeliveryError::SmtpPermanent(_) => "NOTIFY_SMTP_PERMANENT",
            DeliveryError::Config(_) => "NOTIFY_CHANNEL_CONFIG",
            DeliveryError::Transport(_) => "NOTIFY_TRANSPORT",
        }
    }

    /// Whether another attempt can succeed: 5xx, 408 and 429, timeouts, connection errors
    /// and SMTP 4xx replies retry; other 4xx (and unexpected 1xx/3xx), SMTP 5xx replies and
    /// configuration problems fail the channel at once.
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Status(status) => status_retryable(*status),
            DeliveryError::Timeout
            | DeliveryError::Connect(_)
            | DeliveryError::SmtpTransient(_)
            | DeliveryError::Transport(_) => true,
            DeliveryError::SmtpPermanent(_) | DeliveryError::Config(_) => false,
        }
    }
}

/// Whether a non-success HTTP `status` is worth another attempt.
pub fn status_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Exponential backoff with jitter: the delay before attempt `attempt + 1` after `attempt`
/// failed (1-based) is drawn from `[d/2, d]`, where `d = min(cap, base · 2^(attempt-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's upper bound.
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
}

impl Backoff {
    /// The upper bound `d` of the delay after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay after failed attempt `attempt` (1-based), jittered within `[d/2, d]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.ceiling(attempt);
        let half = d / 2;
        let spread = u64::try_from((d - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_classified() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(status_retryable(s), "{s} retries");
        }
        for s in [100, 301, 302, 400, 401, 403, 404, 410, 413, 422] {
            assert!(!status_retryable(s), "{s} is permanent");
        }
        assert!(DeliveryError::Status(503).retryable());
        assert!(!DeliveryError::Status(404).retryable());
        assert!(DeliveryError::Timeout.retryable());
        assert!(DeliveryError::Connect("refused".into()).retryable());
        assert!(DeliveryError::SmtpTransient("451".into()).retryable());
        assert!(!DeliveryError::SmtpPermanent("550".into()).retryable());
        assert!(!DeliveryError::Config("no secret".into()).retryable());
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_millis(3_000),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(2), Duration::from_millis(400));
        assert_eq!(b.ceiling(4), Duration::from_millis(1_600));
        assert_eq!(b.ceiling(5), Duration::from_millis(3_000));
        assert_eq!(b.ceiling(64), Duration::from_millis(3_000));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(3_000));
        for attempt in 1..=12 {
            let d = b.ceiling(attempt);
            for _ in 0..200 {
                let delay = b.delay(attempt);
                assert!(
                    delay >= d / 2 && delay <= d,
                    "{attempt}: {delay:?} in [{d:?}/2, {d:?}]"
                );
            }
        }
        let zero = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        assert_eq!(zero.delay(3), Duration::ZERO);
    }
}
