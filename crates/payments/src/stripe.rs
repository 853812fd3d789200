//! [`Stripe`]: the [`PaymentProvider`] for Stripe Checkout.

use std::time::Duration;

use async_trait::async_trait;
use runbase_domain::payments::{
    Checkout, CheckoutRequest, PaymentError, PaymentProvider, WebhookEvent,
};
use runbase_domain::secret::Secret;

use crate::checkout::{self, Product};
use crate::config::{self, StripeConfig};
use crate::{event, signature};

/// Stripe Checkout: hosted payment pages created through the API, confirmed by signed
/// webhooks. Built from [`StripeConfig`] by [`Stripe::from_config`].
#[derive(Debug)]
pub struct Stripe {
    client: reqwest::Client,
    secret_key: Secret,
    webhook_secret: Secret,
    api_base: String,
    currency: String,
    tolerance_secs: u64,
    product_name: String,
}

impl Stripe {
    /// Builds the provider from `cfg`, taking the credentials that `cfg` leaves unset from
    /// `env` (`STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`; pass `|k| std::env::var(k).ok()` in
    /// production and a closure over a fixed list in tests).
    ///
    /// `Ok(None)` when neither credential is set anywhere: payments are off. An error, meant
    /// for the operator, when only one of the two is set, `api_base` is not an http(s) URL, or
    /// `currency` is not three lower-case letters.
    pub fn from_config(
        cfg: &StripeConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Stripe>, String> {
        let Some(v) = config::validate(cfg, env)? else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // The API never redirects; following one would only send the key somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("runbase/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("Stripe: the HTTP client could not be built: {e}"))?;
        Ok(Some(Stripe {
            client,
            secret_key: v.secret_key,
            webhook_secret: v.webhook_secret,
            api_base: v.api_base,
            currency: v.currency,
            tolerance_secs: v.tolerance_secs,
            product_name: v.product_name,
        }))
    }
}

#[async_trait]
impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn signature_header(&self) -> &'static str {
        "stripe-signature"
    }

    /// Stripe's hosted checkout; with another `api_base` (a test double, a mock server) its
    /// origin too, since that is where its checkout URLs point.
    fn checkout_origins(&self) -> Vec<String> {
        let mut origins = vec!["https://checkout.stripe.com".to_owned()];
        if let Some((scheme, rest)) = self.api_base.split_once("://") {
            let host = rest.split('/').next().unwrap_or("");
            if !host.is_empty() && host != "api.stripe.com" {
                origins.push(format!("{scheme}://{host}"));
            }
        }
        origins
    }

    fn currency(&self) -> &str {
        &self.currency
    }

    async fn create_checkout(&self, req: &CheckoutRequest) -> Result<Checkout, PaymentError> {
        if req.amount_cents <= 0 {
            return Err(PaymentError::Upstream(format!(
                "refusing to create a checkout for {} cents: the amount must be positive",
                req.amount_cents
            )));
        }
        let product = Product {
            currency: &self.currency,
            name: &self.product_name,
        };
        let key = self.secret_key.expose();
        let resp = self
            .client
            .post(format!("{}/v1/checkout/sessions", self.api_base))
            .bearer_auth(key)
            .header("Idempotency-Key", checkout::idempotency_key())
            .form(&checkout::form(req, &product))
            .send()
            .await
            .map_err(|e| checkout::upstream(&format!("stripe request failed: {e}"), key))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            checkout::upstream(&format!("stripe response could not be read: {e}"), key)
        })?;
        let checkout = checkout::read_response(status, &body, key)?;
        tracing::debug!(checkout.id = %checkout.id, "stripe checkout session created");
        Ok(checkout)
    }

    fn precheck_webhook(&self, signature: Option<&str>, now_unix: i64) -> Result<(), PaymentError> {
        signature::precheck(signature, now_unix, self.tolerance_secs).map(|_| ())
    }

    fn verify_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<WebhookEvent, PaymentError> {
        signature::verify(
            self.webhook_secret.expose(),
            signature,
            body,
            now_unix,
            self.tolerance_secs,
        )?;
        event::parse(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_payload;

    fn stripe() -> Stripe {
        let cfg = StripeConfig {
            secret_key: Some(Secret::new("sk_test_key")),
            webhook_secret: Some(Secret::new("whsec_unit")),
            ..StripeConfig::default()
        };
        Stripe::from_config(&cfg, |_| None).unwrap().unwrap()
    }

    #[test]
    fn name_currency_and_redacted_debug() {
        let s = stripe();
        assert_eq!(s.name(), "stripe");
        assert_eq!(s.currency(), "usd");
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("sk_test_key") && !dbg.contains("whsec_unit"),
            "{dbg}"
        );
    }

    #[test]
    fn off_without_credentials() {
        assert!(
            Stripe::from_config(&StripeConfig::default(), |_| None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn verify_webhook_checks_then_parses() {
        let s = stripe();
        let body = br#"{"id":"evt_9","type":"checkout.session.completed","data":{"object":{
            "id":"cs_9","payment_status":"paid","amount_total":500,"currency":"usd",
            "client_reference_id":"acct_9"}}}"#;
        let header = sign_payload("whsec_unit", 1_000, body);
        let WebhookEvent::Paid(p) = s.verify_webhook(Some(&header), body, 1_010).unwrap() else {
            panic!("not paid");
        };
        assert_eq!((p.event_id.as_str(), p.amount_cents), ("evt_9", 500));
        assert!(matches!(
            s.verify_webhook(Some(&header), body, 1_000 + 301),
            Err(PaymentError::Stale { .. })
        ));
        // A signed body that is not an event is malformed, not a bad signature.
        let header = sign_payload("whsec_unit", 1_000, b"nope");
        assert!(matches!(
            s.verify_webhook(Some(&header), b"nope", 1_000),
            Err(PaymentError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn non_positive_amounts_never_reach_stripe() {
        // api_base points nowhere reachable: the check must come before any request.
        let cfg = StripeConfig {
            secret_key: Some(Secret::new("sk_test_key")),
            webhook_secret: Some(Secret::new("whsec_unit")),
            api_base: Some("http://127.0.0.1:9".to_owned()),
            ..StripeConfig::default()
        };
        let s = Stripe::from_config(&cfg, |_| None).unwrap().unwrap();
        for amount in [0, -100] {
            let req = CheckoutRequest {
                account_id: "acct_1".to_owned(),
                email: String::new(),
                amount_cents: amount,
                success_url: "https://x/ok".to_owned(),
                cancel_url: "https://x/no".to_owned(),
            };
            let Err(PaymentError::Upstream(msg)) = s.create_checkout(&req).await else {
                panic!("accepted {amount}");
            };
            assert!(msg.contains("positive"), "{msg}");
        }
    }
}
