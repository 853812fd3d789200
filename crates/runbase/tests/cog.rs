//! The Cog adapter against real Cog model servers (the `cog` package from PyPI, whose `coglet`
//! server speaks the protocol Replicate's models use), running the small predictors in
//! `tests/cog/`. `scripts/test` installs cog into a virtualenv and sets `RUNBASE_TEST_COG_VENV`;
//! without it the test is skipped locally and fails under CI.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{Client, Server};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Cog server for one predictor.
struct CogServer {
    child: Child,
    url: String,
}

impl Drop for CogServer {
    fn drop(&mut self) {
        // The server's predictor worker exits with it (coglet ties the worker to its parent).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cog_venv() -> Option<PathBuf> {
    match std::env::var_os("RUNBASE_TEST_COG_VENV") {
        Some(v) => Some(PathBuf::from(v)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "RUNBASE_TEST_COG_VENV must be set under CI (scripts/test installs cog)"
            );
            eprintln!("skipped: run through scripts/test, which installs a Cog server");
            None
        }
    }
}

/// Starts `python -m cog.server.http` for `predictor` on a free port and waits until ready.
fn start_cog(venv: &Path, predictor: &str) -> CogServer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cog");
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-m", "cog.server.http", "--host", "127.0.0.1"])
        .current_dir(&dir)
        .env("PATH", path)
        .env("PORT", "0")
        .env("COG_PREDICT_TYPE_STUB", format!("{predictor}:Predictor"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start the Cog server");
    // The server logs JSON lines on stderr; the address is in "Starting coglet server on ...".
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(i) = line.find("Starting coglet server on ") {
                let rest = &line[i + "Starting coglet server on ".len()..];
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the Cog server printed its address");
    let server = CogServer {
        child,
        url: format!("http://{addr}"),
    };
    wait_ready(&server.url);
    server
}

fn health(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", &format!("{url}/health-check")])
        .output();
    let body = out.map(|o| o.stdout).unwrap_or_default();
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = health(url);
        if status == "READY" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Cog server at {url} is {status:?}, not READY"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn model(id: &str, url: &str, category: &str, timeout: u64, input: &str) -> String {
    format!(
        r#"
[[model]]
id = "{id}"
name = "{id}"
category = "{category}"
provider = "cog"
options = {{ url = "{url}" }}
timeout_secs = {timeout}
price = {{ cents = 4 }}
input_schema = {input}
output_schema = {{ type = "object", properties = {{ urls = {{ type = "array" }}, text = {{ type = "string" }} }} }}
"#
    )
}

const PROMPT: &str =
    r#"{ type = "object", required = ["prompt"], properties = { prompt = { type = "string" } } }"#;
const SECONDS: &str = r#"{ type = "object", properties = { seconds = { type = "number", minimum = 0, maximum = 60 } } }"#;

async fn run(c: &Client, key: &str, model: &str, input: Value) -> Value {
    let r = c.create(key, json!({"model": model, "input": input})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    c.wait(key, r.body["id"].as_str().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cog_models_run_fail_time_out_and_cancel() {
    let Some(venv) = cog_venv() else { return };
    let text = start_cog(&venv, "text.py");
    let image = start_cog(&venv, "image.py");
    let fail = start_cog(&venv, "fail.py");
    let slow_a = start_cog(&venv, "slow.py");
    let slow_b = start_cog(&venv, "slow.py");

    let mut catalog = String::new();
    catalog += &model("cog/text", &text.url, "text generation", 60, PROMPT);
    catalog += &model("cog/image", &image.url, "text to image", 60, PROMPT);
    catalog += &model("cog/fail", &fail.url, "text generation", 60, PROMPT);
    catalog += &model(
        "cog/slow-timeout",
        &slow_a.url,
        "text generation",
        2,
        SECONDS,
    );
    catalog += &model("cog/slow", &slow_b.url, "text generation", 60, SECONDS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cog.toml");
    std::fs::write(&file, catalog).unwrap();
    let list = format!("[\"{}\"]", file.display());
    let s = Server::start_with(&[
        ("RUNBASE_CATALOG", list.as_str()),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
        // A Cog server runs one prediction at a time and answers 409 when busy: retried.
        ("RUNBASE_PROVIDERS__RETRY__MAX_RETRIES", "10"),
        ("RUNBASE_PROVIDERS__RETRY__BASE_BACKOFF_MS", "100"),
        ("RUNBASE_PROVIDERS__RETRY__MAX_BACKOFF_MS", "500"),
    ]);
    let key = s.account("cog@example.com", 100);
    let c = s.client();

    let (text_run, image_run, fail_run, timeout_run, busy) = tokio::join!(
        run(&c, &key, "cog/text", json!({"prompt": "hello"})),
        run(&c, &key, "cog/image", json!({"prompt": "red"})),
        run(&c, &key, "cog/fail", json!({"prompt": "x"})),
        run(&c, &key, "cog/slow-timeout", json!({"seconds": 30})),
        // Two runs for one single-slot server: Runbase sends them one after the other.
        async {
            tokio::join!(
                run(&c, &key, "cog/slow", json!({"seconds": 0.5})),
                run(&c, &key, "cog/slow", json!({"seconds": 0.5})),
            )
        },
    );

    assert_eq!(text_run["status"], "succeeded", "{text_run}");
    assert_eq!(text_run["output"]["text"], "echo: hello");

    assert_eq!(image_run["status"], "succeeded", "{image_run}");
    let png_bytes = c
        .download(image_run["output"]["urls"][0].as_str().unwrap())
        .await;
    let dec = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    assert_eq!(
        (dec.info().width, dec.info().height),
        (4, 4),
        "the predictor's PNG"
    );

    assert_eq!(fail_run["status"], "failed", "{fail_run}");
    assert_eq!(fail_run["error"]["code"], "model_error");
    assert!(
        fail_run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed on purpose"),
        "{fail_run}"
    );

    assert_eq!(timeout_run["status"], "failed", "{timeout_run}");
    assert_eq!(timeout_run["error"]["code"], "timeout");
    // The timed-out prediction was stopped, so the server takes work again at once.
    wait_ready(&slow_a.url);

    assert_eq!(busy.0["status"], "succeeded", "{}", busy.0);
    assert_eq!(busy.1["status"], "succeeded", "{}", busy.1);
    assert_eq!(busy.0["output"]["text"], "done");

    // Cancel a prediction in flight: the run is canceled and refunded, the server freed.
    let r = c
        .create(&key, json!({"model": "cog/slow", "input": {"seconds": 30}}))
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    c.wait_for_status(&key, &id, "processing").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&slow_b.url) != "BUSY" {
        assert!(Instant::now() < deadline, "the prediction never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let canceled = c
        .post_raw(Some(&key), &format!("/api/v1/runs/{id}/cancel"), "")
        .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    let started = Instant::now();
    wait_ready(&slow_b.url);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the prediction was stopped, not left to run its 30 s"
    );

    // Paid: text, image and the two busy runs (4 × 4¢); failed, timed out and canceled: refunded.
    assert_eq!(c.balance(&key).await, 100 - 16);
}
