//! The ByteDance, Kling and MiniMax models of the default catalogue, end to end: the real
//! binary with its built-in catalogue, its provider addresses pointed at local doubles of
//! BytePlus ModelArk, Kling's API, MiniMax's API and fal (`doubles/bytedance_kling_minimax.rs`).
//! For every model, a runbase.net-shaped input is accepted, the run succeeds, and the exact
//! upstream request (method, path, credentials, body) is pinned; the same for the fal fallback
//! route; a canceled Seedance run is canceled at ModelArk; the listing matches the spec.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
#[path = "doubles/bytedance_kling_minimax.rs"]
mod upstreams;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Client, Server};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use upstreams::{Double, Recorded};

const ARK_KEY: &str = "ark-test-key";
const KLING_AK: &str = "kling-ak-test";
const KLING_SK: &str = "kling-sk-test";
const MINIMAX_KEY: &str = "minimax-test-key";
const FAL_KEY: &str = "fal-test-key";
const IMAGE: &str = "https://images.example/frame.png";
const IMAGE2: &str = "https://images.example/last.png";

/// Settings every server here shares: a raised rate limit, fast polls and retries, and the
/// machine's own credentials for these providers blanked (an empty key counts as none).
fn base_env() -> Vec<(&'static str, String)> {
    vec![
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000".into()),
        ("RUNBASE_PROVIDERS__POLL_INTERVAL_MS", "20".into()),
        ("RUNBASE_PROVIDERS__RETRY__MAX_RETRIES", "1".into()),
        ("RUNBASE_PROVIDERS__RETRY__BASE_BACKOFF_MS", "10".into()),
        ("RUNBASE_PROVIDERS__RETRY__MAX_BACKOFF_MS", "50".into()),
        ("ARK_API_KEY", String::new()),
        ("KLING_ACCESS_KEY", String::new()),
        ("KLING_SECRET_KEY", String::new()),
        ("MINIMAX_API_KEY", String::new()),
    ]
}

