//! Codec microbenchmarks: a realistic silver row encoded and decoded in Confluent Avro wire
//! format, beside serde_json of the same value in the same run (the baseline).
//!
//! `make bench` (or `cargo bench -p envelope --bench codec`) prints each figure; the ratio
//! to serde_json is what to compare across machines.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use envelope::{
    Codec, Date, Event, Id, Money, Source,
    payload::{
        common::{DspType, EntityRef, EntityType, RowKind},
        silver::{CampaignStatus, ProcessedRow, QualityScore, QualityVerdict},
    },
};

fn sample() -> Event<ProcessedRow> {
    let money = |s: &str| s.parse::<Money>().expect("money");
    let payload = ProcessedRow {
        request_id: "dv360-456-2024-12-26-0001".into(),
        dsp_type: DspType::Dv360,
        row_kind: RowKind::Delivery,
        date: Date::ymd(2024, 12, 26).expect("date"),
        entity: EntityRef {
            entity_type: EntityType::LineItem,
            entity_id: "48213377".into(),
            name: Some("Prospecting | Desktop | EN".into()),
        },
        campaign_id: "1022334".into(),
        campaign_name: Some("Winter Sale 2024".into()),
        advertiser_id: Some("889900".into()),
        impressions: 183_442,
        clicks: 911,
        conversions: 37,
        spend: money("1234.57"),
        revenue: Some(money("1890.00")),
        currency: Some("EUR".into()),
        spend_usd: None,
        status: Some(CampaignStatus::Active),
        booking: None,
        quality: QualityScore {
            score: 95,
            completeness: 40,
            validity: 30,
            consistency: 15,
            timeliness: 10,
            verdict: QualityVerdict::Pass,
            reasons: vec!["revenue below spend".into()],
        },
        is_correction: false,
        bronze_event_id: Id::new(),
    };
    Event::new(
        456,
        Source {
            service: "silver-processor".into(),
            instance: "silver-processor-7d9f-abcde".into(),
        },
        payload,
    )
}

fn codec(c: &mut Criterion) {
    let codec = Codec::offline();
    let event = sample();
    let avro = codec.encode(&event).expect("encode");
    let json = serde_json::to_vec(&event).expect("json");
    let mut group = c.benchmark_group("silver_row");
    group.throughput(Throughput::Elements(1));

    let mut buf = Vec::with_capacity(512);
    group.bench_function("encode/avro_wire", |b| {
        b.iter(|| {
            codec
                .encode_into(black_box(&event), &mut buf)
                .expect("encode")
        })
    });
    let mut jbuf = Vec::with_capacity(1024);
    group.bench_function("encode/serde_json_baseline", |b| {
        b.iter(|| {
            jbuf.clear();
            serde_json::to_writer(&mut jbuf, black_box(&event)).expect("json")
        })
    });
    group.bench_function("decode/avro_wire", |b| {
        b.iter(|| {
            codec
                .decode_known::<ProcessedRow>(black_box(&avro))
                .expect("decode")
        })
    });
    group.bench_function("decode/serde_json_baseline", |b| {
        b.iter(|| serde_json::from_slice::<Event<ProcessedRow>>(black_box(&json)).expect("json"))
    });

    // A record written by another version of the schema: the resolution path.
    let subject = schemas::embedded()
        .for_topic("silver.data.processed")
        .expect("subject");
    let mut evolved: serde_json::Value = serde_json::from_str(&subject.json).expect("json");
    evolved["fields"][1]["type"]["fields"]
        .as_array_mut()
        .expect("payload fields")
        .push(
            serde_json::json!({"name": "added_later", "type": ["null", "string"], "default": null}),
        );
    codec
        .add_writer_schema(77, &evolved.to_string())
        .expect("schema");
    let mut old = avro.clone();
    old[1..5].copy_from_slice(&77u32.to_be_bytes());
    old.push(0);
    group.bench_function("decode/avro_wire_resolved", |b| {
        b.iter(|| {
            codec
                .decode_known::<ProcessedRow>(black_box(&old))
                .expect("decode")
        })
    });
    group.finish();
    eprintln!(
        "silver row sizes: avro wire {} bytes, json {} bytes",
        avro.len(),
        json.len()
    );
}

criterion_group!(benches, codec);
criterion_main!(benches);
