//! Idempotency by `event_id` (and by keys a stage chooses, see [`key_id`]): Redis sets
//! bucketed by time when configured, a bounded in-memory set otherwise. An id is marked only
//! after its outputs were acknowledged; until then it is *pending*, which this process also
//! counts as seen. Lookups and marks take batches (one pipelined Redis round trip each), and
//! the ids this process marked are also kept in a bounded local set in front of Redis. A
//! Redis outage degrades to at-least-once (the event is processed again) with a warning and
//! a metric.

use std::{
    collections::{HashSet, VecDeque},
    hash::{BuildHasher, Hasher},
    sync::Mutex,
    time::Duration,
};

use envelope::Id;

/// Where processed ids are remembered, plus the ids this process has in flight.
#[derive(Debug)]
pub struct Dedupe {
    store: Store,
    /// Ids marked by this process, most recent first out of the window last: the whole store
    /// in memory mode, a cache in front of Redis otherwise.
    recent: Mutex<Recent>,
    pending: Mutex<Ids>,
    /// Lookup round trips to the store (see [`crate::metrics::DEDUPE_LOOKUPS`]).
    lookups: prometheus_client::metrics::counter::Counter,
}

/// A set of ids, hashed with [`IdHashing`].
type Ids = HashSet<Id, IdHashing>;

/// How the in-process sets hash ids: every record is looked up, reserved and marked, several
/// set operations each, and SipHash over the 16 bytes was most of their cost. Ids are UUIDs
/// whose bits are random or SHA-1 output, so folding their two halves with a multiply (and a
/// per-process random seed) spreads them as well.
#[derive(Debug, Clone)]
struct IdHashing {
    seed: u64,
}

impl Default for IdHashing {
    fn default() -> Self {
        IdHashing {
            seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        }
    }
}

impl BuildHasher for IdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.seed)
    }
}

/// See [`IdHashing`].
struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, word: u64) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let product = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
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
    /// Only this process's [`Recent`] set.
    Memory,
    /// In Redis: the ids marked in each time bucket of `ttl / 8` form one set,
    /// `<prefix>:<bucket>`, which expires `ttl` after its bucket ends. A batch is marked with
    /// one `SADD` and looked up with one `SMISMEMBER` per bucket of the last `ttl` (9 of
    /// them, in one script: [`LOOKUP`]), instead of one command per id.
    Redis {
        /// Connection (reconnects by itself; concurrent requests share one pipeline).
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
    ids: Ids,
}

impl Recent {
    fn insert(&mut self, id: Id) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

/// The dedupe store could not answer (the caller proceeds at-least-once).
#[derive(Debug, thiserror::Error)]
#[error("dedupe store unavailable: {0}")]
pub struct DedupeUnavailable(pub String);

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Ids marked by this process kept in front of Redis (about 4 MiB).
const REDIS_LOCAL_CACHE: usize = 65_536;

impl Dedupe {
    fn with(store: Store, capacity: usize) -> Dedupe {
        Dedupe {
            store,
            recent: Mutex::new(Recent {
                capacity: capacity.max(1),
                ..Recent::default()
            }),
            pending: Mutex::new(Ids::default()),
            lookups: Default::default(),
        }
    }

    /// The count of lookup round trips to the store (none in memory mode): a batch of ids
    /// is one. Registered as [`crate::metrics::DEDUPE_LOOKUPS`].
    pub fn lookups(&self) -> prometheus_client::metrics::counter::Counter {
        self.lookups.clone()
    }

    /// An in-memory store of at most `capacity` ids.
    pub fn memory(capacity: usize) -> Dedupe {
        Dedupe::with(Store::Memory, capacity)
    }

    /// A Redis store. A refused login or connection fails at once, with Redis's reason (the
    /// connection manager alone retries those until the timeout).
    pub async fn redis(url: &str, prefix: String, ttl: Duration) -> anyhow::Result<Dedupe> {
        let client = redis::Client::open(url)?;
        tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within 5 s"))?
        .map_err(|e| anyhow::anyhow!("Redis refused the dedupe store's connection: {e}"))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within 5 s"))??;
        Ok(Dedupe::with(
            Store::Redis { conn, prefix, ttl },
            REDIS_LOCAL_CACHE,
        ))
    }

    /// Note `id` as in flight: [`Dedupe::seen`] reports it until [`Dedupe::mark`] stores it
    /// (or [`Dedupe::release`] forgets it).
    pub fn reserve(&self, id: Id) {
        lock(&self.pending).insert(id);
    }

