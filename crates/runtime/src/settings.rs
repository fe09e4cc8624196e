//! The runtime's settings: every flag `#[arg(long, env)]`, shared by all stage binaries
//! through `#[command(flatten)]`, including how clients log in to Kafka (TLS, SASL) and to
//! the schema registry. Secrets are [`Secret`]s: never printed by `Debug`, never logged.

use std::{path::PathBuf, time::Duration};

/// Settings every stage shares.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// Schema registry URL (defaults to topic-config.yaml's `schema_registry.url`).
    #[arg(long, env = "SCHEMA_REGISTRY_URL", hide_env_values = true)]
    pub schema_registry_url: Option<String>,
    /// How Kafka clients connect and log in (TLS, SASL).
    #[command(flatten)]
    pub kafka: KafkaSecurity,
    /// How the schema registry client logs in.
    #[command(flatten)]
    pub registry_auth: RegistryAuth,
    /// Static group membership id (e.g. the pod name); empty = dynamic membership.
    #[arg(long, env = "GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// Instance name in event envelopes (defaults to host name and pid).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Redis URL for event_id dedupe (e.g. redis://127.0.0.1:6379); in-memory when unset.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// How long a processed event_id is remembered, in seconds.
    #[arg(long, env = "DEDUPE_TTL_SECS", default_value_t = 86_400)]
    pub dedupe_ttl_secs: u64,
    /// Prefix of the dedupe keys in Redis (`{prefix}:{consumer group}:…`): pipelines or
    /// environments that share one Redis each need their own.
    #[arg(long, env = "DEDUPE_KEY_PREFIX", default_value = "adpipe:dedupe")]
    pub dedupe_key_prefix: String,
    /// Records queued per partition for its worker, and awaiting their acknowledgements, at
    /// most (backpressure: a partition over it waits, the others go on).
    #[arg(long, env = "MAX_IN_FLIGHT_PER_PARTITION", default_value_t = 500)]
    pub max_in_flight_per_partition: usize,
    /// Kilobytes of records the consumer prefetches ahead of processing, over all partitions
    /// (librdkafka's `queued.max.messages.kbytes`), and a quarter as much again held for
    /// partitions whose queues are full: with the per-partition queues, this caps the stage's
    /// memory however large the backlog. 8 MiB starved the runtime loop on a fast broker.
    #[arg(long, env = "FETCH_BUFFER_KIB", default_value_t = 16_384)]
    pub fetch_buffer_kib: u64,
    /// Records the consumer prefetches at most, besides `--fetch-buffer-kib` (librdkafka's
    /// `queued.min.messages`). Unset: the stage's own figure — 100,000 (librdkafka's
    /// default), 30,000 for the rule evaluator, whose 150-byte records would otherwise cost
    /// more in librdkafka's bookkeeping (~175 bytes each) than in bytes.
    #[arg(long, env = "FETCH_BUFFER_RECORDS")]
    pub fetch_buffer_records: Option<u64>,
    /// Attempts for a retryable error before the record goes to the DLQ.
    #[arg(long, env = "RETRY_ATTEMPTS", default_value_t = 5)]
    pub retry_attempts: u32,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, env = "RETRY_BACKOFF_MS", default_value_t = 200)]
    pub retry_backoff_ms: u64,
    /// Stop consuming when more than this share of the last window was dead-lettered.
    #[arg(long, env = "DLQ_BREAKER_THRESHOLD", default_value_t = 0.5)]
    pub dlq_breaker_threshold: f64,
    /// Records in the DLQ breaker's window (0 disables the breaker).
    #[arg(long, env = "DLQ_BREAKER_WINDOW", default_value_t = 1000)]
    pub dlq_breaker_window: usize,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub metrics_listen: String,
    /// Log format: `pretty` for people, `json` for production.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
    /// Seconds between `progress` run events on etl.execution (0: no run events at all).
    #[arg(long, env = "RUN_REPORT_SECS", default_value_t = 60)]
    pub run_report_secs: u64,
    /// Transactional mode: outputs, dead letters and consumed offsets committed together in
    /// Kafka transactions (exactly once for `read_committed` readers). Off by default; needs
    /// a broker that isolates aborted transactions (Tansu 0.6 does not).
    #[arg(long, env = "TRANSACTIONAL", default_value_t = false)]
    pub transactional: bool,
    /// Milliseconds between transaction commits in transactional mode.
    #[arg(long, env = "TRANSACTION_MS", default_value_t = 100)]
    pub transaction_ms: u64,
    /// Seconds to finish in-flight work after SIGTERM before exiting.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
}

