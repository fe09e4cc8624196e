//! Secrets for the tests that check a binary never prints one: distinct values, easy to
//! find in a log, and [`assert_no_secret`] to look for all of them at once.

/// A PostgreSQL password (in a `*_DATABASE_URL`).
pub const PG_PASSWORD: &str = "pg-pw-41d7b2";
/// Redis's password (`--requirepass`, in `REDIS_URL`).
pub const REDIS_PASSWORD: &str = "redis-pw-9c03ee";
/// A wrong Redis password.
pub const WRONG_REDIS_PASSWORD: &str = "redis-wrong-6a5f10";
/// The schema registry's password (`SCHEMA_REGISTRY_PASSWORD`).
pub const REGISTRY_PASSWORD: &str = "registry-pw-2e8b44";
/// A registry password inside `SCHEMA_REGISTRY_URL` (`user:password@`).
pub const URL_REGISTRY_PASSWORD: &str = "url-registry-pw-d17c90";
/// A registry basic-auth pair's password.
pub const BASIC_AUTH_PASSWORD: &str = "basic-auth-pw-5b61fa";
/// A Kafka SASL password.
pub const SASL_PASSWORD: &str = "sasl-pw-7f2a19";
/// A TLS key's password.
pub const SSL_KEY_PASSWORD: &str = "ssl-key-pw-30c8d5";
/// An SMTP login's password (in `NOTIFY_SMTP_URL`).
pub const SMTP_PASSWORD: &str = "smtp-pw-e4b972";

/// Every secret above.
pub const SECRETS: &[&str] = &[
    PG_PASSWORD,
    REDIS_PASSWORD,
    WRONG_REDIS_PASSWORD,
    REGISTRY_PASSWORD,
    URL_REGISTRY_PASSWORD,
    BASIC_AUTH_PASSWORD,
    SASL_PASSWORD,
    SSL_KEY_PASSWORD,
    SMTP_PASSWORD,
];

/// Fail, naming `run` and the secret, when `output` shows any of [`SECRETS`].
pub fn assert_no_secret(output: &str, run: &str) {
    for secret in SECRETS {
        assert!(
            !output.contains(secret),
            "{run}: the output shows the secret {secret}:\n{output}"
        );
    }
}
