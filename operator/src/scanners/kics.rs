//! Checkmarx KICS (infrastructure as code). Facts in `../shared/reference/scanners.md` §1.
//!
//! The scanned repository must not be able to weaken its own scan: KICS loads a `kics.config`
//! from the scanned directory unless `--config` is given, and takes every flag not on the command
//! line from it (and from `KICS_*` environment variables). So the command line always names our
//! own configuration file (mounted from a ConfigMap the operator owns) and sets every flag that
//! matters, and the pod's environment carries no `KICS_*` variable.

use gatehouse_crds::scanpolicy::KicsSettings;

use super::{OUTPUT_DIR, SOURCE_DIR, ScanContainer, env};

/// Our own configuration file, mounted read-only; its presence on the command line turns off the
/// repository's `kics.config`.
pub const CONFIG_PATH: &str = "/etc/gatehouse/kics/kics.config";

/// Base name of the reports: `results.json` and `results.sarif` in [`OUTPUT_DIR`].
pub const OUTPUT_NAME: &str = "results";

/// Exit codes: with `--ignore-on-exit results`, findings never change the exit code, so 0 is a
/// completed scan whatever it found; 126 an engine or configuration error; 130 a SIGTERM/SIGINT
/// (KICS's own); 137 a SIGKILL or OOM kill (from Kubernetes).
pub const EXIT_COMPLETED: i32 = 0;
/// Engine error: bad arguments, path not found, a report that could not be written.
pub const EXIT_ENGINE_ERROR: i32 = 126;

/// The KICS container: our arguments, the repository root as working directory (report paths
/// come out relative to it), a read-only checkout, and `HOME` in the writable `/tmp`.
pub fn container(settings: Option<&KicsSettings>) -> ScanContainer {
    ScanContainer {
        args: scan_args(settings),
        env: vec![env("HOME", "/tmp")],
        working_dir: SOURCE_DIR.to_owned(),
        source_mount: SOURCE_DIR,
        source_writable: false,
        output_mount: OUTPUT_DIR,
        // `--config` already turns auto-loading off; removing the file as well means a future
        // KICS that changes that rule still cannot read it.
        remove_from_checkout: vec!["kics.config"],
        kics_config: true,
    }
}

/// The contents of Gatehouse's own KICS configuration file: every setting is on the command
/// line, so the file only has to exist and parse.
pub const CONFIG_CONTENTS: &str = "{}\n";

/// The arguments of the `kics` entrypoint for a scan with `settings`; run with the working
/// directory at [`SOURCE_DIR`] so report paths are relative to the repository root (KICS makes
/// them relative to its current directory).
pub fn scan_args(settings: Option<&KicsSettings>) -> Vec<String> {
    let mut args: Vec<String> = [
        "scan",
        "--ci",
        "--no-color",
        "--no-progress",
        "--path",
        SOURCE_DIR,
        "--output-path",
        OUTPUT_DIR,
        "--output-name",
        OUTPUT_NAME,
        "--report-formats",
        "json,sarif",
        // Findings never fail the container: the conclusion comes from the report. Not
        // `errors`/`all`: engine errors would exit 0, and KICS would ignore SIGTERM.
        "--ignore-on-exit",
        "results",
        "--config",
        CONFIG_PATH,
        // By default KICS skips what the repository's .gitignore lists: a pull request could hide
        // files from its own scan.
        "--exclude-gitignore",
        // The CIS descriptions endpoint has answered nothing since 2023; no network call for it.
        "--disable-full-descriptions",
    ]
    .map(str::to_owned)
    .into();
    let Some(settings) = settings else {
        return args;
    };
    let mut list = |flag: &str, values: Vec<&str>| {
        if !values.is_empty() {
            args.push(flag.to_owned());
            args.push(values.join(","));
        }
    };
    list(
        "--exclude-paths",
        settings.exclude_paths.iter().map(String::as_str).collect(),
    );
    list(
        "--exclude-queries",
        settings
            .exclude_queries
            .iter()
            .map(String::as_str)
            .collect(),
    );
    list(
        "--exclude-severities",
        settings
            .exclude_severities
            .iter()
            .map(|s| s.as_str())
            .collect(),
    );
    list(
        "--type",
        settings.platforms.iter().map(String::as_str).collect(),
    );
    list(
        "--cloud-provider",
        settings
            .cloud_providers
            .iter()
            .map(String::as_str)
            .collect(),
    );
    if settings.disable_secrets {
        args.push("--disable-secrets".to_owned());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_crds::severity::Severity;

    const BASE: &str = "scan --ci --no-color --no-progress --path /workspace/src \
        --output-path /workspace/out --output-name results --report-formats json,sarif \
        --ignore-on-exit results --config /etc/gatehouse/kics/kics.config --exclude-gitignore \
        --disable-full-descriptions";

    #[test]
    fn without_settings_the_scan_is_complete_and_ignores_the_repositorys_configuration() {
        assert_eq!(scan_args(None).join(" "), BASE);
        assert_eq!(scan_args(Some(&KicsSettings::default())).join(" "), BASE);
    }

    #[test]
    fn policy_settings_become_flags_and_nothing_else_does() {
        let settings = KicsSettings {
            exclude_paths: vec!["vendor/*".to_owned(), "**/testdata/*".to_owned()],
            exclude_queries: vec!["a227ec01-f97a-4084-91a4-47b350c1db54".to_owned()],
            exclude_severities: vec![Severity::Info, Severity::Low],
            platforms: vec!["Terraform".to_owned(), "Kubernetes".to_owned()],
            cloud_providers: vec!["aws".to_owned()],
            disable_secrets: true,
        };
        let args = scan_args(Some(&settings));
        assert_eq!(
            args[BASE.split(' ').count()..].join(" "),
            "--exclude-paths vendor/*,**/testdata/* \
             --exclude-queries a227ec01-f97a-4084-91a4-47b350c1db54 \
             --exclude-severities info,low --type Terraform,Kubernetes --cloud-provider aws \
             --disable-secrets"
        );
        // Never what would let findings or errors pass silently.
        for forbidden in ["errors", "all", "--fail-on"] {
            assert!(!args.iter().any(|a| a == forbidden), "{forbidden}");
        }
    }
}
