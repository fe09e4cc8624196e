//! `connector`: produces `connector.data.raw` from the report simulator (default) or from
//! report files (`--file`), with progress on stderr and totals at the end.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use clap::Parser;
use connector::{
    args::Args,
    files::{self, FileSource},
    produce::{Options, produce},
    sim::{SimConfig, SimRow, Simulator},
};
use envelope::{Codec, Source};
use rdkafka::producer::FutureProducer;
use topics::Topic;

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
