//! The objects a ScanRequest runs as, built from data alone: one hardened Job per scanner and the
//! per-scan Secret. No client, no async: [`desired_job`] and [`desired_secret`] are what the
//! controller applies and what `gatehouse-operator preview` prints.
//!
//! A scan pod runs three steps over shared `emptyDir`s: init container `checkout`
//! (gatehouse-agent: the head commit's tarball, with the per-scan token), init container `scan`
//! (the scanner image with Gatehouse's arguments), main container `report` (gatehouse-agent: reads
//! the report, signs it with the per-scan key, publishes it). Scanned code is hostile: no
//! service-account token, non-root, read-only root filesystems, no capabilities, seccomp
//! `RuntimeDefault`, a deadline, limits, and each credential only in the step that needs it.

use std::collections::BTreeMap;

use gatehouse_crds::scanpolicy::{ScannerKind, ScannerSpec};
use gatehouse_crds::{ScanRequest, labels, naming};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, KeyToPath, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::scanners::{
    self, BASE_OUTPUT_DIR, BASE_SOURCE_DIR, OUTPUT_DIR, SOURCE_DIR, ScanContainer,
};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "gatehouse-operator";

/// Name of the step that scans the base commit (baseline mode).
pub const SCAN_BASE_STEP: &str = "scan-base";
/// The agent's flag naming the base commit, on the checkout and report steps.
const BASE_SHA_FLAG: &str = "--base-sha";

/// Whether `job`, as [`desired_job`] builds it, scans the base commit `base_sha`: it has the
/// base scan step and a step names that commit. The results consumer trusts a result's base
/// findings only then (renaming the step or the flag here keeps that check in step).
pub fn scans_base(job: &Job, base_sha: &str) -> bool {
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let steps: Vec<&Container> = pod
        .into_iter()
        .flat_map(|p| p.init_containers.iter().flatten().chain(&p.containers))
        .collect();
    steps.iter().any(|step| step.name == SCAN_BASE_STEP)
        && steps.iter().any(|step| {
            step.args.as_ref().is_some_and(|args| {
                args.windows(2)
                    .any(|pair| pair[0] == BASE_SHA_FLAG && pair[1] == base_sha)
            })
        })
}

/// `app.kubernetes.io/managed-by` value on everything the operator creates.
pub const MANAGED_BY: &str = "gatehouse-operator";

/// Label on scan pods (and their Jobs) that NetworkPolicies select: `scan`.
pub const COMPONENT: &str = "app.kubernetes.io/component";

/// The user and group every container runs as (scanner images may declare root, or no user).
pub const RUN_AS: i64 = 65_532;

/// Keys of the per-scan Secret.
pub mod secret_keys {
    /// Read-only installation token for the one repository (contents: read).
    pub const TOKEN: &str = "token";
    /// Hex HMAC key the `report` step signs the result with.
    pub const SIGNING_KEY: &str = "signing-key";
    /// Gatehouse's own KICS configuration file.
    pub const KICS_CONFIG: &str = "kics.config";
    /// Password of the Redis ACL user the `report` step publishes as (only with
    /// `--results-redis-password-file`).
    pub const REDIS_PASSWORD: &str = "redis-password";
    /// PEM bundle of the CA certificates the `report` step verifies Redis's TLS certificate
    /// with (only with `--results-redis-ca-file`).
    pub const REDIS_CA: &str = "redis-ca.crt";
}

/// Where the per-scan credentials are mounted in the containers that need them.
pub const SECRET_DIR: &str = "/var/run/gatehouse";

/// Where the `report` step finds the Redis password and CA bundle: a directory of its own, not
/// inside [`SECRET_DIR`] (a mount point inside a read-only Secret volume cannot be created).
pub const REDIS_PASSWORD_DIR: &str = "/var/run/gatehouse-redis";

/// The name of the volume (the per-scan Secret's Redis keys) the `report` step mounts at
/// [`REDIS_PASSWORD_DIR`].
const REDIS_VOLUME: &str = "redis";

/// The password of the Redis ACL user scan pods publish as. Never printed: its `Debug` is
/// redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(String);

impl RedisPassword {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> RedisPassword {
        RedisPassword(password.into())
    }

    /// The password itself, for the per-scan Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisPassword(redacted)")
    }
}

/// The PEM bundle of CA certificates scan pods verify Redis's TLS certificate with (checked when
/// read: see `crate::agent::redis_tls_client`). Its `Debug` gives its size, not its text.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCa(Vec<u8>);

impl RedisCa {
    /// Wraps a PEM bundle.
    pub fn new(pem: impl Into<Vec<u8>>) -> RedisCa {
        RedisCa(pem.into())
    }

    /// The bundle itself, for the per-scan Secret.
    pub fn pem(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for RedisCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisCa({} bytes)", self.0.len())
    }
}

