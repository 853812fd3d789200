//! Output files in an S3-compatible bucket, against a real S3 server running locally (moto's
//! server, from PyPI). `.ci/run` installs it and sets `RUNBASE_TEST_MOTO_SERVER` to its
//! `moto_server` executable; without it the test is skipped locally and fails under CI.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::Server;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto's S3 server, or `None` when it is not installed (outside CI).
fn moto() -> Option<Moto> {
    let Ok(bin) = std::env::var("RUNBASE_TEST_MOTO_SERVER") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "RUNBASE_TEST_MOTO_SERVER must be set under CI (.ci/run installs moto)"
        );
        eprintln!("skipped: set RUNBASE_TEST_MOTO_SERVER to a moto_server executable");
        return None;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Moto { child, url })
}

#[tokio::test]
async fn outputs_are_stored_in_the_bucket_and_served_by_runbase() {
    let Some(s3) = moto() else { return };
    let http = reqwest::Client::new();
    // moto accepts unsigned requests: create the bucket the way an operator would beforehand.
    let r = http
        .put(format!("{}/runbase-outputs", s3.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());

    let s = Server::start_with(&[
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1000"),
        ("RUNBASE_STORAGE__KIND", "s3"),
        ("RUNBASE_STORAGE__BUCKET", "runbase-outputs"),
        ("RUNBASE_STORAGE__ENDPOINT", s3.url.as_str()),
        ("RUNBASE_STORAGE__REGION", "us-east-1"),
        ("RUNBASE_STORAGE__ACCESS_KEY_ID", "testing"),
        ("RUNBASE_STORAGE__SECRET_ACCESS_KEY", "testing"),
        ("RUNBASE_STORAGE__PREFIX", "outputs"),
    ]);
    let key = s.account("s3@example.com", 100);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/placeholder-image", "input": {"prompt": "a bucket", "aspect_ratio": "3:2"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let run = c.wait(&key, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", s.log());
    let url = run["output"]["urls"][0].as_str().unwrap();
    assert!(url.starts_with(&s.url), "served by Runbase: {url}");
    let served = c.download(url).await;
    assert_eq!(&served[1..4], b"PNG");

    // The object is in the bucket, under the prefix, with its content type: read back with
    // boto3 (moto's own dependency), independently of Runbase's S3 client.
    let python = std::path::Path::new(&std::env::var("RUNBASE_TEST_MOTO_SERVER").unwrap())
        .with_file_name("python");
    let name = url.rsplit('/').next().unwrap();
    assert!(
        name.ends_with("-output.png") && name.len() > 20,
        "an unguessable name: {name}"
    );
    let script = format!(
        "import boto3,sys\n\
         s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
         o = s3.get_object(Bucket='runbase-outputs', Key='outputs/{id}/{name}')\n\
         sys.stdout.write(o['ContentType'] + ' ' + str(len(o['Body'].read())))",
        s3.url
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("image/png {}", served.len())
    );
    assert!(
        !s.dir.join("files").join(&id).exists(),
        "nothing written to local storage"
    );

    // A missing file is a 404 in the envelope, not a storage error.
    let missing = c.get(None, &format!("/files/{id}/nope.png")).await;
    missing.assert_error(404, "not_found");

    // An upload goes to the bucket too, and is served from it.
    let boundary = "s3-upload-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ref.png\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&served);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = c
        .send(
            c.http
                .post(format!("{}/api/v1/files", s.url))
                .bearer_auth(&key)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(form),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["contentType"], "image/png");
    let upload_url = r.body["url"].as_str().unwrap();
    let got = c.http.get(upload_url).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap().to_vec(), served);
    let upload_id = r.body["id"].as_str().unwrap();
    assert!(!s.dir.join("files").join(upload_id).exists());

    // A file larger than one S3 part (5 MiB) goes up in parts as it arrives (a multipart
    // upload), and comes back whole, streamed with its length.
    let mut big = served.clone();
    big.resize(12 << 20, 7);
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&big);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = c
        .send(
            c.http
                .post(format!("{}/api/v1/files", s.url))
                .bearer_auth(&key)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(form),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let big_path = r.body["url"]
        .as_str()
        .unwrap()
        .strip_prefix(&s.url)
        .unwrap()
        .to_owned();
    let got = c
        .http
        .get(format!("{}{big_path}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.headers()["content-length"],
        (12 << 20).to_string().as_str()
    );
    assert!(got.bytes().await.unwrap().to_vec() == big, "the same bytes");

    // Retention deletes an expired upload from the bucket (at the start-up sweep).
    let mut s = s;
    s.kill();
    s.sql(&format!(
        "UPDATE uploads SET created_at = created_at - {} WHERE id = '{}'",
        31 * 86_400 * 1_000_000i64,
        r.body["id"].as_str().unwrap()
    ));
    let s = s.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = reqwest::get(format!("{}{big_path}", s.url))
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired upload is still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reqwest::get(upload_url.replace(&c.base, &s.url))
            .await
            .unwrap()
            .status(),
        200,
        "a recent upload stays"
    );
}
