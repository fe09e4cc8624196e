//! `connector`: produces `connector.data.raw` from the report simulator (default) or from
//! report files (`--file`), with progress on stderr and totals at the end. The simulator
//! first publishes, per pass, the bookings and in-app channels of what it simulates on
//! `config.changes` (`--publish-config`, on by default).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use clap::Parser;
use config_log::{Publisher, ReadOptions};
use connector::{
    args::Args,
    config,
    files::{self, FileSource},
    produce::{Options, Totals, produce},
    sim::{SimConfig, Simulator},
};
use envelope::{
    Codec, Source,
    payload::common::{Actor, ActorType},
};
use rdkafka::producer::FutureProducer;
use topics::Topic;

async fn run(args: Args) -> anyhow::Result<()> {
    let simulating = args.files.is_empty();
    let publish_config = simulating && args.publish_config;
    let mut registered = vec![Topic::ConnectorDataRaw];
    if publish_config {
        registered.extend([Topic::ConfigChanges, Topic::AuditEvents]);
    }
    let codec: Arc<Codec> = runtime::codec_with_auth(
        args.schema_registry_url.as_deref(),
        &args.registry_auth,
        &registered,
    )
    .await?;
    // A refused login or an untrusted certificate fails here, with the settings to check,
    // rather than as each row's message timeout.
    let wait = Duration::from_secs(args.broker_wait_secs.max(1));
    runtime::check_broker(&args.bootstrap_servers, &args.kafka, wait).await?;
    let producer: FutureProducer = runtime::secure_producer(&args.bootstrap_servers, &args.kafka)?;
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let source = Source {
        service: "connector".to_owned(),
        instance: format!("{}:{}", host.trim(), std::process::id()),
    };
    let today = Utc::now().date_naive();
    let options = |expected| Options {
        rate: args.rate,
        max_in_flight: args.max_in_flight,
        progress_every: Duration::from_secs(args.progress_secs.max(1)),
        expected,
    };
    // Ctrl-C: stop after the rows in flight (of whichever pass is running).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupted: waiting for rows in flight, then stopping");
        let _ = stop_tx.send(true);
    });
    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let totals = if simulating {
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
        tracing::info!(
            topic = Topic::ConnectorDataRaw.name(),
            rows_per_pass = per_pass,
            passes = if args.passes == 0 {
                "unbounded".to_owned()
            } else {
                args.passes.to_string()
            },
            publish_config,
            "connector simulating"
        );
        let publisher = Publisher::new(
            producer.clone(),
            codec.clone(),
            source.clone(),
            Actor {
                actor_type: ActorType::Service,
                actor_id: "connector".to_owned(),
                display_name: None,
            },
        );
        let read = ReadOptions::new(&args.bootstrap_servers).secured(&args.kafka);
        let mut totals = Totals::default();
        let mut pass = 0;
        while (args.passes == 0 || pass < args.passes) && !*stop_rx.borrow() {
            let sim = SimConfig {
                seed: base.seed.wrapping_add(pass),
                ..base.clone()
            };
            if publish_config {
                let c = config::publish(&publisher, &codec, &read, &sim).await?;
                eprintln!(
                    "connector: pass {pass}: {} config changes published to {} ({} already current)",
                    c.published,
                    Topic::ConfigChanges.name(),
                    c.unchanged
                );
            }
            let t = produce(
                &codec,
                &producer,
                &source,
                Simulator::new(sim),
                &options(Some(per_pass)),
                stopped(),
            )
            .await?;
            totals.acked += t.acked;
            totals.sent += t.sent;
            totals.footers += t.footers;
            totals.elapsed += t.elapsed;
            for (kind, n) in t.bad {
                *totals.bad.entry(kind).or_default() += n;
            }
            pass += 1;
        }
        totals
    } else {
        let file_source = FileSource {
            org_id: args.file_org,
            dsp_type: args.file_dsp.clone(),
            report_date: args.file_date.unwrap_or(today),
        };
        let mut rows = Vec::new();
        for path in &args.files {
            rows.extend(files::read(path, &file_source)?);
        }
        let n = rows.len() as u64;
        tracing::info!(
            topic = Topic::ConnectorDataRaw.name(),
            rows = n,
            "connector producing"
        );
        produce(
            &codec,
            &producer,
            &source,
            rows.into_iter(),
            &options(Some(n)),
            stopped(),
        )
        .await?
    };
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