/// Settings of the operator installation the builder needs.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSettings {
    /// Image of gatehouse-agent (checkout and report), pinned.
    pub agent_image: String,
    /// Seconds a finished Job (and its pod, with its logs) is kept.
    pub ttl_seconds_after_finished: i32,
    /// Redis URL the `report` step publishes results to (no password in it; the ACL user in it).
    pub results_redis_url: String,
    /// Password of the user in `results_redis_url`: put into each per-scan Secret and mounted
    /// into the `report` step alone. `None`: scan pods connect without one.
    pub results_redis_password: Option<RedisPassword>,
    /// CA bundle the `report` step verifies a `rediss://` `results_redis_url` with: put into
    /// each per-scan Secret and mounted into the `report` step alone. `None`: the agent image's
    /// system trust store.
    pub results_redis_ca: Option<RedisCa>,
    /// GitHub API URL the `checkout` step downloads from (GitHub Enterprise Server's own).
    pub github_api_url: String,
}

/// Name of the per-scan Secret of a ScanRequest.
pub fn secret_name(scan_request: &str) -> String {
    naming::job_name(scan_request, "scan")
}

/// Name of the Job of `scanner`, attempt `attempt` (1 for the first; retries after an
/// infrastructure failure get names of their own, `<scanrequest>-<scanner>-retryN-<hash>`
/// shortened to fit, so a failed Job is kept for people to see).
pub fn job_name(scan_request: &str, scanner: &str, attempt: i32) -> String {
    if attempt <= 1 {
        naming::job_name(scan_request, scanner)
    } else {
        // `.` is not a scanner-name character, so no scanner's first Job (say of a scanner
        // named `kics-retry2`) can take the name of another's retry: the name is always the
        // hashed form of this exact pair.
        naming::job_name(scan_request, &format!("{scanner}.retry{attempt}"))
    }
}

fn owner(request: &ScanRequest) -> Option<OwnerReference> {
    request.controller_owner_ref(&())
}

/// Labels of a scan Job and its pod.
pub fn job_labels(request: &ScanRequest, scanner: &str) -> BTreeMap<String, String> {
    let mut labels = labels::scan_request_labels(&request.spec);
    labels.insert(labels::MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels.insert(COMPONENT.to_owned(), "scan".to_owned());
    labels.insert(
        labels::SCAN_REQUEST.to_owned(),
        request.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(labels::SCANNER.to_owned(), scanner.to_owned());
    labels
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str, limit: Option<&str>) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: limit.map(|l| Quantity(l.to_owned())),
        }),
        ..Volume::default()
    }
}

/// The per-scan Secret's `keys` alone, each a file of its own name.
fn secret_volume(name: &str, secret: &str, keys: &[&str]) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(
                keys.iter()
                    .map(|key| KeyToPath {
                        key: (*key).to_owned(),
                        path: (*key).to_owned(),
                        mode: None,
                    })
                    .collect(),
            ),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// The per-scan Secret's keys the `report` step reads to reach Redis, as configured.
fn redis_keys(settings: &BuildSettings) -> impl Iterator<Item = &'static str> {
    [
        settings
            .results_redis_password
            .as_ref()
            .map(|_| secret_keys::REDIS_PASSWORD),
        settings
            .results_redis_ca
            .as_ref()
            .map(|_| secret_keys::REDIS_CA),
    ]
    .into_iter()
    .flatten()
}

fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["ALL".to_owned()]),
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        ..SecurityContext::default()
    }
}

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(map(requests)),
        limits: Some(map(limits)),
        ..ResourceRequirements::default()
    }
}

/// Resources of the scanner container when the policy sets none: what a medium repository needs.
pub fn default_scanner_resources(kind: ScannerKind) -> ResourceRequirements {
    match kind {
        ScannerKind::Kics => resources(
            &[("cpu", "500m"), ("memory", "1Gi")],
            &[("cpu", "2"), ("memory", "2Gi")],
        ),
        ScannerKind::Blackduck => resources(
            &[("cpu", "500m"), ("memory", "2Gi")],
            &[("cpu", "2"), ("memory", "4Gi")],
        ),
    }
}

fn agent_resources() -> ResourceRequirements {
    // 512 MiB: the report step reads reports of up to 96 MB (100,000 findings peak at about
    // 140 MB).
    resources(
        &[("cpu", "50m"), ("memory", "64Mi")],
        &[("cpu", "1"), ("memory", "512Mi")],
    )
}

