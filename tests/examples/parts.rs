//! Costs of the per-delivery steps of the receive role on one 28 KB payload, to see where time
//! goes: `cargo run --release -p gatehouse-tests --example parts`.

use std::time::Instant;

fn time(label: &str, n: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{label}: {:.1} us",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn main() {
    let payload = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github/pull_request.opened.octokit.json"
    ))
    .unwrap_or_default();
    let sig = gatehouse_webhook::signature::sign(b"secret", &payload);
    let verifier = gatehouse_webhook::signature::Verifier::new(&["secret"]);
    time("signature check (Verifier, ring HMAC)", 2000, || {
        let _ = std::hint::black_box(verifier.verify(&sig, &payload));
    });
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
    let expected = hex::decode(&sig[7..]).unwrap_or_default();
    time("ring HMAC alone", 2000, || {
        let _ = std::hint::black_box(ring::hmac::verify(&key, &payload, &expected));
    });
    time("json action only", 2000, || {
        #[derive(serde::Deserialize)]
        struct A {
            #[allow(dead_code)]
            action: Option<String>,
        }
        let _ = std::hint::black_box(serde_json::from_slice::<A>(&payload));
    });
    time("lz4 compress", 2000, || {
        let _ = std::hint::black_box(lz4_flex::compress_prepend_size(&payload));
    });
}
