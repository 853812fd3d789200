//! `runbase run` and `runbase runs` as a user runs them: a child process configured by
//! `RUNBASE_URL` and `RUNBASE_API_KEY`, against the real server.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{BIN, Server};
use serde_json::{Value, json};
use std::process::{Command, Output};

/// `runbase <args>` with the server's address and `key` in the environment (none when `None`).
fn runbase(s: &Server, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUNBASE_URL", &s.url)
        .env_remove("RUNBASE_API_KEY")
        .env_remove("RUST_LOG");
    if let Some(key) = key {
        cmd.env("RUNBASE_API_KEY", key);
    }
    cmd.output().unwrap()
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_and_downloads_every_output() {
    let s = Server::start();
    let key = s.account("cli@example.com", 100);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("outputs");
    let out = runbase(
        &s,
        Some(&key),
        &[
            "run",
            "runbase/placeholder-image",
            "prompt=a lighthouse at dusk",
            "aspect_ratio=16:9",
            "--wait",
            "--download",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let run = stdout_json(&out);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["input"],
        json!({"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})
    );
    let urls = run["output"]["urls"].as_array().unwrap();
    assert!(!urls.is_empty(), "{run}");
    let err = stderr(&out);
    // Not a terminal: no progress line, only where each file went.
    assert!(!err.contains('\r'), "{err:?}");
    let mut saved = Vec::new();
    for url in urls {
        let url = url.as_str().unwrap();
        let name = url.rsplit('/').next().unwrap();
        let path = out_dir.join(name);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            s.client().download(url).await,
            "{}",
            path.display()
        );
        assert!(
            err.lines()
                .any(|l| l == format!("saved {}", path.display())),
            "{err}"
        );
        saved.push(path);
    }
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), saved.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_are_typed_by_the_schema_and_runs_can_be_read_and_canceled() {
    let s = Server::start();
    let key = s.account("typed@example.com", 100);
    // `text` is a string in the schema, so 123 stays "123"; `delay_ms` an integer.
    let out = runbase(
        &s,
        Some(&key),
        &["run", "runbase/echo", "text=123", "delay_ms=10", "--wait"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let run = stdout_json(&out);
    assert_eq!(run["input"], json!({"text": "123", "delay_ms": 10}));
    assert_eq!(run["output"]["text"], "123");

    // Without --wait: the created run, at once.
    let out = runbase(
        &s,
        Some(&key),
        &["run", "runbase/echo", "text=slow", "delay_ms:=30000"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let created = stdout_json(&out);
    assert_eq!(created["status"], "pending");
    let id = created["id"].as_str().unwrap();

    let out = runbase(&s, Some(&key), &["runs", "get", id]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout_json(&out)["id"], id);
    let out = runbase(&s, Some(&key), &["runs", "cancel", id]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout_json(&out)["status"], "canceled");

    // `runs list`: one JSON object a line, newest first.
    let out = runbase(&s, Some(&key), &["runs", "list"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], id);

    // A run that fails: its error, and exit status 3.
    let out = runbase(
        &s,
        Some(&key),
        &["run", "runbase/echo", "text=x", "fail=it broke", "--wait"],
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert_eq!(stdout_json(&out)["status"], "failed");
    assert!(stderr(&out).contains("it broke"), "{}", stderr(&out));
}

#[test]
fn errors_print_their_code_and_exit_non_zero() {
    let s = Server::start();
    let key = s.account("errors@example.com", 100);

    let out = runbase(
        &s,
        Some("sk-not-a-real-key"),
        &["run", "runbase/echo", "text=x", "--wait"],
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("invalid_api_key"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let out = runbase(&s, Some(&key), &["run", "runbase/echo", "delay_ms=5"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("invalid_input"), "{}", stderr(&out));

    let broke = s.account("broke@example.com", 0);
    let out = runbase(&s, Some(&broke), &["run", "runbase/echo", "text=x"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("insufficient_balance"),
        "{}",
        stderr(&out)
    );

    // No key anywhere: a usage error that says what to set, before any request.
    let out = runbase(&s, None, &["run", "runbase/echo", "text=x"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("RUNBASE_API_KEY"), "{}", stderr(&out));

    // A field that is not key=value: a usage error too.
    let out = runbase(&s, Some(&key), &["run", "runbase/echo", "text"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("key=value"), "{}", stderr(&out));

    // Nothing was created by any of it; the address may also be given with its `/api/v1`.
    let out = runbase(
        &s,
        Some(&key),
        &["runs", "list", "--url", &format!("{}/api/v1/", s.url)],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The client's variables are not configuration: the server's commands do not warn about them.
    let out = s
        .cli_command(&["accounts", "list"])
        .env("RUNBASE_API_KEY", &key)
        .env("RUNBASE_URL", &s.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(
        !stderr(&out).contains("RUNBASE_API_KEY"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("RUNBASE_URL"), "{}", stderr(&out));
}

/// `--timeout` waits (as `--download` does) and stops waiting with exit status 4; a `--download`
/// directory that cannot be made is refused before the run is created, so it costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_waits_and_a_bad_download_directory_creates_no_run() {
    let s = Server::start();
    let key = s.account("flags@example.com", 100);
    let out = runbase(
        &s,
        Some(&key),
        &[
            "run",
            "runbase/echo",
            "text=slow",
            "delay_ms=30000",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "stderr: {}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let before = s.client().balance(&key).await;
    // `runbase run MODEL prompt=p --download DIR`.
    let download_to = |model: &str, dir: &std::path::Path| {
        runbase(
            &s,
            Some(&key),
            &[
                "run",
                model,
                "prompt=p",
                "--download",
                dir.to_str().unwrap(),
            ],
        )
    };
    let out = download_to("runbase/placeholder-image", &file);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("--download"), "{}", stderr(&out));
    // A directory that exists but takes no files (Linux's /proc/sys, even for root), and a
    // timeout out of range: refused before the create too.
    for args in [
        &["--download", "/proc/sys"][..],
        &["--timeout", "0"][..],
        &["--timeout", "18446744073709551615"][..],
    ] {
        let mut all = vec!["run", "runbase/placeholder-image", "prompt=p"];
        all.extend_from_slice(args);
        let out = runbase(&s, Some(&key), &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(s.client().balance(&key).await, before);
    let out = runbase(&s, Some(&key), &["runs", "list"]);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), 1, "only the echo run: {listed}");

    // A create the server refuses leaves none of the directories `--download` made for it; a
    // directory that was there before stays.
    let made = dir.path().join("new").join("nested");
    let out = download_to("runbase/no-such-model", &made);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("model"), "{}", stderr(&out));
    assert!(
        !dir.path().join("new").exists(),
        "the directories made stayed"
    );
    assert!(dir.path().exists());
    // Empty directories reached through `..` after a part that was missing were there before:
    // only the missing part, made for this create, goes.
    let kept = dir.path().join("kept");
    std::fs::create_dir_all(kept.join("inner")).unwrap();
    for through in [
        "ghost/../kept",
        "ghost/../kept/inner",
        "ghost/a/../../kept/inner",
    ] {
        let out = download_to("runbase/no-such-model", &dir.path().join(through));
        assert_eq!(out.status.code(), Some(1), "{through}: {}", stderr(&out));
        assert!(
            kept.join("inner").is_dir(),
            "{through} took away a directory it did not make"
        );
        assert!(
            !dir.path().join("ghost").exists(),
            "{through}: the made part stayed"
        );
    }
}
