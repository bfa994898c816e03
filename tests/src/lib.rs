//! Support for Gatehouse's cross-component tests: real services started per test on loopback
//! (a private `redis-server` now; the Kubernetes API emulator and a fake GitHub follow).
//!
//! Nothing in here is used by production code; only this crate's own tests depend on it, so no
//! crate depends on it in a cycle.

pub mod redis_server;

pub use redis_server::{RedisOptions, RedisServer, RedisServerError};
