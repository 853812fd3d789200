//! `create_checkout` against a local double that speaks Stripe's API over a real socket: the
//! request it records is what Stripe would receive.

#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use runbase_domain::payments::{Checkout, CheckoutRequest, PaymentError, PaymentProvider};
use runbase_domain::secret::Secret;
use runbase_payments::{Stripe, StripeConfig};

const KEY: &str = "sk_test_double_4242";

/// One request as the double saw it.
#[derive(Clone)]
struct Seen {
    headers: HeaderMap,
    form: Vec<(String, String)>,
}

#[derive(Clone)]
struct Double {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: StatusCode,
    answer: &'static str,
}

async fn sessions(State(d): State<Double>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let form = form_urlencoded::parse(&body).into_owned().collect();
    d.seen.lock().unwrap().push(Seen { headers, form });
    (d.status, [("content-type", "application/json")], d.answer)
}

/// Starts the double on a free port; returns its base URL and what it records.
async fn start(status: StatusCode, answer: &'static str) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/checkout/sessions", post(sessions))
        .with_state(Double {
            seen: seen.clone(),
            status,
            answer,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn stripe(api_base: &str) -> Stripe {
    let cfg = StripeConfig {
        secret_key: Some(Secret::new(KEY)),
        webhook_secret: Some(Secret::new("whsec_double")),
        api_base: Some(api_base.to_owned()),
        currency: "eur".to_owned(),
        product_name: "Runbase credits & more".to_owned(),
        ..StripeConfig::default()
    };
    Stripe::from_config(&cfg, |_| None).unwrap().unwrap()
}

fn request() -> CheckoutRequest {
    CheckoutRequest {
        account_id: "acct_42".to_owned(),
        email: "buyer+1@example.com".to_owned(),
        amount_cents: 2_500,
        success_url: "https://runbase.test/settings/credits?paid=1".to_owned(),
        cancel_url: "https://runbase.test/settings/credits".to_owned(),
    }
}

#[tokio::test]
async fn creates_a_session_with_stripes_form_fields() {
    let (base, seen) = start(
        StatusCode::OK,
        r#"{"id":"cs_test_a1","object":"checkout.session","url":"https://checkout.stripe.com/c/pay/cs_test_a1"}"#,
    )
    .await;
    let checkout = stripe(&base).create_checkout(&request()).await.unwrap();
    assert_eq!(
        checkout,
        Checkout {
            id: "cs_test_a1".to_owned(),
            url: "https://checkout.stripe.com/c/pay/cs_test_a1".to_owned(),
        }
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    let header = |name: &str| req.headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header("authorization"), format!("Bearer {KEY}"));
    assert_eq!(header("content-type"), "application/x-www-form-urlencoded");
    let key = header("idempotency-key");
    assert!(key.len() >= 16, "{key}");

    let mut form = req.form.clone();
    form.sort();
    let mut expected: Vec<(String, String)> = [
        ("cancel_url", "https://runbase.test/settings/credits"),
        ("client_reference_id", "acct_42"),
        ("customer_email", "buyer+1@example.com"),
        ("line_items[0][price_data][currency]", "eur"),
        (
            "line_items[0][price_data][product_data][name]",
            "Runbase credits & more",
        ),
        ("line_items[0][price_data][unit_amount]", "2500"),
        ("line_items[0][quantity]", "1"),
        ("metadata[account_id]", "acct_42"),
        ("mode", "payment"),
        (
            "success_url",
            "https://runbase.test/settings/credits?paid=1",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    expected.sort();
    assert_eq!(form, expected);
}

#[tokio::test]
async fn each_checkout_gets_its_own_idempotency_key() {
    let (base, seen) = start(StatusCode::OK, r#"{"id":"cs_1","url":"https://c/1"}"#).await;
    let s = stripe(&base);
    s.create_checkout(&request()).await.unwrap();
    s.create_checkout(&request()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let keys: Vec<_> = seen
        .iter()
        .map(|r| r.headers.get("idempotency-key").unwrap().clone())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn a_stripe_error_becomes_upstream_without_the_key() {
    let (base, seen) = start(
        StatusCode::BAD_REQUEST,
        r#"{"error":{"code":"parameter_invalid_integer","message":"Invalid integer: abc","param":"line_items[0][price_data][unit_amount]","type":"invalid_request_error"}}"#,
    )
    .await;
    let err = stripe(&base).create_checkout(&request()).await.unwrap_err();
    let PaymentError::Upstream(text) = &err else {
        panic!("not upstream: {err:?}");
    };
    assert!(text.contains("400"), "{text}");
    assert!(text.contains("Invalid integer: abc"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    assert!(!err.to_string().contains(KEY));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_api_is_upstream_without_the_key() {
    // Bind, note the port, and close it, so nothing is listening there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = stripe(&format!("http://{addr}"))
        .create_checkout(&request())
        .await
        .unwrap_err();
    assert!(matches!(err, PaymentError::Upstream(_)), "{err:?}");
    assert!(!err.to_string().contains(KEY));
}