    /// Forget that `id` is in flight (its event failed).
    pub fn release(&self, id: Id) {
        lock(&self.pending).remove(&id);
    }

    /// Whether this process has `id` in flight or marked it done (no store round trip).
    pub fn seen_locally(&self, id: Id) -> bool {
        lock(&self.pending).contains(&id) || lock(&self.recent).ids.contains(&id)
    }

    /// Whether `id` was already processed (or is in flight in this process).
    pub async fn seen(&self, id: Id) -> Result<bool, DedupeUnavailable> {
        Ok(self.seen_many(&[id]).await?[0])
    }

    /// For each id, whether it was already processed (or is in flight in this process): the
    /// ids not known locally are looked up in one round trip.
    pub async fn seen_many(&self, ids: &[Id]) -> Result<Vec<bool>, DedupeUnavailable> {
        let seen = ids.iter().map(|id| self.seen_locally(*id)).collect();
        self.ask_store(ids, seen).await
    }

    /// For each id, whether it was marked done (by this process or, in Redis, any other);
    /// ids in flight here do not count, since they may yet fail: a look-ahead asks this
    /// early, and [`Dedupe::seen_locally`] on the id's turn.
    pub async fn stored_many(&self, ids: &[Id]) -> Result<Vec<bool>, DedupeUnavailable> {
        let seen = {
            let recent = lock(&self.recent);
            ids.iter().map(|id| recent.ids.contains(id)).collect()
        };
        self.ask_store(ids, seen).await
    }

    /// `seen`, with the ids it does not know yet looked up in the store in one round trip.
    async fn ask_store(
        &self,
        ids: &[Id],
        mut seen: Vec<bool>,
    ) -> Result<Vec<bool>, DedupeUnavailable> {
        let Store::Redis { conn, prefix, ttl } = &self.store else {
            return Ok(seen);
        };
        let ask: Vec<usize> = (0..ids.len()).filter(|i| !seen[*i]).collect();
        if ask.is_empty() {
            return Ok(seen);
        }
        let mut lookup = LOOKUP.prepare_invoke();
        for bucket in Buckets::of(*ttl).recent() {
            lookup.key(format!("{prefix}:{bucket}"));
        }
        for i in &ask {
            lookup.arg(ids[*i].0.as_bytes().as_slice());
        }
        let mut conn = conn.clone();
        self.lookups.inc();
        let found: Vec<u8> = answer(lookup.invoke_async(&mut conn)).await?;
        if found.len() != ask.len() {
            return Err(DedupeUnavailable(format!(
                "the dedupe lookup answered {} ids for {} asked",
                found.len(),
                ask.len()
            )));
        }
        for (i, member) in ask.iter().zip(found) {
            seen[*i] |= member == b'1';
        }
        Ok(seen)
    }

    /// Remember `id` as processed (and no longer in flight).
    pub async fn mark(&self, id: Id) -> Result<(), DedupeUnavailable> {
        self.mark_many(&[id]).await
    }

    /// Remember `ids` as processed (and no longer in flight), in one round trip.
    pub async fn mark_many(&self, ids: &[Id]) -> Result<(), DedupeUnavailable> {
        if ids.is_empty() {
            return Ok(());
        }
        let stored = match &self.store {
            Store::Memory => Ok(()),
            Store::Redis { conn, prefix, ttl } => {
                let buckets = Buckets::of(*ttl);
                let key = format!("{prefix}:{}", buckets.now());
                let mut pipe = redis::pipe();
                let add = pipe.cmd("SADD").arg(&key);
                for id in ids {
                    add.arg(id.0.as_bytes().as_slice());
                }
                add.ignore();
                pipe.cmd("EXPIRE")
                    .arg(&key)
                    .arg(buckets.expire_secs())
                    .ignore();
                let mut conn = conn.clone();
                answer(pipe.query_async::<()>(&mut conn)).await
            }
        };
        // Kept locally either way: this process will not process them again while it
        // remembers them, even if Redis missed the write.
        {
            let mut recent = lock(&self.recent);
            for id in ids {
                recent.insert(*id);
            }
        }
        let mut pending = lock(&self.pending);
        for id in ids {
            pending.remove(id);
        }
        stored
    }
}

/// The time buckets of a Redis store whose ids live `ttl`.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    /// Seconds per bucket.
    len: u64,
    /// Buckets that together cover the last `ttl`.
    span: u64,
}

impl Buckets {
    const PER_TTL: u64 = 8;

    fn of(ttl: Duration) -> Buckets {
        let ttl = ttl.as_secs().max(1);
        let len = ttl.div_ceil(Self::PER_TTL).max(1);
        Buckets {
            len,
            span: ttl.div_ceil(len) + 1,
        }
    }