fn start(env: Vec<(&'static str, String)>) -> (Server, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(&env);
    let key = server.account("catalogue@example.com", 100_000);
    (server, key)
}

struct Upstreams {
    modelark: Double,
    kling: Double,
    minimax: Double,
}

/// A server whose first routes (ModelArk, Kling, MiniMax) are configured; fal is not.
async fn direct() -> (Server, String, Upstreams) {
    let up = Upstreams {
        modelark: upstreams::modelark().await,
        kling: upstreams::kling().await,
        minimax: upstreams::minimax().await,
    };
    let mut env = base_env();
    env.retain(|(k, _)| {
        !k.starts_with("ARK_") && !k.starts_with("KLING_") && !k.starts_with("MINIMAX_")
    });
    env.extend([
        ("ARK_API_KEY", ARK_KEY.to_owned()),
        (
            "RUNBASE_PROVIDERS__MODELARK__BASE_URL",
            format!("{}/api/v3", up.modelark.url),
        ),
        ("KLING_ACCESS_KEY", KLING_AK.to_owned()),
        ("KLING_SECRET_KEY", KLING_SK.to_owned()),
        ("RUNBASE_PROVIDERS__KLING__BASE_URL", up.kling.url.clone()),
        ("MINIMAX_API_KEY", MINIMAX_KEY.to_owned()),
        (
            "RUNBASE_PROVIDERS__MINIMAX__BASE_URL",
            up.minimax.url.clone(),
        ),
    ]);
    let (server, key) = start(env);
    (server, key, up)
}

async fn create(c: &Client, key: &str, model: &str, input: Value) -> String {
    let r = c.create(key, json!({"model": model, "input": input})).await;
    assert_eq!(r.status, 201, "{model}: {}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// Runs `input` on `model` to the end; asserts it succeeded with one output URL the server
/// serves, and that it cost `micro_usd`.
async fn run_ok(c: &Client, key: &str, model: &str, input: Value, micro_usd: i64) {
    let id = create(c, key, model, input).await;
    let run = c.wait(key, &id).await;
    assert_eq!(run["status"], "succeeded", "{model}: {run}");
    let urls = run["output"]["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1, "{model}: {run}");
    assert!(!c.download(urls[0].as_str().unwrap()).await.is_empty());
    assert_eq!(cost_micro_usd(&run), micro_usd, "{model}: {run}");
}

/// The run's cost in micro-USD.
fn cost_micro_usd(run: &Value) -> i64 {
    run["costUsd"].as_i64().unwrap()
}

/// The one submission `double` received for `prompt`.
#[track_caller]
fn submission(double: &Double, prompt: &str) -> Recorded {
    let mut got = double.submitted(prompt);
    assert_eq!(got.len(), 1, "{prompt}: {got:?}");
    got.remove(0)
}

#[track_caller]
fn assert_request(r: &Recorded, method: &str, path: &str, auth: &str, body: Value) {
    assert_eq!(r.method, method, "{r:?}");
    assert_eq!(r.path, path, "{r:?}");
    assert_eq!(r.auth.as_deref(), Some(auth), "{r:?}");
    assert_eq!(r.body, body, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytedance_models_run_on_modelark_with_mapped_requests() {
    let (server, key, up) = direct().await;
    let c = server.client();
    let ark = &up.modelark;
    let bearer = format!("Bearer {ARK_KEY}");

    // Seedream 4.5: aspect ratio + quality → a 4K pixel size; reference images → `image`.
    let p = "seedream 4.5: a lighthouse poster";
    run_ok(&c, &key, "bytedance/seedream-4.5",
        json!({"prompt": p, "aspect_ratio": "16:9", "quality": "high", "image_urls": [IMAGE, IMAGE2]}), 50_000).await;
    assert_request(
        &submission(ark, p),
        "POST",
        "/api/v3/images/generations",
        &bearer,
        json!({
            "model": "seedream-4-5-251128", "prompt": p, "size": "5504x3040",
            "sequential_image_generation": "disabled", "response_format": "url", "watermark": false,
            "image": [IMAGE, IMAGE2]
        }),
    );

    // Seedream 5.0 Lite with the defaults: basic quality is 2K.
    let p = "seedream 5 lite: a bowl of cherries";
    run_ok(
        &c,
        &key,
        "bytedance/seedream-5-lite",
        json!({"prompt": p, "aspect_ratio": "3:2"}),
        40_000,
    )
    .await;
    assert_request(
        &submission(ark, p),
        "POST",
        "/api/v3/images/generations",
        &bearer,
        json!({
            "model": "seedream-5-0-260128", "prompt": p, "size": "2496x1664",
            "sequential_image_generation": "disabled", "response_format": "url", "watermark": false
        }),
    );

    // Seedance 1.0 Lite with a source image: its image-to-video model, `duration: "10"` → 10.
    let p = "seedance lite: the cat yawns";
    run_ok(&c, &key, "bytedance/seedance-1-lite",
        json!({"prompt": p, "aspect_ratio": "9:16", "resolution": "480p", "duration": "10", "image_urls": [IMAGE]}),
        // 480p: 1.75 cents a second, 10 seconds.
        175_000).await;
    let task = submission(ark, p);
    assert_request(
        &task,
        "POST",
        "/api/v3/contents/generations/tasks",
        &bearer,
        json!({
            "model": "seedance-1-0-lite-i2v-250428",
            "content": [
                {"type": "text", "text": p},
                {"type": "image_url", "image_url": {"url": IMAGE}, "role": "first_frame"}
            ],
            "ratio": "9:16", "resolution": "480p", "duration": 10, "watermark": false
        }),
    );

    // Seedance 1.0 Pro from text, with the schema's defaults (1080p, 5 s).
    let p = "seedance pro: waves at night";
    run_ok(
        &c,
        &key,
        "bytedance/seedance-1-pro",
        json!({"prompt": p, "aspect_ratio": "16:9"}),
        // 1080p: 12.24 cents a second, 5 seconds.
        612_000,
    )
    .await;
    assert_request(
        &submission(ark, p),
        "POST",
        "/api/v3/contents/generations/tasks",
        &bearer,
        json!({
            "model": "seedance-1-0-pro-250528",
            "content": [{"type": "text", "text": p}],
            "ratio": "16:9", "resolution": "1080p", "duration": 5, "watermark": false
        }),
    );

    // Seedance 1.5 Pro: generate_audio is passed on.
    let p = "seedance 1.5: a street musician sings";
    run_ok(&c, &key, "bytedance/seedance-1.5-pro",
        json!({"prompt": p, "aspect_ratio": "1:1", "resolution": "720p", "duration": "8", "generate_audio": false}),
        // 720p without audio: 2.708 cents a second, 8 seconds.
        216_640).await;
    assert_request(
        &submission(ark, p),
        "POST",
        "/api/v3/contents/generations/tasks",
        &bearer,
        json!({
            "model": "seedance-1-5-pro-251215",
            "content": [{"type": "text", "text": p}],
            "ratio": "1:1", "resolution": "720p", "duration": 8, "generate_audio": false, "watermark": false
        }),
    );

    // The tasks were read back by id, with the key, and never canceled.
    let polls = ark.with_method("GET");
    assert!(!polls.is_empty());
    for r in &polls {
        assert!(
            r.path
                .starts_with("/api/v3/contents/generations/tasks/cgt-"),
            "{r:?}"
        );
        assert_eq!(r.auth.as_deref(), Some(bearer.as_str()));
    }
    assert!(ark.with_method("DELETE").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kling_and_hailuo_run_on_their_own_apis_with_mapped_requests() {
    let (server, key, up) = direct().await;
    let c = server.client();

    // Kling 3.0 from text: mode 4K → "4k", the numeric duration → Kling's string of seconds.
    let p = "kling: a paper boat in the rain";
    run_ok(
        &c,
        &key,
        "kling/kling-3.0",
        json!({"prompt": p, "aspect_ratio": "9:16", "mode": "4K", "duration": 7}),
        2_940_000,
    )
    .await;
    let r = submission(&up.kling, p);
    let token = r
        .auth
        .clone()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert_request(
        &r,
        "POST",
        "/v1/videos/text2video",
        &format!("Bearer {token}"),
        json!({
            "model_name": "kling-v3", "prompt": p, "mode": "4k", "duration": "7", "sound": "off",
            "aspect_ratio": "9:16"
        }),
    );
    assert_kling_token(&token);

    // Kling 3.0 with first and last frames: image to video, which takes no aspect ratio.
    let p = "kling: the bridge lights up";
    run_ok(
        &c,
        &key,
        "kling/kling-3.0",
        json!({"prompt": p, "mode": "pro", "duration": 5, "image_urls": [IMAGE, IMAGE2]}),
        560_000,
    )
    .await;
    let r = submission(&up.kling, p);
    assert_eq!(r.path, "/v1/videos/image2video");
    assert_eq!(
        r.body,
        json!({
            "model_name": "kling-v3", "prompt": p, "mode": "pro", "duration": "5", "sound": "off",
            "image": IMAGE, "image_tail": IMAGE2
        })
    );
    let polls = up.kling.with_method("GET");
    assert!(
        polls
            .iter()
            .any(|r| r.path.starts_with("/v1/videos/text2video/kt-")),
        "{polls:?}"
    );
    assert!(
        polls
            .iter()
            .any(|r| r.path.starts_with("/v1/videos/image2video/kt-")),
        "{polls:?}"
    );
    for r in &polls {
        assert_kling_token(r.auth.as_deref().unwrap().strip_prefix("Bearer ").unwrap());
    }

    // Hailuo Pro: MiniMax's Hailuo 2.3 at 1080p for 6 s, the source image as the first frame.
    let p = "hailuo: a hummingbird drinks";
    let bearer = format!("Bearer {MINIMAX_KEY}");
    run_ok(
        &c,
        &key,
        "hailuo/pro",
        json!({"prompt": p, "image_urls": [IMAGE]}),
        490_000,
    )
    .await;
    assert_request(
        &submission(&up.minimax, p),
        "POST",
        "/v1/video_generation",
        &bearer,
        json!({
            "model": "MiniMax-Hailuo-2.3", "prompt": p, "duration": 6, "resolution": "1080P",
            "prompt_optimizer": true, "first_frame_image": IMAGE
        }),
    );
    let gets: Vec<String> = up
        .minimax
        .with_method("GET")
        .into_iter()
        .map(|r| {
            assert_eq!(r.auth.as_deref(), Some(bearer.as_str()));
            r.path
        })
        .collect();
    assert!(
        gets.iter()
            .any(|p| p.starts_with("/v1/query/video_generation?task_id=1069161122")),
        "{gets:?}"
    );
    assert!(
        gets.iter()
            .any(|p| p.starts_with("/v1/files/retrieve?file_id=2052585")),
        "{gets:?}"
    );
}

/// A Kling token: an HS256 JWT whose issuer is the access key, valid 5 s back and 30 min on.
#[track_caller]
fn assert_kling_token(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let decode =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    assert_eq!(decode(parts[0]), json!({"alg": "HS256", "typ": "JWT"}));
    let claims = decode(parts[1]);
    assert_eq!(claims["iss"], KLING_AK);
    let (exp, nbf) = (
        claims["exp"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
    );
    assert_eq!(exp - nbf, 1805, "{claims}");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(),
        32,
        "an HMAC-SHA256 signature"
    );
    assert!(
        !token.contains(KLING_SK),
        "the secret key itself is never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_fal_configured_every_model_takes_its_fal_route() {
    let fal = upstreams::fal().await;
    let mut env = base_env();
    env.extend([
        ("FAL_KEY", FAL_KEY.to_owned()),
        ("RUNBASE_PROVIDERS__FAL__BASE_URL", fal.url.clone()),
    ]);
    let (server, key) = start(env);
    let c = server.client();
    let auth = format!("Key {FAL_KEY}");
    let cases = [
        (
            "bytedance/seedream-4.5",
            json!({"aspect_ratio": "21:9", "quality": "basic"}),
            "/fal-ai/bytedance/seedream/v4.5/text-to-image",
            json!({"image_size": {"width": 3136, "height": 1344}, "num_images": 1, "max_images": 1}),
        ),
        (
            "bytedance/seedream-5-lite",
            json!({"aspect_ratio": "1:1", "quality": "high", "image_urls": [IMAGE]}),
            "/fal-ai/bytedance/seedream/v5/lite/edit",
            json!({"image_size": {"width": 3072, "height": 3072}, "num_images": 1, "max_images": 1, "image_urls": [IMAGE]}),
        ),
        (
            "bytedance/seedance-1-lite",
            json!({"aspect_ratio": "4:3", "resolution": "1080p", "duration": "5"}),
            "/fal-ai/bytedance/seedance/v1/lite/text-to-video",
            json!({"aspect_ratio": "4:3", "resolution": "1080p", "duration": "5"}),
        ),
        (
            "bytedance/seedance-1-pro",
            json!({"aspect_ratio": "16:9", "resolution": "720p", "duration": "10", "image_urls": [IMAGE, IMAGE2]}),
            "/fal-ai/bytedance/seedance/v1/pro/image-to-video",
            json!({"aspect_ratio": "16:9", "resolution": "720p", "duration": "10", "image_url": IMAGE, "end_image_url": IMAGE2}),
        ),
        (
            "bytedance/seedance-1.5-pro",
            json!({"aspect_ratio": "9:16", "resolution": "480p", "duration": "12"}),
            "/fal-ai/bytedance/seedance/v1.5/pro/text-to-video",
            json!({"aspect_ratio": "9:16", "resolution": "480p", "duration": "12", "generate_audio": true}),
        ),
        (
            "kling/kling-3.0",
            json!({"aspect_ratio": "1:1", "mode": "std", "duration": 12}),
            "/fal-ai/kling-video/v3/standard/text-to-video",
            json!({"duration": "12", "generate_audio": false, "aspect_ratio": "1:1"}),
        ),
        (
            "kling/kling-3.0",
            json!({"mode": "4K", "image_urls": [IMAGE]}),
            "/fal-ai/kling-video/v3/4k/image-to-video",
            json!({"duration": "5", "generate_audio": false, "start_image_url": IMAGE}),
        ),
        (
            "hailuo/pro",
            json!({}),
            "/fal-ai/minimax/hailuo-2.3/pro/text-to-video",
            json!({"prompt_optimizer": true}),
        ),
    ];
    for (i, (model, extra, path, body)) in cases.into_iter().enumerate() {
        let prompt = format!("fal case {i}: {model}");
        let mut input = extra.clone();
        input["prompt"] = json!(prompt);
        let id = create(&c, &key, model, input).await;
        let run = c.wait(&key, &id).await;
        assert_eq!(run["status"], "succeeded", "{model}: {run}");
        assert_eq!(
            run["output"]["urls"].as_array().map(Vec::len),
            Some(1),
            "{run}"
        );
        let mut want = body;
        want["prompt"] = json!(prompt);
        assert_request(&submission(&fal, &prompt), "POST", path, &auth, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_seedance_run_is_canceled_at_modelark() {
    let (server, key, up) = direct().await;
    let c = server.client();
    let p = "slow: a glacier calves";
    let id = create(&c, &key, "bytedance/seedance-1-pro", json!({"prompt": p})).await;
    // Once the task exists upstream (it never finishes), cancel the run.
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.modelark.submitted(p).is_empty() {
        assert!(Instant::now() < deadline, "the task never reached ModelArk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let task = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = up.modelark.with_method("GET").first() {
                break r.path.rsplit('/').next().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "the task was never polled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let r = c
        .post_raw(Some(&key), &format!("/api/v1/runs/{id}/cancel"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "canceled");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deletes = up.modelark.with_method("DELETE");
        if let Some(d) = deletes.first() {
            assert_eq!(d.path, format!("/api/v3/contents/generations/tasks/{task}"));
            assert_eq!(
                d.auth.as_deref(),
                Some(format!("Bearer {ARK_KEY}").as_str())
            );
            assert_eq!(deletes.len(), 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task was never canceled upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An optional input field: name, JSON type, enum (`None`: no enum).
type SpecField = (&'static str, &'static str, Option<Value>);
/// A model of the spec's table: id, display name, tags, optional fields.
type SpecModel = (
    &'static str,
    &'static str,
    Vec<&'static str>,
    Vec<SpecField>,
);

/// The spec's table (shared/spec/runbase-public.md, "The model catalogue") for these models:
/// id, name, tags, and each optional field's type and enum (`None`: no enum).
fn spec() -> Vec<SpecModel> {
    let seedream_ratios = json!(["1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"]);
    let seedance_ratios = json!(["16:9", "9:16", "4:3", "3:4", "1:1", "21:9"]);
    let images = ("image_urls", "array", None);
    vec![
        (
            "bytedance/seedream-4.5",
            "Seedream 4.5",
            vec!["Text to image", "Image editing", "Reference images", "4K"],
            vec![
                ("aspect_ratio", "string", Some(seedream_ratios.clone())),
                ("quality", "string", Some(json!(["basic", "high"]))),
                images.clone(),
            ],
        ),
        (
            "bytedance/seedream-5-lite",
            "Seedream 5.0 Lite",
            vec!["Text to image", "Image editing", "Reference images", "3K"],
            vec![
                ("aspect_ratio", "string", Some(seedream_ratios)),
                ("quality", "string", Some(json!(["basic", "high"]))),
                images.clone(),
            ],
        ),
        (
            "bytedance/seedance-1-lite",
            "Seedance 1.0 Lite",
            vec!["Text to video", "Image to video", "Affordable"],
            vec![
                ("aspect_ratio", "string", Some(seedance_ratios.clone())),
                (
                    "resolution",
                    "string",
                    Some(json!(["480p", "720p", "1080p"])),
                ),
                ("duration", "string", Some(json!(["5", "10"]))),
                images.clone(),
            ],
        ),
        (
            "bytedance/seedance-1-pro",
            "Seedance 1.0 Pro",
            vec!["Text to video", "Image to video", "Multi-shot", "1080p"],
            vec![
                ("aspect_ratio", "string", Some(seedance_ratios.clone())),
                ("resolution", "string", Some(json!(["720p", "1080p"]))),
                ("duration", "string", Some(json!(["5", "10"]))),
                images.clone(),
            ],
        ),
        (
            "bytedance/seedance-1.5-pro",
            "Seedance 1.5 Pro",
            vec![
                "Text to video",
                "Image to video",
                "Audio generation",
                "Multilingual",
                "1080p",
            ],
            vec![
                ("aspect_ratio", "string", Some(seedance_ratios)),
                (
                    "resolution",
                    "string",
                    Some(json!(["480p", "720p", "1080p"])),
                ),
                ("duration", "string", Some(json!(["4", "8", "12"]))),
                ("generate_audio", "boolean", None),
                images.clone(),
            ],
        ),
        (
            "kling/kling-3.0",
            "Kling 3.0",
            vec!["Text to video", "Image to video", "4K", "Multi-shot"],
            vec![
                (
                    "aspect_ratio",
                    "string",
                    Some(json!(["16:9", "9:16", "1:1"])),
                ),
                ("mode", "string", Some(json!(["std", "pro", "4K"]))),
                ("duration", "number", None),
                images.clone(),
            ],
        ),
        (
            "hailuo/pro",
            "Hailuo Pro",
            vec!["Text to video", "Image to video"],
            vec![images],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_shows_each_model_as_the_spec_does() {
    let (server, _key, _up) = direct().await;
    let c = server.client();
    let r = c.get(None, "/api/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let models = r.body["data"].as_array().unwrap();
    for (id, name, tags, fields) in spec() {
        let m = models
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed"));
        assert_eq!(m["name"], name, "{id}");
        assert_eq!(m["tags"], json!(tags), "{id}");
        assert_eq!(m["available"], true, "{id}: its first route is configured");
        let schema = m.get("inputSchema").unwrap();
        assert_eq!(schema["required"], json!(["prompt"]), "{id}");
        assert_eq!(schema["additionalProperties"], false, "{id}");
        let props = schema["properties"].as_object().unwrap();
        assert_eq!(props["prompt"]["type"], "string", "{id}");
        assert_eq!(props["prompt"]["minLength"], 1, "{id}");
        let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want: Vec<&str> = fields.iter().map(|f| f.0).chain(["prompt"]).collect();
        want.sort_unstable();
        assert_eq!(names, want, "{id}: the spec's fields, no more");
        for (field, ty, values) in fields {
            let p = &props[field];
            assert_eq!(p["type"], ty, "{id}.{field}");
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{id}.{field}"
            );
            if let Some(values) = values {
                assert_eq!(p["enum"], values, "{id}.{field}");
                assert!(
                    values.as_array().unwrap().contains(&p["default"]),
                    "{id}.{field} default"
                );
            }
            if field == "image_urls" {
                assert_eq!(
                    p["items"],
                    json!({"type": "string", "format": "uri"}),
                    "{id}"
                );
                assert!(p["maxItems"].as_u64().is_some(), "{id}");
            }
        }
        let out = m.get("outputSchema").unwrap();
        assert_eq!(
            out,
            &json!({"type": "object", "required": ["urls"],
            "properties": {"urls": {"type": "array", "items": {"type": "string", "format": "uri"}}}}),
            "{id}"
        );
    }
    // The spec's caps for Seedream's reference images: 14, 10 MB each.
    for id in ["bytedance/seedream-4.5", "bytedance/seedream-5-lite"] {
        let m = models.iter().find(|m| m["id"] == id).unwrap();
        let p = &m.get("inputSchema").unwrap()["properties"]["image_urls"];
        assert_eq!(p["maxItems"], 14);
        assert_eq!(p["x-max-file-mb"], 10);
    }
}
