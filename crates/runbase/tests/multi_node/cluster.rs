//! Several `runbase serve` processes on one fresh PostgreSQL database: API nodes
//! (`--role api`) and worker nodes (`--role worker`), with a model of our own whose Cog server
//! is the test's [`super::model::ModelDouble`].

use crate::common::Server;
use crate::common::redis::redis_up;
use runbase_store_postgres::testing::TestDatabase;
use serde_json::Value;
use std::collections::HashMap;

/// The model every run of these tests uses: 1¢, executed by the model double.
pub const MODEL: &str = "test/counted";

/// PostgreSQL (a fresh database) and Redis, or `None` when one is missing outside CI (the test
/// then skips; under CI it fails).
pub fn services() -> Option<TestDatabase> {
    if !redis_up() {
        return None;
    }
    TestDatabase::create()
}

/// The catalogue of one node: [`MODEL`] served at `{model_url}/{node}`, so the double knows
/// which node asked for each prediction.
fn catalog(model_url: &str, node: &str) -> String {
    format!(
        r#"
[[model]]
id = "{MODEL}"
name = "Counted"
category = "text generation"
provider = "cog"
options = {{ url = "{model_url}/{node}", concurrency = 64 }}
timeout_secs = 60
price = {{ cents = 1 }}
input_schema = {{ type = "object", required = ["prompt"], properties = {{ prompt = {{ type = "string" }} }} }}
output_schema = {{ type = "object", properties = {{ text = {{ type = "string" }} }} }}
"#
    )
}

pub struct Cluster {
    /// `api1`, `api2`, ...
    pub apis: Vec<Server>,
    /// `w1`, `w2`, ...; index `i` is node `w{i+1}`.
    pub workers: Vec<Server>,
    _catalogs: tempfile::TempDir,
    /// Dropped after the servers (fields drop in order).
    _db: TestDatabase,
}

impl Cluster {
    /// Migrates `db`, then starts `apis` API nodes and `workers` worker nodes on it at once,
    /// each with `env(node name)` on top of its role, database and catalogue.
    pub fn start(
        db: TestDatabase,
        model_url: &str,
        apis: usize,
        workers: usize,
        env: impl Fn(&str) -> Vec<(&'static str, String)> + Sync,
    ) -> Cluster {
        let migrated = std::process::Command::new(crate::common::BIN)
            .arg("migrate")
            .env("RUNBASE_DATABASE_URL", &db.url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(migrated.status.success(), "{migrated:?}");
        let catalogs = tempfile::tempdir().unwrap();
        let nodes: Vec<(String, &str)> = (1..=apis)
            .map(|i| (format!("api{i}"), "api"))
            .chain((1..=workers).map(|i| (format!("w{i}"), "worker")))
            .collect();
        let servers: Vec<Server> = std::thread::scope(|s| {
            let started: Vec<_> = nodes
                .iter()
                .map(|(node, role)| {
                    let file = catalogs.path().join(format!("{node}.toml"));
                    std::fs::write(&file, catalog(model_url, node)).unwrap();
                    let mut vars: Vec<(&str, String)> = vec![
                        ("RUNBASE_ROLE", role.to_string()),
                        ("RUNBASE_DATABASE_URL", db.url.clone()),
                        // Three clusters of four nodes run at once in this binary, beside other
                        // tests, on a server of 100 connections: 8 each keeps them all under it.
                        ("RUNBASE_DATABASE__POOL_SIZE", "8".to_owned()),
                        (
                            "RUNBASE_CATALOG",
                            format!("[{:?}]", file.display().to_string()),
                        ),
                    ];
                    vars.extend(env(node));
                    s.spawn(move || {
                        let vars: Vec<(&str, &str)> =
                            vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        Server::start_with(&vars)
                    })
                })
                .collect();
            started.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut servers = servers.into_iter();
        Cluster {
            apis: servers.by_ref().take(apis).collect(),
            workers: servers.collect(),
            _catalogs: catalogs,
            _db: db,
        }
    }

    /// The worker node called `node` (`w1`, `w2`, ...).
    pub fn worker(&mut self, node: &str) -> &mut Server {
        let i: usize = node.trim_start_matches('w').parse().unwrap();
        &mut self.workers[i - 1]
    }

    /// `runbase credits show --json` for the account, through the CLI on the shared database.
    pub fn ledger(&self, email: &str) -> Value {
        let out = self.apis[0].cli(&[
            "credits",
            "show",
            "--account",
            email,
            "--json",
            "--limit",
            "100000",
        ]);
        serde_json::from_str(&out).unwrap()
    }
}

/// The books of one account: the ledger sums to the balance, no running balance is negative,
/// every run is charged once and refunded at most once. Returns (charges, refunds) per run.
pub fn assert_books(l: &Value) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut sum = 0i64;
    let (mut charges, mut refunds) = (HashMap::new(), HashMap::new());
    for e in l["ledger"].as_array().unwrap() {
        sum += e["amountUsd"].as_i64().unwrap();
        assert!(e["balanceAfterUsd"].as_i64().unwrap() >= 0, "{e}");
        let run = e["runId"].as_str().unwrap_or_default().to_owned();
        match e["kind"].as_str().unwrap() {
            "run_charge" => *charges.entry(run).or_insert(0) += 1,
            "run_refund" => *refunds.entry(run).or_insert(0) += 1,
            _ => {}
        }
    }
    assert_eq!(
        sum,
        l["balanceUsd"].as_i64().unwrap(),
        "the ledger sums to the balance: {l}"
    );
    assert!(
        charges.values().all(|&n| n == 1),
        "one charge per run: {charges:?}"
    );
    assert!(
        refunds
            .iter()
            .all(|(run, &n)| n == 1 && charges.contains_key(run)),
        "at most one refund per charged run: {refunds:?}"
    );
    (charges, refunds)
}