    /// The bucket of now.
    fn now(self) -> u64 {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        secs / self.len
    }

    /// The buckets an id marked within the last `ttl` is in, newest first.
    fn recent(self) -> impl Iterator<Item = u64> {
        let now = self.now();
        (0..self.span).map(move |back| now.saturating_sub(back))
    }

    /// A bucket set's time to live, set at each mark: the ids in it are kept at least `ttl`.
    fn expire_secs(self) -> u64 {
        self.len * self.span
    }
}

/// The lookup of a batch (`ARGV`) in every bucket set of the last `ttl` (`KEYS`), answered as
/// one string with a `1` or `0` per id: one `SMISMEMBER` per bucket, run in Redis. Asked as a
/// pipeline of the nine `SMISMEMBER`s, the answer was an integer per id and bucket, and the
/// redis crate's reply parser took 3-7 % of silver's CPU (BENCHMARKS.md).
static LOOKUP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local found = {}
for i = 1, #ARGV do found[i] = '0' end
for _, key in ipairs(KEYS) do
  local members = redis.call('SMISMEMBER', key, unpack(ARGV))
  for i = 1, #members do
    if members[i] == 1 then found[i] = '1' end
  end
end
return table.concat(found)
",
    )
});

/// A Redis answer within [`REDIS_TIMEOUT`].
async fn answer<T>(
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, DedupeUnavailable> {
    match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DedupeUnavailable(e.to_string())),
        Err(_) => Err(DedupeUnavailable("timed out".to_owned())),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
        assert!(
            !lock(&d.pending).contains(&id),
            "no longer pending once stored"
        );
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

    #[test]
    fn id_hashes_spread_over_low_and_high_bits() {
        // hashbrown picks the bucket from the low bits and a tag from the top 7.
        let hashing = IdHashing::default();
        let sequential = (0..65_536u128).map(|n| Id(uuid::Uuid::from_u128(n)));
        let v7 = (0..65_536).map(|_| Id::new());
        let keys = (0..65_536).map(|n| key_id(&format!("req-{n}/0")));
        for (what, ids) in [
            ("sequential", sequential.collect::<Vec<_>>()),
            ("v7", v7.collect()),
            ("v5 keys", keys.collect()),
        ] {
            let hashes: Vec<u64> = ids.iter().map(|id| hashing.hash_one(id)).collect();
            let low: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
            let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
            assert!(
                low.len() > 4_000,
                "{what}: {} of 4096 low buckets",
                low.len()
            );
            assert_eq!(tags.len(), 128, "{what}: top-7-bit tags");
        }
    }

    #[test]
    fn buckets_cover_the_ttl() {
        for ttl in [1, 59, 900, 86_400, 86_401] {
            let b = Buckets::of(Duration::from_secs(ttl));
            // An id marked at the start of a bucket is looked up `ttl` later in a bucket at
            // most `span - 1` further, and its set has not expired by then.
            assert!((b.span - 1) * b.len >= ttl, "{ttl}: {b:?}");
            assert!(b.expire_secs() >= ttl + b.len, "{ttl}: {b:?}");
            assert!(b.span <= Buckets::PER_TTL + 2, "{ttl}: {b:?}");
        }
    }

    #[tokio::test]
    async fn redis_lookups_and_marks_take_batches() {
        let prefix = format!("adpipe:test:{}", Id::new());
        let d = Dedupe::redis(
            "redis://127.0.0.1:6379",
            prefix.clone(),
            Duration::from_secs(60),
        )
        .await
        .expect("Redis at 127.0.0.1:6379 is running");
        let ids: Vec<Id> = (0..5).map(|_| Id::new()).collect();
        d.mark_many(&ids[..2]).await.expect("mark");
        d.reserve(ids[2]);
        assert_eq!(
            d.seen_many(&ids).await.expect("redis"),
            [true, true, true, false, false]
        );
        // A second process (no local memory) sees the marks in Redis, not the reservation.
        let other = Dedupe::redis("redis://127.0.0.1:6379", prefix, Duration::from_secs(60))
            .await
            .expect("Redis");
        assert_eq!(
            other.seen_many(&ids).await.expect("redis"),
            [true, true, false, false, false]
        );
        d.mark_many(&ids[2..]).await.expect("mark");
        assert_eq!(other.seen_many(&ids).await.expect("redis"), [true; 5]);
        assert!(lock(&d.pending).is_empty(), "marking ends the reservation");
    }
}
