//! What uploads cost the server's storage, against the real binary: a per-account quota that
//! concurrent uploads cannot pass together, retention (expired uploads deleted, bytes and
//! record, and stale partial files removed), bytes written to the storage as they arrive (and
//! removed when the client goes away), a failing storage answered `503` (not 500) with nothing
//! kept, and a body that does not end with its form refused. Runs on PostgreSQL too
//! (`RUNBASE_TEST_DATABASE=postgres`).

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{Client, Resp, Server};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUNDARY: &str = "rb-storage-boundary-51c2";

/// A PNG as far as sniffing goes (its magic number and header), padded to `size` bytes.
fn png(size: usize) -> Vec<u8> {
    let mut data = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    data.resize(size, 0);
    data
}

fn form(data: &[u8]) -> Vec<u8> {
    [
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .into_bytes(),
        data.to_vec(),
        format!("\r\n--{BOUNDARY}--\r\n").into_bytes(),
    ]
    .concat()
}

async fn upload(c: &Client, key: &str, data: &[u8]) -> Resp {
    let req = c
        .http
        .post(format!("{}/api/v1/files", c.base))
        .bearer_auth(key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form(data));
    c.send(req).await
}

/// Every file under the storage directory, relative to it (temporary files included).
fn stored(dir: &Path) -> Vec<String> {
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

fn partials(dir: &Path) -> Vec<String> {
    stored(dir)
        .into_iter()
        .filter(|f| f.ends_with(".partial"))
        .collect()
}

/// Polls `done` for up to 20 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Free sign-ups cost nothing to make, so their uploads have a small quota each and share one
/// total: however many accounts one person makes, they fill no more than that total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_never_credited_share_a_small_total() {
    let mut env = common::relaxed();
    env.push(("RUNBASE_UPLOADS__QUOTA_BYTES_PER_ACCOUNT", "20000"));
    env.push(("RUNBASE_UPLOADS__UNCREDITED_QUOTA_BYTES", "6000"));
    env.push(("RUNBASE_UPLOADS__UNCREDITED_TOTAL_BYTES", "10000"));
    env.push(("RUNBASE_ACCOUNTS__SIGNUP_CREDIT_CENTS", "100"));
    let s = Server::start_with(&env);
    let c = s.client();
    // Made with a welcome credit (free): not credited.
    let free_a = s.account("free-a@example.com", 0);
    let free_b = s.account("free-b@example.com", 0);
    let paid = s.account("paid@example.com", 500);

    // A free account's own quota is the small one, and the message says how to raise it.
    assert_eq!(upload(&c, &free_a, &png(6000)).await.status, 201);
    let r = upload(&c, &free_a, &png(100)).await;
    r.assert_error(413, "payload_too_large");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("6000") && message.contains("credit"),
        "{message}"
    );

    // The total: B has 6000 of its own, but only 4000 are left for all free accounts.
    let r = upload(&c, &free_b, &png(5000)).await;
    r.assert_error(413, "payload_too_large");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("without purchased credit") && message.contains("10000"),
        "{message}"
    );
    assert_eq!(upload(&c, &free_b, &png(4000)).await.status, 201);
    upload(&c, &free_b, &png(100))
        .await
        .assert_error(413, "payload_too_large");

    // A paying account has the full quota, outside the free total.
    assert_eq!(upload(&c, &paid, &png(20000)).await.status, 201);
    // An operator's credit makes B a paying account: its full quota, whatever the total.
    s.cli(&[
        "credits",
        "add",
        "--account",
        "free-b@example.com",
        "--cents",
        "1",
    ]);
    assert_eq!(upload(&c, &free_b, &png(15000)).await.status, 201);
    upload(&c, &free_b, &png(2000))
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(stored(&s.dir).len(), 4, "{:?}", stored(&s.dir));
}

/// Starts an upload that sends its head and the start of its form, then nothing until the
/// returned function sends the rest (and reads the answer).
async fn slow_upload(s: &Server, key: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    let addr = s.url.trim_start_matches("http://").to_owned();
    let body = form(&png(4000));
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..200]).await.unwrap();
    (conn, body[200..].to_vec())
}

