//! The results consumer as the operator runs it (its default settings), against a real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_operator::keys::MasterKey;
use gatehouse_operator::results::{Consumer, Parts, ResultsConfig};
use gatehouse_tests::operator::{APP_ID, MASTER_KEY};
use gatehouse_tests::{KubeEmulator, RedisServer};

#[tokio::test]
async fn an_idle_read_with_the_default_block_waits_for_results_instead_of_failing() {
    let redis = RedisServer::start().unwrap();
    let k8s = KubeEmulator::start().await.unwrap();
    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github-app/test-app-key.pem"
    ))
    .unwrap();
    let github = Arc::new(
        gatehouse_operator::github::GitHub::new(APP_ID, &key, "http://127.0.0.1:9").unwrap(),
    );
    let config = ResultsConfig::default();
    let block = config.block;
    let mut consumer = Consumer::new(
        &redis::Client::open(redis.url()).unwrap(),
        Parts {
            client: k8s.client(),
            github,
            master_key: MasterKey::from_file_contents(MASTER_KEY).unwrap(),
            metrics: Arc::default(),
            locks: Arc::default(),
        },
        config,
    )
    .await
    .unwrap();
    // Nothing to read: the first round trims, then blocks on the group read for `block`. The
    // connection must wait that long for Redis's (empty) answer, not time out.
    let started = Instant::now();
    let stepped = consumer.step().await;
    assert!(stepped.is_ok(), "{stepped:?}");
    assert!(started.elapsed() + Duration::from_millis(100) >= block);
}
