//! connector → bronze → silver on a real Tansu broker and the project's schema registry: a
//! seeded simulator run with bad rows of every kind, where every raw row must be accounted for
//! exactly once — a silver row (passed, warned or quarantined), a bronze dead letter, a
//! dropped duplicate pull, or a report footer — and each org's rows keep their order.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use bronze::stage::{Bronze, BronzeRules};
use connector::{
    produce::{Options, produce},
    sim::{BadKind, SimConfig, Simulator},
};
use envelope::{
    Codec, Event, Id, RegistryClient, Source,
    payload::{
        audit::AuditEvent, bronze::CleanedRow, raw::RawReport, silver::ProcessedRow,
        silver::QualityVerdict,
    },
};
use rdkafka::{Message, message::OwnedMessage};
use runtime::{RuntimeArgs, dedupe::Dedupe, metrics, testing::RunningStage};
use silver::stage::{Silver, SilverRules};
use testkit::{Broker, create_stage_topics, header, read_records, wait_until};
use topics::Topic;

async fn decode_all<P: envelope::Payload>(
    codec: &Codec,
    records: &[OwnedMessage],
) -> Vec<Event<P>> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        out.push(
            codec
                .decode::<P>(r.payload().unwrap_or_default())
                .await
                .expect("decodes"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_raw_row_is_accounted_for_exactly_once_and_orgs_keep_their_order() {
    let broker = Broker::start_memory().expect("broker");
    let b = broker.bootstrap();
    create_stage_topics(
        &b,
        &[
            Topic::ConnectorDataRaw,
            Topic::BronzeDataCleaned,
            Topic::SilverDataProcessed,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("topics");

    let dir = tempfile::tempdir().expect("dir");
    let registry_url = schema_registry::spawn_local(dir.path())
        .await
        .expect("registry");
    let codec = runtime::codec(
        Some(&registry_url),
        &[
            Topic::ConnectorDataRaw,
            Topic::BronzeDataCleaned,
            Topic::SilverDataProcessed,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("registry up, schemas registered");
    let reader = Codec::new(
        RegistryClient::new(&registry_url, None, Duration::from_secs(5)).expect("client"),
    );

    // The seeded run: 4 orgs × 4 campaigns × 3 days × 3 delivery sources (+ CRM bookings on
    // the first day and DV360 footers), a quarter of the data rows bad.
    let config = SimConfig {
        seed: 7,
        orgs: 4,
        campaigns_per_org: 4,
        days: 3,
        end_date: chrono::Utc::now().date_naive(),
        bad_share: 0.25,
        ..SimConfig::default()
    };
    let counts = Simulator::counts(&config);
    let bad = |k: BadKind| counts.bad.get(&k).copied().unwrap_or(0);
    for kind in BadKind::ALL {
        assert!(bad(*kind) > 0, "the seeded run holds {} rows", kind.name());
    }
    let total = counts.rows;
    let dead = bad(BadKind::BrokenJson) + bad(BadKind::UnknownDsp);
    let duplicates = bad(BadKind::Duplicate);
    let cleaned = total - counts.footers - dead - duplicates;

    let bronze = RunningStage::start(
        Bronze::new(BronzeRules::default()),
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(100_000),
    );
    let silver = RunningStage::start(
        Silver::new(SilverRules::default()),
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(100_000),
    );
    let producer = runtime::producer(&b).expect("producer");
    let source = Source {
        service: "connector".into(),
        instance: "e2e".into(),
    };
    let options = Options {
        rate: 0.0,
        max_in_flight: 1000,
        progress_every: Duration::from_secs(5),
        expected: Some(total),
    };
    let produced = produce(
        &codec,
        &producer,
        &source,
        Simulator::new(config.clone()),
        &options,
        std::future::pending(),
    )
    .await
    .expect("connector produced");
    assert_eq!(produced.acked, total);

    // Done when silver has processed every row bronze passed on.
    wait_until(
        Duration::from_secs(120),
        "silver to process every cleaned row",
        || {
            let (bronze_done, silver_done) = (
                bronze.metrics.total(metrics::PROCESSED)
                    + bronze.metrics.total(metrics::DEAD_LETTERED),
                silver.metrics.total(metrics::PROCESSED),
            );
            async move { bronze_done == total && silver_done == cleaned }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: bronze {} processed + {} dead of {total}, silver {} of {cleaned}",
            bronze.metrics.total(metrics::PROCESSED),
            bronze.metrics.total(metrics::DEAD_LETTERED),
            silver.metrics.total(metrics::PROCESSED)
        )
    });
    bronze.stop().await.expect("bronze stops cleanly");
    silver.stop().await.expect("silver stops cleanly");

    let within = Duration::from_secs(60);
    let raw_records =
        read_records(&b, Topic::ConnectorDataRaw.name(), total as usize, within).expect("raw");
    let raw: Vec<Event<RawReport>> = decode_all(&reader, &raw_records).await;
    assert_eq!(raw.len() as u64, total);
    let dlq_records =
        read_records(&b, &Topic::ConnectorDataRaw.dlq(), dead as usize, within).expect("dlq");
    let cleaned_records = read_records(
        &b,
        Topic::BronzeDataCleaned.name(),
        cleaned as usize,
        within,
    )
    .expect("cleaned");
    let silver_records = read_records(
        &b,
        Topic::SilverDataProcessed.name(),
        cleaned as usize,
        within,
    )
    .expect("silver");
    let cleaned_events: Vec<Event<CleanedRow>> = decode_all(&reader, &cleaned_records).await;
    let silver_events: Vec<Event<ProcessedRow>> = decode_all(&reader, &silver_records).await;
    assert_eq!(silver_events.len() as u64, cleaned);

    // Dead letters: the original raw bytes, with bronze's reason.
    let mut dead_ids = HashSet::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for d in &dlq_records {
        let e: Event<RawReport> = reader
            .decode(d.payload().unwrap_or_default())
            .await
            .expect("a dead letter holds the original raw event");
        dead_ids.insert(e.metadata.event_id);
        let code = header(d, "dlq.error.code").unwrap_or_default();
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(dead_ids.len() as u64, dead);
    assert_eq!(
        codes,
        BTreeMap::from([
            ("BRONZE_MALFORMED_JSON".to_owned(), bad(BadKind::BrokenJson)),
            (
                "BRONZE_UNKNOWN_DSP_TYPE".to_owned(),
                bad(BadKind::UnknownDsp)
            ),
        ])
    );

    // Silver rows, traced back to their raw rows through bronze.
    let raw_of_cleaned: HashMap<Id, Id> = cleaned_events
        .iter()
        .map(|c| (c.metadata.event_id, c.payload.ingestion.raw_event_id))
        .collect();
    let silver_raw: Vec<(i64, Id)> = silver_events
        .iter()
        .map(|s| {
            (
                s.metadata.org_id,
                raw_of_cleaned[&s.payload.bronze_event_id],
            )
        })
        .collect();
    let silver_ids: HashSet<Id> = silver_raw.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        silver_ids.len() as u64,
        cleaned,
        "one silver row per cleaned row"
    );
    let quarantined = silver_events
        .iter()
        .filter(|s| s.payload.quality.verdict == QualityVerdict::Quarantine)
        .count();
    assert!(
        quarantined > 0,
        "bad rows that parse are quarantined by silver"
    );

    // Dropped duplicate pulls: audited by bronze, caused by the raw copy.
    let audit_n = (duplicates as usize) + quarantined;
    let audits: Vec<Event<AuditEvent>> = decode_all(
        &reader,
        &read_records(&b, Topic::AuditEvents.name(), audit_n, within).expect("audit"),
    )
    .await;
    let dropped: HashSet<Id> = audits
        .iter()
        .filter(|a| a.payload.action == "row.duplicate_dropped")
        .filter_map(|a| a.metadata.causation_id)
        .collect();
    assert_eq!(dropped.len() as u64, duplicates);
    assert_eq!(
        audits
            .iter()
            .filter(|a| a.payload.action == "row.quarantined")
            .count(),
        quarantined
    );

    // Every raw row exactly once: silver row, dead letter, dropped duplicate, or a footer.
    assert!(silver_ids.is_disjoint(&dead_ids) && silver_ids.is_disjoint(&dropped));
    assert!(dead_ids.is_disjoint(&dropped));
    let rest: Vec<&Event<RawReport>> = raw
        .iter()
        .filter(|r| {
            let id = r.metadata.event_id;
            !silver_ids.contains(&id) && !dead_ids.contains(&id) && !dropped.contains(&id)
        })
        .collect();
    assert_eq!(rest.len() as u64, counts.footers);
    assert!(rest.iter().all(|r| {
        r.payload.dsp_type == "dv360"
            && bronze::stage::parse(
                envelope::payload::common::DspType::Dv360,
                &r.payload.raw_payload,
            ) == Ok(bronze::stage::Parsed::Footer)
    }));

    // Per-org order: silver's rows of an org come in the order the connector sent them.
    let mut raw_order: HashMap<i64, Vec<Id>> = HashMap::new();
    for r in &raw {
        if silver_ids.contains(&r.metadata.event_id) {
            raw_order
                .entry(r.metadata.org_id)
                .or_default()
                .push(r.metadata.event_id);
        }
    }
    let mut silver_order: HashMap<i64, Vec<Id>> = HashMap::new();
    for (org, id) in silver_raw {
        silver_order.entry(org).or_default().push(id);
    }
    assert_eq!(silver_order.len(), config.orgs as usize);
    assert_eq!(silver_order, raw_order);
}
