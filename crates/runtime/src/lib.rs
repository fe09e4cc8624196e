//! adpipe's stage runtime: the only crate with Kafka plumbing, so a stage is business logic.
//!
//! The processing contract, per record: consume (consumer group per stage, cooperative-sticky,
//! optional static membership) → decode (Confluent wire format, schemas cached; undecodable
//! bytes go to the DLQ, never dropped) → skip an `event_id` this stage already processed
//! (Redis `SET NX EX`, or in memory) → process (order per partition, concurrency across
//! partitions, bounded queues) → retry retryable errors with exponential backoff and jitter,
//! dead-letter the rest with the original key and bytes and error headers → produce outputs
//! keyed by `org_id` with the project partitioner (idempotent producer, acks=all) and wait for
//! the acknowledgements → mark the `event_id` done → store the offset (auto-committed) →
//! on SIGTERM finish in-flight records, commit, exit 0.
//!
//! A binary's whole `main` is [`run`].

pub mod audit;
mod consumed;
pub mod dedupe;
pub mod dlq;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod processor;
pub mod runs;
pub mod settings;
pub mod testing;
mod txn;

use std::{sync::Arc, time::Duration};

pub use engine::{Health, Parts, check_broker, producer, run_stage, secure_producer};
use envelope::{Codec, RegistryClient, Source};
pub use processor::{
    Deferred, Input, Late, OutRecord, Outputs, Pending, Position, ProcessError, Processor,
    RecordHeaders, Tick,
};
pub use settings::{KafkaSecurity, RegistryAuth, RuntimeArgs, Secret};

/// What [`inputs!`] expands to refers to.
#[doc(hidden)]
pub mod __private {
    pub use envelope;
    pub use topics;
}

/// The command line of a stage binary: the runtime's settings plus the stage's own.
#[derive(Debug, clap::Parser)]
struct Cli<A: clap::Args> {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    stage: A,
}

/// Start logging on stderr: `json` for production, pretty otherwise; `RUST_LOG` filters,
/// except that tokio-postgres stays at `info` whatever it says: at `debug` it logs every
/// statement with its parameters, which hold PII (channel targets, actors' names).
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            "tokio_postgres=info"
                .parse()
                .expect("a valid filter directive"),
        );
    let _ = if format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .try_init()
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).try_init()
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown signal received");
}

/// Build the parts of a stage from its settings: registry client and codec with the output
/// schemas registered, dedupe store, metrics (the runtime's and the stage's own), health and
/// the envelope source.
pub async fn parts<P: Processor>(processor: &P, args: &RuntimeArgs) -> anyhow::Result<Parts> {
    let mut outputs = P::outputs();
    if args.run_report_secs > 0 {
        outputs.push(topics::Topic::EtlExecution);
    }
    args.kafka.check()?;
    let codec = codec_with_auth(
        args.schema_registry_url.as_deref(),
        &args.registry_auth,
        &outputs,
    )
    .await?;
    let group = P::GROUP.name();
    let dedupe = match &args.redis_url {
        Some(url) => {
            dedupe::Dedupe::redis(
                url,
                format!("{}:{group}", args.dedupe_key_prefix),
                Duration::from_secs(args.dedupe_ttl_secs),
            )
            .await?
        }
        None => dedupe::Dedupe::memory(1_000_000),
    };
    let instance = args.instance_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}:{}", host.trim(), std::process::id())
    });
    let metrics = Arc::new(metrics::Metrics::for_stage(processor, &codec, &dedupe));
    Ok(Parts {
        codec,
        metrics,
        health: Arc::new(Health::default()),
        dedupe,
        source: Source {
            service: group.to_owned(),
            instance,
        },
    })
}

/// A codec on the schema registry at `url` (default: topic-config.yaml's) with the schemas of
/// `outputs` registered.
pub async fn codec(url: Option<&str>, outputs: &[topics::Topic]) -> anyhow::Result<Arc<Codec>> {
    codec_with_auth(url, &RegistryAuth::default(), outputs).await
}

/// [`codec`] logging in to the registry as `auth` says.
pub async fn codec_with_auth(
    url: Option<&str>,
    auth: &RegistryAuth,
    outputs: &[topics::Topic],
) -> anyhow::Result<Arc<Codec>> {
    let url = url.map_or_else(
        || topics::TopicConfig::embedded().schema_registry.url.clone(),
        str::to_owned,
    );
    let (url, basic_auth) = auth.resolve(&url)?;
    let registry = RegistryClient::new(&url, basic_auth, Duration::from_secs(10))?;
    let codec = Arc::new(Codec::new(registry));
    for topic in outputs {
        codec
            .register(*topic)
            .await
            .map_err(|e| anyhow::anyhow!("registering the schema of {topic} at {url}: {e}"))?;
    }
    Ok(codec)
}

/// A stage binary's whole `main`: parse flags (runtime's and the stage's `A`; `about` is the
/// one-line description `--help` shows), start logging, build the processor with `build`,
/// serve /metrics, /healthz and /readyz, run until SIGTERM or SIGINT, exit 0; on error print
/// `<bin>: fatal: …` and exit 1.
pub fn run<P, A>(about: &'static str, build: impl FnOnce(A) -> anyhow::Result<P>)
where
    P: Processor,
    A: clap::Args + std::fmt::Debug,
{
    use clap::{CommandFactory as _, FromArgMatches as _};
    let bin = std::env::args().next().unwrap_or_default();
    let bin = bin.rsplit('/').next().unwrap_or("stage").to_owned();
    let matches = Cli::<A>::command()
        .name(&*Box::leak(bin.clone().into_boxed_str()))
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let cli = match Cli::<A>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(&cli.runtime.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async move {
                let processor = build(cli.stage)?;
                let parts = parts(&processor, &cli.runtime).await?;
                let addr = http::serve(
                    &cli.runtime.metrics_listen,
                    parts.metrics.clone(),
                    parts.health.clone(),
                )
                .await?;
                tracing::info!(%addr, "metrics, healthz and readyz");
                run_stage(processor, parts, cli.runtime, shutdown_signal()).await
            })
        });
    if let Err(err) = result {
        eprintln!("{bin}: fatal: {err:#}");
        std::process::exit(1);
    }
}