impl RuntimeArgs {
    /// Settings for tests: everything default except the broker.
    pub fn for_tests(bootstrap: &str) -> RuntimeArgs {
        RuntimeArgs {
            bootstrap_servers: bootstrap.to_owned(),
            schema_registry_url: None,
            kafka: KafkaSecurity::default(),
            registry_auth: RegistryAuth::default(),
            group_instance_id: None,
            instance_id: Some("test".to_owned()),
            redis_url: None,
            dedupe_ttl_secs: 86_400,
            dedupe_key_prefix: "adpipe:dedupe".to_owned(),
            max_in_flight_per_partition: 500,
            fetch_buffer_kib: 16_384,
            fetch_buffer_records: None,
            retry_attempts: 3,
            retry_backoff_ms: 10,
            dlq_breaker_threshold: 0.5,
            dlq_breaker_window: 0,
            metrics_listen: "127.0.0.1:0".to_owned(),
            log_format: "pretty".to_owned(),
            run_report_secs: 0,
            transactional: false,
            transaction_ms: 100,
            shutdown_grace_secs: 10,
        }
    }

    /// The shutdown grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// A secret setting (a password): `Debug` and `Display` print `***`, so neither a `{:?}` of
/// the settings nor a log line can reveal it; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's value, for the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no login (a local broker).
    #[default]
    #[value(name = "plaintext")]
    Plaintext,
    /// TLS; with a client certificate and key, mutual TLS (Strimzi's `tls` users).
    #[value(name = "ssl")]
    Ssl,
    /// SASL login without TLS.
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    /// SASL login over TLS (Strimzi's `scram-sha-512` users on a TLS listener).
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism` (the ones that need no Kerberos or token provider).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// User name and password sent as they are (use TLS).
    #[value(name = "PLAIN")]
    Plain,
    /// Salted challenge-response, SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response, SHA-512 (Strimzi's `scram-sha-512` KafkaUsers).
    #[default]
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Settings that cannot work together, found before any client is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A SASL protocol without a user name or password.
    #[error(
        "--kafka-security-protocol {protocol} needs --kafka-sasl-username and KAFKA_SASL_PASSWORD"
    )]
    SaslCredentialsMissing {
        /// The protocol asked for.
        protocol: &'static str,
    },
    /// TLS files or SASL credentials given while the protocol would not use them.
    #[error("{what} is set but --kafka-security-protocol {protocol} does not use it")]
    Unused {
        /// The setting.
        what: &'static str,
        /// The protocol asked for.
        protocol: &'static str,
    },
    /// A client key without its certificate, or the other way round.
    #[error("--kafka-ssl-certificate-location and --kafka-ssl-key-location go together")]
    HalfAKeyPair,
    /// Registry basic auth with one half missing.
    #[error("--schema-registry-username and SCHEMA_REGISTRY_PASSWORD go together")]
    RegistryCredentialsHalf,
}

impl SettingsError {
    /// Stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            SettingsError::SaslCredentialsMissing { .. } => "SETTINGS_SASL_CREDENTIALS_MISSING",
            SettingsError::Unused { .. } => "SETTINGS_UNUSED",
            SettingsError::HalfAKeyPair => "SETTINGS_HALF_A_KEY_PAIR",
            SettingsError::RegistryCredentialsHalf => "SETTINGS_REGISTRY_CREDENTIALS_HALF",
        }
    }

    /// Settings do not fix themselves.
    pub fn retryable(&self) -> bool {
        false
    }
}

/// How Kafka clients connect and log in; applied to every client the runtime builds (the
/// stage's consumer and producer, the connector's producer) and `pipelinectl`'s. Global, so
/// that `pipelinectl` takes them before or after its command.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct KafkaSecurity {
    /// Kafka security protocol: plaintext, ssl (TLS, mutual with a client certificate),
    /// sasl_plaintext, or sasl_ssl (SASL login over TLS).
    #[arg(
        long,
        global = true,
        env = "KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value_t = SecurityProtocol::Plaintext
    )]
    pub kafka_security_protocol: SecurityProtocol,
    /// SASL mechanism with a sasl_* protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (what
    /// Strimzi's `scram-sha-512` KafkaUsers use).
    #[arg(
        long,
        global = true,
        env = "KAFKA_SASL_MECHANISM",
        value_enum,
        ignore_case = true,
        default_value_t = SaslMechanism::ScramSha512
    )]
    pub kafka_sasl_mechanism: SaslMechanism,
    /// SASL user name (a Strimzi KafkaUser's name).
    #[arg(long, global = true, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password. Set it through the environment (a Kubernetes Secret): a flag's value
    /// shows in the process list. Never printed or logged.
    #[arg(
        long,
        global = true,
        env = "KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub kafka_sasl_password: Option<Secret>,
    /// CA certificate file (PEM) that signed the brokers' certificates, e.g. Strimzi's
    /// `<cluster>-cluster-ca-cert` `ca.crt`; the system's CAs when unset.
    #[arg(long, global = true, env = "KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<PathBuf>,
    /// Client certificate file (PEM) for mutual TLS, e.g. a Strimzi `tls` user's `user.crt`.
    #[arg(long, global = true, env = "KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub kafka_ssl_certificate_location: Option<PathBuf>,
    /// Client private key file (PEM) for mutual TLS, e.g. a Strimzi `tls` user's `user.key`.
    #[arg(long, global = true, env = "KAFKA_SSL_KEY_LOCATION")]
    pub kafka_ssl_key_location: Option<PathBuf>,
    /// Password of an encrypted client key. Never printed or logged.
    #[arg(
        long,
        global = true,
        env = "KAFKA_SSL_KEY_PASSWORD",
        hide_env_values = true
    )]
    pub kafka_ssl_key_password: Option<Secret>,
}

impl KafkaSecurity {
    /// SASL login with `mechanism` as `user`.
    pub fn sasl(
        protocol: SecurityProtocol,
        mechanism: SaslMechanism,
        user: &str,
        password: &str,
    ) -> KafkaSecurity {
        KafkaSecurity {
            kafka_security_protocol: protocol,
            kafka_sasl_mechanism: mechanism,
            kafka_sasl_username: Some(user.to_owned()),
            kafka_sasl_password: Some(password.into()),
            ..KafkaSecurity::default()
        }
    }

    /// Check the settings fit together (called before any client is built).
    pub fn check(&self) -> Result<(), SettingsError> {
        let protocol = self.kafka_security_protocol;
        let name = protocol.as_str();
        if protocol.sasl() {
            if self
                .kafka_sasl_username
                .as_deref()
                .is_none_or(str::is_empty)
                || self.kafka_sasl_password.is_none()
            {
                return Err(SettingsError::SaslCredentialsMissing { protocol: name });
            }
        } else if self.kafka_sasl_username.is_some() || self.kafka_sasl_password.is_some() {
            return Err(SettingsError::Unused {
                what: "a SASL user name or password",
                protocol: name,
            });
        }
        let tls_files = self.kafka_ssl_ca_location.is_some()
            || self.kafka_ssl_certificate_location.is_some()
            || self.kafka_ssl_key_location.is_some()
            || self.kafka_ssl_key_password.is_some();
        if tls_files && !protocol.tls() {
            return Err(SettingsError::Unused {
                what: "a TLS file or key password",
                protocol: name,
            });
        }
        if self.kafka_ssl_certificate_location.is_some() != self.kafka_ssl_key_location.is_some() {
            return Err(SettingsError::HalfAKeyPair);
        }
        Ok(())
    }

    /// The librdkafka properties these settings stand for (secrets included: hand them to a
    /// client, never to a log).
    pub fn properties(&self) -> Result<Vec<(&'static str, String)>, SettingsError> {
        self.check()?;
        let protocol = self.kafka_security_protocol;
        let mut props = vec![("security.protocol", protocol.as_str().to_owned())];
        if protocol.sasl() {
            props.push((
                "sasl.mechanism",
                self.kafka_sasl_mechanism.as_str().to_owned(),
            ));
            if let Some(user) = &self.kafka_sasl_username {
                props.push(("sasl.username", user.clone()));
            }
            if let Some(password) = &self.kafka_sasl_password {
                props.push(("sasl.password", password.expose().to_owned()));
            }
        }
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        if let Some(ca) = &self.kafka_ssl_ca_location {
            props.push(("ssl.ca.location", path(ca)));
        }
        if let Some(cert) = &self.kafka_ssl_certificate_location {
            props.push(("ssl.certificate.location", path(cert)));
        }
        if let Some(key) = &self.kafka_ssl_key_location {
            props.push(("ssl.key.location", path(key)));
        }
        if let Some(password) = &self.kafka_ssl_key_password {
            props.push(("ssl.key.password", password.expose().to_owned()));
        }
        Ok(props)
    }

    /// Set these settings on `config`.
    pub fn apply(&self, config: &mut rdkafka::ClientConfig) -> Result<(), SettingsError> {
        for (key, value) in self.properties()? {
            config.set(key, value);
        }
        Ok(())
    }
}

/// How the schema registry client logs in (HTTP basic auth; none when no user is set).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct RegistryAuth {
    /// Schema registry basic-auth user name.
    #[arg(long, env = "SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    /// Schema registry basic-auth password. Set it through the environment (a Kubernetes
    /// Secret). Never printed or logged.
    #[arg(long, env = "SCHEMA_REGISTRY_PASSWORD", hide_env_values = true)]
    pub schema_registry_password: Option<Secret>,
}

impl RegistryAuth {
    /// `url` without credentials, and the basic auth to use: the flags' or else the URL's
    /// own `user:password@` (percent-decoded). Only the clean URL goes to the client, so no
    /// error message or log line built from the URL can carry the password.
    pub fn resolve(&self, url: &str) -> Result<(String, Option<(String, String)>), SettingsError> {
        let (clean, from_url) = split_userinfo(url);
        Ok((clean, self.basic_auth()?.or(from_url)))
    }

    /// The `(user, password)` pair for [`envelope::RegistryClient::new`], if set.
    pub fn basic_auth(&self) -> Result<Option<(String, String)>, SettingsError> {
        match (
            &self.schema_registry_username,
            &self.schema_registry_password,
        ) {
            (Some(user), Some(password)) => Ok(Some((user.clone(), password.expose().to_owned()))),
            (None, None) => Ok(None),
            _ => Err(SettingsError::RegistryCredentialsHalf),
        }
    }
}

/// `scheme://user:password@host/path` → (`scheme://host/path`, `(user, password)`).
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None);
    };
    let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    (
        format!("{scheme}://{}", &rest[at + 1..]),
        Some((percent_decode(user), percent_decode(password))),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    const PASSWORD: &str = "pw-3b1f9c-do-not-log";

    fn parse(args: &[&str]) -> Result<RuntimeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("stage").chain(args.iter().copied())).map(|c| c.runtime)
    }

    fn props(k: &KafkaSecurity) -> Vec<(&'static str, String)> {
        k.properties().expect("valid settings")
    }

    #[test]
    fn plaintext_by_default() {
        let args = parse(&[]).expect("defaults");
        assert_eq!(args.kafka, KafkaSecurity::default());
        assert_eq!(
            props(&args.kafka),
            vec![("security.protocol", "plaintext".to_owned())]
        );
        assert_eq!(args.registry_auth.basic_auth(), Ok(None));
    }

    #[test]
    fn scram_over_tls_maps_to_librdkafka_properties() {
        let args = parse(&[
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-sasl-mechanism",
            "scram-sha-512",
            "--kafka-sasl-username",
            "bronze-processor",
            "--kafka-sasl-password",
            PASSWORD,
            "--kafka-ssl-ca-location",
            "/etc/kafka-ca/ca.crt",
        ])
        .expect("flags");
        assert_eq!(
            props(&args.kafka),
            vec![
                ("security.protocol", "sasl_ssl".to_owned()),
                ("sasl.mechanism", "SCRAM-SHA-512".to_owned()),
                ("sasl.username", "bronze-processor".to_owned()),
                ("sasl.password", PASSWORD.to_owned()),
                ("ssl.ca.location", "/etc/kafka-ca/ca.crt".to_owned()),
            ]
        );
    }

    #[test]
    fn every_mechanism_and_mutual_tls() {
        for (flag, want) in [
            ("PLAIN", "PLAIN"),
            ("SCRAM-SHA-256", "SCRAM-SHA-256"),
            ("SCRAM-SHA-512", "SCRAM-SHA-512"),
        ] {
            let args = parse(&[
                "--kafka-security-protocol",
                "sasl_plaintext",
                "--kafka-sasl-mechanism",
                flag,
                "--kafka-sasl-username",
                "u",
                "--kafka-sasl-password",
                "p",
            ])
            .expect("flags");
            assert!(props(&args.kafka).contains(&("sasl.mechanism", want.to_owned())));
        }
        let mtls = parse(&[
            "--kafka-security-protocol",
            "ssl",
            "--kafka-ssl-ca-location",
            "ca.crt",
            "--kafka-ssl-certificate-location",
            "user.crt",
            "--kafka-ssl-key-location",
            "user.key",
            "--kafka-ssl-key-password",
            PASSWORD,
        ])
        .expect("flags");
        assert_eq!(
            props(&mtls.kafka),
            vec![
                ("security.protocol", "ssl".to_owned()),
                ("ssl.ca.location", "ca.crt".to_owned()),
                ("ssl.certificate.location", "user.crt".to_owned()),
                ("ssl.key.location", "user.key".to_owned()),
                ("ssl.key.password", PASSWORD.to_owned()),
            ]
        );
        assert!(parse(&["--kafka-sasl-mechanism", "GSSAPI"]).is_err());
        assert!(parse(&["--kafka-security-protocol", "tls"]).is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_a_code() {
        let sasl = |user: Option<&str>, password: Option<&str>| KafkaSecurity {
            kafka_security_protocol: SecurityProtocol::SaslSsl,
            kafka_sasl_username: user.map(str::to_owned),
            kafka_sasl_password: password.map(Secret::from),
            ..KafkaSecurity::default()
        };
        let missing = sasl(Some("u"), None).check().expect_err("no password");
        assert_eq!(missing.code(), "SETTINGS_SASL_CREDENTIALS_MISSING");
        assert!(sasl(None, Some("p")).check().is_err());
        assert!(sasl(Some(""), Some("p")).check().is_err());
        let unused = KafkaSecurity {
            kafka_sasl_username: Some("u".into()),
            ..KafkaSecurity::default()
        };
        assert_eq!(unused.check().map_err(|e| e.code()), Err("SETTINGS_UNUSED"));
        let half = KafkaSecurity {
            kafka_security_protocol: SecurityProtocol::Ssl,
            kafka_ssl_key_location: Some("user.key".into()),
            ..KafkaSecurity::default()
        };
        assert_eq!(half.check(), Err(SettingsError::HalfAKeyPair));
        let ca_on_plaintext = KafkaSecurity {
            kafka_ssl_ca_location: Some("ca.crt".into()),
            ..KafkaSecurity::default()
        };
        assert!(ca_on_plaintext.properties().is_err());
        let registry = RegistryAuth {
            schema_registry_username: Some("u".into()),
            schema_registry_password: None,
        };
        assert_eq!(
            registry.basic_auth().map_err(|e| e.code()),
            Err("SETTINGS_REGISTRY_CREDENTIALS_HALF")
        );
    }

    #[test]
    fn registry_credentials_in_the_url_move_to_basic_auth() {
        let none = RegistryAuth::default();
        assert_eq!(
            none.resolve("https://adpipe:p%40ss%3Aword@registry:8081/api?x=1"),
            Ok((
                "https://registry:8081/api?x=1".to_owned(),
                Some(("adpipe".to_owned(), "p@ss:word".to_owned()))
            ))
        );
        assert_eq!(
            none.resolve("http://registry:8081"),
            Ok(("http://registry:8081".to_owned(), None))
        );
        let flags = RegistryAuth {
            schema_registry_username: Some("u".into()),
            schema_registry_password: Some("p".into()),
        };
        assert_eq!(
            flags.resolve("http://x:y@registry/"),
            Ok((
                "http://registry/".to_owned(),
                Some(("u".to_owned(), "p".to_owned()))
            ))
        );
    }

    #[test]
    fn passwords_never_show_in_debug_or_help() {
        let args = parse(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password",
            PASSWORD,
            "--kafka-ssl-key-password",
            PASSWORD,
            "--schema-registry-username",
            "r",
            "--schema-registry-password",
            PASSWORD,
        ])
        .expect("flags");
        let debug = format!("{args:?} {args:#?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("Secret(***)"));
        assert_eq!(
            args.registry_auth.basic_auth(),
            Ok(Some(("r".to_owned(), PASSWORD.to_owned())))
        );
        // clap's help never shows an environment value of a secret.
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(help.contains("KAFKA_SASL_PASSWORD"));
        assert!(!help.contains(PASSWORD));
    }

    #[test]
    fn librdkafka_takes_the_settings() {
        // Built with rdkafka's `ssl` feature: a client with TLS and SCRAM settings is
        // created (without it librdkafka refuses `sasl_ssl` and SCRAM at creation).
        for (protocol, mechanism) in [
            (SecurityProtocol::SaslSsl, SaslMechanism::ScramSha512),
            (SecurityProtocol::SaslSsl, SaslMechanism::ScramSha256),
            (SecurityProtocol::SaslPlaintext, SaslMechanism::Plain),
        ] {
            let mut c = rdkafka::ClientConfig::new();
            c.set("bootstrap.servers", "127.0.0.1:1");
            KafkaSecurity::sasl(protocol, mechanism, "u", PASSWORD)
                .apply(&mut c)
                .expect("valid");
            let producer: Result<rdkafka::producer::BaseProducer, _> = c.create();
            assert!(
                producer.is_ok(),
                "{protocol:?} {mechanism:?}: {:?}",
                producer.err()
            );
        }
    }
}