async fn finish_slow_upload((mut conn, rest): (tokio::net::TcpStream, Vec<u8>)) -> String {
    conn.write_all(&rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// One node receives a bounded number of uploads at once: in all (`[uploads] max_concurrent`,
/// what they hold in memory), and per account (`max_concurrent_per_account`), so that one
/// client's slow bodies cannot take every slot. Refused before the body is read; a slot comes
/// back when its upload ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_receives_a_bounded_number_of_uploads_at_once() {
    let mut env = common::relaxed();
    env.push(("RUNBASE_UPLOADS__MAX_CONCURRENT", "2"));
    env.push(("RUNBASE_UPLOADS__MAX_CONCURRENT_PER_ACCOUNT", "1"));
    let s = Server::start_with(&env);
    let a = s.account("slots-a@example.com", 0);
    let b = s.account("slots-b@example.com", 0);
    let c_key = s.account("slots-c@example.com", 0);
    let c = s.client();

    // A slow client of A holds A's one slot: A's next upload is refused, B's is not.
    let slow_a = slow_upload(&s, &a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = upload(&c, &a, &png(1000)).await;
    r.assert_error(429, "RATE_LIMITED");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("account"),
        "{}",
        r.body
    );
    assert_eq!(upload(&c, &b, &png(1000)).await.status, 201);

    // Slow clients of A and B hold both of the node's slots: C is answered 503.
    let slow_b = slow_upload(&s, &b).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = upload(&c, &c_key, &png(1000)).await;
    r.assert_error(503, "service_unavailable");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Retry"),
        "{}",
        r.body
    );

    // The slow uploads finish and are kept; then the slots are free again.
    for slow in [slow_a, slow_b] {
        let answer = finish_slow_upload(slow).await;
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
    assert_eq!(upload(&c, &c_key, &png(1000)).await.status, 201);
    assert_eq!(upload(&c, &a, &png(1000)).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_cannot_upload_past_its_quota() {
    let mut env = common::relaxed();
    env.push(("RUNBASE_UPLOADS__QUOTA_BYTES_PER_ACCOUNT", "10000"));
    // Ten at once from one account and address (the quota race below), past the default shares.
    env.push(("RUNBASE_UPLOADS__MAX_CONCURRENT_PER_ACCOUNT", "16"));
    env.push(("RUNBASE_UPLOADS__MAX_CONCURRENT_PER_IP", "16"));
    let s = Server::start_with(&env);
    let key = s.account("quota@example.com", 0);
    let other = s.account("other@example.com", 0);
    let c = s.client();

    let r = upload(&c, &key, &png(6000)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // 6000 more would pass 10000: refused, nothing kept.
    let r = upload(&c, &key, &png(6000)).await;
    r.assert_error(413, "payload_too_large");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("storage for uploads") && message.contains("10000"),
        "{message}"
    );
    assert!(
        message.contains("30 days"),
        "says how room comes back: {message}"
    );
    // Exactly to the quota fits; after it, even a tiny file is refused (before its body).
    let r = upload(&c, &key, &png(4000)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    upload(&c, &key, &png(100))
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(stored(&s.dir).len(), 2, "{:?}", stored(&s.dir));

    // The quota is per account; and concurrent uploads cannot pass it together: of ten files
    // of 3000 bytes sent at once, three fit.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, other) = (c.clone(), other.clone());
        tasks.push(tokio::spawn(
            async move { upload(&c, &other, &png(3000)).await },
        ));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status != 201 {
            r.assert_error(413, "payload_too_large");
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    eventually("the refused files' bytes are gone", || {
        stored(&s.dir).len() == 5
    })
    .await;
}

#[tokio::test]
async fn expired_uploads_and_stale_partial_files_are_swept() {
    let mut env = common::relaxed();
    env.push(("RUNBASE_UPLOADS__QUOTA_BYTES_PER_ACCOUNT", "1500"));
    let s = Server::start_with(&env);
    let key = s.account("old@example.com", 0);
    let c = s.client();
    let old = upload(&c, &key, &png(500)).await;
    let new = upload(&c, &key, &png(700)).await;
    // Paths: a restarted server listens on another port.
    let path = |r: &Resp| {
        let url = r.body["url"].as_str().unwrap();
        url.strip_prefix(&s.url).unwrap().to_owned()
    };
    let (old_path, new_path) = (path(&old), path(&new));
    assert_eq!(c.download(&format!("{}{old_path}", s.url)).await, png(500));

    // The first upload was made 31 days ago (the default retention is 30 days); a crash left
    // a partial file two hours ago, an earlier version one beside a file.
    let mut s = s;
    s.kill();
    let micros_31_days = 31 * 86_400 * 1_000_000i64;
    s.sql(&format!(
        "UPDATE uploads SET created_at = created_at - {micros_31_days} WHERE id = '{}'",
        old.body["id"].as_str().unwrap()
    ));
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for rel in [".incoming/crashed.partial", "run_old/out-1.partial"] {
        let p = s.dir.join("files").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(1000).unwrap();
        f.set_modified(two_hours_ago).unwrap();
    }
    let fresh_partial = s.dir.join("files/.incoming/under-way.partial");
    std::fs::write(&fresh_partial, b"a write still going on").unwrap();

    // The sweep runs at start-up (then hourly).
    let s = s.restart();
    let dir = s.dir.clone();
    eventually(
        "the expired upload and the stale partials are deleted",
        || {
            let files = stored(&dir);
            files.len() == 2 && !files.iter().any(|f| f.ends_with("crashed.partial"))
        },
    )
    .await;
    let c = s.client();
    let old_url = format!("{}{old_path}", s.url);
    assert_eq!(
        c.http.get(&old_url).send().await.unwrap().status(),
        404,
        "the expired upload is no longer served"
    );
    assert_eq!(c.download(&format!("{}{new_path}", s.url)).await, png(700));
    assert!(fresh_partial.exists(), "a write under way is left alone");
    // Logged once the whole pass is over, which can be a moment after its last file went.
    eventually("the sweep is logged", || s.log().contains("upload sweep")).await;

    // The record went with the bytes, and its share of the quota (1500 bytes: 700 in use now,
    // where 1200 were).
    let r = upload(&c, &key, &png(800)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    upload(&c, &key, &png(1))
        .await
        .assert_error(413, "payload_too_large");
}

/// Sends the head of a chunked upload and `size` bytes of its file, and keeps the connection
/// open without finishing.
async fn start_chunked_upload(s: &Server, key: &str, size: usize) -> tokio::net::TcpStream {
    let addr = s.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let body = form(&png(size));
    // The form without its ending: the file is not over yet.
    let sent = &body[..body.len() - format!("\r\n--{BOUNDARY}--\r\n").len()];
    for chunk in sent.chunks(16 * 1024) {
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.to_vec(),
            b"\r\n".to_vec(),
        ]
        .concat();
        conn.write_all(&framed).await.unwrap();
    }
    conn
}

#[tokio::test]
async fn an_upload_is_written_to_storage_as_it_arrives_and_removed_if_the_client_leaves() {
    let s = Server::start();
    let key = s.account("stream@example.com", 0);
    // 4 MiB of a file sent, the rest not yet: they are on disk already, in a partial file, not
    // gathered in the server's memory.
    let conn = start_chunked_upload(&s, &key, 4 << 20).await;
    let incoming = s.dir.join("files/.incoming");
    eventually("the bytes received so far are in a partial file", || {
        std::fs::read_dir(&incoming).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.metadata()
                    .is_ok_and(|m| m.len() >= (4 << 20) - (64 << 10))
            })
        })
    })
    .await;
    assert!(stored(&s.dir).iter().all(|f| f.starts_with(".incoming/")));

    // The client goes away: nothing is left of its upload.
    drop(conn);
    let dir = s.dir.clone();
    eventually("the partial file is removed", || stored(&dir).is_empty()).await;

    // A whole upload of the same size is stored, and served back with its length.
    let c = s.client();
    let data = png(4 << 20);
    let r = upload(&c, &key, &data).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let got = c
        .http
        .get(r.body["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.headers()["content-length"],
        (4 << 20).to_string().as_str()
    );
    assert_eq!(got.bytes().await.unwrap().to_vec(), data);
    assert!(partials(&s.dir).is_empty());
}

#[tokio::test]
async fn a_failing_storage_is_a_503_with_nothing_kept_and_a_retry_succeeds() {
    let s = Server::start();
    let key = s.account("full@example.com", 0);
    let c = s.client();
    // The storage cannot take a file (as with a full disk, every write fails): its directory
    // is not one.
    let files = s.dir.join("files");
    assert!(!files.exists());
    std::fs::write(&files, b"not a directory").unwrap();
    let r = upload(&c, &key, &png(2000)).await;
    r.assert_error(503, "service_unavailable");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("nothing was kept"), "{message}");
    assert!(!message.contains("files"), "no internal detail: {message}");
    assert_eq!(
        s.log().matches("storing an upload failed").count(),
        1,
        "logged once: {}",
        s.log()
    );

    // Room again: the same request succeeds.
    std::fs::remove_file(&files).unwrap();
    let r = upload(&c, &key, &png(2000)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(stored(&s.dir).len(), 1, "{:?}", stored(&s.dir));
}

#[tokio::test]
async fn a_body_longer_than_its_form_is_refused_after_the_body_deadline() {
    let mut env = common::relaxed();
    env.push(("RUNBASE_HTTP__BODY_TIMEOUT_SECS", "1"));
    let s = Server::start_with(&env);
    let key = s.account("length@example.com", 0);
    let addr = s.url.trim_start_matches("http://");
    let body = form(&png(1000));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len() + 500
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let json = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(json["error"]["code"], "invalid_request", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Length"),
        "{json}"
    );
    assert!(stored(&s.dir).is_empty(), "{:?}", stored(&s.dir));
}
