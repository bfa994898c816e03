//! The workspace's binaries as the process tests run them: found next to the test in cargo's
//! target directory (`cargo test --workspace` builds them: the operator and webhook packages
//! have integration tests of their own), and refused when older than their sources, since a
//! stale binary would test old code.

// Used only by tests: a missing or stale binary fails the test that asked, saying how to fix it.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};

/// The binary `name`, built from the sources under the workspace directories `sources`
/// (`operator/src`, `crds/src`, ...). Panics, saying how to build it, when it is missing or
/// older than any of them.
pub fn built(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test's own path: {e}"));
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("{} is not in cargo's target directory", exe.display()));
    let path = dir.join(name);
    let made = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with `cargo build --workspace`",
                path.display()
            )
        });
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for source in sources {
        if let Some(newer) = newer_file(&root.join(source), made) {
            panic!(
                "{} is older than {}; rebuild it with `cargo build --workspace`",
                path.display(),
                newer.display()
            );
        }
    }
    path
}

/// A file under `dir` modified after `time`; unit-test files (`*_tests.rs`, compiled only into
/// the crate's tests, so never relinking a binary) are not counted.
fn newer_file(dir: &Path, time: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(newer) = newer_file(&path, time) {
                return Some(newer);
            }
        } else if !path.to_string_lossy().ends_with("_tests.rs")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified > time)
        {
            return Some(path);
        }
    }
    None
}

/// `gatehouse-operator`, up to date.
pub fn operator() -> PathBuf {
    built("gatehouse-operator", &["operator/src", "crds/src"])
}

/// `gatehouse-agent`, up to date.
pub fn agent() -> PathBuf {
    built("gatehouse-agent", &["operator/src", "crds/src"])
}

/// `gatehouse-webhook`, up to date.
pub fn webhook() -> PathBuf {
    built("gatehouse-webhook", &["webhook/src", "crds/src"])
}

/// One of the binaries running as a process, its output in files; killed when dropped.
pub struct Process {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `exe` with `args` and only the environment `env` (plus `KUBECONFIG` pointing at
    /// `kubeconfig` when given, written into the process's own directory); stdout and stderr
    /// go to files there.
    pub fn start(
        exe: &Path,
        args: &[String],
        env: &[(&str, &str)],
        kubeconfig: Option<&str>,
    ) -> std::io::Result<Process> {
        let dir = tempfile::tempdir()?;
        let mut command = std::process::Command::new(exe);
        command.args(args).env_clear().envs(env.iter().copied());
        if let Some(config) = kubeconfig {
            std::fs::write(dir.path().join("kubeconfig"), config)?;
            command.env("KUBECONFIG", dir.path().join("kubeconfig"));
        }
        command
            .stdout(std::fs::File::create(dir.path().join("stdout"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr"))?);
        Ok(Process {
            child: command.spawn()?,
            dir,
        })
    }

    /// What it wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "stdout:\n{}\nstderr:\n{}",
            read("stdout").unwrap_or_default(),
            read("stderr").unwrap_or_default()
        )
    }

    /// Its exit status, if it exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}
