//! One module per scanner: how its container runs (arguments, files) and, later, how its report
//! is read. Adding a scanner is adding a module.

pub mod kics;

/// Where the scan pod's `checkout` step unpacks the repository (the scanner's working directory).
pub const SOURCE_DIR: &str = "/workspace/src";

/// Where the scanner writes its reports, read by the `report` step.
pub const OUTPUT_DIR: &str = "/workspace/out";
