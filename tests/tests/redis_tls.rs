//! Scan pods publishing to a Redis over TLS whose certificate a private CA signs (an external
//! Redis at `rediss://`, the chart's `redis.external.caSecret`): a real `redis-server` with
//! `--tls-port` and a CA and server certificate made here (rcgen). The operator's
//! `--results-redis-ca-file` bundle goes into the per-scan Secret and the `report` step's
//! `--redis-ca-file`; the agent's binary publishes only when it trusts that CA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanpolicy::ScanPolicy;
use gatehouse_crds::stream::RESULTS_STREAM;
use gatehouse_operator::jobs::{self, BuildSettings};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;

const UID: &str = "5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50";
const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
const PASSWORD: &str = "scan-password";

/// A private CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A server certificate for 127.0.0.1 signed by `ca`: (certificate PEM, key PEM).
fn server_certificate(ca: &Ca) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "redis.test");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A `redis-server` with a password, a plain port (for the test's own looks) and a TLS port
/// whose certificate `ca` signed; killed when dropped.
struct TlsRedis {
    child: Child,
    plain_port: u16,
    tls_port: u16,
    dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TlsRedis {
    fn start(ca: &Ca) -> TlsRedis {
        let (cert, key) = server_certificate(ca);
        let mut last_log = String::new();
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("gatehouse-redis-tls-")
                .tempdir()
                .unwrap();
            std::fs::write(dir.path().join("server.crt"), &cert).unwrap();
            std::fs::write(dir.path().join("server.key"), &key).unwrap();
            std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();
            let (plain_port, tls_port) = (free_port(), free_port());
            let binary = std::env::var("GATEHOUSE_REDIS_SERVER")
                .unwrap_or_else(|_| "redis-server".to_owned());
            let child = Command::new(&binary)
                .args(["--port", &plain_port.to_string()])
                .args(["--tls-port", &tls_port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.path().join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.path().join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.path().join("ca.crt"))
                .args(["--tls-auth-clients", "no"])
                .args(["--requirepass", PASSWORD])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("failed to run {binary}: {e}"));
            let mut server = TlsRedis {
                child,
                plain_port,
                tls_port,
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if server.ping() {
                    return server;
                }
                if server.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log =
                std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default();
        }
        panic!(
            "redis-server with --tls-port did not start (is it built with TLS?); log:\n{last_log}"
        );
    }

    fn plain_url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}/0", self.plain_port)
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.plain_url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// Results published so far (read over the plain port).
    fn results(&self) -> u64 {
        let mut conn = redis::Client::open(self.plain_url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("XLEN")
            .arg(RESULTS_STREAM)
            .query(&mut conn)
            .unwrap()
    }

    /// The URL the operator gives scan pods: TLS, no password in it.
    fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.tls_port)
    }
}

/// A KICS report as the scanner leaves it in the output directory.
fn kics_output(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        format!(
            "{}/fixtures/kics/kics-v2_critical-2-findings-cicd_e2e089.json",
            env!("CARGO_MANIFEST_DIR")
        ),
        dir.join("results.json"),
    )
    .unwrap();
}

/// Runs the agent's `report` publishing to `redis` over TLS, with `--redis-ca-file ca_file`
/// when given; the system trust store is the image's own (no `SSL_CERT_FILE`).
fn report(redis: &TlsRedis, work: &Path, ca_file: Option<&Path>) -> Output {
    let out = work.join("out");
    kics_output(&out);
    let master = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap();
    let key_file = work.join("signing-key");
    std::fs::write(&key_file, master.scan_key(UID).to_hex()).unwrap();
    let password_file = work.join("redis-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let mut command = Command::new(gatehouse_tests::binaries::agent());
    command
        .args(["report", "--scanner", "kics", "--scanner-name", "kics"])
        .args([
            "--scan-request",
            "gatehouse-scans/hello-world-pr2-ec26c3e-016643a9",
        ])
        .args(["--uid", UID, "--attempt", "1", "--sha", SHA])
        .arg("--output-dir")
        .arg(&out)
        .arg("--key-file")
        .arg(&key_file)
        .args(["--redis-url", &redis.tls_url()])
        .arg("--redis-password-file")
        .arg(&password_file)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("GATEHOUSE_REDIS_CA_FILE");
    if let Some(ca_file) = ca_file {
        command.arg("--redis-ca-file").arg(ca_file);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_agent_publishes_over_tls_only_when_it_trusts_the_ca_that_signed_redis() {
    let private = ca("Gatehouse test Redis CA");
    let redis = TlsRedis::start(&private);
    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let trusted = write("ca.crt", &private.pem);
    let other = ca("Another CA");
    let wrong = write("other-ca.crt", &other.pem);
    // A bundle: the private CA after another one, with a comment line between, as a
    // concatenated ca-certificates file has.
    let bundle = write(
        "bundle.crt",
        &format!("{}# Gatehouse test Redis CA\n{}", other.pem, private.pem),
    );

    let ok = report(&redis, &work.path().join("trusted"), Some(&trusted));
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stderr(&ok).contains("published as"), "{}", stderr(&ok));
    assert_eq!(redis.results(), 1);

    let ok = report(&redis, &work.path().join("bundle"), Some(&bundle));
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(redis.results(), 2);

    // Without the CA (the system trust store) and with another CA's: the server is not
    // trusted; the step fails as a failure that may pass (exit 1) after its retries.
    let (system, another) = std::thread::scope(|scope| {
        let system = scope.spawn(|| report(&redis, &work.path().join("system"), None));
        let another = scope.spawn(|| report(&redis, &work.path().join("wrong"), Some(&wrong)));
        (system.join().unwrap(), another.join().unwrap())
    });
    for refused in [&system, &another] {
        assert_eq!(refused.status.code(), Some(1), "{}", stderr(refused));
        assert!(
            stderr(refused).contains("invalid peer certificate: UnknownIssuer"),
            "says why: {}",
            stderr(refused)
        );
    }
    assert_eq!(redis.results(), 2, "nothing published without trust");
}

#[test]
fn the_agent_refuses_a_ca_file_it_cannot_use_before_it_connects() {
    let private = ca("Gatehouse test Redis CA");
    let redis = TlsRedis::start(&private);
    let work = tempfile::tempdir().unwrap();
    let junk = work.path().join("junk.crt");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let out = report(&redis, &work.path().join("junk"), Some(&junk));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "--redis-ca-file {}: failed to find a PEM certificate",
            junk.display()
        )),
        "{}",
        stderr(&out)
    );
    let missing = work.path().join("missing.crt");
    let out = report(&redis, &work.path().join("missing"), Some(&missing));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed to read the Redis CA bundle from"),
        "{}",
        stderr(&out)
    );
    assert_eq!(redis.results(), 0);
}

