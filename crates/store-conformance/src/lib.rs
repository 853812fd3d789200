//! The conformance suite of Runbase's stores: every store (SQLite, PostgreSQL) gets a fresh,
//! migrated instance from [`Backend::fresh`], and the tests under `tests/` run the same
//! assertions against each (STYLE.md: what both stores must guarantee lives once). A store added
//! later joins by adding a [`Backend`] variant.

#![allow(
    clippy::unwrap_used,
    reason = "a test-support crate: a failed fixture is a failed test"
)]

use runbase_domain::account::{ApiKey, KeySettings, LedgerKind};
use runbase_domain::ids;
use runbase_domain::money::Millicents;
use runbase_domain::run::{NewRun, RunStatus};
use runbase_domain::store::Store;
use runbase_domain::time::Timestamp;
use runbase_store_postgres::PgStore;
use runbase_store_postgres::testing::TestDatabase;
use runbase_store_sqlite::{Durability, SqliteStore};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// A kind of store under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh store, and what keeps its database alive (a temporary directory, or a test database
/// on the PostgreSQL server, dropped with it).
pub struct Fresh {
    pub store: Arc<dyn Store>,
    /// For PostgreSQL: the database's URL (to open more connections to it).
    pub url: Option<String>,
    _keep: Box<dyn Send + Sync>,
}

impl Backend {
    /// A new, empty, migrated store; `None` when the backend is not available here (PostgreSQL
    /// unreachable outside CI; the reason is printed).
    pub async fn fresh(self) -> Option<Fresh> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store =
                    SqliteStore::open(&dir.path().join("t.db"), Durability::Normal).unwrap();
                Some(Fresh {
                    store: Arc::new(store),
                    url: None,
                    _keep: Box::new(dir),
                })
            }
            Backend::Postgres => {
                let db = TestDatabase::create()?;
                // A few connections each: tests run in parallel on one server.
                let store = PgStore::connect_with_pool(&db.url, 4).await.unwrap();
                store.migrate().await.unwrap();
                Some(Fresh {
                    store: Arc::new(store),
                    url: Some(db.url.clone()),
                    _keep: Box::new(db),
                })
            }
        }
    }
}

/// An account with a balance and three keys: `free`, `limited` (a spend limit) and `quota`.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub account: String,
    pub keys: Vec<ApiKey>,
    pub fresh: Fresh,
}

impl Fixture {
    pub async fn new(
        backend: Backend,
        initial_cents: i64,
        limit_cents: i64,
        quota: u64,
    ) -> Option<Fixture> {
        let fresh = backend.fresh().await?;
        let store = fresh.store.clone();
        let now = Timestamp::now();
        let account = store.create_account("p@example.com", now).await.unwrap();
        if initial_cents > 0 {
            store
                .add_credits(
                    &account.id,
                    Millicents::from_cents(initial_cents).unwrap(),
                    "seed",
                    None,
                    now,
                )
                .await
                .unwrap();
        }
        let settings = [
            KeySettings {
                name: Some("free".into()),
                ..Default::default()
            },
            KeySettings {
                name: Some("limited".into()),
                spend_limit: Millicents::from_cents(limit_cents),
                ..Default::default()
            },
            KeySettings {
                name: Some("quota".into()),
                quota: Some(quota),
                ..Default::default()
            },
        ];
        let mut keys = Vec::new();
        for s in settings {
            let secret = ids::generate_api_key(false);
            keys.push(
                store
                    .create_key(
                        &account.id,
                        &ids::new_key_id(),
                        &secret.hash,
                        &secret.prefix,
                        &s,
                        now,
                    )
                    .await
                    .unwrap(),
            );
        }
        Some(Fixture {
            store,
            account: account.id,
            keys,
            fresh,
        })
    }

    /// A run of `price` millicents on key number `key`.
    pub fn new_run(&self, key: usize, price: i64) -> NewRun {
        NewRun {
            id: ids::new_run_id(),
            account_id: self.account.clone(),
            key_id: self.keys[key].id.clone(),
            model: "runbase/echo".into(),
            input: json!({"text": "p"}),
            price: Millicents(price),
            created_at: Timestamp::now(),
            test: false,
            idempotency: None,
            webhook: None,
            key_remembered: false,
        }
    }

    /// Creates `n` queued runs of the first key at `price` each; their ids, oldest first.
    pub async fn create_runs(&self, n: usize, price: i64) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(
                self.store
                    .create_run(self.new_run(0, price))
                    .await
                    .unwrap()
                    .id,
            );
        }
        ids
    }

    /// The invariants that hold whatever happened: no balance below zero, the ledger sums to
    /// the balance, a run is refunded exactly when it failed or was canceled, each key's spend
    /// is its charges less its refunds and within its limit, and no quota is passed.
    pub async fn check_invariants(&self) {
        let account = self.store.account(&self.account).await.unwrap().unwrap();
        assert!(account.balance >= Millicents::ZERO);
        let ledger = self
            .store
            .ledger(&self.account, 1_000_000, None)
            .await
            .unwrap();
        let sum: i64 = ledger.iter().map(|e| e.amount.0).sum();
        assert_eq!(sum, account.balance.0, "the ledger sums to the balance");
        let mut refunds: HashMap<String, usize> = HashMap::new();
        for e in ledger.iter().filter(|e| e.kind == LedgerKind::RunRefund) {
            *refunds.entry(e.run_id.clone().unwrap()).or_default() += 1;
        }
        for run in self
            .store
            .list_runs(&self.account, &Default::default(), 100_000, None)
            .await
            .unwrap()
        {
            let refunded = refunds.get(&run.id).copied().unwrap_or(0);
            let should =
                run.cost.0 > 0 && matches!(run.status, RunStatus::Failed | RunStatus::Canceled);
            assert_eq!(
                refunded,
                usize::from(should),
                "refunds of {} ({:?})",
                run.id,
                run.status
            );
        }
        let mut net_by_key: HashMap<String, i64> = HashMap::new();
        for e in &ledger {
            match e.kind {
                LedgerKind::RunCharge | LedgerKind::RunRefund => {
                    *net_by_key.entry(e.key_id.clone().unwrap()).or_default() -= e.amount.0;
                }
                LedgerKind::Topup => {}
            }
        }
        for k in &self.keys {
            let k = self.store.key_by_id(&k.id).await.unwrap().unwrap();
            assert_eq!(
                k.spent.0,
                net_by_key.get(&k.id).copied().unwrap_or(0),
                "key spend = its charges less refunds"
            );
            if let Some(limit) = k.spend_limit {
                assert!(k.spent <= limit, "spend {} past limit {}", k.spent, limit);
            }
            if let Some(q) = k.quota {
                assert!(k.runs_created <= q);
            }
        }
    }
}

/// A lease ending `secs` seconds after `now`.
pub fn lease(now: Timestamp, secs: i64) -> Timestamp {
    Timestamp(now.0 + secs * 1_000_000)
}

/// Declares `mod sqlite` and `mod postgres`, each holding the given test functions with
/// `backend` bound to that store. A test body returns early (skips) when
/// [`Backend::fresh`] gives `None`.
#[macro_export]
macro_rules! for_each_store {
    ($($body:tt)*) => {
        mod sqlite {
            #[allow(unused_imports, reason = "each test file uses a different part")]
            use super::*;
            const BACKEND: $crate::Backend = $crate::Backend::Sqlite;
            $($body)*
        }
        mod postgres {
            #[allow(unused_imports, reason = "each test file uses a different part")]
            use super::*;
            const BACKEND: $crate::Backend = $crate::Backend::Postgres;
            $($body)*
        }
    };
}
