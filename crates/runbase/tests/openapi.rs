//! The OpenAPI 3.1 document at `/api/v1/openapi.json` (issue 14, item 5): served by the binary,
//! it names every route of `api_routes()` (read from the route table's source, so a route added
//! without documentation fails here), every answer carries the statuses and headers it says,
//! and every model of the server's catalogue (a `--catalog` file's too) has its input schema
//! reachable from the create body. `scripts/schemathesis` checks the live answers against it.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::{Server, relaxed};
use serde_json::Value;

/// The route table, as written: `(method, path)` of every `.route(...)` in `api_routes()`.
fn api_routes() -> Vec<(String, String)> {
    let source = include_str!("../../http/src/routes/mod.rs");
    let start = source.find("pub fn api_routes()").unwrap();
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").unwrap()];
    let mut routes = Vec::new();
    for part in body.split(".route(").skip(1) {
        let path = part.split('"').nth(1).unwrap().to_owned();
        // The method router: everything up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = part
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .unwrap()
            .0;
        let methods = &part[..end];
        let mut found = false;
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = methods
                .match_indices(&format!("{method}("))
                .any(|(i, _)| i == 0 || !methods.as_bytes()[i - 1].is_ascii_alphanumeric());
            if called {
                routes.push((method.to_owned(), path.clone()));
                found = true;
            }
        }
        assert!(found, "no method found for {path}: {methods}");
    }
    routes
}

/// Follows a local `$ref` (`#/components/schemas/...`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').unwrap();
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} does not resolve"))
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_names_every_route_status_and_model() {
    // An extra catalogue file: its model must be in the document as the built-in ones are.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("extra.toml");
    std::fs::write(
        &catalog,
        r#"
[[model]]
id = "acme/upscaler"
name = "Upscaler"
description = "A test model."
tags = ["Upscaling"]
provider = "builtin"
upstream = "placeholder-image"
price = { cents = 3 }
input_schema = { type = "object", required = ["scale"], properties = { scale = { type = "string", enum = ["2x", "4x"] } } }
output_schema = { type = "object", properties = { urls = { type = "array" } } }
"#,
    )
    .unwrap();
    let list = format!("[{:?}]", catalog.to_str().unwrap());
    let mut env = relaxed();
    env.push(("RUNBASE_CATALOG", list.as_str()));
    let server = Server::start_with(&env);
    let c = server.client();

    let r = c.get(None, "/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    let doc = r.body.clone();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // Every route of the table, with its methods; every answer with its Request-Id; every
    // error answer with the envelope.
    let routes = api_routes();
    assert!(routes.len() >= 12, "{routes:?}");
    for (method, path) in &routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} has no success answer"
        );
        assert!(responses.contains_key("500"), "{method} {path}");
        for (status, response) in responses {
            assert_eq!(
                response["headers"]["Request-Id"]["required"], true,
                "{method} {path} {status}"
            );
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["allOf"][0]["$ref"], "#/components/schemas/ErrorEnvelope",
                    "{method} {path} {status}"
                );
            }
        }
    }
    // And nothing documented that the server does not route.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes.contains(&(method.clone(), path.clone())),
                "{method} {path} is documented but not routed"
            );
        }
    }
    let key_param = doc["paths"]["/api/v1/runs"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key_param["in"], "header");
    assert_eq!(key_param["schema"]["maxLength"], 255);
    let created = &doc["paths"]["/api/v1/runs"]["post"]["responses"]["201"];
    assert!(created["headers"]["Idempotent-Replayed"].is_object());
    assert!(created["headers"]["RateLimit-Remaining"].is_object());
    let limited = &doc["paths"]["/api/v1/runs"]["post"]["responses"]["429"];
    assert!(limited["headers"]["Retry-After"].is_object());
    let codes = &limited["content"]["application/json"]["schema"]["allOf"][1]["properties"]["error"]
        ["properties"]["code"]["enum"];
    assert_eq!(
        codes,
        &serde_json::json!(["RATE_LIMITED", "USAGE_EXCEEDED"])
    );

    // Every model of the catalogue: its input schema is a component, the create body's branch
    // for it refers to that component, and it is the schema the models endpoint shows.
    let models = c.get(None, "/api/v1/models").await.body;
    let models = models["data"].as_array().unwrap();
    assert!(models.iter().any(|m| m["id"] == "acme/upscaler"));
    let create = resolve(&doc, "#/components/schemas/CreateRunRequest");
    assert_eq!(create["discriminator"]["propertyName"], "model");
    assert_eq!(create["oneOf"].as_array().unwrap().len(), models.len());
    for model in models {
        let id = model["id"].as_str().unwrap();
        let branch = resolve(
            &doc,
            create["discriminator"]["mapping"][id]
                .as_str()
                .unwrap_or_else(|| panic!("{id} has no branch")),
        );
        assert_eq!(branch["properties"]["model"]["const"], id);
        // A create may subscribe a webhook, whatever the model.
        assert_eq!(
            branch["properties"]["webhook"]["$ref"],
            "#/components/schemas/Webhook"
        );
        assert_eq!(
            branch["properties"]["webhookEvents"]["$ref"],
            "#/components/schemas/WebhookEvents"
        );
        let input_ref = branch["properties"]["input"]["$ref"].as_str().unwrap();
        assert_eq!(doc["x-model-input-schemas"][id], input_ref);
        assert_eq!(
            resolve(&doc, input_ref),
            &model["inputSchema"],
            "{id}: the document's input schema is the catalogue's"
        );
        // The model object the document describes is the one served.
        let one = c.get(None, &format!("/api/v1/models/{id}")).await;
        assert_eq!(one.status, 200);
        assert_eq!(&one.body, model);
    }
    let webhook = resolve(&doc, "#/components/schemas/Webhook");
    assert_eq!(webhook["maxLength"], 2048);
    let events = resolve(&doc, "#/components/schemas/WebhookEvents");
    assert_eq!(
        events["items"]["enum"],
        serde_json::json!(["start", "completed"])
    );
    // `Prefer: wait=N` on the create, and the 201's `Preference-Applied`.
    let create_op = &doc["paths"]["/api/v1/runs"]["post"];
    assert!(
        create_op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Prefer" && p["in"] == "header"),
        "{create_op}"
    );
    assert!(create_op["responses"]["201"]["headers"]["Preference-Applied"].is_object());
    let model_schema = resolve(&doc, "#/components/schemas/Model");
    for field in model_schema["required"].as_array().unwrap() {
        assert!(models[0].get(field.as_str().unwrap()).is_some(), "{field}");
    }
}

