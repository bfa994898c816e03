//! gatehouse-webhook: receives GitHub App webhook deliveries, verifies them and buffers them in
//! the `gatehouse:events` Redis stream (`receive` role), then turns them into ScanRequests
//! (`ingest` role). It never talks to GitHub in the request path and never creates Jobs.
//!
//! Not implemented yet: this crate only fixes its place in the workspace (issue 4 builds it).
