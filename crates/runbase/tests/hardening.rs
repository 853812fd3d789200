//! The findings of the hostile review (issue 16), each pinned: slow clients are cut and capped
//! while others are served, the key is checked before a body is read, every error under `/api/`
//! and `/webhooks/` is the envelope, and the smaller holes (copyable commands, control
//! characters, mapped allowlist entries, administrators, out-of-range credits).

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::{Server, relaxed};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The server's `host:port`.
fn addr(s: &Server) -> std::net::SocketAddr {
    s.url.trim_start_matches("http://").parse().unwrap()
}

/// A connection to the server from the loopback address `src` (any of 127.0.0.0/8 reaches it,
/// so one test can be several clients).
async fn connect_from(src: &str, s: &Server) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(addr(s)).await.unwrap()
}

/// Everything the server sends until it closes the connection (or resets it).
async fn read_until_closed(r: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// One HTTP/1.1 response: its head and its `Content-Length` of body (the connection may stay
/// open after it).
async fn read_response(r: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if all.len() >= end + 4 + len {
                return all;
            }
        }
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// The JSON body of a raw HTTP/1.1 response (after the blank line).
fn raw_body(resp: &[u8]) -> Value {
    let text = String::from_utf8_lossy(resp);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON response: {text}"))
}

fn config_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = relaxed();
    env.extend_from_slice(extra);
    env
}

#[tokio::test]
async fn slow_clients_are_cut_and_capped_while_others_are_served() {
    let server = Server::start_with(&config_env(&[
        ("RUNBASE_HTTP__HEADER_TIMEOUT_SECS", "1"),
        ("RUNBASE_HTTP__BODY_TIMEOUT_SECS", "2"),
        ("RUNBASE_HTTP__MAX_CONNECTIONS", "100"),
        ("RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP", "20"),
    ]));
    let key = server.account("slow@example.com", 0);
    let s = &server;
    let test = async {
        let mut slow = Vec::new();
        // 10 clients that trickle a header line every 300 ms and never finish the head: the
        // header timeout is not renewed by each line.
        for _ in 0..10 {
            let (mut r, mut w) = connect_from("127.0.0.2", s).await.into_split();
            let writer = tokio::spawn(async move {
                if w.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if w.write_all(b"X-Trickle: 1\r\n").await.is_err() {
                        return;
                    }
                }
            });
            slow.push(tokio::spawn(async move {
                let got = read_until_closed(&mut r).await;
                writer.abort();
                ("trickle", got)
            }));
        }
        // 4 that send half a head and fall silent.
        for _ in 0..4 {
            let mut c = connect_from("127.0.0.2", s).await;
            c.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
            slow.push(tokio::spawn(async move {
                ("partial", read_until_closed(&mut c).await)
            }));
        }
        // 3 that send a head promising 100 bytes of body, then 10 of them.
        for _ in 0..3 {
            let mut c = connect_from("127.0.0.2", s).await;
            let head = format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
            );
            c.write_all(head.as_bytes()).await.unwrap();
            slow.push(tokio::spawn(async move {
                ("body", read_until_closed(&mut c).await)
            }));
        }
        // 3 that make one request and keep the connection open, idle.
        for _ in 0..3 {
            let mut c = connect_from("127.0.0.2", s).await;
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            slow.push(tokio::spawn(async move {
                ("idle", read_until_closed(&mut c).await)
            }));
        }
        // That host's 20 connections are open: more are closed before anything is read.
        let mut refused = Vec::new();
        for _ in 0..10 {
            let mut c = connect_from("127.0.0.2", s).await;
            refused.push(tokio::spawn(async move { read_until_closed(&mut c).await }));
        }

        // Meanwhile another client is served, again and again.
        let client = s.client();
        let mut served = 0;
        while slow.iter().any(|t| !t.is_finished()) {
            let r = client.get(None, "/health").await;
            assert_eq!(r.status, 200, "{}", r.body);
            let r = client.get(Some(&key), "/api/v1/account").await;
            assert_eq!(r.status, 200, "{}", r.body);
            served += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served > 0);

        for t in refused {
            let got = t.await.unwrap();
            assert!(
                got.is_empty(),
                "a connection over the per-address cap was answered: {}",
                String::from_utf8_lossy(&got)
            );
        }
        for t in slow {
            let (kind, got) = t.await.unwrap();
            let text = String::from_utf8_lossy(&got);
            match kind {
                // Cut without a response.
                "trickle" | "partial" => assert!(!text.contains("200 OK"), "{kind}: {text}"),
                "body" => {
                    assert!(text.starts_with("HTTP/1.1 408"), "{kind}: {text}");
                    assert_eq!(raw_body(&got)["error"]["code"], "request_timeout");
                }
                _ => assert!(text.starts_with("HTTP/1.1 200"), "{kind}: {text}"),
            }
        }
        // Their slots are free again: that host is served once more.
        let mut c = connect_from("127.0.0.2", s).await;
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_until_closed(&mut c).await;
        assert!(got.starts_with(b"HTTP/1.1 200"));
    };
    // The bound of the whole test: the cuts come after 1-2 s; a server that never cuts them
    // fails here.
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("slow connections were still open after 30 s");
}

