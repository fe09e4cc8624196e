//! Idempotency by `event_id` (and by keys a stage chooses, see [`key_id`]): Redis
//! (`SET NX EX`) when configured, a bounded in-memory set otherwise. An id is marked only
//! after its outputs were acknowledged; until then it is *pending*, which this process also
//! counts as seen. A Redis outage degrades to at-least-once (the event is processed again)
//! with a warning and a metric.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
    time::Duration,
};

use envelope::Id;

/// Where processed ids are remembered, plus the ids this process has in flight.
#[derive(Debug)]
pub struct Dedupe {
    store: Store,
    pending: Mutex<HashSet<Id>>,
}

/// The id of a stage-level idempotency key (e.g. bronze's `request_id` and row): a UUID v5 in
/// a namespace of its own, so it never equals an event id.
pub fn key_id(key: &str) -> Id {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6164_7069_7065_2d6b_6579_2d6e_7330_0001);
    Id(uuid::Uuid::new_v5(&NAMESPACE, key.as_bytes()))
}

/// The backing store.
#[derive(Debug)]
enum Store {
    /// In this process, the most recent `capacity` ids.
    Memory(Mutex<Recent>),
    /// In Redis under `<prefix>:<event_id>` with a TTL.
    Redis {
        /// Connection (reconnects by itself).
        conn: redis::aio::ConnectionManager,
        /// Key prefix, e.g. `adpipe:dedupe:silver-processor`.
        prefix: String,
        /// Time to live of a key.
        ttl: Duration,
    },
}

/// The most recent ids, bounded.
#[derive(Debug, Default)]
struct Recent {
    capacity: usize,
    order: VecDeque<Id>,
    ids: HashSet<Id>,
}

/// The dedupe store could not answer (the caller proceeds at-least-once).
#[derive(Debug, thiserror::Error)]
#[error("dedupe store unavailable: {0}")]
pub struct DedupeUnavailable(pub String);

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

impl Dedupe {
    fn with(store: Store) -> Dedupe {
        Dedupe {
            store,
            pending: Mutex::new(HashSet::new()),
        }
    }

    /// An in-memory store of at most `capacity` ids.
    pub fn memory(capacity: usize) -> Dedupe {
        Dedupe::with(Store::Memory(Mutex::new(Recent {
            capacity: capacity.max(1),
            ..Recent::default()
        })))
    }

    /// Note `id` as in flight: [`Dedupe::seen`] reports it until [`Dedupe::mark`] stores it.
    pub fn reserve(&self, id: Id) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
    }

    fn pending(&self, id: Id) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
    }

    /// Forget that `id` is in flight (its event failed).
    pub fn release(&self, id: Id) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// A Redis store.
    pub async fn redis(url: &str, prefix: String, ttl: Duration) -> anyhow::Result<Dedupe> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| anyhow::anyhow!("Redis at {url} did not answer within 5 s"))??;
        Ok(Dedupe::with(Store::Redis { conn, prefix, ttl }))
    }

    /// Whether `id` was already processed (or is in flight in this process).
    pub async fn seen(&self, id: Id) -> Result<bool, DedupeUnavailable> {
        if self.pending(id) {
            return Ok(true);
        }
        match &self.store {
            Store::Memory(m) => Ok(lock(m).ids.contains(&id)),
            Store::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let key = format!("{prefix}:{id}");
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(&key);
                let fut = cmd.query_async::<i64>(&mut conn);
                match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
                    Ok(Ok(n)) => Ok(n > 0),
                    Ok(Err(e)) => Err(DedupeUnavailable(e.to_string())),
                    Err(_) => Err(DedupeUnavailable("timed out".to_owned())),
                }
            }
        }
    }

    /// Remember `id` as processed (and no longer in flight).
    pub async fn mark(&self, id: Id) -> Result<(), DedupeUnavailable> {
        let stored = self.store(id).await;
        self.release(id);
        stored
    }

    async fn store(&self, id: Id) -> Result<(), DedupeUnavailable> {
        match &self.store {
            Store::Memory(m) => {
                let mut r = lock(m);
                if r.ids.insert(id) {
                    r.order.push_back(id);
                    if r.order.len() > r.capacity
                        && let Some(old) = r.order.pop_front()
                    {
                        r.ids.remove(&old);
                    }
                }
                Ok(())
            }
            Store::Redis { conn, prefix, ttl } => {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("SET");
                cmd.arg(format!("{prefix}:{id}"))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl.as_secs().max(1));
                let fut = cmd.query_async::<Option<String>>(&mut conn);
                match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(DedupeUnavailable(e.to_string())),
                    Err(_) => Err(DedupeUnavailable("timed out".to_owned())),
                }
            }
        }
    }
}

fn lock(m: &Mutex<Recent>) -> std::sync::MutexGuard<'_, Recent> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_remembers_and_forgets_the_oldest() {
        let d = Dedupe::memory(2);
        let (a, b, c) = (Id::new(), Id::new(), Id::new());
        assert!(!d.seen(a).await.expect("memory"));
        d.mark(a).await.expect("mark");
        assert!(d.seen(a).await.expect("memory"));
        d.mark(b).await.expect("mark");
        d.mark(c).await.expect("mark");
        assert!(!d.seen(a).await.expect("memory"), "evicted");
        assert!(d.seen(c).await.expect("memory"));
    }

    #[tokio::test]
    async fn a_reserved_id_is_seen_until_marked_and_after() {
        let d = Dedupe::memory(10);
        let id = key_id("req-1/0");
        assert_ne!(id, key_id("req-1/1"));
        assert!(!d.seen(id).await.expect("memory"));
        d.reserve(id);
        assert!(
            d.seen(id).await.expect("memory"),
            "in flight counts as seen"
        );
        d.mark(id).await.expect("mark");
        assert!(d.seen(id).await.expect("memory"));
        assert!(!d.pending(id), "no longer pending once stored");
    }

    #[tokio::test]
    async fn redis_store_marks_with_a_ttl() {
        let prefix = format!("adpipe:test:{}", Id::new());
        let d = Dedupe::redis("redis://127.0.0.1:6379", prefix, Duration::from_secs(60))
            .await
            .expect("Redis at 127.0.0.1:6379 is running");
        let id = Id::new();
        assert!(!d.seen(id).await.expect("redis"));
        d.mark(id).await.expect("mark");
        assert!(d.seen(id).await.expect("redis"));
        d.mark(id).await.expect("marking twice is fine");
    }
}
