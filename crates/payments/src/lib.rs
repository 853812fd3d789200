//! Payment providers behind Runbase's credit top-ups, implementing
//! [`runbase_domain::payments::PaymentProvider`]. The one provider is Stripe Checkout: Runbase
//! opens a hosted Checkout Session for the amount the user picked, Stripe takes the payment, and
//! a signed webhook (`checkout.session.completed` or `checkout.session.async_payment_succeeded`)
//! tells Runbase to credit the account.
//!
//! The HTTP layer and the store decide what to do with a [`WebhookEvent`]; this crate only
//! talks to Stripe and checks that what claims to come from Stripe does.
//!
//! [`WebhookEvent`]: runbase_domain::payments::WebhookEvent

mod checkout;
mod config;
mod event;
mod signature;
mod stripe;

pub use config::{DEFAULT_API_BASE, ENV_SECRET_KEY, ENV_WEBHOOK_SECRET, StripeConfig};
pub use signature::sign_payload;
pub use stripe::Stripe;