/// A connection from `src` with a 4 KB receive buffer that sends `n` pipelined requests for
/// the model list and reads nothing; its reader is handed back, unread.
async fn pipeline_and_never_read(
    src: &str,
    s: &Server,
    n: usize,
) -> tokio::net::tcp::OwnedReadHalf {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let (r, mut w) = sock.connect(addr(s)).await.unwrap().into_split();
    // The server reads requests only as it answers them, so the writer may block: it runs on
    // its own (and ends when the connection does).
    tokio::spawn(async move {
        let reqs = "GET /api/v1/models HTTP/1.1\r\nHost: x\r\n\r\n".repeat(n);
        let _ = w.write_all(reqs.as_bytes()).await;
        std::future::pending::<()>().await;
    });
    r
}

/// Whether a fresh connection from `src` is answered (and not closed unread by a cap).
async fn served_from(src: &str, s: &Server) -> bool {
    let mut c = connect_from(src, s).await;
    if c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    read_until_closed(&mut c).await.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut() {
    let server = Server::start_with(&config_env(&[
        ("RUNBASE_HTTP__WRITE_TIMEOUT_SECS", "1"),
        ("RUNBASE_HTTP__MAX_CONNECTIONS", "100"),
        ("RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP", "2"),
    ]));
    let s = &server;
    const SENT: usize = 2000;
    let test = async {
        // 127.0.0.3 fills its two slots with connections that pipeline 2,000 requests (tens of
        // megabytes of answers, far past any socket buffer) and never read...
        let mut stuck = [
            pipeline_and_never_read("127.0.0.3", s, SENT).await,
            pipeline_and_never_read("127.0.0.3", s, SENT).await,
        ];
        // Both are accepted and being answered (so they hold their address's two slots) before
        // anything else is tried: read the first bytes of an answer from each, then stop.
        for r in &mut stuck {
            let mut first = [0u8; 15];
            r.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"HTTP/1.1 200 OK");
        }
        // ...so it is not served while they hold, and everyone else is, throughout, until the
        // server cuts them and that host is served again.
        let client = s.client();
        loop {
            let r = client.get(None, "/health").await;
            assert_eq!(r.status, 200, "{}", r.body);
            if served_from("127.0.0.3", s).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The stuck connections were closed with most of their answers never written.
        for mut r in stuck {
            let got = read_until_closed(&mut r).await;
            let answers = got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
            assert!(
                answers < SENT,
                "all {answers} answers were written: not cut"
            );
        }
    };
    // The bound: the cut comes about a second after the client stops reading; a server that
    // never cuts fails here.
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("connections that never read were still open after 30 s");
}

#[tokio::test]
async fn shutdown_is_graceful_with_idle_and_slow_connections_open() {
    let mut server = Server::start();
    // A keep-alive connection whose request was answered (read before the stop: a request
    // still in the socket when the stop comes may be closed unanswered, which is allowed)...
    let mut idle = connect_from("127.0.0.1", &server).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = read_response(&mut idle).await;
    assert!(answered.starts_with(b"HTTP/1.1 200"));
    // ...and one stuck in the middle of its request line.
    let mut partial = connect_from("127.0.0.1", &server).await;
    partial.write_all(b"GET /health HT").await.unwrap();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Both are closed by the stop, not left open.
    for c in [&mut idle, &mut partial] {
        tokio::time::timeout(Duration::from_secs(10), read_until_closed(c))
            .await
            .expect("a connection left open after the server stopped");
    }
}

/// Sends the head of a 1 MB upload and the first kilobyte of it, then reads the answer (which
/// must come although the rest of the body never does).
async fn partial_upload(s: &Server, path: &str, headers: &str) -> (String, Value) {
    let got = partial_upload_raw(s, path, headers).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.get(9..12).unwrap_or_default().to_owned();
    (status, raw_body(&got))
}

/// [`partial_upload`]'s raw answer.
async fn partial_upload_raw(s: &Server, path: &str, headers: &str) -> Vec<u8> {
    let mut c = connect_from("127.0.0.1", s).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n{headers}\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&[b' '; 1000]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), read_response(&mut c))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer before the body was complete"))
}

