//! gatehouse-operator: reconciles ScanRequests into one Kubernetes Job per scanner, consumes
//! signed results from the `{gatehouse-results}:results` stream and reports them as GitHub Check Runs.
//! It accepts no HTTP from outside the cluster (metrics and health only).
//!
//! Not implemented yet: this crate only fixes its place in the workspace.
