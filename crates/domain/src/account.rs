//! Accounts, API keys and the ledger.

use crate::ip::IpAllowlist;
use crate::money::Millicents;
use crate::time::Timestamp;
use serde::Serialize;

/// An account: owner of keys, runs and a prepaid balance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub email: String,
    #[serde(rename = "balanceUsd")]
    pub balance: Millicents,
    pub created_at: Timestamp,
    /// May grant credits to any account from the dashboard. The first account of an install is
    /// one.
    #[serde(skip)]
    pub admin: bool,
}

/// What creating an account takes.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    /// Already normalized (trimmed, lower-case).
    pub email: String,
    /// An argon2id PHC string; `None` for accounts made by the CLI, which cannot log in until a
    /// password is set.
    pub password_hash: Option<String>,
    /// Make it an administrator. The first account of an empty install is one regardless.
    pub admin: bool,
    /// The welcome credit (`[accounts] signup_credit_cents`), granted in the transaction that
    /// creates the account, with its own ledger line ([`WELCOME_CREDIT_MEMO`]). Zero writes no
    /// line.
    pub signup_credit: Millicents,
}

/// The memo of the ledger line of a new account's welcome credit (a `topup` line).
pub const WELCOME_CREDIT_MEMO: &str = "welcome credit";

/// An API key as stored (never the secret itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// The first characters of the secret, for listings.
    pub prefix: String,
    pub hash: crate::ids::KeyHash,
    pub disabled: bool,
    pub test: bool,
    pub expires_at: Option<Timestamp>,
    pub allow_ips: IpAllowlist,
    /// Lifetime cap on what runs created with this key may cost; `None` is unlimited.
    pub spend_limit: Option<Millicents>,
    /// What runs created with this key have cost, net of refunds.
    pub spent: Millicents,
    /// Cap on the number of runs this key may create; `None` is unlimited.
    pub quota: Option<u64>,
    pub runs_created: u64,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
}

impl ApiKey {
    /// Whether the key may authenticate at `now`: not disabled, deleted or expired.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        !self.disabled && self.deleted_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    pub fn status(&self, now: Timestamp) -> &'static str {
        if self.deleted_at.is_some() {
            "deleted"
        } else if self.disabled {
            "disabled"
        } else if self.expires_at.is_some_and(|e| now >= e) {
            "expired"
        } else {
            "active"
        }
    }

    pub fn quota_exhausted(&self) -> bool {
        self.quota.is_some_and(|q| self.runs_created >= q)
    }

    /// Whether the key may not pay `price`: its spend has already reached the limit (then even a
    /// free run is refused, as the spec says), or `price` would take it past the limit.
    pub fn would_pass_spend_limit(&self, price: Millicents) -> bool {
        match self.spend_limit {
            None => false,
            Some(limit) => {
                self.spent >= limit
                    || self
                        .spent
                        .checked_add(price)
                        .is_none_or(|total| total > limit)
            }
        }
    }
}

/// What an operator or the dashboard may set on a new key.
#[derive(Debug, Clone, Default)]
pub struct KeySettings {
    pub name: Option<String>,
    pub spend_limit: Option<Millicents>,
    pub allow_ips: IpAllowlist,
    pub expires_at: Option<Timestamp>,
    pub quota: Option<u64>,
    pub test: bool,
}

/// A change to an existing key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    pub name: Option<String>,
    /// `Some(None)` removes the limit.
    pub spend_limit: Option<Option<Millicents>>,
    pub allow_ips: Option<IpAllowlist>,
    pub expires_at: Option<Option<Timestamp>>,
    pub quota: Option<Option<u64>>,
    pub disabled: Option<bool>,
}

/// Why the balance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// Credits added (top-up or grant).
    Topup,
    /// A run's price held at creation.
    RunCharge,
    /// A failed run's price given back.
    RunRefund,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Topup => "topup",
            LedgerKind::RunCharge => "run_charge",
            LedgerKind::RunRefund => "run_refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "topup" => LedgerKind::Topup,
            "run_charge" => LedgerKind::RunCharge,
            "run_refund" => LedgerKind::RunRefund,
            _ => return None,
        })
    }
}

/// One append-only row of an account's ledger. The balance is the sum of its entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub id: i64,
    #[serde(skip)]
    pub account_id: String,
    pub kind: LedgerKind,
    /// Signed: positive adds to the balance.
    #[serde(rename = "amountUsd")]
    pub amount: Millicents,
    #[serde(rename = "balanceAfterUsd")]
    pub balance_after: Millicents,
    pub run_id: Option<String>,
    pub key_id: Option<String>,
    pub memo: String,
    /// For credits an administrator granted: the administrator's email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granted_by: Option<String>,
    pub created_at: Timestamp,
}