#[tokio::test]
async fn the_key_and_the_signature_are_checked_before_the_body_is_read() {
    let server = Server::start_with(&config_env(&[
        ("RUNBASE_PAYMENTS__STRIPE__SECRET_KEY", "sk_test_hardening"),
        (
            "RUNBASE_PAYMENTS__STRIPE__WEBHOOK_SECRET",
            "whsec_hardening",
        ),
    ]));
    let (status, body) = partial_upload(&server, "/api/v1/runs", "").await;
    assert_eq!(status, "401");
    assert_eq!(body["error"]["code"], "missing_api_key");
    let (status, body) =
        partial_upload(&server, "/api/v1/runs", "Authorization: Bearer sk-nope\r\n").await;
    assert_eq!(status, "401");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, body) = partial_upload(&server, "/webhooks/stripe", "").await;
    assert_eq!(status, "400");
    assert_eq!(body["error"]["code"], "invalid_signature");
    // A key over its rate limit is refused before its body too.
    let limited = Server::start_with(&[("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1")]);
    let key = limited.account("rl@example.com", 0);
    limited.client().get(Some(&key), "/api/v1/runs/run_x").await;
    let (status, body) = partial_upload(
        &limited,
        "/api/v1/runs",
        &format!("Authorization: Bearer {key}\r\n"),
    )
    .await;
    assert_eq!(status, "429");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn routes_without_a_key_refuse_large_bodies_unread() {
    let server = Server::start_with(&config_env(&[
        ("RUNBASE_PAYMENTS__STRIPE__SECRET_KEY", "sk_test_hardening"),
        (
            "RUNBASE_PAYMENTS__STRIPE__WEBHOOK_SECRET",
            "whsec_hardening",
        ),
    ]));
    // Log-out without a session: sent to the log-in page, the body unread.
    let got = partial_upload_raw(
        &server,
        "/logout",
        "Content-Type: application/x-www-form-urlencoded\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 303"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("location: /login"),
        "{text}"
    );
    // The log-in form takes a few kilobytes, not a megabyte.
    let got = partial_upload_raw(
        &server,
        "/login",
        "Accept: text/html\r\nContent-Type: application/x-www-form-urlencoded\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // A Stripe signature header that is stale, malformed or has no signature: refused unread.
    for sig in ["t=1,v1=00", "t=soon,v1=00", "v1=00", "t=1"] {
        let (status, body) = partial_upload(
            &server,
            "/webhooks/stripe",
            &format!("Stripe-Signature: {sig}\r\n"),
        )
        .await;
        assert_eq!(status, "400", "{sig}");
        assert_eq!(body["error"]["code"], "invalid_signature", "{sig}");
    }
    // A fresh one gets its body read only up to the webhook's small cap.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, body) = partial_upload(
        &server,
        "/webhooks/stripe",
        &format!("Stripe-Signature: t={now},v1=00\r\n"),
    )
    .await;
    assert_eq!(status, "413");
    assert_eq!(body["error"]["code"], "payload_too_large");
}

