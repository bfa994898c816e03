//! Runs the GitHub stand-in (`gatehouse_tests::github::FakeGitHub`) with one line printed per
//! request, so the operator can be pointed at it by hand:
//! `cargo run -p gatehouse-tests --example github-stand-in -- [seconds] [--url-file PATH]`, then
//! give the printed URL to the operator as its GitHub API URL. `--url-file` also writes the URL
//! (no newline) to `PATH`, replaced whole so a script never reads half of it. Stops after
//! `seconds` (default 3600) or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use gatehouse_tests::github::FakeGitHub;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut seconds: u64 = 3600;
    let mut url_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--url-file" {
            let path = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("--url-file needs a path"))?;
            url_file = Some(path.into());
        } else if let Some(path) = arg.strip_prefix("--url-file=") {
            url_file = Some(path.into());
        } else {
            seconds = arg.parse().map_err(|e| {
                anyhow::anyhow!("expected seconds or --url-file PATH, got {arg:?}: {e}")
            })?;
        }
    }
    let github = FakeGitHub::start().await?;
    github.set_verbose(true);
    let url = github.url();
    if let Some(path) = &url_file {
        // Written aside and renamed, so a reader sees no file or the whole URL.
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        std::fs::write(&partial, &url)?;
        std::fs::rename(&partial, path)?;
    }
    println!("github stand-in at {url}");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