#[tokio::test]
async fn answers_carry_what_the_document_says() {
    let server = Server::start();
    let key = server.account("openapi@example.com", 100);
    let c = server.client();
    let doc = c.get(None, "/api/v1/openapi.json").await.body;

    // The docs pages link the document (in their navigation, and the runs page explains it).
    for page in ["/docs/runs", "/docs/authentication", "/docs/error-codes"] {
        let html = c
            .http
            .get(format!("{}{page}", c.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains(r#"href="/api/v1/openapi.json""#),
            "{page} does not link the document"
        );
    }

    // A waiting create with a webhook, as the document describes them: accepted, and its
    // `Preference-Applied` matches the documented pattern.
    let waited = c
        .http
        .post(format!("{}/api/v1/runs", c.base))
        .bearer_auth(&key)
        .header("prefer", "wait=5")
        .json(&serde_json::json!({
            "model": "runbase/echo",
            "input": {"text": "hi"},
            "webhook": "https://hooks.example.invalid/hook",
            "webhookEvents": ["start", "completed"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(waited.status(), 201);
    let applied = waited.headers()["preference-applied"]
        .to_str()
        .unwrap()
        .to_owned();
    let pattern = doc["paths"]["/api/v1/runs"]["post"]["responses"]["201"]["headers"]
        ["Preference-Applied"]["schema"]["pattern"]
        .as_str()
        .unwrap();
    assert_eq!(
        (pattern, applied.as_str()),
        ("^wait=([1-9]|[1-5][0-9]|60)$", "wait=5")
    );

    // A few answers of different kinds: each status is documented for its operation, its
    // error code is among those documented for that status, and its required headers are there.
    let created = c
        .create(
            &key,
            serde_json::json!({"model": "runbase/echo", "input": {"text": "hi"}}),
        )
        .await;
    assert_eq!(created.status, 201);
    let run_id = created.body["id"].as_str().unwrap().to_owned();
    let checks: Vec<(&str, &str, common::Resp)> = vec![
        ("post", "/api/v1/runs", created),
        (
            "post",
            "/api/v1/runs",
            c.create(&key, serde_json::json!({"model": "nope/nope", "input": {}}))
                .await,
        ),
        (
            "post",
            "/api/v1/runs",
            c.post_raw(Some(&key), "/api/v1/runs", "{").await,
        ),
        ("get", "/api/v1/runs/{id}", c.run(&key, &run_id).await),
        (
            "get",
            "/api/v1/runs/{id}",
            c.run(&key, "run_00000000000000000000000000").await,
        ),
        (
            "get",
            "/api/v1/runs",
            c.get(Some(&key), "/api/v1/runs?limit=0").await,
        ),
        (
            "get",
            "/api/v1/account",
            c.get(None, "/api/v1/account").await,
        ),
        (
            "get",
            "/api/v1/account",
            c.get(Some(&key), "/api/v1/account").await,
        ),
        (
            "get",
            "/api/v1/models/{provider}/{name}",
            c.get(None, "/api/v1/models/nope/nope").await,
        ),
        (
            "get",
            "/files/{run_id}/{name}",
            c.get(None, "/files/run_nope/x.png").await,
        ),
    ];
    for (method, path, r) in checks {
        let response = &doc["paths"][path][method]["responses"][r.status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {} undocumented: {}",
            r.status,
            r.body
        );
        if let Some(code) = r.body["error"]["code"].as_str() {
            let listed = &response["content"]["application/json"]["schema"]["allOf"][1]["properties"]
                ["error"]["properties"]["code"]["enum"];
            assert!(
                listed.as_array().unwrap().contains(&Value::from(code)),
                "{method} {path}: {code} is not documented for {}",
                r.status
            );
        }
        for (name, header) in response["headers"].as_object().unwrap() {
            if header["required"] == true {
                assert!(r.header(name).is_some(), "{method} {path}: no {name}");
            }
        }
    }
}

/// A create's `webhook` and `webhookEvents` as the document describes them and as the server
/// takes them agree: `null` is leaving a field out, and events need a URL.
#[tokio::test]
async fn the_webhook_fields_mean_what_the_document_says() {
    let server = Server::start();
    let key = server.account("nulls@example.com", 100);
    let c = server.client();
    let mut root = c.get(None, "/api/v1/openapi.json").await.body;
    root["$ref"] = serde_json::json!("#/components/schemas/CreateRunRequest");
    let schema = jsonschema::draft202012::new(&root).unwrap();
    let hook = "http://127.0.0.1:9/hook";
    let cases = [
        (serde_json::json!({"webhook": null}), true),
        (
            serde_json::json!({"webhook": null, "webhookEvents": null}),
            true,
        ),
        (serde_json::json!({"webhookEvents": null}), true),
        (
            serde_json::json!({"webhook": hook, "webhookEvents": null}),
            true,
        ),
        (
            serde_json::json!({"webhook": hook, "webhookEvents": ["start"]}),
            true,
        ),
        (
            serde_json::json!({"webhook": null, "webhookEvents": ["start"]}),
            false,
        ),
        (serde_json::json!({"webhookEvents": ["completed"]}), false),
        (
            serde_json::json!({"webhook": hook, "webhookEvents": []}),
            false,
        ),
        (serde_json::json!({"webhook": 3}), false),
    ];
    for (fields, valid) in cases {
        let mut body = serde_json::json!({"model": "runbase/echo", "input": {"text": "hi"}});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        assert_eq!(schema.is_valid(&body), valid, "the document on {body}");
        let r = c.create(&key, body.clone()).await;
        let expected = if valid { 201 } else { 400 };
        assert_eq!(r.status, expected, "the server on {body}: {}", r.body);
    }
}