/// One probe of the envelope table.
struct Probe {
    method: &'static str,
    path: &'static str,
    key: bool,
    /// Extra request headers.
    headers: &'static [(&'static str, &'static str)],
    /// Body size in bytes (0: none).
    body: usize,
    status: u16,
    code: &'static str,
}

#[tokio::test]
async fn every_api_error_is_the_envelope() {
    let server = Server::start_with(&config_env(&[
        ("RUNBASE_PAYMENTS__STRIPE__SECRET_KEY", "sk_test_hardening"),
        (
            "RUNBASE_PAYMENTS__STRIPE__WEBHOOK_SECRET",
            "whsec_hardening",
        ),
    ]));
    let key = server.account("env@example.com", 10);
    const BIG: usize = 2 << 20;
    // A well-formed, fresh header (with a wrong signature): its body is read, up to the cap.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh: &'static str = Box::leak(format!("t={now},v1=00").into_boxed_str());
    let sig: &'static [(&str, &str)] =
        Box::leak(vec![("stripe-signature", fresh)].into_boxed_slice());
    const STALE: &[(&str, &str)] = &[("stripe-signature", "t=1,v1=00")];
    let p = |method, path, key, body, status, code| Probe {
        method,
        path,
        key,
        headers: &[],
        body,
        status,
        code,
    };
    let table = [
        // Malformed path segments, with a key: the resource does not exist.
        p("GET", "/api/v1/runs/%ff", true, 0, 404, "run_not_found"),
        p(
            "POST",
            "/api/v1/runs/%ff/cancel",
            true,
            0,
            404,
            "run_not_found",
        ),
        p("GET", "/api/v1/models/%ff/x", false, 0, 404, "not_found"),
        p(
            "GET",
            "/api/v1/models/google/%c3%28",
            false,
            0,
            404,
            "not_found",
        ),
        p("GET", "/files/%ff/x", false, 0, 404, "not_found"),
        p("GET", "/files/run_x/%ff", false, 0, 404, "not_found"),
        p("POST", "/webhooks/%ff", false, 0, 404, "not_found"),
        // ... and without one: the key is asked for first.
        p("GET", "/api/v1/runs/%ff", false, 0, 401, "missing_api_key"),
        p(
            "POST",
            "/api/v1/runs/%ff/cancel",
            false,
            0,
            401,
            "missing_api_key",
        ),
        // Missing key on every authenticated route.
        p("POST", "/api/v1/runs", false, 10, 401, "missing_api_key"),
        p("GET", "/api/v1/runs", false, 0, 401, "missing_api_key"),
        p(
            "GET",
            "/api/v1/runs/run_x",
            false,
            0,
            401,
            "missing_api_key",
        ),
        p(
            "POST",
            "/api/v1/runs/run_x/cancel",
            false,
            0,
            401,
            "missing_api_key",
        ),
        p("GET", "/api/v1/account", false, 0, 401, "missing_api_key"),
        p("POST", "/api/v1/files", false, BIG, 401, "missing_api_key"),
        p("POST", "/files", false, BIG, 401, "not_logged_in"),
        // An upload that is not a form, with a good key.
        p("POST", "/api/v1/files", true, 10, 400, "invalid_request"),
        // Oversize bodies.
        p("POST", "/api/v1/runs", true, BIG, 413, "payload_too_large"),
        p("POST", "/api/v1/runs", false, BIG, 401, "missing_api_key"),
        p(
            "POST",
            "/webhooks/stripe",
            false,
            BIG,
            400,
            "invalid_signature",
        ),
        Probe {
            headers: sig,
            ..p(
                "POST",
                "/webhooks/stripe",
                false,
                BIG,
                413,
                "payload_too_large",
            )
        },
        Probe {
            headers: STALE,
            ..p(
                "POST",
                "/webhooks/stripe",
                false,
                BIG,
                400,
                "invalid_signature",
            )
        },
        p("POST", "/webhooks/nope", false, BIG, 404, "not_found"),
    ];
    let c = server.client();
    for probe in &table {
        let url = format!("{}{}", server.url, probe.path);
        let mut req = c
            .http
            .request(probe.method.parse().unwrap(), &url)
            .header("content-type", "application/json");
        if probe.key {
            req = req.bearer_auth(&key);
        }
        for (k, v) in probe.headers {
            req = req.header(*k, *v);
        }
        if probe.body > 0 {
            req = req.body(vec![b' '; probe.body]);
        }
        let r = c.send(req).await;
        let what = format!("{} {} (key: {})", probe.method, probe.path, probe.key);
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        assert_eq!(r.status, probe.status, "{what}: {}", r.body);
        r.assert_error(probe.status, probe.code);
    }

    // Headers past the limit (more than 100) are the envelope too, not hyper's empty 431.
    let mut req = c
        .http
        .get(format!("{}/api/v1/account", server.url))
        .bearer_auth(&key);
    for i in 0..120 {
        req = req.header(format!("x-pad-{i}"), "y");
    }
    c.send(req)
        .await
        .assert_error(431, "request_headers_too_large");
}

