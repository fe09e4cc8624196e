//! The notification-sender stage (`notification-sender`): alerts from
//! `rules.alerts.triggered` delivered to the channels each org configures on
//! `config.changes` — generic webhooks, Slack-compatible webhooks, e-mail over SMTP and in-app
//! notifications stored in PostgreSQL — at most once per alert and channel (by an idempotency
//! key), with retries, per-channel rate limits and the DLQ after the last attempt.
//!
//! The pure parts are [`key`] (idempotency keys), [`retry`] (backoff and error
//! classification), [`ratelimit`] (token buckets) and [`render`] (what a person reads); the
//! peers are reached in [`send`], the state lives behind [`store`], and [`stage`] ties them
//! together as a `runtime::Processor`.

pub mod fixtures;
pub mod key;
pub mod metrics;
pub mod ratelimit;
pub mod render;
pub mod retry;
pub mod send;
pub mod stage;
pub mod store;
