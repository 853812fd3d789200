//! A client written only from runbase.net's public docs works against Runbase with nothing but
//! the base URL changed: `quickstart_client.py` (standard-library Python, from the project's
//! shared spec) creates a run, polls it as the docs advise, and checks the wire format
//! (`costUsd` integer micro-USD, millisecond timestamps, `output.urls` downloadable). It runs
//! against the real binary over HTTP, with a live key on a built-in model and with a test key
//! on `google/nano-banana-2` (no provider configured: the simulator answers).

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::Server;
use std::path::PathBuf;
use std::process::Command;

/// The client, vendored beside this file; it must stay the same as the shared spec's copy
/// (`../shared/compat/` beside the repository) whenever that is present.
fn client_script() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vendored = here.join("tests/compat/quickstart_client.py");
    let shared = here.join("../../../shared/compat/quickstart_client.py");
    if let Ok(upstream) = std::fs::read(&shared) {
        assert_eq!(
            std::fs::read(&vendored).unwrap(),
            upstream,
            "tests/compat/quickstart_client.py differs from {}: copy the shared one over",
            shared.display()
        );
    }
    vendored
}

fn run_client(s: &Server, key: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(client_script())
        .args(args)
        .env("RUNBASE_API_KEY", key)
        .env("RUNBASE_BASE_URL", format!("{}/api/v1", s.url))
        .env("RUNBASE_POLL_SECONDS", "0.2")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the docs' client failed against Runbase:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_docs_quickstart_client_works_with_a_live_key() {
    // The default rate limit: the client follows the docs' backoff on 429 by itself.
    let s = Server::start_with(&[]);
    let key = s.account("live@example.com", 100);
    let out = run_client(
        &s,
        &key,
        &[
            "runbase/placeholder-image",
            r#"{"prompt": "A lighthouse at dusk", "aspect_ratio": "16:9"}"#,
        ],
    );
    // 2 cents, exactly, as micro-USD.
    assert!(out.contains("costUsd 20000 ($0.0200)"), "{out}");
    assert!(out.contains("succeeded: "), "{out}");
}

#[test]
fn the_docs_quickstart_client_works_with_a_test_key_on_nano_banana_2() {
    let s = Server::start_with(&[]);
    s.account("test@example.com", 0);
    let key = s.key("test@example.com", &["--test"]);
    // No arguments: the quickstart's own request (google/nano-banana-2, prompt, 1:1).
    let out = run_client(&s, &key, &[]);
    assert!(out.contains("costUsd 0 "), "{out}");
    assert!(out.contains("succeeded: "), "{out}");
}
