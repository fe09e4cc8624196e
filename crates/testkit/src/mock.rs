//! librdkafka's mock cluster as the broker of fast runtime tests: the real Kafka protocol
//! (produce, idempotence, consumer groups, offset commits) served in this process, with
//! librdkafka's error injection, and nothing to install or start.

use anyhow::Context as _;
use rdkafka::{mocking::MockCluster, producer::DefaultProducerContext};

/// A mock cluster of `brokers` brokers on local ports, gone when dropped.
pub struct MockBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for MockBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBroker")
            .field("bootstrap", &self.bootstrap())
            .finish()
    }
}

impl MockBroker {
    /// Start a mock cluster.
    pub fn start(brokers: i32) -> anyhow::Result<MockBroker> {
        let cluster = MockCluster::new(brokers).context("starting librdkafka's mock cluster")?;
        Ok(MockBroker { cluster })
    }

    /// `bootstrap.servers` of the cluster.
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Create `topics` (name, partitions), replication 1 (the mock has no CreateTopics API).
    pub fn create_topics(&self, topics: &[(&str, i32)]) -> anyhow::Result<()> {
        for (name, partitions) in topics {
            self.cluster
                .create_topic(name, *partitions, 1)
                .with_context(|| format!("creating {name} on the mock cluster"))?;
        }
        Ok(())
    }

    /// Create adpipe topics with their configured partitions, each with its `.dlq` topic.
    pub fn create_stage_topics(&self, topics: &[topics::Topic]) -> anyhow::Result<()> {
        for t in topics {
            let partitions = i32::try_from(t.spec().partitions).context("partitions fit i32")?;
            self.create_topics(&[(t.name(), partitions), (&t.dlq(), partitions)])?;
        }
        Ok(())
    }

    /// The cluster, for error injection (`request_errors`, `broker_down`, ...).
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}
