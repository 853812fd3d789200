//! `serve --role api|worker`: an API process and a worker process on one SQLite data directory
//! complete runs together; a worker serves only its health and the output files; a second
//! worker on the same SQLite directory is refused.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::Server;
use serde_json::json;
use std::time::Duration;

fn api_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RUNBASE_ROLE", "api"),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1000000"),
    ]
}

#[tokio::test]
async fn an_api_process_and_a_worker_process_on_one_data_dir_complete_runs() {
    let dir = tempfile::tempdir().unwrap();
    let api = Server::start_in(dir.path(), &api_env());
    let key = api.account("split@example.com", 100);
    let c = api.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "queued"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let queued = r.body["id"].as_str().unwrap().to_owned();
    // An in-process worker is woken by the create and claims the run within milliseconds; the
    // API process has none, so the run waits for a worker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.run(&key, &queued).await.body["status"], "pending");
    assert!(
        api.log()
            .contains("not reachable from nodes on other machines"),
        "{}",
        api.log()
    );

    // The worker finds the run queued by the other process (it polls: the in-process wake-up
    // does not cross processes), and writes its files where the API serves them from.
    let worker = Server::start_in(
        dir.path(),
        &[
            ("RUNBASE_ROLE", "worker"),
            ("RUNBASE_WORKER__POLL_INTERVAL_MS", "50"),
            ("RUNBASE_PUBLIC_URL", &api.url),
        ],
    );
    let done = c.wait(&key, &queued).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["text"], "queued");
    let image = c
        .create(
            &key,
            json!({"model": "runbase/placeholder-image", "input": {"prompt": "two processes"}}),
        )
        .await;
    let image = c.wait(&key, image.body["id"].as_str().unwrap()).await;
    assert_eq!(image["status"], "succeeded", "{image}");
    let url = image["output"]["urls"][0].as_str().unwrap();
    assert!(url.starts_with(&api.url), "{url}");
    let bytes = c.download(url).await;
    assert!(bytes.starts_with(b"\x89PNG"));
    // Any node serves any output file: the worker too.
    let path = &url[url.find("/files/").unwrap()..];
    assert_eq!(c.download(&format!("{}{path}", worker.url)).await, bytes);
    // Charged once per run, never refunded.
    let ledger = api.cli(&["credits", "show", "--account", "split@example.com"]);
    assert_eq!(ledger.matches("run_charge").count(), 2, "{ledger}");
    assert_eq!(ledger.matches("run_refund").count(), 0, "{ledger}");

    // The worker serves nothing else.
    let w = worker.client();
    assert_eq!(w.get(None, "/health").await.status, 200);
    w.get(Some(&key), "/api/v1/account")
        .await
        .assert_error(404, "not_found");
    w.get(None, "/api/v1/models")
        .await
        .assert_error(404, "not_found");
}

#[test]
fn a_second_worker_on_one_sqlite_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start_in(dir.path(), &[("RUNBASE_ROLE", "worker")]);
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--role",
            "all",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process executes runs"), "{err}");
    // An API process is welcome.
    let api = Server::start_in(dir.path(), &api_env());
    assert!(
        api.log().contains("role=\"api\"") || api.log().contains("role=api"),
        "{}",
        api.log()
    );
}
