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

/// A running [`produce_paced`] stream: how many sends it queued, and a way to finish it.
#[derive(Debug)]
pub struct PacedStream<T> {
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sent<T>>>,
}

impl<T: Send + 'static> PacedStream<T> {
    /// Start sending `next(i)` every `pace` with `producer`.
    pub fn start(
        producer: FutureProducer,
        pace: Duration,
        next: impl FnMut(usize) -> (T, Paced) + Send + 'static,
    ) -> PacedStream<T> {
        let (queued, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::spawn(produce_paced(
            producer,
            pace,
            queued.clone(),
            stop.clone(),
            next,
        ));
        PacedStream { queued, stop, task }
    }

    /// Sends queued so far.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Whether the stream ended (it only does when stopped, or when it panicked).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Go on until `more` sends after this call were queued (within `within`), stop, and
    /// wait up to `settle` for every acknowledgement; the sends in order. Panics if the
    /// stream stalls or a send failed.
    pub async fn finish_after(
        self,
        more: usize,
        within: Duration,
        settle: Duration,
    ) -> Vec<Sent<T>> {
        let from = self.queued();
        let queued = self.queued.clone();
        crate::wait_until(within, "sends queued before the stream stops", || {
            let n = queued.load(Ordering::SeqCst);
            async move { n >= from + more }
        })
        .await
        .expect("the paced producer goes on");
        self.stop.store(true, Ordering::SeqCst);
        let sent = tokio::time::timeout(settle, self.task)
            .await
            .expect("every send resolves")
            .expect("the paced producer's task");
        let failed: Vec<&String> = sent
            .iter()
            .filter_map(|s| s.result.as_ref().err())
            .collect();
        assert!(failed.is_empty(), "every send acknowledged: {failed:?}");
        sent
    }
}

/// Send `next(i)` for i = 0, 1, … one every `pace` until `stop`, counting sends in `queued`;
/// then wait for every acknowledgement and return the sends in order.
async fn produce_paced<T>(
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
