//! The settings every `pipelinectl` command shares (global flags), in the library so the
//! configuration reference (`docs/configuration.md`) is generated from them.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use topics::TopicConfig;

/// Settings every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_servers: String,
    /// How the Kafka clients connect and log in (TLS, SASL): the stages' settings and
    /// environment (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`).
    #[command(flatten)]
    pub kafka: runtime::KafkaSecurity,
    /// Schema registry URL (defaults to topic-config.yaml's `schema_registry.url`).
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_URL",
        hide_env_values = true,
        global = true
    )]
    pub schema_registry_url: Option<String>,
    /// Schema registry basic auth as `user:password`.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_BASIC_AUTH",
        hide_env_values = true,
        global = true
    )]
    pub schema_registry_basic_auth: Option<String>,
    /// A topic-config.yaml to use instead of the one built in.
    #[arg(long, env = "ADPIPE_TOPIC_CONFIG", global = true)]
    pub topic_config: Option<PathBuf>,
    /// How long to wait for the broker or registry before giving up, in seconds.
    #[arg(
        long,
        env = "PIPELINECTL_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub timeout_secs: u64,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    /// The topic configuration in effect.
    pub fn config(&self) -> anyhow::Result<TopicConfig> {
        match &self.topic_config {
            Some(path) => TopicConfig::load(path).map_err(Into::into),
            None => Ok(TopicConfig::embedded().clone()),
        }
    }

    /// A Kafka client configuration for the broker: bootstrap servers, the security
    /// settings, the global timeout on sockets, and no logging of librdkafka's own (commands
    /// report failures themselves).
    pub fn kafka_config(&self) -> Result<rdkafka::ClientConfig, runtime::settings::SettingsError> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("socket.timeout.ms", self.timeout().as_millis().to_string())
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg);
        self.kafka.apply(&mut c)?;
        Ok(c)
    }

    /// The timeout for one broker or registry operation.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// A registry client for the configured URL. Credentials in the URL (`user:password@`)
    /// move to its basic auth (`--schema-registry-basic-auth` wins), as in the stages: the
    /// client, and every message naming its URL, gets the URL without them.
    pub fn registry(&self) -> anyhow::Result<envelope::RegistryClient> {
        let config = self.config()?;
        let url = self
            .schema_registry_url
            .clone()
            .unwrap_or_else(|| config.schema_registry.url.clone());
        let (url, from_url) = runtime::RegistryAuth::default().resolve(&url)?;
        let auth = match &self.schema_registry_basic_auth {
            Some(pair) => Some(
                pair.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
                    .context("--schema-registry-basic-auth must be user:password")?,
            ),
            None => from_url,
        };
        envelope::RegistryClient::new(&url, auth, self.timeout()).map_err(Into::into)
    }
}