fn checkout_container(
    request: &ScanRequest,
    scan: &ScanContainer,
    settings: &BuildSettings,
    base_sha: Option<&str>,
) -> Container {
    let spec = &request.spec;
    let mut checkout_args = vec![
        "checkout".to_owned(),
        "--repository".to_owned(),
        spec.repository.full_name(),
        "--sha".to_owned(),
        spec.pull_request.head_sha.clone(),
        "--into".to_owned(),
        SOURCE_DIR.to_owned(),
        "--token-file".to_owned(),
        format!("{SECRET_DIR}/{}", secret_keys::TOKEN),
        "--api-url".to_owned(),
        settings.github_api_url.clone(),
    ];
    let mut mounts = vec![
        mount("source", SOURCE_DIR, false),
        mount("checkout-tmp", "/tmp", false),
        mount("token", SECRET_DIR, true),
    ];
    if let Some(base) = base_sha {
        checkout_args.extend([
            BASE_SHA_FLAG.to_owned(),
            base.to_owned(),
            "--base-into".to_owned(),
            BASE_SOURCE_DIR.to_owned(),
        ]);
        mounts.push(mount("base-source", BASE_SOURCE_DIR, false));
    }
    for file in &scan.remove_from_checkout {
        checkout_args.push("--remove".to_owned());
        checkout_args.push((*file).to_owned());
    }
    Container {
        name: "checkout".to_owned(),
        image: Some(settings.agent_image.clone()),
        args: Some(checkout_args),
        volume_mounts: Some(mounts),
        resources: Some(agent_resources()),
        security_context: Some(hardened()),
        ..Container::default()
    }
}

