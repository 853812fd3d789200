//! Uploads (`POST /api/v1/files`, and the dashboard's `POST /files` with a session) against the
//! real binary: the type is read from the content, the size is capped as the body arrives, the
//! client's file name never reaches the storage path, the key (or session and CSRF token) comes
//! before the body, a run may name only its own account's uploads, and an own upload named in
//! a run is read from storage (not fetched over HTTP) by an adapter that sends images itself.
//! Runs on PostgreSQL too (`RUNBASE_TEST_DATABASE=postgres`).

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
mod doubles;

use base64::Engine;
use common::{Client, Resp, Server};
use serde_json::json;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUNDARY: &str = "rb-test-boundary-7d3f";

/// One part of a hand-built form: field name, file name, declared type, content.
struct Part<'a> {
    name: &'a str,
    filename: Option<&'a str>,
    content_type: &'a str,
    data: &'a [u8],
}

fn file<'a>(filename: &'a str, content_type: &'a str, data: &'a [u8]) -> Part<'a> {
    Part {
        name: "file",
        filename: Some(filename),
        content_type,
        data,
    }
}

/// A `multipart/form-data` body (built by hand, so file names can be anything).
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", p.name);
        if let Some(f) = p.filename {
            disposition += &format!("; filename=\"{f}\"");
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(format!("\r\nContent-Type: {}\r\n\r\n", p.content_type).as_bytes());
        body.extend_from_slice(p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn form_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

async fn post(c: &Client, key: Option<&str>, content_type: &str, body: Vec<u8>) -> Resp {
    let mut req = c
        .http
        .post(format!("{}/api/v1/files", c.base))
        .header("content-type", content_type)
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    c.send(req).await
}

async fn upload(c: &Client, key: &str, part: Part<'_>) -> Resp {
    post(c, Some(key), &form_type(), form(&[part])).await
}

fn png() -> Vec<u8> {
    doubles::png()
}

/// A short, valid WAV: 8 samples of 16-bit mono silence at 8 kHz.
fn wav() -> Vec<u8> {
    let data = [0u8; 16];
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

/// Checks the answer's shape and returns the URL.
fn assert_uploaded(r: &Resp, content_type: &str, size: usize) -> String {
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    assert!(id.starts_with("upl_"), "{}", r.body);
    assert_eq!(r.body["contentType"], content_type, "{}", r.body);
    assert_eq!(r.body["sizeBytes"], size as u64, "{}", r.body);
    assert!(r.body["createdAt"].as_str().unwrap().ends_with('Z'));
    let url = r.body["url"].as_str().unwrap().to_owned();
    assert!(url.contains(&format!("/files/{id}/")), "{url}");
    url
}

/// Every file under the data directory's storage, relative to it.
fn stored_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(at).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let root = dir.join("files");
    let mut out = Vec::new();
    if root.exists() {
        walk(&root, &root, &mut out);
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_type_comes_from_the_content_not_the_name() {
    let s = Server::start();
    let key = s.account("sniff@example.com", 0);
    let c = s.client();

    // A PNG named and declared as MP3 is a PNG, stored and served as one.
    let png = png();
    let r = upload(&c, &key, file("song.mp3", "audio/mpeg", &png)).await;
    let url = assert_uploaded(&r, "image/png", png.len());
    assert!(url.ends_with(".png"), "{url}");
    assert!(
        url.starts_with(&s.url),
        "an absolute URL under the server: {url}"
    );
    let got = c.http.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert_eq!(got.bytes().await.unwrap().to_vec(), png);

    // Audio with a misleading name and type is audio.
    let wav = wav();
    let r = upload(&c, &key, file("picture.jpg", "image/jpeg", &wav)).await;
    assert_uploaded(&r, "audio/wav", wav.len());

    // Text named and declared as a PNG is refused; so are an HTML page, a PDF and nothing.
    for (data, name) in [
        (&b"hello, this is not a picture"[..], "photo.png"),
        (b"<html><script>alert(1)</script></html>", "page.png"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "doc.webp"),
        (b"", "empty.png"),
    ] {
        let r = upload(&c, &key, file(name, "image/png", data)).await;
        r.assert_error(400, "invalid_input");
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains("PNG"),
            "the message says what is accepted: {}",
            r.body
        );
    }
    // Only the two accepted files were stored.
    assert_eq!(stored_files(&s.dir).len(), 2, "{:?}", stored_files(&s.dir));
}

#[tokio::test]
async fn the_size_is_capped_as_configured() {
    const CAP: usize = 4096;
    let cap = CAP.to_string();
    let mut env = common::relaxed();
    env.push(("RUNBASE_UPLOADS__MAX_BYTES", cap.as_str()));
    let s = Server::start_with(&env);
    let key = s.account("cap@example.com", 0);
    let c = s.client();
    let mut at_cap = png();
    at_cap.resize(CAP, 0);

    // Exactly the cap is accepted; one byte more is not.
    let r = upload(&c, &key, file("a.png", "image/png", &at_cap)).await;
    assert_uploaded(&r, "image/png", CAP);
    let mut over = at_cap.clone();
    over.push(0);
    let r = upload(&c, &key, file("b.png", "image/png", &over)).await;
    r.assert_error(413, "payload_too_large");
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains(&cap),
        "{}",
        r.body
    );

    // A body declared far larger is refused before it is read (and the client still gets the
    // answer, the rest being drained).
    let mut big = png();
    big.resize(512 * 1024, 0);
    let r = upload(&c, &key, file("big.png", "image/png", &big)).await;
    r.assert_error(413, "payload_too_large");

    // Without a declared length (chunked), it is cut as it arrives.
    let answer = chunked_upload(&s, &key, 64 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // Only the file at the cap was stored.
    assert_eq!(stored_files(&s.dir).len(), 1, "{:?}", stored_files(&s.dir));
}

/// Sends a form whose file is `size` bytes with `Transfer-Encoding: chunked`; returns the raw
/// answer.
async fn chunked_upload(s: &Server, key: &str, size: usize) -> String {
    let addr = s.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        form_type()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut content = png();
    content.resize(size, 0);
    let body = form(&[file("c.png", "image/png", &content)]);
    for chunk in body.chunks(1024) {
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.to_vec(),
            b"\r\n".to_vec(),
        ]
        .concat();
        // The server may answer (and stop reading) before the end; what it drains is enough.
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_file_name_cannot_choose_where_the_file_goes() {
    let s = Server::start();
    let key = s.account("names@example.com", 0);
    let c = s.client();
    let png = png();
    // A NUL in a part's head is not HTTP: the form is refused, with the envelope.
    upload(&c, &key, file("a\0b.png", "image/png", &png))
        .await
        .assert_error(400, "invalid_request");
    let names = [
        "../../../../etc/passwd",
        "x\"; filename*=UTF-8''..%2F..%2Fa%00b.png",
        "..\\..\\evil.png",
        "/tmp/absolute.png",
        "%2e%2e%2fescaped.png",
        "run_abc/../../x.png",
        "",
    ];
    for name in names {
        let r = upload(&c, &key, file(name, "image/png", &png)).await;
        let url = assert_uploaded(&r, "image/png", png.len());
        let id = r.body["id"].as_str().unwrap();
        assert_eq!(url, format!("{}/files/{id}/upload.png", s.url), "{name:?}");
        assert_eq!(c.download(&url).await, png);
    }
    // Each file is where its id says, and nothing else was written anywhere.
    let files = stored_files(&s.dir);
    assert_eq!(files.len(), names.len(), "{files:?}");
    for f in &files {
        let (dir, name) = f.split_once('/').unwrap();
        assert!(dir.starts_with("upl_") && name == "upload.png", "{f}");
    }
    assert!(!s.dir.join("evil.png").exists() && !s.dir.join("x.png").exists());
    assert!(!Path::new("/tmp/absolute.png").exists());

    // A file path that tries to climb out of the storage is not served.
    for path in [
        "/files/upl_x/..%2f..%2frunbase.db",
        "/files/..%2f..%2f/runbase.db",
        "/files/upl_x/%2e%2e",
    ] {
        let r = c.http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn the_key_is_checked_before_the_body() {
    let s = Server::start();
    let key = s.account("keys@example.com", 0);
    let c = s.client();
    let body = form(&[file("a.png", "image/png", &png())]);
    post(&c, None, &form_type(), body.clone())
        .await
        .assert_error(401, "missing_api_key");
    post(
        &c,
        Some("sk-000000000000000000000000000000000000000a"),
        &form_type(),
        body.clone(),
    )
    .await
    .assert_error(401, "invalid_api_key");
    s.cli(&["keys", "disable", &key]);
    post(&c, Some(&key), &form_type(), body)
        .await
        .assert_error(401, "invalid_api_key");
    assert!(stored_files(&s.dir).is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_a_form_with_a_file_is_refused() {
    let s = Server::start();
    let key = s.account("forms@example.com", 0);
    let c = s.client();
    let png = png();

    // Not multipart at all.
    post(
        &c,
        Some(&key),
        "application/json",
        b"{\"file\": \"x\"}".to_vec(),
    )
    .await
    .assert_error(400, "invalid_request");
    post(&c, Some(&key), "image/png", png.clone())
        .await
        .assert_error(400, "invalid_request");
    // Multipart without a boundary, or whose body is not the form it claims.
    post(&c, Some(&key), "multipart/form-data", form(&[]))
        .await
        .assert_error(400, "invalid_request");
    post(&c, Some(&key), &form_type(), b"this is not a form".to_vec())
        .await
        .assert_error(400, "invalid_request");
    // A form without a field named `file`.
    let r = post(
        &c,
        Some(&key),
        &form_type(),
        form(&[Part {
            name: "image",
            filename: Some("a.png"),
            content_type: "image/png",
            data: &png,
        }]),
    )
    .await;
    r.assert_error(400, "invalid_request");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"file\""),
        "{}",
        r.body
    );
    // Two files in one request.
    post(
        &c,
        Some(&key),
        &form_type(),
        form(&[
            file("a.png", "image/png", &png),
            file("b.png", "image/png", &png),
        ]),
    )
    .await
    .assert_error(400, "invalid_request");
    // Other fields beside the file are read past.
    let r = post(
        &c,
        Some(&key),
        &form_type(),
        form(&[
            Part {
                name: "purpose",
                filename: None,
                content_type: "text/plain",
                data: b"reference",
            },
            file("a.png", "image/png", &png),
        ]),
    )
    .await;
    assert_uploaded(&r, "image/png", png.len());
    assert_eq!(stored_files(&s.dir).len(), 1);
}

#[tokio::test]
async fn a_run_may_name_only_its_own_accounts_uploads() {
    let s = Server::start();
    s.account("owner@example.com", 0);
    let owner = s.key("owner@example.com", &["--test"]);
    s.account("other@example.com", 0);
    let other = s.key("other@example.com", &["--test"]);
    let c = s.client();
    let url = assert_uploaded(
        &upload(&c, &owner, file("ref.png", "image/png", &png())).await,
        "image/png",
        png().len(),
    );
    let run = |image_urls: Vec<String>| {
        json!({"model": "google/nano-banana-2",
               "input": {"prompt": "the same cat, in winter", "image_urls": image_urls}})
    };

    // Another account cannot use it, under any name of this server.
    let alias = url.replace("127.0.0.1", "localhost");
    let escaped = url.replace("/upl_", "/upl%5F");
    for named in [url.clone(), alias, escaped] {
        let r = c
            .create(&other, run(vec!["https://example.com/a.png".into(), named]))
            .await;
        r.assert_error(400, "invalid_input");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("input.image_urls[1]"), "{message}");
        assert!(message.contains("another account"), "{message}");
    }
    let listed = c.get(Some(&other), "/api/v1/runs").await;
    assert_eq!(listed.body["data"], json!([]), "no run was created");

    // Its owner can (simulated: a test key).
    let r = c.create(&owner, run(vec![url.clone()])).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let done = c.wait(&owner, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["input"]["image_urls"][0], url.as_str());
}

fn gemini_model() -> String {
    r#"
[[model]]
id = "test/gemini-edit"
name = "Gemini edit"
category = "image editing"
provider = "gemini"
upstream = "gemini-3.1-flash-image"
timeout_secs = 10
price = { cents = 5 }
input_schema = { type = "object", required = ["prompt"], properties = { prompt = { type = "string" }, image_urls = { type = "array", items = { type = "string", format = "uri" } } }, additionalProperties = false }
output_schema = { type = "object", properties = { urls = { type = "array" }, text = { type = "string" } } }
"#
    .to_owned()
}

/// The server's public address is a loopback one, which a user-supplied URL may never reach
/// (SSRF rules): the run succeeds only because its own upload is read from storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_upload_is_read_from_storage_by_the_adapter() {
    let gemini = doubles::gemini().await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(&catalog, gemini_model()).unwrap();
    let list = format!("[\"{}\"]", catalog.display());
    let base = format!("{}/v1beta", gemini.url);
    let mut env = common::relaxed();
    env.extend([
        ("RUNBASE_CATALOG", list.as_str()),
        ("GEMINI_API_KEY", "gemini-test-key"),
        ("RUNBASE_PROVIDERS__GEMINI__BASE_URL", base.as_str()),
    ]);
    let s = Server::start_with(&env);
    let key = s.account("gemini@example.com", 100);
    let c = s.client();
    let mut image = png();
    image.extend_from_slice(b"uploaded-marker"); // bytes after IEND: this very file
    let url = assert_uploaded(
        &upload(&c, &key, file("cat.png", "image/png", &image)).await,
        "image/png",
        image.len(),
    );

    let r = c
        .create(
            &key,
            json!({"model": "test/gemini-edit", "input": {"prompt": "ok:upload", "image_urls": [url]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let done = c.wait(&key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let sent = gemini.seen.bodies.lock().unwrap()["ok:upload"].to_string();
    let inline = base64::engine::general_purpose::STANDARD.encode(&image);
    assert!(sent.contains(&inline), "the upload went inline: {sent}");
    assert!(sent.contains("image/png"), "{sent}");
    assert_eq!(c.balance(&key).await, json!(95));

    // A URL of this server that names no file fails the run (refunded), without a fetch.
    let missing = url.replace("upload.png", "other.png");
    let r = c
        .create(
            &key,
            json!({"model": "test/gemini-edit", "input": {"prompt": "ok:missing", "image_urls": [missing]}}),
        )
        .await;
    let done = c.wait(&key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "invalid_input", "{done}");
    assert_eq!(gemini.seen.submits_for("ok:missing"), 0);
    assert_eq!(c.balance(&key).await, json!(95));
}

/// The dashboard's `POST /files`: a session and its CSRF token, then the same answer.
#[tokio::test]
async fn the_dashboard_uploads_with_a_session() {
    const PASSWORD: &str = "correct horse battery";
    // A runs limit of 3 per window: the session's uploads count against it as a key's would.
    let mut env = common::relaxed();
    env.retain(|(k, _)| *k != "RUNBASE_RATE_LIMITS__RUNS__REQUESTS");
    env.push(("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "3"));
    env.push(("RUNBASE_RATE_LIMITS__RUNS__WINDOW_SECS", "60"));
    let s = Server::start_with(&env);
    s.cli_with_stdin(
        &["accounts", "create", "web@example.com", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let test_key = s.key("web@example.com", &["--test"]);
    let c = s.client();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let body = form(&[file("cat.png", "image/png", &png())]);
    let send = |cookie: Option<String>, csrf: Option<String>| {
        let mut req = http
            .post(format!("{}/files", s.url))
            .header("content-type", form_type())
            .body(body.clone());
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        c.send(req)
    };

    // Without a session.
    send(None, None).await.assert_error(401, "not_logged_in");

    // Log in as a browser would.
    let login = http
        .get(format!("{}/login", s.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let pre = cookie_pair(&login, "rb_csrf");
    let page = login.text().await.unwrap();
    let token = csrf_field(&page);
    let logged = http
        .post(format!("{}/login", s.url))
        .header("cookie", &pre)
        .form(&[
            ("email", "web@example.com"),
            ("password", PASSWORD),
            ("csrf_token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(logged.status(), 303);
    let session = cookie_pair(&logged, "rb_session");
    let keys_page = http
        .get(format!("{}/settings/api-keys", s.url))
        .header("cookie", &session)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_field(&keys_page);

    // A session without the page's token (another site posting a file) is refused.
    send(Some(session.clone()), None)
        .await
        .assert_error(403, "csrf_failed");
    send(Some(session.clone()), Some("wrong".into()))
        .await
        .assert_error(403, "csrf_failed");
    assert!(stored_files(&s.dir).is_empty());

    let r = send(Some(session.clone()), Some(csrf.clone())).await;
    let url = assert_uploaded(&r, "image/png", png().len());
    for _ in 0..2 {
        let r = send(Some(session.clone()), Some(csrf.clone())).await;
        assert_uploaded(&r, "image/png", png().len());
    }
    let limited = send(Some(session), Some(csrf)).await;
    limited.assert_error(429, "RATE_LIMITED");
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
    assert_eq!(
        stored_files(&s.dir).len(),
        3,
        "nothing kept of the refused upload"
    );
    // The account's own runs may use it.
    let run = c
        .create(
            &test_key,
            json!({"model": "google/nano-banana-2", "input": {"prompt": "p", "image_urls": [url]}}),
        )
        .await;
    assert_eq!(run.status, 201, "{}", run.body);
}

fn cookie_pair(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn csrf_field(page: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let at = page.find(marker).unwrap_or_else(|| panic!("no CSRF field"));
    let rest = &page[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}
