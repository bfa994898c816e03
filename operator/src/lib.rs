//! gatehouse-operator: reconciles ScanRequests into one Kubernetes Job per scanner, consumes
//! signed results from the `{gatehouse-results}:results` stream and reports them as GitHub Check Runs.
//! It accepts no HTTP from outside the cluster (metrics and health only).
//!
//! Not implemented yet: the controller, Jobs and check runs (issue 9). What exists: the pure
//! building blocks it is made of, each unit-tested.

pub mod admission;
pub mod keys;
pub mod scanners;