fn scanner_container(scanner: &ScannerSpec, scan: ScanContainer) -> Container {
    let mut scan_mounts = vec![
        mount("source", scan.source_mount, !scan.source_writable),
        mount("output", scan.output_mount, false),
        mount("scan-tmp", "/tmp", false),
    ];
    if scan.kics_config {
        scan_mounts.push(mount(
            "kics-config",
            scanners::kics::CONFIG_PATH
                .rsplit_once('/')
                .map_or("/", |(dir, _)| dir),
            true,
        ));
    }
    Container {
        name: "scan".to_owned(),
        image: Some(scanner.image.clone()),
        args: Some(scan.args),
        env: Some(scan.env),
        working_dir: Some(scan.working_dir),
        volume_mounts: Some(scan_mounts),
        resources: Some(
            scanner
                .resources
                .clone()
                .unwrap_or_else(|| default_scanner_resources(scanner.kind)),
        ),
        security_context: Some(hardened()),
        // A scanner that fails stops the pod before `report` runs: the operator reads its exit
        // code and last log lines from the pod status instead.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

fn report_container(
    request: &ScanRequest,
    scanner: &ScannerSpec,
    scan: &ScanContainer,
    attempt: i32,
    settings: &BuildSettings,
    base_sha: Option<&str>,
) -> Container {
    // KICS writes SARIF; the policy decides whether it goes to code scanning.
    let sarif_upload = scanner.kind == ScannerKind::Kics
        && request
            .status
            .as_ref()
            .and_then(|s| s.policy.as_ref())
            .is_some_and(|p| p.reporting.sarif_upload);
    let name = request.metadata.name.clone().unwrap_or_default();
    let mut args = vec![
        "report".to_owned(),
        "--scanner".to_owned(),
        match scanner.kind {
            ScannerKind::Kics => "kics",
            ScannerKind::Blackduck => "blackduck",
        }
        .to_owned(),
        "--scanner-name".to_owned(),
        scanner.name.clone(),
        "--scan-request".to_owned(),
        format!(
            "{}/{}",
            request.metadata.namespace.as_deref().unwrap_or_default(),
            name
        ),
        "--uid".to_owned(),
        request.metadata.uid.clone().unwrap_or_default(),
        "--attempt".to_owned(),
        attempt.to_string(),
        "--output-dir".to_owned(),
        OUTPUT_DIR.to_owned(),
        "--key-file".to_owned(),
        format!("{SECRET_DIR}/{}", secret_keys::SIGNING_KEY),
        "--redis-url".to_owned(),
        settings.results_redis_url.clone(),
        "--sha".to_owned(),
        request.spec.pull_request.head_sha.clone(),
        // Where the scanner saw the repository: its report's paths are relative to it.
        "--source-dir".to_owned(),
        scan.source_mount.to_owned(),
    ];
    if sarif_upload {
        args.push("--include-sarif".to_owned());
    }
    let mut mounts = vec![
        mount("output", OUTPUT_DIR, true),
        mount("report-tmp", "/tmp", false),
        mount("signing-key", SECRET_DIR, true),
    ];
    if settings.results_redis_password.is_some() {
        args.extend([
            "--redis-password-file".to_owned(),
            format!("{REDIS_PASSWORD_DIR}/{}", secret_keys::REDIS_PASSWORD),
        ]);
    }
    if settings.results_redis_ca.is_some() {
        args.extend([
            "--redis-ca-file".to_owned(),
            format!("{REDIS_PASSWORD_DIR}/{}", secret_keys::REDIS_CA),
        ]);
    }
    if redis_keys(settings).next().is_some() {
        mounts.push(mount(REDIS_VOLUME, REDIS_PASSWORD_DIR, true));
    }
    if let Some(base) = base_sha {
        args.extend([
            BASE_SHA_FLAG.to_owned(),
            base.to_owned(),
            "--base-output-dir".to_owned(),
            BASE_OUTPUT_DIR.to_owned(),
        ]);
        mounts.push(mount("base-output", BASE_OUTPUT_DIR, true));
    }
    Container {
        name: "report".to_owned(),
        image: Some(settings.agent_image.clone()),
        args: Some(args),
        volume_mounts: Some(mounts),
        resources: Some(agent_resources()),
        security_context: Some(hardened()),
        ..Container::default()
    }
}

/// The Job that runs `scanner` for `request` (attempt `attempt`, from 1). With `base_sha`
/// (baseline mode, when the base commit's findings are not known yet) the pod checks out and
/// scans the pull request's base commit too, in volumes of its own, and the deadline is doubled.
pub fn desired_job(
    request: &ScanRequest,
    scanner: &ScannerSpec,
    attempt: i32,
    settings: &BuildSettings,
    base_sha: Option<&str>,
) -> Job {
    let name = request.metadata.name.clone().unwrap_or_default();
    let scan: ScanContainer = scanners::scan_container(request, scanner);
    let kics_config = scan.kics_config;
    let checkout = checkout_container(request, &scan, settings, base_sha);
    let report = report_container(request, scanner, &scan, attempt, settings, base_sha);
    let mut init_containers = vec![checkout];
    if base_sha.is_some() {
        // The same scanner, the same arguments and mount paths, the base commit's volumes, and
        // a /tmp of its own; it runs before `scan`, so nothing the pull request's code does in
        // its scan (Detect runs build tools) can reach the base's scan or its findings, which
        // are kept for other pull requests.
        let mut base = scanner_container(scanner, scan.clone());
        SCAN_BASE_STEP.clone_into(&mut base.name);
        for mount in base.volume_mounts.iter_mut().flatten() {
            match mount.name.as_str() {
                "source" => "base-source".clone_into(&mut mount.name),
                "output" => "base-output".clone_into(&mut mount.name),
                "scan-tmp" => "scan-base-tmp".clone_into(&mut mount.name),
                _ => {}
            }
        }
        init_containers.push(base);
        init_containers.push(scanner_container(scanner, scan));
    } else {
        init_containers.push(scanner_container(scanner, scan));
    }
    let secret = secret_name(&name);
    let labels = job_labels(request, &scanner.name);

    let mut volumes = vec![
        empty_dir("source", Some("4Gi")),
        empty_dir("output", Some("1Gi")),
        empty_dir("checkout-tmp", Some("1Gi")),
        empty_dir("scan-tmp", Some("2Gi")),
        empty_dir("report-tmp", Some("64Mi")),
        secret_volume("token", &secret, &[secret_keys::TOKEN]),
        secret_volume("signing-key", &secret, &[secret_keys::SIGNING_KEY]),
    ];
    let redis: Vec<&str> = redis_keys(settings).collect();
    if !redis.is_empty() {
        volumes.push(secret_volume(REDIS_VOLUME, &secret, &redis));
    }
    if base_sha.is_some() {
        volumes.push(empty_dir("base-source", Some("4Gi")));
        volumes.push(empty_dir("base-output", Some("1Gi")));
        volumes.push(empty_dir("scan-base-tmp", Some("2Gi")));
    }
    if kics_config {
        volumes.push(secret_volume(
            "kics-config",
            &secret,
            &[secret_keys::KICS_CONFIG],
        ));
    }

    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, &scanner.name, attempt)),
            namespace: request.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: owner(request).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            active_deadline_seconds: Some(if base_sha.is_some() {
                scanner.timeout_seconds.saturating_mul(2)
            } else {
                scanner.timeout_seconds
            }),
            // Retries are the operator's: bounded, and only for infrastructure failures.
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    init_containers: Some(init_containers),
                    containers: vec![report],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The per-scan Secret: the repository-scoped read-only token, the result-signing key,
/// Gatehouse's KICS configuration and, as configured in `settings`, the password of the Redis
/// ACL user scan pods publish as and the CA bundle they verify Redis with. Owned by the
/// ScanRequest, so it goes with it; written with server-side apply and never read back.
pub fn desired_secret(
    request: &ScanRequest,
    token: &str,
    signing_key_hex: &str,
    settings: &BuildSettings,
) -> Secret {
    let name = request.metadata.name.clone().unwrap_or_default();
    let mut labels = labels::scan_request_labels(&request.spec);
    labels.insert(labels::MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels.insert(labels::SCAN_REQUEST.to_owned(), name.clone());
    let mut data = BTreeMap::from([
        (
            secret_keys::TOKEN.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        ),
        (
            secret_keys::SIGNING_KEY.to_owned(),
            ByteString(signing_key_hex.as_bytes().to_vec()),
        ),
        (
            secret_keys::KICS_CONFIG.to_owned(),
            ByteString(scanners::kics::CONFIG_CONTENTS.as_bytes().to_vec()),
        ),
    ]);
    if let Some(password) = &settings.results_redis_password {
        data.insert(
            secret_keys::REDIS_PASSWORD.to_owned(),
            ByteString(password.expose().as_bytes().to_vec()),
        );
    }
    if let Some(ca) = &settings.results_redis_ca {
        data.insert(
            secret_keys::REDIS_CA.to_owned(),
            ByteString(ca.pem().to_vec()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&name)),
            namespace: request.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: owner(request).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    // One assertion list per Job: split, the Job's shape would be scattered over tests.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

    use super::*;
    use crate::test_support;

    fn settings() -> BuildSettings {
        BuildSettings {
            agent_image: "ghcr.io/gatehouse-dev/gatehouse@sha256:1111111111111111111111111111111111111111111111111111111111111111".to_owned(),
            ttl_seconds_after_finished: 3600,
            results_redis_url: "redis://gatehouse-redis:6379".to_owned(),
            results_redis_password: None,
            results_redis_ca: None,
            github_api_url: "https://api.github.com".to_owned(),
        }
    }

    /// Every step of the Job's pod: init containers, then containers.
    fn steps(job: &Job) -> Vec<&Container> {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
            .collect()
    }

    fn container<'a>(job: &'a Job, name: &str) -> &'a Container {
        steps(job).into_iter().find(|c| c.name == name).unwrap()
    }

    /// The Secret and its (key, path) items of the pod's volume `name`.
    fn secret_volume<'a>(job: &'a Job, name: &str) -> (&'a str, Vec<(&'a str, &'a str)>) {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap();
        let source = volume.secret.as_ref().unwrap();
        (
            source.secret_name.as_deref().unwrap(),
            source
                .items
                .iter()
                .flatten()
                .map(|i| (i.key.as_str(), i.path.as_str()))
                .collect(),
        )
    }

    fn mounts(c: &Container) -> Vec<(String, String, bool)> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.name.clone(),
                    m.mount_path.clone(),
                    m.read_only.unwrap_or(false),
                )
            })
            .collect()
    }

    #[test]
    fn a_kics_job_is_hardened_bounded_owned_and_runs_the_three_steps_in_order() {
        let request = test_support::request();
        let policy = test_support::kics_policy();
        let job = desired_job(&request, &policy.spec.scanners[0], 1, &settings(), None);
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("hello-world-pr2-ec26c3e-016643a9-kics")
        );
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            (
                "ScanRequest",
                "hello-world-pr2-ec26c3e-016643a9",
                Some(true)
            )
        );
        assert_eq!(owner.uid, "5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(900));
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let order: Vec<&str> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(order, ["checkout", "scan"]);
        assert_eq!(
            pod.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["report"]
        );
        for name in ["checkout", "scan", "report"] {
            let sc = container(&job, name).security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(sc.run_as_non_root, Some(true), "{name}");
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..]),
                "{name}"
            );
            assert!(
                container(&job, name)
                    .resources
                    .as_ref()
                    .unwrap()
                    .limits
                    .is_some(),
                "{name}"
            );
            assert!(
                mounts(container(&job, name))
                    .iter()
                    .any(|(_, path, ro)| path == "/tmp" && !ro),
                "{name} has a writable /tmp"
            );
        }
        let scan = container(&job, "scan");
        assert_eq!(
            scan.image.as_deref(),
            Some(policy.spec.scanners[0].image.as_str())
        );
        assert_eq!(scan.working_dir.as_deref(), Some(SOURCE_DIR));
        assert_eq!(
            scan.args.as_ref().unwrap(),
            &scanners::kics::scan_args(None)
        );
        assert_eq!(
            scan.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        assert_eq!(
            mounts(scan),
            [
                ("source".to_owned(), SOURCE_DIR.to_owned(), true),
                ("output".to_owned(), OUTPUT_DIR.to_owned(), false),
                ("scan-tmp".to_owned(), "/tmp".to_owned(), false),
                (
                    "kics-config".to_owned(),
                    "/etc/gatehouse/kics".to_owned(),
                    true
                ),
            ]
        );
        // Credentials only where needed: the token in checkout, the signing key in report,
        // neither in the scanner.
        assert!(
            mounts(container(&job, "checkout"))
                .iter()
                .any(|(n, _, _)| n == "token")
        );
        assert!(
            !mounts(container(&job, "checkout"))
                .iter()
                .any(|(n, _, _)| n == "signing-key")
        );
        assert!(
            mounts(container(&job, "report"))
                .iter()
                .any(|(n, _, _)| n == "signing-key")
        );
        assert!(
            !mounts(container(&job, "report"))
                .iter()
                .any(|(n, _, _)| n == "token")
        );
        assert!(
            !mounts(scan)
                .iter()
                .any(|(n, _, _)| n == "token" || n == "signing-key")
        );
        let volumes = pod.volumes.as_ref().unwrap();
        let items = |name: &str| {
            volumes
                .iter()
                .find(|v| v.name == name)
                .unwrap()
                .secret
                .as_ref()
                .unwrap()
                .items
                .clone()
                .unwrap()
        };
        assert_eq!(items("token")[0].key, "token");
        assert_eq!(items("signing-key")[0].key, "signing-key");
        assert_eq!(items("kics-config")[0].key, "kics.config");
        let checkout = container(&job, "checkout").args.as_ref().unwrap().join(" ");
        assert_eq!(
            checkout,
            "checkout --repository Codertocat/Hello-World --sha ec26c3e57ca3a959ca5aad62de7213c562f8c821 \
             --into /workspace/src --token-file /var/run/gatehouse/token \
             --api-url https://api.github.com --remove kics.config"
        );
        let report = container(&job, "report").args.as_ref().unwrap().join(" ");
        assert!(
            report.ends_with(
                "--redis-url redis://gatehouse-redis:6379 --sha \
                 ec26c3e57ca3a959ca5aad62de7213c562f8c821 --source-dir /workspace/src"
            ),
            "{report}"
        );
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(
            labels
                .get("app.kubernetes.io/component")
                .map(String::as_str),
            Some("scan")
        );
        assert_eq!(
            labels.get("gatehouse.dev/scanner").map(String::as_str),
            Some("kics")
        );
        assert_eq!(
            labels.get("gatehouse.dev/scanrequest").map(String::as_str),
            Some("hello-world-pr2-ec26c3e-016643a9")
        );
    }

    #[test]
    fn a_black_duck_job_reads_the_repository_where_detect_looks_and_never_from_its_working_directory()
     {
        let request = test_support::request();
        let policy = test_support::payments_policy();
        let scanner = policy.spec.scanner("blackduck").unwrap();
        let job = desired_job(&request, scanner, 1, &settings(), None);
        let scan = container(&job, "scan");
        assert_eq!(
            scan.working_dir.as_deref(),
            Some("/tmp"),
            "not the checkout: Spring Boot reads application.yml from it"
        );
        assert_eq!(
            mounts(scan)[..2],
            [
                ("source".to_owned(), "/source".to_owned(), false),
                ("output".to_owned(), "/output".to_owned(), false),
            ]
        );
        let args = scan.args.as_ref().unwrap();
        for expected in [
            "--detect.blackduck.scan.mode=RAPID",
            "--detect.project.name=Codertocat/Hello-World",
            "--detect.project.version.name=pr-2",
            "--detect.cleanup=false",
            "--detect.scan.output.path=/output/scan",
            "--detect.stateless.policy.check.fail.on.severities=NONE",
            "--detect.timeout=1800",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        assert!(
            !args.iter().any(|a| a.contains("token")),
            "no credential on the command line"
        );
        let env = scan.env.as_ref().unwrap();
        let token = env
            .iter()
            .find(|e| e.name == "BLACKDUCK_API_TOKEN")
            .unwrap();
        assert_eq!(token.value, None);
        let selector = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("blackduck-api-token", "token")
        );
        assert!(!mounts(scan).iter().any(|(n, _, _)| n == "kics-config"));
        assert_eq!(scan.resources, scanner.resources, "the policy's resources");
        let checkout = container(&job, "checkout").args.as_ref().unwrap().join(" ");
        assert!(
            checkout.ends_with("--remove .bd-rapid-scan.yaml"),
            "{checkout}"
        );
    }

    #[test]
    fn job_names_fit_a_label_for_every_attempt_and_differ_between_attempts() {
        let long = "a-very-long-repository-name-for-testing-pr12345-0123456-89abcdef";
        let first = job_name(long, "dependency-scanner-long", 1);
        let second = job_name(long, "dependency-scanner-long", 2);
        assert!(first.len() <= 63 && second.len() <= 63);
        assert_ne!(first, second);
        assert!(gatehouse_crds::naming::is_dns1123_label(&second));
        assert_eq!(job_name("sr", "kics", 1), "sr-kics");
        assert!(job_name("sr", "kics", 3).starts_with("sr-kics-retry3-"));
        // A scanner named like another's retry does not share its Job.
        assert_ne!(job_name("sr", "kics", 2), job_name("sr", "kics-retry2", 1));
    }

    #[test]
    fn the_per_scan_secret_holds_the_token_the_key_and_the_kics_configuration_and_is_owned() {
        let request = test_support::request();
        let secret = desired_secret(&request, "ghs_token", "00ff", &settings());
        let data = secret.data.as_ref().unwrap();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            ["kics.config", "signing-key", "token"]
        );
        assert_eq!(data["token"].0, b"ghs_token");
        assert_eq!(data["signing-key"].0, b"00ff");
        assert_eq!(
            secret.metadata.owner_references.as_ref().unwrap()[0].name,
            "hello-world-pr2-ec26c3e-016643a9"
        );
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("hello-world-pr2-ec26c3e-016643a9-scan")
        );
    }

    #[test]
    fn with_a_results_redis_password_only_the_report_step_mounts_it_and_reads_it_from_its_file() {
        let request = test_support::request();
        let policy = test_support::kics_policy();
        let with_password = BuildSettings {
            results_redis_url: "redis://gatehouse-scan@gatehouse-redis:6379".to_owned(),
            results_redis_password: Some(RedisPassword::new("scan-secret")),
            ..settings()
        };
        let base = "0123456789abcdef0123456789abcdef01234567";
        for base_sha in [None, Some(base)] {
            let job = desired_job(
                &request,
                &policy.spec.scanners[0],
                1,
                &with_password,
                base_sha,
            );
            for step in steps(&job) {
                let has = mounts(step).iter().any(|(n, _, _)| n == "redis");
                assert_eq!(has, step.name == "report", "step {}", step.name);
            }
            assert!(mounts(container(&job, "report")).contains(&(
                "redis".to_owned(),
                "/var/run/gatehouse-redis".to_owned(),
                true
            )));
            let (secret, items) = secret_volume(&job, "redis");
            assert_eq!(secret, "hello-world-pr2-ec26c3e-016643a9-scan");
            let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
            assert_eq!(keys, ["redis-password"], "the password alone, no CA");
            let report = container(&job, "report").args.as_ref().unwrap().join(" ");
            assert!(
                report.contains("--redis-url redis://gatehouse-scan@gatehouse-redis:6379 "),
                "{report}"
            );
            assert!(
                report.contains("--redis-password-file /var/run/gatehouse-redis/redis-password"),
                "{report}"
            );
            assert!(!format!("{job:?}").contains("scan-secret"));
        }
        // Without one, nothing of it appears.
        let job = desired_job(&request, &policy.spec.scanners[0], 1, &settings(), None);
        assert!(!format!("{job:?}").contains("redis-password"));
        assert!(!format!("{job:?}").contains("/var/run/gatehouse-redis"));
        assert_eq!(
            format!("{:?}", with_password.results_redis_password),
            "Some(RedisPassword(redacted))"
        );
    }

    #[test]
    fn the_per_scan_secret_holds_the_redis_password_only_when_one_is_configured() {
        let request = test_support::request();
        let with_password = BuildSettings {
            results_redis_password: Some(RedisPassword::new("scan-secret")),
            ..settings()
        };
        let secret = desired_secret(&request, "ghs_token", "00ff", &with_password);
        let data = secret.data.as_ref().unwrap();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            ["kics.config", "redis-password", "signing-key", "token"]
        );
        assert_eq!(data["redis-password"].0, b"scan-secret");
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBcA==\n-----END CERTIFICATE-----\n";

    #[test]
    fn with_a_results_redis_ca_only_the_report_step_mounts_it_beside_the_password_and_verifies_redis_with_it()
     {
        let request = test_support::request();
        let policy = test_support::kics_policy();
        let tls = BuildSettings {
            results_redis_url: "rediss://gatehouse-scan@redis.example:6380".to_owned(),
            results_redis_ca: Some(RedisCa::new(CA)),
            ..settings()
        };
        let with_password = BuildSettings {
            results_redis_password: Some(RedisPassword::new("scan-secret")),
            ..tls.clone()
        };
        let base = "0123456789abcdef0123456789abcdef01234567";
        for (settings, keys) in [
            (&tls, &["redis-ca.crt"][..]),
            (&with_password, &["redis-password", "redis-ca.crt"][..]),
        ] {
            for base_sha in [None, Some(base)] {
                let job = desired_job(&request, &policy.spec.scanners[0], 1, settings, base_sha);
                let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
                for step in steps(&job) {
                    let has = mounts(step)
                        .iter()
                        .any(|(n, path, _)| n == "redis" || path.contains("gatehouse-redis"));
                    assert_eq!(has, step.name == "report", "step {}", step.name);
                    let args = step.args.as_ref().unwrap().join(" ");
                    assert_eq!(
                        args.contains("--redis-ca-file"),
                        step.name == "report",
                        "{args}"
                    );
                }
                assert!(mounts(container(&job, "report")).contains(&(
                    "redis".to_owned(),
                    "/var/run/gatehouse-redis".to_owned(),
                    true
                )));
                let volumes: Vec<&Volume> = pod
                    .volumes
                    .iter()
                    .flatten()
                    .filter(|v| {
                        v.secret.as_ref().is_some_and(|s| {
                            s.items
                                .iter()
                                .flatten()
                                .any(|i| i.key == secret_keys::REDIS_CA)
                        })
                    })
                    .collect();
                assert_eq!(volumes.len(), 1, "one volume holds the CA");
                assert_eq!(volumes[0].name, "redis");
                let (secret, items) = secret_volume(&job, "redis");
                assert_eq!(secret, "hello-world-pr2-ec26c3e-016643a9-scan");
                assert_eq!(
                    items,
                    keys.iter().map(|k| (*k, *k)).collect::<Vec<_>>(),
                    "each key a file of its own name"
                );
                let report = container(&job, "report").args.as_ref().unwrap().join(" ");
                assert!(
                    report.contains("--redis-ca-file /var/run/gatehouse-redis/redis-ca.crt"),
                    "{report}"
                );
                assert!(
                    report.contains("--redis-url rediss://gatehouse-scan@redis.example:6380 "),
                    "{report}"
                );
                assert_eq!(
                    report
                        .contains("--redis-password-file /var/run/gatehouse-redis/redis-password"),
                    settings.results_redis_password.is_some(),
                    "{report}"
                );
                assert!(!serde_json::to_string(&job).unwrap().contains("MIIBcA"));
            }
        }
        // Without one, nothing of it appears.
        let job = desired_job(&request, &policy.spec.scanners[0], 1, &settings(), None);
        let text = serde_json::to_string(&job).unwrap();
        assert!(
            !text.contains("redis-ca") && !text.contains("/var/run/gatehouse-redis"),
            "{text}"
        );
        assert_eq!(
            format!("{:?}", tls.results_redis_ca),
            "Some(RedisCa(63 bytes))"
        );
    }

    #[test]
    fn the_per_scan_secret_holds_the_redis_ca_only_when_one_is_configured() {
        let request = test_support::request();
        let tls = BuildSettings {
            results_redis_ca: Some(RedisCa::new(CA)),
            ..settings()
        };
        let secret = desired_secret(&request, "ghs_token", "00ff", &tls);
        let data = secret.data.as_ref().unwrap();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            ["kics.config", "redis-ca.crt", "signing-key", "token"]
        );
        assert_eq!(data["redis-ca.crt"].0, CA.as_bytes());
        let plain = desired_secret(&request, "ghs_token", "00ff", &settings());
        assert!(!plain.data.as_ref().unwrap().contains_key("redis-ca.crt"));
    }

    #[test]
    fn in_baseline_mode_the_pod_checks_out_and_scans_the_base_commit_in_volumes_of_its_own() {
        let request = test_support::request();
        let policy = test_support::kics_policy();
        let base = "0123456789abcdef0123456789abcdef01234567";
        let job = desired_job(
            &request,
            &policy.spec.scanners[0],
            1,
            &settings(),
            Some(base),
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(
            spec.active_deadline_seconds,
            Some(policy.spec.scanners[0].timeout_seconds * 2)
        );
        let pod = spec.template.spec.as_ref().unwrap();
        let order: Vec<&str> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(order, ["checkout", "scan-base", "scan"]);
        let checkout = container(&job, "checkout").args.as_ref().unwrap().join(" ");
        assert!(
            checkout.contains(&format!("--base-sha {base} --base-into /workspace/base")),
            "{checkout}"
        );
        assert!(mounts(container(&job, "checkout")).contains(&(
            "base-source".to_owned(),
            "/workspace/base".to_owned(),
            false
        )));
        // The same scanner and arguments, the base commit where the scanner looks.
        let scan = container(&job, "scan");
        let scan_base = container(&job, "scan-base");
        assert_eq!(scan.args, scan_base.args);
        assert_eq!(scan.image, scan_base.image);
        let base_mounts = mounts(scan_base);
        assert!(base_mounts.contains(&(
            "base-source".to_owned(),
            "/workspace/src".to_owned(),
            true
        )));
        assert!(base_mounts.contains(&(
            "base-output".to_owned(),
            "/workspace/out".to_owned(),
            false
        )));
        // No writable volume shared with the pull request's scan.
        let head_writable: Vec<String> = mounts(scan)
            .into_iter()
            .filter(|(_, _, read_only)| !read_only)
            .map(|(name, _, _)| name)
            .collect();
        assert!(
            !base_mounts
                .iter()
                .any(|(name, _, _)| head_writable.contains(name)),
            "{base_mounts:?} {head_writable:?}"
        );
        let report = container(&job, "report").args.as_ref().unwrap().join(" ");
        assert!(
            report.ends_with(&format!(
                "--base-sha {base} --base-output-dir /workspace/out-base"
            )),
            "{report}"
        );
        let volumes: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert!(volumes.contains(&"base-source") && volumes.contains(&"base-output"));
        // Without a base, none of it.
        let plain = desired_job(&request, &policy.spec.scanners[0], 1, &settings(), None);
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("base"), "{text}");
    }
}
