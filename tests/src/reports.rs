//! Scanner reports for tests and benchmarks, made from the real ones in `tests/fixtures/`.

use serde_json::{Value, json};

/// A KICS report of `n` findings: the Terraform fixture's 17 (`kics-v2_mixed-17-findings-
/// terraform_e2e086.json`, files under `/path/e2e/fixtures/samples`) repeated in query order,
/// each copy with its own fingerprint and line, as KICS would write them for a large
/// repository.
pub fn repeated_kics_report(n: usize) -> anyhow::Result<Vec<u8>> {
    let path = format!(
        "{}/fixtures/kics/kics-v2_mixed-17-findings-terraform_e2e086.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut report: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let queries = report["queries"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("no queries in the fixture"))?;
    let originals: Vec<Vec<Value>> = queries
        .iter()
        .map(|q| q["files"].as_array().cloned().unwrap_or_default())
        .collect();
    let mut made = 0;
    let mut copy = 0_usize;
    'outer: loop {
        for (q, files) in originals.iter().enumerate() {
            for file in files {
                if made == n {
                    break 'outer;
                }
                if copy > 0 {
                    let mut file = file.clone();
                    let id = file["similarity_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    file["similarity_id"] = Value::String(format!("{id}-{copy}"));
                    file["line"] = json!(copy % 5000 + 1);
                    if let Some(files) = queries[q]["files"].as_array_mut() {
                        files.push(file);
                    }
                }
                made += 1;
            }
        }
        copy += 1;
    }
    Ok(serde_json::to_vec(&report)?)
}
