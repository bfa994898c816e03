//! `gatehouse-operator`'s command line as a user meets it: settings from flags or the
//! environment, `run` named or not, one clear line for a misconfiguration. (Being an integration
//! test of this package also makes `cargo test --workspace` build the binary that the `tests`
//! crate's process tests run.)

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn operator(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse-operator"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const MISSING: &str =
    "gatehouse-operator: failed to read the GitHub App private key from /nonexistent/key.pem";

#[test]
fn run_reads_its_settings_from_flags_or_the_environment_with_or_without_naming_run() {
    let flags = [
        "--github-app-id",
        "1",
        "--github-private-key-file",
        "/nonexistent/key.pem",
        "--master-key-file",
        "/nonexistent/master",
    ];
    let env = [
        ("GATEHOUSE_GITHUB_APP_ID", "1"),
        ("GATEHOUSE_GITHUB_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
        ("GATEHOUSE_MASTER_KEY_FILE", "/nonexistent/master"),
    ];
    let with_run: Vec<&str> = std::iter::once("run").chain(flags).collect();
    for (args, env) in [
        (&flags[..], &[][..]),
        (&with_run[..], &[][..]),
        (&["run"][..], &env[..]),
        (&with_run[..], &env[..1]),
        (&["--max-running", "5"][..], &env[..]),
        (&[][..], &env[..]),
    ] {
        let (code, stderr) = operator(args, env);
        assert_eq!(code, 1, "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(MISSING), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn a_missing_setting_names_the_flag_and_its_environment_variable() {
    let (code, stderr) = operator(&["run"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--github-app-id"), "{stderr}");
}
