//! Support for Gatehouse's cross-component tests: real services started per test on loopback,
//! a private `redis-server` and an in-memory Kubernetes API server (the emulator); a fake GitHub
//! follows.
//!
//! Nothing in here is used by production code; only this crate's own tests depend on it, so no
//! crate depends on it in a cycle.

pub mod binaries;
pub mod github;
pub mod http;
pub mod ingest;
pub mod kube_emulator;
pub mod kube_support;
pub mod operator;
pub mod rbac;
pub mod redis_acl;
pub mod redis_server;
pub mod reports;
pub mod webhook;

pub use kube_emulator::{
    Controller, ControllerHold, Failure, JobState, KubeEmulator, Pause, RequestRecord,
};
pub use redis_server::{RedisOptions, RedisServer, RedisServerError};
