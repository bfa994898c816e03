//! Black Duck Detect in rapid mode (dependencies). Facts in `../shared/reference/scanners.md` §2.
//!
//! The scanned repository must not be able to weaken its own scan: Detect reads Spring Boot
//! configuration (`application.yml`, `application.properties`) from its working directory, so
//! the working directory is an empty one of its own, never the checkout; and it uploads a
//! `.bd-rapid-scan.yaml` policy override from the source root with no way to turn that off, so the
//! checkout step removes that file. Every property that matters is on the command line, which
//! Spring ranks above files; the API token comes from the policy's Secret as an environment
//! variable, never as an argument.
//!
//! Findings never fail the process (`--detect.stateless.policy.check.fail.on.severities=NONE`,
//! Detect ≥ 10.6.0): exit 0 is a completed scan whatever it found, the conclusion comes from the
//! report and the policy's `failOn`, and any other exit code is an error, which the operator reads
//! from the pod.

use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanpolicy::ScannerSpec;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

use super::{ScanContainer, env};

/// Where the image's entrypoint (`java -jar /detect.jar --detect.source.path=/source
/// --detect.output.path=/output`) expects the repository. A second `--detect.source.path` on our
/// command line would not replace it (Spring joins repeated options with a comma), so the
/// checkout is mounted where the entrypoint looks.
pub const SOURCE_MOUNT: &str = "/source";

/// Where the entrypoint writes; the same volume the `report` step reads as its output directory.
pub const OUTPUT_MOUNT: &str = "/output";

/// The repository's own policy override file, removed before the scan.
pub const RAPID_SCAN_OVERRIDES: &str = ".bd-rapid-scan.yaml";

/// Detect's exit code for a completed scan (findings never change it with our arguments).
pub const EXIT_COMPLETED: i32 = 0;

/// The Detect container for `scanner` of `request`.
pub fn container(request: &ScanRequest, scanner: &ScannerSpec) -> ScanContainer {
    let spec = &request.spec;
    let settings = scanner.blackduck.as_ref();
    let project = settings
        .and_then(|s| s.project_name.clone())
        .unwrap_or_else(|| spec.repository.full_name());
    let args = vec![
        "--detect.blackduck.scan.mode=RAPID".to_owned(),
        format!("--detect.project.name={project}"),
        format!(
            "--detect.project.version.name=pr-{}",
            spec.pull_request.number
        ),
        "--detect.tools=DETECTOR".to_owned(),
        // Detect deletes its run directory, reports included, unless told not to.
        "--detect.cleanup=false".to_owned(),
        format!("--detect.scan.output.path={OUTPUT_MOUNT}/scan"),
        format!("--detect.status.json.output.path={OUTPUT_MOUNT}/status"),
        format!(
            "--detect.timeout={}",
            scanner.timeout_seconds.clamp(60, 86_400)
        ),
        "--detect.stateless.policy.check.fail.on.severities=NONE".to_owned(),
    ];
    let mut environment = vec![
        // HOME and the working directory: the container's own empty /tmp, so no configuration
        // file of the repository is in reach of Spring Boot.
        env("HOME", "/tmp"),
        env("BLACKDUCK_SKIP_PHONE_HOME", "true"),
        env("JAVA_TOOL_OPTIONS", "-XX:MaxRAMPercentage=75"),
    ];
    if let Some(settings) = settings {
        environment.push(env("BLACKDUCK_URL", &settings.url));
        environment.push(EnvVar {
            name: "BLACKDUCK_API_TOKEN".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: settings.credentials_secret_ref.name.clone(),
                    key: settings.credentials_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
        if settings.trust_certificate {
            environment.push(env("BLACKDUCK_TRUST_CERT", "true"));
        }
    }
    ScanContainer {
        args,
        env: environment,
        working_dir: "/tmp".to_owned(),
        source_mount: SOURCE_MOUNT,
        // Detectors run package managers, which write into the project.
        source_writable: true,
        output_mount: OUTPUT_MOUNT,
        remove_from_checkout: vec![RAPID_SCAN_OVERRIDES],
        kics_config: false,
    }
}
