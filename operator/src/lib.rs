//! gatehouse-operator: reconciles ScanRequests into one hardened Kubernetes Job per scanner and
//! drives one GitHub Check Run per scanner through its life. It accepts no HTTP from outside the
//! cluster (metrics and health only).
//!
//! Pure steps ([`decide`], [`jobs`], [`checks`], [`admission`], [`scanners`]) hold the logic and
//! are unit-tested; [`controller`] is the thin async driver that talks to the API and GitHub.
//! [`agent`] is `gatehouse-agent`, the program of the scan pods (its own binary, no Kubernetes
//! client).

pub mod admission;
pub mod agent;
pub mod checks;
pub mod controller;
pub mod crd_upgrade;
pub mod decide;
pub mod github;
pub mod jobs;
pub mod keys;
pub mod locks;
pub mod metrics;
pub mod offline;
pub mod policy_status;
pub mod results;
pub mod retention;
pub mod run;
pub mod scanners;
#[cfg(test)]
mod test_support;
pub mod verdict;
#[cfg(test)]
mod verdict_tests;
