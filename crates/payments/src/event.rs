//! Reading a verified Stripe event: which ones mean "credit the account", and what to credit.

use runbase_domain::payments::{PaidCheckout, PaymentError, WebhookEvent};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Sent when the customer finishes the hosted page; paid already for cards, not yet for delayed
/// methods (bank debits), whose outcome comes later as one of the two `async_payment` events.
const COMPLETED: &str = "checkout.session.completed";
/// Sent when a delayed payment of a completed session clears.
const ASYNC_SUCCEEDED: &str = "checkout.session.async_payment_succeeded";

/// The envelope every Stripe event shares.
#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: Option<EventData>,
}

#[derive(Deserialize)]
struct EventData {
    object: Value,
}

/// The fields of a Checkout Session that Runbase reads; all optional so that a missing one is
/// reported by name.
#[derive(Deserialize)]
struct Session {
    id: Option<String>,
    payment_status: Option<String>,
    client_reference_id: Option<String>,
    metadata: Option<Map<String, Value>>,
    amount_total: Option<i64>,
    currency: Option<String>,
}

/// Interprets the body of a webhook whose signature has already been verified.
pub(crate) fn parse(body: &[u8]) -> Result<WebhookEvent, PaymentError> {
    let mut event: Event = serde_json::from_slice(body)
        .map_err(|e| PaymentError::Malformed(format!("not a Stripe event: {e}")))?;
    let ignored = |event: Event| WebhookEvent::Ignored {
        event_id: event.id,
        kind: event.kind,
    };
    if event.kind != COMPLETED && event.kind != ASYNC_SUCCEEDED {
        return Ok(ignored(event));
    }

    let kind = event.kind.clone();
    let malformed = |what: &str| PaymentError::Malformed(format!("{kind}: {what}"));
    let object = event
        .data
        .take()
        .map(|d| d.object)
        .ok_or_else(|| malformed("no data.object"))?;
    let session: Session = serde_json::from_value(object)
        .map_err(|e| malformed(&format!("data.object is not a checkout session: {e}")))?;

    if kind == COMPLETED {
        match session.payment_status.as_deref() {
            Some("paid") => {}
            // "unpaid": a delayed method, settled by a later event; "no_payment_required":
            // nothing was charged, so there is nothing to credit.
            Some(_) => return Ok(ignored(event)),
            None => return Err(malformed("no data.object.payment_status")),
        }
    }

    let checkout_id = session.id.ok_or_else(|| malformed("no data.object.id"))?;
    let amount_cents = session
        .amount_total
        .ok_or_else(|| malformed("no data.object.amount_total"))?;
    if amount_cents < 0 {
        return Err(malformed("negative data.object.amount_total"));
    }
    let currency = session
        .currency
        .ok_or_else(|| malformed("no data.object.currency"))?
        .to_ascii_lowercase();
    let account_id = session.client_reference_id.or_else(|| {
        session
            .metadata
            .as_ref()
            .and_then(|m| m.get("account_id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });

    Ok(WebhookEvent::Paid(PaidCheckout {
        event_id: event.id,
        checkout_id,
        account_id,
        amount_cents,
        currency,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(payment_status: &str) -> Value {
        json!({
            "id": "cs_test_123",
            "object": "checkout.session",
            "amount_total": 2500,
            "currency": "usd",
            "client_reference_id": "acct_abc",
            "metadata": {"account_id": "acct_abc"},
            "payment_status": payment_status,
            "status": "complete"
        })
    }

    fn event(kind: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": "evt_1",
            "object": "event",
            "type": kind,
            "data": {"object": object}
        }))
        .unwrap()
    }

    fn paid() -> WebhookEvent {
        WebhookEvent::Paid(PaidCheckout {
            event_id: "evt_1".to_owned(),
            checkout_id: "cs_test_123".to_owned(),
            account_id: Some("acct_abc".to_owned()),
            amount_cents: 2500,
            currency: "usd".to_owned(),
        })
    }

    fn ignored(kind: &str) -> WebhookEvent {
        WebhookEvent::Ignored {
            event_id: "evt_1".to_owned(),
            kind: kind.to_owned(),
        }
    }

    #[test]
    fn completed_and_paid_is_paid() {
        assert_eq!(parse(&event(COMPLETED, session("paid"))).unwrap(), paid());
    }

    #[test]
    fn completed_but_unpaid_is_ignored() {
        let got = parse(&event(COMPLETED, session("unpaid"))).unwrap();
        assert_eq!(got, ignored(COMPLETED));
        let got = parse(&event(COMPLETED, session("no_payment_required"))).unwrap();
        assert_eq!(got, ignored(COMPLETED));
    }

    #[test]
    fn async_payment_succeeded_is_paid() {
        assert_eq!(
            parse(&event(ASYNC_SUCCEEDED, session("paid"))).unwrap(),
            paid()
        );
    }

    #[test]
    fn other_types_are_ignored_whatever_their_object() {
        for kind in [
            "checkout.session.async_payment_failed",
            "checkout.session.expired",
            "payment_intent.succeeded",
            "charge.refunded",
        ] {
            assert_eq!(
                parse(&event(kind, json!({"id": "x"}))).unwrap(),
                ignored(kind)
            );
        }
        let no_data = br#"{"id":"evt_1","type":"customer.created"}"#;
        assert_eq!(parse(no_data).unwrap(), ignored("customer.created"));
    }

    #[test]
    fn account_falls_back_to_metadata() {
        let mut object = session("paid");
        object["client_reference_id"] = Value::Null;
        let WebhookEvent::Paid(p) = parse(&event(COMPLETED, object.clone())).unwrap() else {
            panic!("not paid");
        };
        assert_eq!(p.account_id.as_deref(), Some("acct_abc"));
        object["metadata"] = json!({});
        let WebhookEvent::Paid(p) = parse(&event(COMPLETED, object)).unwrap() else {
            panic!("not paid");
        };
        assert_eq!(p.account_id, None);
    }

    #[test]
    fn currency_is_lower_cased() {
        let mut object = session("paid");
        object["currency"] = json!("EUR");
        let WebhookEvent::Paid(p) = parse(&event(COMPLETED, object)).unwrap() else {
            panic!("not paid");
        };
        assert_eq!(p.currency, "eur");
    }

    #[test]
    fn missing_fields_on_a_paid_event_are_malformed() {
        for field in ["id", "amount_total", "currency", "payment_status"] {
            let mut object = session("paid");
            object[field] = Value::Null;
            let got = parse(&event(COMPLETED, object));
            match got {
                Err(PaymentError::Malformed(msg)) => assert!(msg.contains(field), "{msg}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut object = session("paid");
        object["amount_total"] = json!(-5);
        assert!(matches!(
            parse(&event(ASYNC_SUCCEEDED, object)),
            Err(PaymentError::Malformed(_))
        ));
        let no_data = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
        assert!(matches!(parse(no_data), Err(PaymentError::Malformed(_))));
    }

    #[test]
    fn not_an_event_is_malformed() {
        for body in [
            &b"not json"[..],
            br#"{"type":"x"}"#,
            br#"{"id":"evt_1"}"#,
            b"[]",
        ] {
            assert!(matches!(parse(body), Err(PaymentError::Malformed(_))));
        }
    }
}