/// Writes what a pod's container sees under `root`: each Secret volume it mounts (its items,
/// from `secret`) and each emptyDir, at their mount paths.
fn mount_volumes(root: &Path, job: &Job, container: &str, secret: &Secret) -> PathBuf {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let step = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .unwrap();
    let volumes: BTreeMap<&str, _> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for mount in step.volume_mounts.iter().flatten() {
        let dir = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let volume = volumes[mount.name.as_str()];
        if let Some(source) = &volume.secret {
            assert_eq!(source.secret_name, secret.metadata.name);
            for item in source.items.iter().flatten() {
                let value = &secret.data.as_ref().unwrap()[&item.key];
                std::fs::write(dir.join(&item.path), &value.0).unwrap();
            }
        }
    }
    root.to_owned()
}

#[test]
fn the_report_step_the_operator_builds_publishes_over_tls_with_the_ca_from_the_per_scan_secret() {
    let private = ca("Gatehouse test Redis CA");
    let redis = TlsRedis::start(&private);
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("operator-ca.crt");
    std::fs::write(&ca_file, &private.pem).unwrap();
    let password_file = work.path().join("operator-redis-password");
    std::fs::write(&password_file, PASSWORD).unwrap();

    // As `gatehouse-operator run` reads its flags at start.
    let url = redis.tls_url();
    let settings = BuildSettings {
        agent_image: "agent@sha256:0".to_owned(),
        ttl_seconds_after_finished: 60,
        results_redis_url: url.clone(),
        results_redis_password: Some(jobs::RedisPassword::new(PASSWORD)),
        results_redis_ca: gatehouse_operator::run::results_redis_ca(Some(&ca_file), &url).unwrap(),
        github_api_url: "https://api.github.com".to_owned(),
    };
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/samples");
    let mut request: ScanRequest = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{samples}/scanrequest.yaml")).unwrap(),
    )
    .unwrap();
    request.metadata.uid = Some(UID.to_owned());
    let policy: ScanPolicy = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{samples}/scanpolicy-kics.yaml")).unwrap(),
    )
    .unwrap();
    let master = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap();
    let secret = jobs::desired_secret(
        &request,
        "ghs_token",
        &master.scan_key(UID).to_hex(),
        &settings,
    );
    let job = jobs::desired_job(&request, &policy.spec.scanners[0], 1, &settings, None);

    // The report step's files where its mounts put them, under a root of its own.
    let root = mount_volumes(&work.path().join("pod"), &job, "report", &secret);
    kics_output(&root.join("workspace/out"));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let args: Vec<String> = pod.containers[0]
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| {
            if a.starts_with('/') && !a.starts_with("/workspace/src") {
                root.join(a.trim_start_matches('/')).display().to_string()
            } else {
                a
            }
        })
        .collect();
    assert!(
        args.iter()
            .any(|a| a.ends_with("/var/run/gatehouse-redis/redis-ca.crt")),
        "{args:?}"
    );
    let output = Command::new(gatehouse_tests::binaries::agent())
        .args(&args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(redis.results(), 1);
}

#[test]
fn the_operator_accepts_a_ca_bundle_only_for_a_tls_results_url() {
    let private = ca("Gatehouse test Redis CA");
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.crt");
    std::fs::write(&ca_file, &private.pem).unwrap();
    let read = |url: &str| gatehouse_operator::run::results_redis_ca(Some(&ca_file), url);
    let ca = read("rediss://gatehouse-scan@redis.example:6380").unwrap();
    assert_eq!(ca.unwrap().pem(), private.pem.as_bytes());
    let error = read("redis://gatehouse-scan@redis.example:6379")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid --results-redis-ca-file: --results-redis-url \
         redis://gatehouse-scan@redis.example:6379 is not rediss:// (TLS), so scan pods would not \
         use the CA bundle"
    );
    assert!(
        gatehouse_operator::run::results_redis_ca(None, "redis://x:6379")
            .unwrap()
            .is_none()
    );
}
