//! What gold's in-process tests share.

use testkit::MockBroker;
use topics::Topic;

/// librdkafka's mock cluster with gold's topics (and their DLQs); keep the cluster alive
/// while the bootstrap address is used.
pub(crate) fn mock_cluster() -> (MockBroker, String) {
    let mock = MockBroker::start(1).expect("mock cluster");
    let bootstrap = mock.bootstrap();
    mock.create_stage_topics(&[
        Topic::SilverDataProcessed,
        Topic::ConfigChanges,
        Topic::GoldDataReady,
    ])
    .expect("topics");
    (mock, bootstrap)
}
