//! Creating a Checkout Session: `POST /v1/checkout/sessions` with Stripe's bracketed form
//! encoding, and reading its answer or its error.

use runbase_domain::payments::{Checkout, CheckoutRequest, PaymentError};
use serde::Deserialize;

/// What a successful create returns, in the fields Runbase keeps.
#[derive(Deserialize)]
struct SessionCreated {
    id: Option<String>,
    url: Option<String>,
}

/// Stripe's error envelope: `{"error": {"type": ..., "message": ..., "code": ...}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
}

/// What goes on the session besides the request itself.
pub(crate) struct Product<'a> {
    pub currency: &'a str,
    pub name: &'a str,
}

/// The form fields of a one-off payment of `req.amount_cents` for `product`, in Stripe's
/// `a[b][c]=v` nesting (the form serializer percent-encodes the brackets, which Stripe decodes
/// like any form parser).
pub(crate) fn form(req: &CheckoutRequest, product: &Product<'_>) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("mode", "payment".to_owned()),
        ("success_url", req.success_url.clone()),
        ("cancel_url", req.cancel_url.clone()),
        ("client_reference_id", req.account_id.clone()),
        ("metadata[account_id]", req.account_id.clone()),
        ("line_items[0][quantity]", "1".to_owned()),
        (
            "line_items[0][price_data][currency]",
            product.currency.to_owned(),
        ),
        (
            "line_items[0][price_data][unit_amount]",
            req.amount_cents.to_string(),
        ),
        (
            "line_items[0][price_data][product_data][name]",
            product.name.to_owned(),
        ),
    ];
    // Stripe refuses an empty or invalid email outright; without one the page asks for it.
    if !req.email.trim().is_empty() {
        fields.push(("customer_email", req.email.clone()));
    }
    fields
}

/// A fresh key for the `Idempotency-Key` header: Stripe answers a repeat of the same key with
/// the first result, so a retried request never opens two sessions.
pub(crate) fn idempotency_key() -> String {
    format!("runbase-{:032x}", rand::random::<u128>())
}

/// Reads Stripe's answer to the create call. `secret_key` is scrubbed from every message in case
/// an error echoes it back.
pub(crate) fn read_response(
    status: reqwest::StatusCode,
    body: &[u8],
    secret_key: &str,
) -> Result<Checkout, PaymentError> {
    if !status.is_success() {
        return Err(upstream(&error_text(status, body), secret_key));
    }
    if let Ok(err) = serde_json::from_slice::<ErrorBody>(body) {
        // Stripe never does this, but an error envelope is an error whatever the status.
        return Err(upstream(&describe(status, &err.error), secret_key));
    }
    let created: SessionCreated = serde_json::from_slice(body).map_err(|_| {
        PaymentError::Upstream(format!(
            "stripe answered {status} with a body that is not JSON"
        ))
    })?;
    match (created.id, created.url) {
        (Some(id), Some(url)) if !id.is_empty() && !url.is_empty() => Ok(Checkout { id, url }),
        _ => Err(PaymentError::Upstream(format!(
            "stripe answered {status} without a session id and url"
        ))),
    }
}

fn error_text(status: reqwest::StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(err) => describe(status, &err.error),
        // Not Stripe's envelope (a proxy's page, say): the status alone, not a page of HTML.
        Err(_) => format!("stripe answered {status}"),
    }
}

fn describe(status: reqwest::StatusCode, err: &StripeError) -> String {
    let mut text = format!("stripe answered {status}");
    if let Some(kind) = &err.kind {
        text.push_str(&format!(" ({kind}"));
        if let Some(code) = &err.code {
            text.push_str(&format!(", {code}"));
        }
        text.push(')');
    }
    if let Some(message) = &err.message {
        text.push_str(": ");
        text.push_str(message);
    }
    text
}

/// An [`PaymentError::Upstream`] whose text cannot carry the secret key.
pub(crate) fn upstream(text: &str, secret_key: &str) -> PaymentError {
    let text = if secret_key.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret_key, "[redacted]")
    };
    PaymentError::Upstream(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn request() -> CheckoutRequest {
        CheckoutRequest {
            account_id: "acct_1".to_owned(),
            email: "a@example.com".to_owned(),
            amount_cents: 1000,
            success_url: "https://runbase.test/ok".to_owned(),
            cancel_url: "https://runbase.test/no".to_owned(),
        }
    }

    const PRODUCT: Product<'static> = Product {
        currency: "usd",
        name: "Runbase credits",
    };

    #[test]
    fn form_has_every_field_once() {
        let fields = form(&request(), &PRODUCT);
        let get = |k: &str| {
            let v: Vec<_> = fields.iter().filter(|(n, _)| *n == k).collect();
            assert_eq!(v.len(), 1, "{k}");
            v[0].1.clone()
        };
        assert_eq!(get("mode"), "payment");
        assert_eq!(get("customer_email"), "a@example.com");
        assert_eq!(get("line_items[0][price_data][unit_amount]"), "1000");
        assert_eq!(fields.len(), 10);
    }

    #[test]
    fn empty_email_is_left_out() {
        let mut req = request();
        req.email = String::new();
        assert!(
            form(&req, &PRODUCT)
                .iter()
                .all(|(k, _)| *k != "customer_email")
        );
    }

    #[test]
    fn idempotency_keys_differ() {
        let (a, b) = (idempotency_key(), idempotency_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), "runbase-".len() + 32);
    }

    #[test]
    fn success_needs_id_and_url() {
        let ok = read_response(
            StatusCode::OK,
            br#"{"id":"cs_1","url":"https://c/x"}"#,
            "sk",
        );
        assert_eq!(
            ok.unwrap(),
            Checkout {
                id: "cs_1".to_owned(),
                url: "https://c/x".to_owned()
            }
        );
        for body in [
            &br#"{"id":"cs_1"}"#[..],
            b"<html>",
            br#"{"id":"","url":"u"}"#,
        ] {
            assert!(matches!(
                read_response(StatusCode::OK, body, "sk"),
                Err(PaymentError::Upstream(_))
            ));
        }
    }

    #[test]
    fn errors_carry_stripes_message_without_the_key() {
        let body = br#"{"error":{"message":"Invalid API Key provided: sk_test_SECRET","type":"invalid_request_error"}}"#;
        let Err(PaymentError::Upstream(text)) =
            read_response(StatusCode::UNAUTHORIZED, body, "sk_test_SECRET")
        else {
            panic!("not an upstream error");
        };
        assert!(text.contains("401"), "{text}");
        assert!(text.contains("Invalid API Key provided"), "{text}");
        assert!(text.contains("invalid_request_error"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");

        let Err(PaymentError::Upstream(text)) =
            read_response(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>", "sk")
        else {
            panic!("not an upstream error");
        };
        assert_eq!(text, "stripe answered 502 Bad Gateway");
    }
}
