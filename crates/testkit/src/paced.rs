//! A steady stream of records for fault tests: one send every `pace` until told to stop,
//! without waiting for acknowledgements (sends queue in librdkafka while the broker is away
//! and are retried), each send's queueing and acknowledgement times kept so a test can tell
//! what was sent before, during and after an outage.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::producer::{FutureProducer, FutureRecord};

/// One record to send.
#[derive(Debug, Clone)]
pub struct Paced {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
}

/// One send: the id the test gave it, when it was handed to the producer, and when (and
/// whether) the broker acknowledged it.
#[derive(Debug, Clone)]
pub struct Sent<T> {
    /// The test's id of the record (e.g. its event id).
    pub id: T,
    /// Handed to the producer.
    pub queued: Instant,
    /// Acknowledged (or failed).
    pub acked: Instant,
    /// The acknowledgement, or the producer's error.
    pub result: Result<(), String>,
}

/// Send `next(i)` for i = 0, 1, … one every `pace` until `stop`, counting sends in `queued`;
/// then wait for every acknowledgement and return the sends in order.
pub async fn produce_paced<T>(
    producer: FutureProducer,
    pace: Duration,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    mut next: impl FnMut(usize) -> (T, Paced),
) -> Vec<Sent<T>> {
    let mut tick = tokio::time::interval(pace);
    let mut deliveries = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let (id, r) = next(i);
        i += 1;
        let record = FutureRecord::to(&r.topic)
            .partition(r.partition)
            .key(&r.key)
            .payload(&r.value);
        let at = Instant::now();
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("the producer queues the record");
        queued.fetch_add(1, Ordering::SeqCst);
        deliveries.push(async move {
            let result = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("the delivery was cancelled".to_owned()),
            };
            Sent {
                id,
                queued: at,
                acked: Instant::now(),
                result,
            }
        });
    }
    futures::future::join_all(deliveries).await
}
