//! `connector`: produces `connector.data.raw` from the report simulator (default) or from
//! report files (`--file`), with progress on stderr and totals at the end.

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{NaiveDate, Utc};
use clap::Parser;
use connector::{
    files::{self, FileSource},
    produce::{Options, produce},
    sim::{SimConfig, SimRow, Simulator},
};
use envelope::{Codec, Source, payload::common::DspType};
use rdkafka::producer::FutureProducer;
use topics::Topic;

/// Produces raw DSP report rows into connector.data.raw: simulated DV360, The Trade Desk,
/// Meta and CRM booking rows (with a share of bad rows of every kind), or the rows of report
/// files.
#[derive(Debug, Parser)]
#[command(name = "connector", version)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    /// Schema registry URL (defaults to topic-config.yaml's `schema_registry.url`).
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
    /// Log format: `pretty` for people, `json` for production.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    log_format: String,
    /// Simulator seed: the same flags produce the same rows.
    #[arg(long, env = "SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Simulated organisations (org ids 1..=N).
    #[arg(long, env = "SIM_ORGS", default_value_t = 5)]
    orgs: u32,
    /// Campaigns per organisation (one row each per pull).
    #[arg(long, env = "SIM_CAMPAIGNS", default_value_t = 3)]
    campaigns: u32,
    /// Report days simulated, ending at --end-date.
    #[arg(long, env = "SIM_DAYS", default_value_t = 7)]
    days: u32,
    /// Last report day (YYYY-MM-DD); today (UTC) when unset.
    #[arg(long, env = "SIM_END_DATE")]
    end_date: Option<NaiveDate>,
    /// Share of data rows made bad (0.0–1.0), spread over every kind of bad row.
    #[arg(long, env = "SIM_BAD_SHARE", default_value_t = 0.05)]
    bad_share: f64,
    /// Sources simulated, comma separated.
    #[arg(
        long,
        env = "SIM_DSPS",
        value_delimiter = ',',
        value_parser = |s: &str| s.trim().parse::<DspType>(),
        default_value = "dv360,ttd,meta,crm"
    )]
    dsps: Vec<DspType>,
    /// Passes over the simulated window, each with the next seed (new pulls); 0 = forever.
    #[arg(long, env = "SIM_PASSES", default_value_t = 1)]
    passes: u64,
    /// Rows per second; 0 = as fast as the broker takes them.
    #[arg(long, env = "SIM_RATE", default_value_t = 0.0)]
    rate: f64,
    /// Ingest these report files (JSON or .csv) instead of simulating.
    #[arg(long = "file", env = "CONNECTOR_FILES", value_delimiter = ',')]
    files: Vec<PathBuf>,
    /// With --file: the organisation the reports are for.
    #[arg(long, env = "CONNECTOR_FILE_ORG", default_value_t = 1)]
    file_org: i64,
    /// With --file: the source of the reports (dv360, ttd, meta, crm).
    #[arg(long, env = "CONNECTOR_FILE_DSP", default_value = "dv360")]
    file_dsp: String,
    /// With --file: the report day (YYYY-MM-DD); today (UTC) when unset.
    #[arg(long, env = "CONNECTOR_FILE_DATE")]
    file_date: Option<NaiveDate>,
    /// Seconds between progress lines on stderr.
    #[arg(long, env = "CONNECTOR_PROGRESS_SECS", default_value_t = 2)]
    progress_secs: u64,
    /// Rows awaiting the broker's acknowledgement at most.
    #[arg(long, env = "CONNECTOR_MAX_IN_FLIGHT", default_value_t = 10_000)]
    max_in_flight: usize,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let codec: Arc<Codec> = runtime::codec(
        args.schema_registry_url.as_deref(),
        &[Topic::ConnectorDataRaw],
    )
    .await?;
    let producer: FutureProducer = runtime::producer(&args.bootstrap_servers)?;
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let source = Source {
        service: "connector".to_owned(),
        instance: format!("{}:{}", host.trim(), std::process::id()),
    };
    let today = Utc::now().date_naive();
    let (rows, expected): (Box<dyn Iterator<Item = SimRow> + Send>, Option<u64>) =
        if args.files.is_empty() {
            let base = SimConfig {
                seed: args.seed,
                orgs: args.orgs,
                campaigns_per_org: args.campaigns,
                days: args.days,
                end_date: args.end_date.unwrap_or(today),
                bad_share: args.bad_share,
                dsps: args.dsps.clone(),
            };
            let per_pass = Simulator::new(base.clone()).total_rows();
            let passes = args.passes;
            let rows = (0..)
                .take_while(move |pass| passes == 0 || *pass < passes)
                .flat_map(move |pass| {
                    Simulator::new(SimConfig {
                        seed: base.seed.wrapping_add(pass),
                        ..base.clone()
                    })
                });
            let expected = (passes > 0).then(|| per_pass * passes);
            (Box::new(rows), expected)
        } else {
            let source = FileSource {
                org_id: args.file_org,
                dsp_type: args.file_dsp.clone(),
                report_date: args.file_date.unwrap_or(today),
            };
            let mut rows = Vec::new();
            for path in &args.files {
                rows.extend(files::read(path, &source)?);
            }
            let n = rows.len() as u64;
            (Box::new(rows.into_iter()), Some(n))
        };
    tracing::info!(
        topic = Topic::ConnectorDataRaw.name(),
        rows = expected.map_or_else(|| "unbounded".to_owned(), |n| n.to_string()),
        "connector producing"
    );

    let options = Options {
        rate: args.rate,
        max_in_flight: args.max_in_flight,
        progress_every: Duration::from_secs(args.progress_secs.max(1)),
        expected,
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupted: waiting for rows in flight, then stopping");
    };
    let totals = produce(&codec, &producer, &source, rows, &options, stop).await?;
    println!(
        "connector: {} rows produced to {} in {:.1} s ({} footers, {} bad)",
        totals.acked,
        Topic::ConnectorDataRaw.name(),
        totals.elapsed.as_secs_f64(),
        totals.footers,
        totals.bad_total()
    );
    for (kind, n) in &totals.bad {
        println!("  bad {:<16} {n}", kind.name());
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    runtime::init_tracing(&args.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(err) = result {
        eprintln!("connector: fatal: {err:#}");
        std::process::exit(1);
    }
}