#[tokio::test]
async fn copyable_commands_are_shell_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let catalog = dir.path().join("hostile.toml");
    let evil = format!("x'; touch {} #", marker.display());
    std::fs::write(
        &catalog,
        format!(
            r#"
[[model]]
id = "runbase/hostile"
name = "Hostile"
description = "A catalogue entry whose example values are shell syntax."
tags = ["Text to text"]
maker = "Runbase"
provider = "builtin"
upstream = "echo"
price = {{ cents = 1 }}
output_schema = {{ type = "object" }}

[model.input_schema]
type = "object"
required = ["text", "style"]

[model.input_schema.properties.text]
type = "string"
default = "a cat's portrait"

[model.input_schema.properties.style]
type = "string"
enum = [{evil:?}]
"#
        ),
    )
    .unwrap();
    let env: Vec<(&str, String)> = vec![("RUNBASE_CATALOG", format!("[{:?}]", catalog))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(&env);
    let page = reqwest::get(format!("{}/models/runbase/hostile", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("id=\"curl-create\"").expect("the create command");
    let code = &page[at..];
    let code = &code[code.find("<code>").unwrap() + 6..code.find("</code>").unwrap()];
    let command = code
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    // Paste it into a shell, with `curl` swapped for something that prints its arguments.
    let words = command.strip_prefix("curl ").expect("a curl command");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' {words}"))
        .env("RUNBASE_API_KEY", "sk-env")
        .output()
        .unwrap();
    assert!(!marker.exists(), "pasting the command ran a shell command");
    assert!(out.status.success(), "{command}");
    let args: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let d = args.iter().position(|a| a == "-d").expect("-d") + 1;
    let body: Value = serde_json::from_str(&args[d]).unwrap();
    assert_eq!(
        body,
        json!({"model": "runbase/hostile", "input": {"text": "a cat's portrait", "style": evil}})
    );
    assert!(
        args.contains(&"Authorization: Bearer sk-env".to_owned()),
        "{args:?}"
    );
}

#[tokio::test]
async fn names_and_emails_with_control_characters_are_refused() {
    let server = Server::start();
    server.cli(&["accounts", "create", "ops@example.com"]);
    for email in [
        "evil\u{1b}[31m@example.com",
        "a\r\nb@example.com",
        "x\u{202e}@example.com",
        // Invisible and look-alike characters (the second review).
        "z\u{200b}@example.com",
        "z\u{200e}@example.com",
        "z@example.com\u{200b}",
        "z\u{1160}@example.com",
        "z\u{e0041}@example.com",
        "z\u{430}@example.com",
        "\u{ff5a}@example.com",
    ] {
        let out = server.cli_raw(&["accounts", "create", email]);
        assert!(!out.status.success(), "{email:?} was accepted");
    }
    for name in [
        "red\u{1b}[31m",
        "two\nlines",
        "cr\rname",
        "bidi\u{202e}",
        "line\u{2028}sep",
        "zero\u{200b}width",
        "mark\u{200e}",
        "arabic\u{61c}mark",
        "anchor\u{fff9}",
        "filler\u{3164}",
    ] {
        let out = server.cli_raw(&[
            "keys",
            "create",
            "--account",
            "ops@example.com",
            "--name",
            name,
        ]);
        assert!(!out.status.success(), "key name {name:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("control characters"), "{err}");
    }
    let key = server.key("ops@example.com", &["--name", "fine"]);
    let id_line = server.cli(&["keys", "list", "--account", "ops@example.com"]);
    let id = id_line.split_whitespace().next().unwrap().to_owned();
    let out = server.cli_raw(&["keys", "update", &id, "--name", "x\u{1b}]0;title\u{7}"]);
    assert!(
        !out.status.success(),
        "a rename to a control character was accepted"
    );
    // A credit's note is shown to the account: the CLI holds it to the dashboard's rules.
    for memo in ["gift\u{202e}txt", "line\nbreak", &"x".repeat(201)] {
        let out = server.cli_raw(&[
            "credits",
            "add",
            "--account",
            "ops@example.com",
            "--cents",
            "5",
            "--memo",
            memo,
        ]);
        assert!(!out.status.success(), "a note {memo:?} was accepted");
    }
    // A rename is stored as a create stores a name: trimmed, and never empty.
    for blank in ["", "   "] {
        let out = server.cli_raw(&["keys", "update", &id, "--name", blank]);
        assert!(!out.status.success(), "a rename to {blank:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot be empty"), "{err}");
    }
    server.cli(&["keys", "update", &id, "--name", "  padded  "]);
    assert!(key.starts_with("sk-"));
    let list = server.cli(&["keys", "list", "--account", "ops@example.com"]);
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(!list.contains('\u{1b}'));
    // The status column (9 wide) and one space, then the trimmed name.
    assert!(list.contains("active    padded"), "{list}");
}

#[tokio::test]
async fn an_ipv4_mapped_allowlist_entry_allows_its_ipv4_client() {
    let server = Server::start();
    server.cli(&["accounts", "create", "mapped@example.com"]);
    let key = server.key("mapped@example.com", &["--allow-ip", "::ffff:127.0.0.1"]);
    let r = server.client().get(Some(&key), "/api/v1/account").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = server.cli(&["keys", "list", "--account", "mapped@example.com"]);
    assert!(listed.contains("ips [127.0.0.1]"), "{listed}");
    // Elsewhere is still refused.
    let other = server.key("mapped@example.com", &["--allow-ip", "::ffff:10.9.9.9"]);
    server
        .client()
        .get(Some(&other), "/api/v1/account")
        .await
        .assert_error(403, "ip_not_allowed");
    // IPv6 blocks wider than the mapped range (/96) hold IPv4 clients too.
    for wide in ["::ffff:0:0/95", "::/0"] {
        let key = server.key("mapped@example.com", &["--allow-ip", wide]);
        let r = server.client().get(Some(&key), "/api/v1/account").await;
        assert_eq!(r.status, 200, "{wide}: {}", r.body);
    }
}

#[tokio::test]
async fn administrators_are_listed_and_changed_from_the_command_line() {
    let server = Server::start();
    server.cli(&["accounts", "create", "first@example.com"]);
    server.cli(&["accounts", "create", "second@example.com"]);
    let admin_of = |list: &str, email: &str| -> String {
        let line = list
            .lines()
            .find(|l| l.contains(email))
            .unwrap_or_else(|| panic!("{email} not in {list}"));
        line.split_whitespace().nth(3).unwrap().to_owned()
    };
    let list = server.cli(&["accounts", "list"]);
    assert!(list.lines().next().unwrap().contains("ADMIN"), "{list}");
    assert_eq!(admin_of(&list, "first@example.com"), "yes");
    assert_eq!(admin_of(&list, "second@example.com"), "no");
    server.cli(&["accounts", "set-admin", "second@example.com"]);
    server.cli(&["accounts", "unset-admin", "first@example.com"]);
    let list = server.cli(&["accounts", "list"]);
    assert_eq!(admin_of(&list, "first@example.com"), "no");
    assert_eq!(admin_of(&list, "second@example.com"), "yes");
    let out = server.cli_raw(&["accounts", "set-admin", "nobody@example.com"]);
    assert!(!out.status.success());
    // The last administrator keeps the role.
    let out = server.cli_raw(&["accounts", "unset-admin", "second@example.com"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only administrator"), "{stderr}");
    let list = server.cli(&["accounts", "list"]);
    assert_eq!(admin_of(&list, "second@example.com"), "yes");
}

#[tokio::test]
async fn out_of_range_credits_are_a_clean_error() {
    let server = Server::start();
    server.cli(&["accounts", "create", "rich@example.com"]);
    for cents in ["9000000000000000", "9223372036854775807", "1000000001"] {
        for _ in 0..2 {
            let out = server.cli_raw(&[
                "credits",
                "add",
                "--account",
                "rich@example.com",
                "--cents",
                cents,
            ]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cents} was added");
            assert!(!err.contains("storage"), "{err}");
            assert!(err.contains("--cents"), "{err}");
        }
    }
    server.cli(&[
        "credits",
        "add",
        "--account",
        "rich@example.com",
        "--cents",
        "1000000000",
    ]);
    // A reader that has gone (`| head -0`): the credit is added and the command succeeds, no
    // panic on the broken pipe.
    let mut child = server
        .cli_command(&[
            "credits",
            "add",
            "--account",
            "rich@example.com",
            "--cents",
            "5",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    let shown = server.cli(&["credits", "show", "--account", "rich@example.com"]);
    assert!(shown.contains("balance 1000000005"), "{shown}");
}

/// NUL characters name no run and no account, and a model's failure message quoting one is
/// recorded, on every store (PostgreSQL's text cannot hold NUL: it must never reach it raw).
#[tokio::test]
async fn nul_characters_are_answered_not_stored() {
    let s = Server::start();
    let key = s.account("nul@example.com", 100);
    let c = s.client();
    let r = c.get(Some(&key), "/api/v1/runs/run_%00abc").await;
    r.assert_error(404, "run_not_found");
    let r = c
        .post_raw(Some(&key), "/api/v1/runs/run_%00abc/cancel", "")
        .await;
    r.assert_error(404, "run_not_found");
    let r = c.get(Some(&key), "/api/v1/runs?starting_after=%00").await;
    r.assert_error(404, "run_not_found");

    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "x", "fail": "bad\u{0}msg"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let done = c.wait(&key, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("bad") && message.contains("msg"),
        "{message}"
    );
    assert_eq!(c.balance(&key).await, json!(100), "refunded once");

    // A sign-in with a NUL in the email is a wrong sign-in, not a server error.
    let login = reqwest::Client::new()
        .post(format!("{}/login", s.url))
        .header("origin", &s.url)
        .form(&[
            ("email", "nul\u{0}@example.com"),
            ("password", "whatever-password"),
        ])
        .send()
        .await
        .unwrap();
    assert!(login.status().as_u16() < 500, "{}", login.status());
}
