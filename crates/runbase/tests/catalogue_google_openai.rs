//! Google's and OpenAI's models in the default catalogue (no `--catalog`): each listed with the
//! spec's fields and enums, each accepting a runbase-shaped input, and each input becoming the
//! exact native request of its upstream (the Gemini API, OpenAI's images API, fal), recorded by
//! doubles speaking those protocols over a real socket. The fal fallbacks are covered by a
//! server that has only fal credentials, and by a Gemini route that is down.
//!
//! Inputs with `image_urls` are pinned here only on fal, which takes the URLs as they are: the
//! Gemini API and OpenAI's edits get the images' bytes, which Runbase fetches only from public
//! addresses (so not from a local double); the unit tests of `native/` and `openai.rs` pin
//! those requests.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
#[path = "doubles/recording.rs"]
mod recording;

use common::{Client, Server};
use recording::Recorder;
use serde_json::{Value, json};

const GEMINI_KEY: &str = "gemini-test-key";
const OPENAI_KEY: &str = "sk-openai-test";
const FAL_KEY: &str = "fal-test-key";

/// A server on the default catalogue with credentials for the given doubles only.
fn server(gemini: Option<&Recorder>, openai: Option<&Recorder>, fal: Option<&Recorder>) -> Server {
    let mut env: Vec<(String, String)> = vec![
        (
            "RUNBASE_RATE_LIMITS__RUNS__REQUESTS".into(),
            "100000".into(),
        ),
        ("RUNBASE_PROVIDERS__RETRY__MAX_RETRIES".into(), "1".into()),
        (
            "RUNBASE_PROVIDERS__RETRY__BASE_BACKOFF_MS".into(),
            "10".into(),
        ),
        (
            "RUNBASE_PROVIDERS__RETRY__MAX_BACKOFF_MS".into(),
            "50".into(),
        ),
        ("RUNBASE_PROVIDERS__POLL_INTERVAL_MS".into(), "20".into()),
    ];
    if let Some(g) = gemini {
        env.push(("GEMINI_API_KEY".into(), GEMINI_KEY.into()));
        env.push((
            "RUNBASE_PROVIDERS__GEMINI__BASE_URL".into(),
            format!("{}/v1beta", g.url),
        ));
    }
    if let Some(o) = openai {
        env.push(("OPENAI_API_KEY".into(), OPENAI_KEY.into()));
        env.push((
            "RUNBASE_PROVIDERS__OPENAI__BASE_URL".into(),
            format!("{}/v1", o.url),
        ));
    }
    if let Some(f) = fal {
        env.push(("FAL_KEY".into(), FAL_KEY.into()));
        env.push(("RUNBASE_PROVIDERS__FAL__BASE_URL".into(), f.url.clone()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_with(&env)
}

/// The run's cost in micro-USD.
fn cost_micro_usd(run: &Value) -> i64 {
    run["costUsd"]
        .as_i64()
        .unwrap_or_else(|| panic!("no cost in {run}"))
}

/// A model object's input schema, whichever way the listing spells it.
fn input_schema(model: &Value) -> &Value {
    model
        .get("inputSchema")
        .unwrap_or_else(|| panic!("no input schema in {model}"))
}

fn output_schema(model: &Value) -> &Value {
    model
        .get("outputSchema")
        .unwrap_or_else(|| panic!("no output schema in {model}"))
}

/// Creates a run (201) and waits for it to succeed; returns the finished run.
async fn succeed(c: &Client, key: &str, model: &str, input: Value) -> Value {
    let r = c.create(key, json!({"model": model, "input": input})).await;
    assert_eq!(r.status, 201, "{model}: {}", r.body);
    let run = c.wait(key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{model}: {run}");
    run
}

/// The bytes of a run's only output file.
async fn output(c: &Client, run: &Value) -> Vec<u8> {
    let urls = run["output"]["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1, "{run}");
    c.download(urls[0].as_str().unwrap()).await
}

#[track_caller]
fn assert_request(got: &recording::Recorded, path: &str, auth: &str, body: Value) {
    assert_eq!(got.method, "POST", "{got:?}");
    assert_eq!(got.path, path, "{got:?}");
    assert_eq!(got.auth.as_deref(), Some(auth), "{got:?}");
    assert_eq!(got.body, body, "{}", got.path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_sends_its_first_route_the_native_request() {
    let (gemini, openai, fal) = (
        recording::gemini().await,
        recording::openai().await,
        recording::fal().await,
    );
    let s = server(Some(&gemini), Some(&openai), Some(&fal));
    let key = s.account("catalogue@example.com", 100_000);
    let c = s.client();

    // Nano Banana 2 on the Gemini API: ratio and size class in `imageConfig`; $0.09 at 2K.
    let run = succeed(
        &c,
        &key,
        "google/nano-banana-2",
        json!({"prompt": "nb2: a lighthouse", "aspect_ratio": "16:9", "resolution": "2K"}),
    )
    .await;
    assert_request(
        &gemini.submission("nb2: a lighthouse"),
        "/v1beta/models/gemini-3.1-flash-image:generateContent",
        GEMINI_KEY,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "nb2: a lighthouse"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}}
        }),
    );
    assert_eq!(cost_micro_usd(&run), 90_000);
    assert_eq!(output(&c, &run).await, recording::png());

    // Nano Banana 2's other prices: $0.06 at 1K (the default), $0.13 at 4K.
    let run = succeed(
        &c,
        &key,
        "google/nano-banana-2",
        json!({"prompt": "nb2: 1K"}),
    )
    .await;
    assert_eq!(cost_micro_usd(&run), 60_000);
    assert_eq!(
        gemini.submission("nb2: 1K").body["generationConfig"]["imageConfig"],
        json!({"imageSize": "1K"}),
        "auto leaves the ratio to the model"
    );
    let run = succeed(
        &c,
        &key,
        "google/nano-banana-2",
        json!({"prompt": "nb2: 4K", "aspect_ratio": "1:8", "resolution": "4K"}),
    )
    .await;
    assert_eq!(cost_micro_usd(&run), 130_000);

    // Nano Banana Pro on the Gemini API: `auto` sends no ratio.
    let run = succeed(
        &c,
        &key,
        "google/nano-banana-pro",
        json!({"prompt": "pro: a poster", "aspect_ratio": "auto", "resolution": "4K"}),
    )
    .await;
    assert_request(
        &gemini.submission("pro: a poster"),
        "/v1beta/models/gemini-3-pro-image:generateContent",
        GEMINI_KEY,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "pro: a poster"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"imageSize": "4K"}}
        }),
    );
    assert_eq!(cost_micro_usd(&run), 240_000);

    // Nano Banana on fal (text to image takes no `auto`: left to fal's default).
    let run = succeed(
        &c,
        &key,
        "google/nano-banana",
        json!({"prompt": "nb: a sticker"}),
    )
    .await;
    assert_request(
        &fal.submission("nb: a sticker"),
        "/fal-ai/nano-banana",
        &format!("Key {FAL_KEY}"),
        json!({"prompt": "nb: a sticker", "num_images": 1, "output_format": "png"}),
    );
    assert_eq!(cost_micro_usd(&run), 39_000);
    assert_eq!(output(&c, &run).await, recording::png());
    let _ = succeed(
        &c,
        &key,
        "google/nano-banana",
        json!({"prompt": "nb: wide", "aspect_ratio": "21:9"}),
    )
    .await;
    assert_eq!(fal.submission("nb: wide").body["aspect_ratio"], "21:9");

    // Veo 3.1 Fast on the Gemini API: a long-running operation, polled, whose video is
    // downloaded from the file API with the key in a header (never in the URL).
    let run = succeed(
        &c,
        &key,
        "google/veo-3",
        json!({"prompt": "veo: waves at dusk", "aspect_ratio": "9:16", "resolution": "1080p"}),
    )
    .await;
    assert_request(
        &gemini.submission("veo: waves at dusk"),
        "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning",
        GEMINI_KEY,
        json!({
            "instances": [{"prompt": "veo: waves at dusk"}],
            "parameters": {"aspectRatio": "9:16", "resolution": "1080p", "durationSeconds": 8}
        }),
    );
    let requests = gemini.requests();
    let op = requests
        .iter()
        .find(|r| r.method == "GET" && r.path.contains("/operations/"))
        .expect("the operation was polled");
    assert!(
        op.path
            .starts_with("/v1beta/models/veo-3.1-fast-generate-preview/operations/op-"),
        "{op:?}"
    );
    assert_eq!(op.auth.as_deref(), Some(GEMINI_KEY));
    let download = requests
        .iter()
        .find(|r| r.method == "GET" && r.path.starts_with("/v1beta/files/"))
        .expect("the video was downloaded");
    assert_eq!(download.auth.as_deref(), Some(GEMINI_KEY));
    assert!(!download.path.contains(GEMINI_KEY), "{download:?}");
    assert_eq!(output(&c, &run).await, recording::VIDEO);
    assert!(
        run["output"]["urls"][0].as_str().unwrap().ends_with(".mp4"),
        "{run}"
    );
    // An 8-second clip at $0.15 a second.
    assert_eq!(cost_micro_usd(&run), 1_200_000);

    // GPT Image 1 on OpenAI: 3:2 is 1536x1024, at the fixed medium quality; $0.063.
    let run = succeed(
        &c,
        &key,
        "openai/gpt-image-1",
        json!({"prompt": "g1: a mug", "aspect_ratio": "3:2"}),
    )
    .await;
    assert_request(
        &openai.submission("g1: a mug"),
        "/v1/images/generations",
        &format!("Bearer {OPENAI_KEY}"),
        json!({"model": "gpt-image-1", "prompt": "g1: a mug", "size": "1536x1024", "quality": "medium"}),
    );
    assert_eq!(cost_micro_usd(&run), 63_000);
    assert_eq!(output(&c, &run).await, recording::png());

    // GPT Image 1.5: the quality is the input's; $0.20 at high.
    let run = succeed(
        &c,
        &key,
        "openai/gpt-image-1.5",
        json!({"prompt": "g15: a menu", "aspect_ratio": "2:3", "quality": "high"}),
    )
    .await;
    assert_request(
        &openai.submission("g15: a menu"),
        "/v1/images/generations",
        &format!("Bearer {OPENAI_KEY}"),
        json!({"model": "gpt-image-1.5", "prompt": "g15: a menu", "size": "1024x1536", "quality": "high"}),
    );
    assert_eq!(cost_micro_usd(&run), 200_000);
    let run = succeed(
        &c,
        &key,
        "openai/gpt-image-1.5",
        json!({"prompt": "g15: defaults"}),
    )
    .await;
    assert_eq!(
        openai.submission("g15: defaults").body,
        json!({"model": "gpt-image-1.5", "prompt": "g15: defaults", "size": "1024x1024", "quality": "medium"})
    );
    // Medium quality, square.
    assert_eq!(cost_micro_usd(&run), 34_000);

    // GPT Image 2: ratio and resolution become a size in multiples of 16 (21:9 at 4K is capped
    // at 3840 wide).
    let run = succeed(
        &c,
        &key,
        "openai/gpt-image-2",
        json!({"prompt": "g2: a billboard", "aspect_ratio": "21:9", "resolution": "4K"}),
    )
    .await;
    assert_request(
        &openai.submission("g2: a billboard"),
        "/v1/images/generations",
        &format!("Bearer {OPENAI_KEY}"),
        json!({"model": "gpt-image-2", "prompt": "g2: a billboard", "size": "3840x1632", "quality": "medium"}),
    );
    assert_eq!(cost_micro_usd(&run), 420_000);
    let _ = succeed(
        &c,
        &key,
        "openai/gpt-image-2",
        json!({"prompt": "g2: square", "resolution": "2K"}),
    )
    .await;
    assert_eq!(openai.submission("g2: square").body["size"], "1920x1920");

    // Nothing went to fal but Nano Banana.
    assert!(
        fal.requests()
            .iter()
            .filter(|r| r.method == "POST")
            .all(|r| r.path == "/fal-ai/nano-banana"),
        "{:?}",
        fal.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_fal_the_fallback_routes_serve_the_models() {
    let fal = recording::fal().await;
    let s = server(None, None, Some(&fal));
    let key = s.account("fallback@example.com", 100_000);
    let c = s.client();
    let auth = format!("Key {FAL_KEY}");

    // Which models are left: those with a fal route.
    let models = c.get(None, "/api/v1/models").await.body;
    let available = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed"))["available"]
            .clone()
    };
    for id in [
        "google/nano-banana-2",
        "google/nano-banana-pro",
        "google/nano-banana",
        "google/veo-3",
        "openai/gpt-image-1.5",
    ] {
        assert_eq!(available(id), true, "{id}");
    }
    for id in ["openai/gpt-image-1", "openai/gpt-image-2"] {
        assert_eq!(available(id), false, "{id}");
    }

    let _ = succeed(
        &c,
        &key,
        "google/nano-banana-2",
        json!({"prompt": "fal nb2", "aspect_ratio": "1:4"}),
    )
    .await;
    assert_request(
        &fal.submission("fal nb2"),
        "/fal-ai/nano-banana-2",
        &auth,
        json!({"prompt": "fal nb2", "num_images": 1, "output_format": "png",
            "aspect_ratio": "1:4", "resolution": "1K"}),
    );

    // Reference images: fal's /edit endpoints, with the URLs as given.
    let refs = json!([
        "https://images.example.com/a.png",
        "https://images.example.com/b.jpg"
    ]);
    let run = succeed(
        &c,
        &key,
        "google/nano-banana-pro",
        json!({"prompt": "fal pro edit", "resolution": "2K", "image_urls": refs}),
    )
    .await;
    assert_request(
        &fal.submission("fal pro edit"),
        "/fal-ai/nano-banana-pro/edit",
        &auth,
        json!({"prompt": "fal pro edit", "num_images": 1, "output_format": "png",
            "aspect_ratio": "auto", "resolution": "2K", "image_urls": refs}),
    );
    assert_eq!(output(&c, &run).await, recording::png());
    let _ = succeed(
        &c,
        &key,
        "google/nano-banana",
        json!({"prompt": "fal nb edit", "image_urls": ["https://images.example.com/a.png"]}),
    )
    .await;
    assert_request(
        &fal.submission("fal nb edit"),
        "/fal-ai/nano-banana/edit",
        &auth,
        json!({"prompt": "fal nb edit", "num_images": 1, "output_format": "png",
            "aspect_ratio": "auto", "image_urls": ["https://images.example.com/a.png"]}),
    );

    // Veo 3.1 Fast: text to video with the defaults, then a first frame, then first and last.
    let run = succeed(&c, &key, "google/veo-3", json!({"prompt": "fal veo"})).await;
    assert_request(
        &fal.submission("fal veo"),
        "/fal-ai/veo3.1/fast",
        &auth,
        json!({"prompt": "fal veo", "aspect_ratio": "16:9", "resolution": "720p",
            "duration": "8s", "generate_audio": true}),
    );
    assert_eq!(output(&c, &run).await, recording::VIDEO);
    let _ = succeed(
        &c,
        &key,
        "google/veo-3",
        json!({"prompt": "fal veo i2v", "resolution": "1080p",
            "image_urls": ["https://images.example.com/first.png"]}),
    )
    .await;
    assert_request(
        &fal.submission("fal veo i2v"),
        "/fal-ai/veo3.1/fast/image-to-video",
        &auth,
        json!({"prompt": "fal veo i2v", "aspect_ratio": "16:9", "resolution": "1080p",
            "duration": "8s", "generate_audio": true,
            "image_url": "https://images.example.com/first.png"}),
    );
    let _ = succeed(
        &c,
        &key,
        "google/veo-3",
        json!({"prompt": "fal veo flf", "aspect_ratio": "9:16",
            "image_urls": ["https://images.example.com/first.png", "https://images.example.com/last.png"]}),
    )
    .await;
    assert_request(
        &fal.submission("fal veo flf"),
        "/fal-ai/veo3.1/fast/first-last-frame-to-video",
        &auth,
        json!({"prompt": "fal veo flf", "aspect_ratio": "9:16", "resolution": "720p",
            "duration": "8s", "generate_audio": true,
            "first_frame_url": "https://images.example.com/first.png",
            "last_frame_url": "https://images.example.com/last.png"}),
    );

    // GPT Image 1.5 on fal: `image_size`; with images, /edit.
    let _ = succeed(
        &c,
        &key,
        "openai/gpt-image-1.5",
        json!({"prompt": "fal g15", "aspect_ratio": "3:2"}),
    )
    .await;
    assert_request(
        &fal.submission("fal g15"),
        "/fal-ai/gpt-image-1.5",
        &auth,
        json!({"prompt": "fal g15", "image_size": "1536x1024", "quality": "medium",
            "num_images": 1, "output_format": "png"}),
    );
    let _ = succeed(
        &c,
        &key,
        "openai/gpt-image-1.5",
        json!({"prompt": "fal g15 edit", "quality": "high",
            "image_urls": ["https://images.example.com/a.png"]}),
    )
    .await;
    assert_request(
        &fal.submission("fal g15 edit"),
        "/fal-ai/gpt-image-1.5/edit",
        &auth,
        json!({"prompt": "fal g15 edit", "image_size": "1024x1024", "quality": "high",
            "num_images": 1, "output_format": "png",
            "image_urls": ["https://images.example.com/a.png"]}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gemini_route_that_is_down_falls_back_to_fal() {
    let (gemini, fal) = (recording::gemini().await, recording::fal().await);
    let s = server(Some(&gemini), None, Some(&fal));
    let key = s.account("down@example.com", 100_000);
    let c = s.client();
    let run = succeed(
        &c,
        &key,
        "google/nano-banana-2",
        json!({"prompt": "down: twice", "resolution": "4K"}),
    )
    .await;
    // The first route and its one retry, then fal.
    assert_eq!(gemini.submissions("down: twice").len(), 2);
    assert_request(
        &fal.submission("down: twice"),
        "/fal-ai/nano-banana-2",
        &format!("Key {FAL_KEY}"),
        json!({"prompt": "down: twice", "num_images": 1, "output_format": "png",
            "aspect_ratio": "auto", "resolution": "4K"}),
    );
    assert_eq!(output(&c, &run).await, recording::png());
    let run = succeed(&c, &key, "google/veo-3", json!({"prompt": "down: veo"})).await;
    assert_eq!(gemini.submissions("down: veo").len(), 2);
    assert_eq!(fal.submission("down: veo").path, "/fal-ai/veo3.1/fast");
    assert_eq!(output(&c, &run).await, recording::VIDEO);
}

/// A row of the spec's table: id, display name, tags, and each optional field with its enum
/// (`None` for a field without one).
type SpecRow = (
    &'static str,
    &'static str,
    Vec<&'static str>,
    Vec<(&'static str, Option<Vec<&'static str>>)>,
);

/// The spec's table, for this file's models.
fn spec() -> Vec<SpecRow> {
    let tags_nb = vec![
        "Text to image",
        "Image editing",
        "Reference images",
        "4K",
        "Text rendering",
    ];
    let ratios_pro = vec![
        "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "auto",
    ];
    let k = vec!["1K", "2K", "4K"];
    vec![
        (
            "google/nano-banana-2",
            "Nano Banana 2",
            tags_nb.clone(),
            vec![
                (
                    "aspect_ratio",
                    Some(vec![
                        "1:1", "1:4", "1:8", "2:3", "3:2", "3:4", "4:1", "4:3", "4:5", "5:4",
                        "8:1", "9:16", "16:9", "21:9", "auto",
                    ]),
                ),
                ("resolution", Some(k.clone())),
                ("image_urls", None),
            ],
        ),
        (
            "google/nano-banana-pro",
            "Nano Banana Pro",
            tags_nb,
            vec![
                ("aspect_ratio", Some(ratios_pro.clone())),
                ("resolution", Some(k.clone())),
                ("image_urls", None),
            ],
        ),
        (
            "google/nano-banana",
            "Nano Banana",
            vec!["Text to image", "Image editing", "Reference images"],
            vec![("aspect_ratio", Some(ratios_pro)), ("image_urls", None)],
        ),
        (
            "openai/gpt-image-1",
            "GPT Image 1",
            vec!["Text to image", "Image editing", "Reference images"],
            vec![
                ("aspect_ratio", Some(vec!["1:1", "3:2", "2:3"])),
                ("image_urls", None),
            ],
        ),
        (
            "openai/gpt-image-1.5",
            "GPT Image 1.5",
            vec![
                "Text to image",
                "Image editing",
                "Reference images",
                "Text rendering",
            ],
            vec![
                ("aspect_ratio", Some(vec!["1:1", "3:2", "2:3"])),
                ("quality", Some(vec!["medium", "high"])),
                ("image_urls", None),
            ],
        ),
        (
            "openai/gpt-image-2",
            "GPT Image 2",
            vec![
                "Text to image",
                "Image editing",
                "Reference images",
                "Commercial use",
            ],
            vec![
                (
                    "aspect_ratio",
                    Some(vec![
                        "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
                    ]),
                ),
                ("resolution", Some(k)),
                ("image_urls", None),
            ],
        ),
        (
            "google/veo-3",
            "Veo 3.1 Fast",
            vec![
                "Text to video",
                "Image to video",
                "Audio generation",
                "1080p",
            ],
            vec![
                ("aspect_ratio", Some(vec!["16:9", "9:16"])),
                ("resolution", Some(vec!["720p", "1080p"])),
                ("image_urls", None),
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_shows_the_spec_fields_and_enums() {
    let s = server(None, None, None);
    let c = s.client();
    let r = c.get(None, "/api/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let models = r.body["data"].as_array().unwrap().clone();
    for (id, name, tags, fields) in spec() {
        let m = models
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed"));
        assert_eq!(m["name"], name, "{id}");
        assert_eq!(m["tags"], json!(tags), "{id}");
        assert!(
            m["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{id}"
        );
        let schema = input_schema(m);
        assert_eq!(schema["type"], "object", "{id}");
        assert_eq!(schema["required"], json!(["prompt"]), "{id}");
        assert_eq!(schema["additionalProperties"], false, "{id}");
        let props = schema["properties"].as_object().unwrap();
        let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want: Vec<&str> = fields.iter().map(|(f, _)| *f).chain(["prompt"]).collect();
        want.sort_unstable();
        assert_eq!(names, want, "{id}: fields");
        assert_eq!(props["prompt"]["type"], "string", "{id}");
        assert_eq!(props["prompt"]["minLength"], 1, "{id}");
        for (field, values) in fields {
            let p = &props[field];
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{id}.{field} has a description"
            );
            match values {
                Some(values) => {
                    assert_eq!(p["type"], "string", "{id}.{field}");
                    assert_eq!(p["enum"], json!(values), "{id}.{field}");
                    assert!(
                        values.contains(&p["default"].as_str().unwrap()),
                        "{id}.{field}"
                    );
                }
                None => {
                    assert_eq!(p["type"], "array", "{id}.{field}");
                    assert_eq!(
                        p["items"],
                        json!({"type": "string", "format": "uri"}),
                        "{id}.{field}"
                    );
                }
            }
        }
        assert_eq!(
            output_schema(m),
            &json!({"type": "object", "required": ["urls"], "properties": {
                "urls": {"type": "array", "items": {"type": "string", "format": "uri"}}}}),
            "{id}"
        );
        assert!(
            m["examples"].as_array().is_some_and(|e| e.len() >= 2),
            "{id} has examples"
        );
    }
    // The caps the spec gives.
    let props = |id: &str| {
        input_schema(models.iter().find(|m| m["id"] == id).unwrap())["properties"].clone()
    };
    let nb2 = props("google/nano-banana-2");
    assert_eq!(nb2["image_urls"]["maxItems"], 14);
    assert_eq!(nb2["image_urls"]["x-max-file-mb"], 30);
    assert_eq!(props("google/nano-banana")["image_urls"]["maxItems"], 10);
    assert_eq!(props("openai/gpt-image-1")["image_urls"]["maxItems"], 5);
}
