//! The docs pages. The error and rate-limit tables are generated from what the server enforces
//! (`ErrorCode`, the configured limits), so the docs cannot drift from the behaviour.

use crate::i18n::t;
use crate::layout::{Nav, SUPPORT_EMAIL, shell, table};
use crate::shell;
use crate::web::{MaybeViewer, page};
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use runbase_domain::ErrorCode;
use runbase_domain::idempotency;
use runbase_domain::ratelimit::RateLimit;
use runbase_http::AppState;

/// Rows for `codes`: status, code, message, fix.
pub fn error_table(codes: &[ErrorCode]) -> Markup {
    table(
        &t("nav-error-codes"),
        &[
            t("docs-col-status"),
            t("docs-col-code"),
            t("docs-col-meaning"),
            t("docs-col-fix"),
        ],
        html! {
            @for c in codes {
                tr id=(format!("error-{}", c.as_str())) {
                    td { (c.status()) }
                    td { code { (c.as_str()) } }
                    td { (c.default_message()) }
                    td { (c.fix()) }
                }
            }
        },
    )
}

fn docs_nav(current: &str) -> Markup {
    let pages = [
        ("/docs/authentication", t("docs-authentication")),
        ("/docs/runs", t("docs-runs")),
        ("/docs/rate-limits", t("nav-rate-limits")),
        ("/docs/error-codes", t("nav-error-codes")),
        // The machine-readable contract, generated from the server's code.
        ("/api/v1/openapi.json", t("docs-openapi")),
    ];
    html! {
        nav.docs-nav aria-label=(t("nav-docs")) {
            @for (href, label) in pages {
                a href=(href) aria-current=[(href == current).then_some("page")] { (label) }
            }
        }
    }
}

fn docs_page(
    viewer: Option<&crate::web::Viewer>,
    path: &str,
    title: &str,
    body: Markup,
) -> Response {
    page(shell(
        title,
        viewer,
        Nav::Docs,
        html! {
            div.docs { (docs_nav(path)) article { h1 { (title) } (body) } }
        },
    ))
}

pub async fn authentication(
    State(state): State<AppState>,
    MaybeViewer(v): MaybeViewer,
) -> Response {
    let base = &state.config.public_url;
    docs_page(
        v.as_ref(),
        "/docs/authentication",
        &t("docs-authentication"),
        html! {
            p { "Every API request carries an API key in the " code { "Authorization" } " header:" }
            pre.code { code { "Authorization: Bearer sk-..." } }
            p { "Create keys in " a href="/settings/api-keys" { "Settings → API Keys" } ". The full key is shown once, when it is created; Runbase keeps only a hash of it. An account may have many keys, e.g. one per project or environment." }
            h2 { (t("docs-key-carries")) }
            ul {
                li { strong { "Disable / enable" } ": a disabled key answers " code { "401 invalid_api_key" } " until it is enabled again. An expired or deleted key answers the same." }
                li { strong { "IP allowlist" } ": up to 10 addresses or CIDR blocks; a request from elsewhere answers " code { "403 ip_not_allowed" } ". Empty allows every address." }
                li { strong { "Spend limit" } ": a lifetime cap in cents. A run that would take the key past it answers " code { "403 api_key_spend_limit_exceeded" } "; raise it at any time." }
                li { strong { "Usage quota" } ": a cap on the number of runs; once used up, " code { "429 USAGE_EXCEEDED" } "." }
                li { strong { "Test keys" } " (" code { "sk-test-..." } "): runs are simulated and never charged. A key sees the runs of its own mode only: a test key the account's test runs, a live key its live runs (the other mode's answer " code { "404 run_not_found" } "). The dashboard shows both." }
            }
            h2 { (t("docs-example")) }
            pre.code { code { (shell::curl_get(base, "/api/v1/account", shell::ENV_KEY)) } }
            h2 { (t("docs-sessions")) }
            p { "The dashboard uses a session cookie (" code { "HttpOnly" } ", " code { "SameSite=Lax" } ", " code { "Secure" } " and named with the " code { "__Host-" } " prefix behind HTTPS) and a CSRF token in every form. " code { "GET /auth/session" } " answers who is logged in, as JSON." }
        },
    )
}

fn limit_row(scope: &str, per: &str, l: RateLimit) -> Markup {
    html! {
        tr { td { (scope) } td { (per) } td { (l.requests) " requests per " (l.window.as_secs()) " seconds" } }
    }
}

