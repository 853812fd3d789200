//! `runbase backup PATH` while a server creates runs: the copy is one consistent moment (every
//! run with its charge, the ledger summing to the balance), and a server starts from it.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::{Server, relaxed};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A create as the test saw it: the run's id, when the request was sent and answered.
struct Created {
    id: String,
    sent: Instant,
    answered: Instant,
}

fn ledger(s: &Server, email: &str) -> Value {
    let out = s.cli(&[
        "credits",
        "show",
        "--account",
        email,
        "--json",
        "--limit",
        "100000",
    ]);
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_runs_are_created_is_consistent_and_serves() {
    // A copy of a SQLite store: on SQLite even when the suite runs on PostgreSQL.
    let server = Server::start_sqlite();
    let email = "backup@example.com";
    let key = server.account(email, 100_000);
    let c = server.client();
    // A run with an output file, finished before the backup: its file is copied too.
    let image = c
        .create(
            &key,
            json!({"model": "runbase/placeholder-image", "input": {"prompt": "a fox"}}),
        )
        .await;
    assert_eq!(image.status, 201, "{}", image.body);
    let image = c.wait(&key, image.body["id"].as_str().unwrap()).await;
    let file_url = image["output"]["urls"][0].as_str().unwrap().to_owned();
    let file_bytes = c.download(&file_url).await;
    let created: Arc<Mutex<Vec<Created>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (c, key, created, stop) = (c.clone(), key.clone(), created.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                let r = c
                    .create(
                        &key,
                        json!({"model": "runbase/echo", "input": {"text": "b"}}),
                    )
                    .await;
                assert_eq!(r.status, 201, "{}", r.body);
                let id = r.body["id"].as_str().unwrap().to_owned();
                let answered = Instant::now();
                created.lock().unwrap().push(Created { id, sent, answered });
            }
        }));
    }
    let count = |created: &Arc<Mutex<Vec<Created>>>| created.lock().unwrap().len();
    while count(&created) < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let backup_dir = tempfile::tempdir().unwrap();
    let path = backup_dir.path().join("copy");
    let started = Instant::now();
    let out = {
        let path = path.clone();
        let dir = server.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(common::BIN)
                .arg("backup")
                .arg(&path)
                .arg("--data-dir")
                .arg(&dir)
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let finished = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = count(&created);
    while count(&created) < before + 20 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    drop(server);

    let restored = Server::start_in(&path, &relaxed());
    let c = restored.client();
    let created = std::mem::take(&mut *created.lock().unwrap());
    let mut present = BTreeSet::from([image["id"].as_str().unwrap().to_owned()]);
    let mut during = 0;
    for run in &created {
        let r = c.run(&key, &run.id).await;
        if run.answered < started {
            // Committed before the backup began: in it.
            assert_eq!(r.status, 200, "{}: {}", run.id, r.body);
        } else if run.sent > finished {
            // Sent after the backup ended: not in it.
            r.assert_error(404, "run_not_found");
        } else {
            during += 1;
        }
        if r.status == 200 {
            present.insert(run.id.clone());
        }
    }
    eprintln!(
        "{} runs created, {} in the backup, {during} created while it was taken",
        created.len(),
        present.len()
    );
    // Every run in the copy completes on the restored server (those still queued or executing
    // when the copy was taken are picked up again).
    for id in &present {
        let done = c.wait(&key, id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    // Charges and runs were copied together: one charge per run in the copy, none for others,
    // and the ledger sums to the balance.
    let shown = ledger(&restored, email);
    let entries = shown["ledger"].as_array().unwrap();
    let charged: Vec<String> = entries
        .iter()
        .filter(|e| e["kind"] == "run_charge")
        .map(|e| e["runId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(charged.len(), present.len());
    assert_eq!(charged.into_iter().collect::<BTreeSet<_>>(), present);
    let sum: i64 = entries
        .iter()
        .map(|e| e["amountUsd"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, shown["balanceUsd"].as_i64().unwrap());
    assert_eq!(
        c.get(Some(&key), "/api/v1/account").await.body["balanceUsd"],
        shown["balanceUsd"]
    );
    // The output file is served by the restored server (the URL kept the old address).
    let path = &file_url[file_url.find("/files/").unwrap()..];
    assert_eq!(
        c.download(&format!("{}{path}", restored.url)).await,
        file_bytes
    );
}

#[test]
fn a_backup_refuses_a_non_empty_directory() {
    // A copy of a SQLite store: on SQLite even when the suite runs on PostgreSQL.
    let server = Server::start_sqlite();
    server.account("a@example.com", 0);
    let dest = server.dir.join("files-here");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("x"), b"x").unwrap();
    let out = server.cli_raw(&["backup", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn a_backup_refuses_a_directory_inside_the_data_directory() {
    // Inside `files/` it would copy itself without end; anywhere inside, it dies with its data.
    let server = Server::start_sqlite();
    server.account("a@example.com", 0);
    let dest = server.dir.join("files").join("snapshot");
    let out = server.cli_raw(&["backup", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inside the data directory"), "{stderr}");
    assert!(!dest.exists(), "the refused destination is not left behind");
}
