//! End-to-end dashboard tests in real headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from npm): `e2e/dashboard.test.mjs`, run with Node's test runner against
//! this build's binary. It signs up, tops up through a signed Stripe webhook, creates a key and
//! uses it over HTTP, sees the run and its image, and checks that disabling the key, an IP
//! allowlist and a spend limit are enforced by the API; it saves screenshots of every page at
//! desktop and phone widths under `target/screenshots/`, and audits every page with axe-core.
//!
//! `scripts/test` installs the npm packages; `.ci/run` installs Chromium. Outside CI, the test
//! is skipped (with a message) when either is missing; under `CI=true` it fails instead.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn dashboard_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let e2e = root.join("e2e");
    let chromium = PathBuf::from(
        std::env::var("RUNBASE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let playwright = e2e.join("node_modules/playwright-core");
    let node = Command::new("node").arg("--version").output().is_ok();
    let missing: Vec<&str> = [
        (!chromium.exists()).then_some("chromium (apt-get install chromium)"),
        (!playwright.exists()).then_some("e2e/node_modules (npm ci --prefix e2e)"),
        (!node).then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "browser tests need {}", missing.join(", "));
        eprintln!("skipping the browser tests: missing {}", missing.join(", "));
        return;
    }
    let screenshots = root.join("target/screenshots");
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "dashboard.test.mjs"])
        .current_dir(&e2e)
        .env("RUNBASE_BIN", env!("CARGO_BIN_EXE_runbase"))
        .env("RUNBASE_TEST_CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &screenshots)
        .env_remove("RUST_LOG")
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "the browser tests failed (see above)");
}