pub async fn rate_limits(State(state): State<AppState>, MaybeViewer(v): MaybeViewer) -> Response {
    let l = state.config.limits;
    docs_page(
        v.as_ref(),
        "/docs/rate-limits",
        &t("nav-rate-limits"),
        html! {
            p { "These are the limits this server enforces (its configuration, read when this page is served):" }
            (table(&t("nav-rate-limits"), &[t("docs-col-scope"), t("docs-col-per"), t("docs-col-limit")], html! {
                (limit_row("Runs endpoints: POST /api/v1/runs, GET /api/v1/runs/{id} and POST /api/v1/files (uploads), together", "API key", l.runs))
                (limit_row("Auth endpoints: log in, sign up, change password, start a sign-in with an identity provider", "client IP (IPv6: its /64)", l.auth))
                (limit_row("Session check: GET /auth/session", "client IP (IPv6: its /64)", l.session))
            }))
            p { "Every response of a limited endpoint carries the limit state:" }
            ul {
                li { code { "RateLimit-Limit" } ": requests allowed in the window;" }
                li { code { "RateLimit-Remaining" } ": requests left;" }
                li { code { "RateLimit-Reset" } ": seconds until a request slot frees up." }
            }
            p { "Over the limit the answer is " code { "429" } " with " code { "Retry-After" } " (seconds) and:" }
            pre.code { code { r#"{"error":{"message":"Rate limit exceeded","code":"RATE_LIMITED"}}"# } }
            p { "Retry with exponential backoff: wait 1 s, then 2 s, then 4 s." }
        },
    )
}

pub async fn error_codes(MaybeViewer(v): MaybeViewer) -> Response {
    let others: Vec<ErrorCode> = ErrorCode::ALL
        .iter()
        .copied()
        .filter(|c| !ErrorCode::RUNS_API.contains(c))
        .collect();
    docs_page(
        v.as_ref(),
        "/docs/error-codes",
        &t("nav-error-codes"),
        html! {
            p { "Every error has the same JSON body:" }
            pre.code { code { "{\n  \"error\": {\n    \"message\": \"Human-readable description\",\n    \"code\": \"error_code\"\n  }\n}" } }
            h2 { (t("docs-runs-api")) }
            p { code { "POST /api/v1/runs" } " checks in this order; the first failing check answers:" }
            (error_table(ErrorCode::RUNS_API))
            h2 { (t("docs-other-endpoints")) }
            (error_table(&others))
            p { "A 500 never carries internal detail. If it persists, contact " a href=(format!("mailto:{SUPPORT_EMAIL}")) { (SUPPORT_EMAIL) } "." }
        },
    )
}

pub async fn runs(State(state): State<AppState>, MaybeViewer(v): MaybeViewer) -> Response {
    let base = &state.config.public_url;
    docs_page(
        v.as_ref(),
        "/docs/runs",
        &t("docs-runs"),
        html! {
            p { "A run is one request to execute a model. All generation is asynchronous: creating a run returns at once, and you poll it." }
            h2 { (t("docs-lifecycle")) }
            ol.lifecycle {
                li { code { "pending" } ": created and paid, waiting for a worker;" }
                li { code { "processing" } ": at the provider;" }
                li { code { "succeeded" } ": " code { "output.urls" } " holds the generated files (text models also fill " code { "output.text" } ");" }
                li { code { "failed" } ": " code { "error" } " says why, and the full cost is refunded;" }
                li { code { "canceled" } ": canceled with " code { "POST /api/v1/runs/{id}/cancel" } " before it finished; refunded in full." }
            }
            h2 { (t("docs-money")) }
            p { "The price is taken from your balance when the run is created (" code { "costUsd" } ", an integer of micro-USD: 1 USD = 1,000,000, so 60000 is 6 cents). A failed or canceled run gives it back. Every change is a line in " a href="/settings/credits" { "Settings → Credits" } "." }
            h2 { (t("docs-create")) }
            pre.code { code { (shell::curl_create(base, shell::ENV_KEY, r#"{"model": "google/nano-banana-2", "input": {"prompt": "A red fox in fresh snow"}}"#)) } }
            h2 { (t("docs-poll")) }
            pre.code { code { (shell::curl_get(base, "/api/v1/runs/RUN_ID", shell::ENV_KEY)) } }
            p { "Poll every 1–2 seconds. Polls count towards the runs rate limit (see " a href="/docs/rate-limits" { "Rate limits" } ")." }
            h2 id="retries" { (t("docs-retries")) }
            p { "A create (or a cancel) that timed out or lost its connection may or may not have happened. Send it with an " code { "Idempotency-Key" } " header, a value of your choosing (1 to 255 printable ASCII characters; a UUID is a good one), and retry it with the same key: it is done at most once." }
            pre.code { code { (shell::curl_create_idempotent(base, shell::ENV_KEY, "order-4711", r#"{"model": "google/nano-banana-2", "input": {"prompt": "A red fox in fresh snow"}}"#)) } }
            ul {
                li { "A retry of the same request (same method, path and body, byte for byte) with the same key gets the first answer again, status and body, with " code { "Idempotent-Replayed: true" } ", and is not charged or queued again." }
                li { "Keys belong to your account and mode (its live API keys share them; its test keys have keys of their own) and are kept for " (idempotency::KEEP_HOURS) " hours; after that a key starts afresh." }
                li { "The same key with a different request answers " code { "409 idempotency_key_mismatch" } ". Test keys and live keys have keys of their own: the same key sent with each makes two requests, never answered for each other." }
                li { "A retry while the first request is still being processed answers " code { "409 idempotency_key_in_use" } " with " code { "Retry-After: 1" } "; retry then." }
                li { "Which answers are kept: every answer of a request that started executing, refusals included (" code { "402 insufficient_balance" } ", " code { "403 api_key_spend_limit_exceeded" } ", " code { "404 run_not_found" } "). Not kept, so that a retry with the key executes: answers to a body that failed validation (" code { "400" } "), " code { "429" } " and " code { "5xx" } " answers." }
                li { "A key that is too long, empty, or not printable ASCII answers " code { "400 invalid_request" } "." }
            }
            h2 id="push" { (t("docs-push")) }
            p { "Three ways to learn that a run finished without polling it:" }
            ul {
                li { strong { "Waiting create. " } "Send the create with " code { "Prefer: wait=N" } " (N from 1 to 60 seconds): the answer comes when the run finishes, or after N seconds with the run as it is then (poll it from there). " code { "Preference-Applied: wait=N" } " says the wait was honoured. For short models this is one request instead of many." }
                li { strong { "Live events. " } code { "GET /api/v1/runs/{id}/events" } " is a Server-Sent Events stream: one event per status change, named after the status, its data the run object, its " code { "id" } " ordered. It ends after the run's last event. A client that reconnects with " code { "Last-Event-ID" } " gets only what it missed (204 when it has seen the last one). A stream counts once against the runs rate limit; each key may hold a few open at once (" code { "429 too_many_streams" } " beyond)." }
                li { strong { "Webhooks. " } "Add " code { "\"webhook\": \"https://...\"" } " (a public address) and optionally " code { "\"webhookEvents\": [\"start\", \"completed\"]" } " (the default is " code { "completed" } ") to the create body. Each event is POSTed with the run object as its body and signed by the Standard Webhooks scheme (" code { "webhook-id" } ", " code { "webhook-timestamp" } ", " code { "webhook-signature" } ", HMAC-SHA256 with your " code { "whsec_" } " secret from " a href="/settings/webhooks" { "Settings → Webhooks" } "). A delivery answered with anything but 2xx is retried with growing pauses for 24 hours; the run's page and " code { "GET /api/v1/runs/{id}/deliveries" } " show every attempt." }
            }
            h2 { (t("docs-run-object")) }
            p { "Fields, always present, " code { "null" } " until known: " code { "id" } ", " code { "model" } ", " code { "status" } ", " code { "input" } " (after defaults), " code { "output" } ", " code { "error" } ", " code { "costUsd" } ", " code { "createdAt" } ", " code { "startedAt" } ", " code { "completedAt" } " (ISO 8601 UTC with milliseconds, e.g. " code { "2026-06-01T12:00:04.200Z" } ")." }
            h2 { (t("docs-example")) }
            pre.code { code { "{\"id\": \"run_2abc...\", \"model\": \"google/nano-banana-2\", \"status\": \"succeeded\",\n \"input\": {\"prompt\": \"A red fox in fresh snow\", \"aspect_ratio\": \"auto\", \"resolution\": \"1K\"},\n \"output\": {\"urls\": [\"" (base) "/files/run_2abc.../output-0.png\"]}, \"error\": null,\n \"costUsd\": 60000, \"createdAt\": \"2026-06-01T12:00:00.000Z\",\n \"startedAt\": \"2026-06-01T12:00:00.150Z\", \"completedAt\": \"2026-06-01T12:00:04.200Z\"}" } }
            p { "Each model's input and output are described on its page under " a href="/models" { "Models" } "." }
            h2 id="openapi" { (t("docs-openapi")) }
            p { "The whole API is described for tools (client generators, API testers) by an OpenAPI 3.1 document at " a href="/api/v1/openapi.json" { code { "/api/v1/openapi.json" } } ". It is generated from the server's own code, so it matches this server: every endpoint with each status it can answer and the error codes of each, the headers, and every model of this server's catalogue, whose input schema is the component " code { "ModelInput_<provider>_<name>" } " that the create body's " code { "input" } " refers to." }
        },
    )
}
