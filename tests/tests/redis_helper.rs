//! The private-Redis helper works: each test gets its own server, data written through the real
//! `redis` client is there, servers do not share data, and dropping the handle stops the server.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tests::{RedisOptions, RedisServer};
use redis::AsyncTypedCommands;

async fn connect(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_test_gets_its_own_redis_on_a_free_loopback_port() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.port(), b.port());

    let mut conn_a = connect(&a).await;
    let id = conn_a
        .xadd("{gatehouse}:events", "*", &[("delivery", "d-1")])
        .await
        .unwrap();
    assert!(id.is_some());
    assert_eq!(conn_a.xlen("{gatehouse}:events").await.unwrap(), 1);

    let mut conn_b = connect(&b).await;
    assert_eq!(conn_b.xlen("{gatehouse}:events").await.unwrap(), 0);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let server = RedisServer::start().unwrap();
    let port = server.port();
    assert!(server.is_up());
    drop(server);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "redis-server still listens on {port} after drop"
    );
}

#[tokio::test]
async fn append_only_data_survives_a_crash_and_restart() {
    let mut server = RedisServer::start_with(RedisOptions {
        append_only: true,
        ..Default::default()
    })
    .unwrap();
    {
        let mut conn = connect(&server).await;
        conn.set("kept", "yes").await.unwrap();
    }
    server.stop().unwrap();
    assert!(!server.is_up());
    server.restart().unwrap();
    let mut conn = connect(&server).await;
    assert_eq!(conn.get("kept").await.unwrap().as_deref(), Some("yes"));
}
