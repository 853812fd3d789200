//! Issue 13's deployment, end to end: two API processes (`--role api`) and two worker processes
//! (`--role worker`) of the real binary on one fresh PostgreSQL database and one Redis (keys
//! under a random prefix), with a model whose Cog server is a double in this test that counts
//! every prediction at the model.
//!
//! - the money checks admit exactly what the balance and the spend limit allow under 1,000
//!   concurrent creates spread over both API nodes, and the books balance;
//! - every run is executed once at the model, whichever worker claims it;
//! - a cancel through an API node stops the run a worker is executing;
//! - a worker killed with SIGKILL mid-run: the other worker finishes the run once, charged once;
//! - the runs limit (20 per 10 s) is exact across both API nodes;
//! - with Redis gone, `fail = closed` answers 503 and `fail = open` lets requests through (a
//!   refusal a node already had from Redis still holds), and counting resumes when Redis is back.
//!
//! Always on PostgreSQL (whatever `RUNBASE_TEST_DATABASE` says); skipped without PostgreSQL or
//! Redis, except under CI where it fails.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

#[path = "multi_node"]
mod support {
    pub mod cluster;
    pub mod model;
    pub mod redis_proxy;
}

use common::redis::{random_prefix, redis_addr, redis_url};
use common::{Client, Resp};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::cluster::{Cluster, MODEL, assert_books, services};
use support::model::{self, Outcome};
use support::redis_proxy::RedisProxy;

/// A client whose requests give up after 20 s: a node that hangs fails the test instead of
/// hanging it. `pooled: false` opens a connection per request.
fn client(base: &str, pooled: bool) -> Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(20));
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    Client {
        http: b.build().unwrap(),
        base: base.to_owned(),
    }
}

/// `201`, or the status and error code of a refusal (its envelope checked).
fn label(r: &Resp) -> String {
    if r.status == 201 {
        return "201".into();
    }
    let code = r.body["error"]["code"].as_str().unwrap_or("?").to_owned();
    r.assert_error(r.status, &code);
    format!("{} {code}", r.status)
}

/// Settings of every node: the shared Redis under `prefix`, bursts from one address allowed.
fn redis_env(url: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RUNBASE_RATE_LIMITS__BACKEND", "redis".into()),
        ("RUNBASE_REDIS_URL", url.to_owned()),
        ("RUNBASE_RATE_LIMITS__REDIS_KEY_PREFIX", prefix.to_owned()),
        ("RUNBASE_HTTP__MAX_CONNECTIONS", "4096".into()),
        ("RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP", "4096".into()),
    ]
}

/// Creates a run of [`MODEL`]; returns its id.
async fn create(c: &Client, key: &str, prompt: &str) -> String {
    let r = c
        .create(key, json!({"model": MODEL, "input": {"prompt": prompt}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// Every run of the key's account, once none is `pending` or `processing` (through the list
/// endpoint, which the runs limit does not count).
async fn finished_runs(c: &Client, key: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/api/v1/runs?limit=100&starting_after={a}"),
                None => "/api/v1/runs?limit=100".to_owned(),
            };
            let page = c.get(Some(key), &path).await;
            assert_eq!(page.status, 200, "{}", page.body);
            let data = page.body["data"].as_array().unwrap().clone();
            after = data.last().map(|r| r["id"].as_str().unwrap().to_owned());
            all.extend(data);
            if page.body["hasMore"] != true {
                break;
            }
        }
        let busy = all
            .iter()
            .filter(|r| r["status"] == "pending" || r["status"] == "processing")
            .count();
        if busy == 0 {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{busy} of {} runs never finished",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls a node's log until it contains `text` (up to 30 s).
async fn wait_for_log(server: &common::Server, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "never logged {text:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One run's lines of an account's ledger: (charges, refunds).
fn run_lines(ledger: &Value, run: &str) -> (usize, usize) {
    let lines = ledger["ledger"].as_array().unwrap();
    let count = |kind: &str| {
        lines
            .iter()
            .filter(|e| e["runId"] == run && e["kind"] == kind)
            .count()
    };
    (count("run_charge"), count("run_refund"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_nodes_and_two_workers_keep_money_and_executions_exact() {
    let Some(db) = services() else { return };
    let model = model::start().await;
    let (url, prefix) = (redis_url(), random_prefix());
    let mut cluster = Cluster::start(db, &model.url, 2, 2, |_| {
        let mut env = redis_env(&url, &prefix);
        env.push(("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1000000".into()));
        // A killed worker's run is taken over once its lease expires.
        env.push(("RUNBASE_WORKER__LEASE_MS", "2000".into()));
        env
    });
    let admin = &cluster.apis[0];
    admin.account("balance@example.com", 200);
    let balance_key = admin.key("balance@example.com", &[]);
    admin.account("limited@example.com", 1000);
    let limited_key = admin.key("limited@example.com", &["--spend-limit-cents", "150"]);
    let api: Vec<String> = cluster.apis.iter().map(|s| s.url.clone()).collect();

    // 1,000 creates at once, each on its own connection, alternating the keys and the API
    // nodes: 500 on an account holding 200 runs' worth, 500 on a key allowed 150 runs.
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let key = if i % 2 == 0 {
            &balance_key
        } else {
            &limited_key
        };
        let (c, key) = (client(&api[(i / 2) % 2], false), key.clone());
        let prompt = format!("burst {i}");
        tasks.push(tokio::spawn(async move {
            let r = c
                .create(&key, json!({"model": MODEL, "input": {"prompt": prompt}}))
                .await;
            (key, r)
        }));
    }
    let mut counts: HashMap<(bool, String), usize> = HashMap::new();
    let mut accepted = HashSet::new();
    for t in tasks {
        let (key, r) = t.await.unwrap();
        let label = label(&r);
        if r.status == 201 {
            accepted.insert(r.body["id"].as_str().unwrap().to_owned());
        }
        *counts.entry((key == balance_key, label)).or_default() += 1;
    }
    let count = |balance: bool, label: &str| counts.get(&(balance, label.to_owned())).copied();
    assert_eq!(count(true, "201"), Some(200), "{counts:?}");
    assert_eq!(
        count(true, "402 insufficient_balance"),
        Some(300),
        "{counts:?}"
    );
    assert_eq!(count(false, "201"), Some(150), "{counts:?}");
    assert_eq!(
        count(false, "403 api_key_spend_limit_exceeded"),
        Some(350),
        "{counts:?}"
    );
    assert_eq!(counts.len(), 4, "no other answer: {counts:?}");
    assert_eq!(accepted.len(), 350);

    // Every accepted run succeeds, executed exactly once at the model, by a worker.
    let c2 = client(&api[1], true);
    let mut runs = finished_runs(&c2, &balance_key).await;
    runs.extend(finished_runs(&c2, &limited_key).await);
    assert_eq!(runs.len(), 350);
    let seen = model.seen.all();
    let mut by_worker: HashMap<&str, usize> = HashMap::new();
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        assert_eq!(run["status"], "succeeded", "{run}");
        let attempts = &seen[id];
        assert_eq!(attempts.len(), 1, "{id} executed {attempts:?}");
        assert_eq!(
            attempts[0].outcome,
            Outcome::Succeeded,
            "{id}: {attempts:?}"
        );
        let node = attempts[0].node.as_str();
        assert!(node == "w1" || node == "w2", "{id} executed by {node}");
        assert_eq!(
            run["output"]["text"],
            format!("{} ran on {node}", run["input"]["prompt"].as_str().unwrap()),
        );
        *by_worker.entry(node).or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        accepted,
        "the model saw exactly the accepted runs"
    );
    assert_eq!(
        by_worker.len(),
        2,
        "both workers executed runs: {by_worker:?}"
    );
    // The books: all spent on one account, 150 runs on the other; one charge per run.
    let l = cluster.ledger("balance@example.com");
    assert_eq!(l["balanceUsd"], 0);
    let (charges, refunds) = assert_books(&l);
    assert_eq!((charges.len(), refunds.len()), (200, 0));
    let l = cluster.ledger("limited@example.com");
    assert_eq!(l["balanceUsd"], 850 * 10_000);
    let (charges, refunds) = assert_books(&l);
    assert_eq!((charges.len(), refunds.len()), (150, 0));
    let acct = c2.get(Some(&limited_key), "/api/v1/account").await;
    assert_eq!(acct.body["key"]["spentUsd"], 150 * 10_000, "{}", acct.body);

    let ops_key = cluster.apis[0].account("ops@example.com", 10);
    let (c1, c2) = (client(&api[0], true), client(&api[1], true));

    // A cancel through one API node stops the run a worker is executing: the model's
    // request is given up and the prediction canceled; the run is refunded once.
    let held = create(&c1, &ops_key, "hold:cancel me").await;
    let at = model
        .seen
        .wait_for(&held, "the prediction", |a| !a.is_empty())
        .await;
    let executing = at[0].node.clone();
    c1.wait_for_status(&ops_key, &held, "processing").await;
    let r = c2
        .post_raw(Some(&ops_key), &format!("/api/v1/runs/{held}/cancel"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "canceled", "{}", r.body);
    let at = model
        .seen
        .wait_for(&held, "the prediction end", |a| {
            a.iter().all(|a| a.outcome != Outcome::InFlight)
        })
        .await;
    assert_eq!(at.len(), 1, "{at:?}");
    assert!(
        matches!(at[0].outcome, Outcome::Dropped | Outcome::Canceled),
        "{at:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !model
        .seen
        .cancels()
        .contains(&(executing.clone(), held.clone()))
    {
        assert!(
            Instant::now() < deadline,
            "the model never saw the cancel: {:?}",
            model.seen.cancels()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_log(
        cluster.worker(&executing),
        "run canceled through another node",
    )
    .await;
    let run = c1.run(&ops_key, &held).await.body;
    assert_eq!(run["status"], "canceled", "{run}");
    assert_eq!(run["output"], Value::Null, "{run}");
    let l = cluster.ledger("ops@example.com");
    assert_books(&l);
    assert_eq!(run_lines(&l, &held), (1, 1));
    assert_eq!(l["balanceUsd"], 10 * 10_000);

    // SIGKILL of the worker executing a run: once its lease expires, the other worker
    // executes the run again and it succeeds, charged once.
    let survivor_run = create(&c2, &ops_key, "hold-first:survivor").await;
    let at = model
        .seen
        .wait_for(&survivor_run, "the prediction", |a| !a.is_empty())
        .await;
    let victim = at[0].node.clone();
    let other = if victim == "w1" { "w2" } else { "w1" };
    cluster.worker(&victim).kill();
    model
        .seen
        .wait_for(&survivor_run, "the dropped connection", |a| {
            a[0].outcome == Outcome::Dropped
        })
        .await;
    let done = c1.wait(&ops_key, &survivor_run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["output"]["text"],
        format!("hold-first:survivor ran on {other}")
    );
    let at = model.seen.attempts(&survivor_run);
    assert_eq!(at.len(), 2, "{at:?}");
    assert_eq!(
        (at[0].node.as_str(), at[0].outcome),
        (victim.as_str(), Outcome::Dropped)
    );
    assert_eq!(
        (at[1].node.as_str(), at[1].outcome),
        (other, Outcome::Succeeded)
    );
    // Waited for, not read once: the lease keeper logs the reclaim after its statement returns,
    // and the run it put back can be claimed, executed and read as succeeded before that line
    // is written (seen once on a loaded machine).
    wait_for_log(cluster.worker(other), "reclaimed runs whose worker stopped").await;
    let l = cluster.ledger("ops@example.com");
    assert_books(&l);
    assert_eq!(run_lines(&l, &survivor_run), (1, 0));
    assert_eq!(l["balanceUsd"], 9 * 10_000);
    // Nothing else reached the model since the burst.
    assert_eq!(model.seen.all().len(), 352);
}

/// The default runs limit, 20 requests per 10 s per key, counted in Redis: 60 creates at
/// once, alternating the API nodes, admit exactly 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runs_limit_is_exact_across_two_api_nodes() {
    let Some(db) = services() else { return };
    let model = model::start().await;
    let (url, prefix) = (redis_url(), random_prefix());
    let cluster = Cluster::start(db, &model.url, 2, 2, |_| redis_env(&url, &prefix));
    let key = cluster.apis[0].account("limits@example.com", 100);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (c, key) = (client(&cluster.apis[i % 2].url, false), key.clone());
        tasks.push(tokio::spawn(async move {
            let prompt = format!("limited {i}");
            c.create(&key, json!({"model": MODEL, "input": {"prompt": prompt}}))
                .await
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.header("ratelimit-limit"), Some("20"), "{r:?}");
        if r.status == 429 {
            assert_eq!(r.header("ratelimit-remaining"), Some("0"));
            assert!(r.header("retry-after").is_some(), "{r:?}");
        }
        *counts.entry(label(&r)).or_default() += 1;
    }
    assert_eq!(counts.get("201"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("429 RATE_LIMITED"), Some(&40), "{counts:?}");
    // Both nodes read the same count.
    for api in &cluster.apis {
        let acct = client(&api.url, true)
            .get(Some(&key), "/api/v1/account")
            .await;
        assert_eq!(
            acct.body["key"]["rateLimit"]["remaining"], 0,
            "{}",
            acct.body
        );
    }
    // The 20 runs each ran once at the model, and were charged once.
    let runs = finished_runs(&client(&cluster.apis[1].url, true), &key).await;
    assert_eq!(runs.len(), 20);
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}");
        let at = model.seen.attempts(run["id"].as_str().unwrap());
        assert_eq!(at.len(), 1, "{at:?}");
    }
    let l = cluster.ledger("limits@example.com");
    assert_eq!(l["balanceUsd"], 80 * 10_000);
    assert_eq!(assert_books(&l).0.len(), 20);
}

/// Redis goes away (a proxy in front of it is stopped): the API node with `fail = closed`
/// answers 503 `service_unavailable` at once, the one with `fail = open` lets requests
/// through, both keep answering 429 for a key Redis refused them before; when Redis is back,
/// the limit is counted and shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_fail_closed_refuses_and_fail_open_admits() {
    let Some(db) = services() else { return };
    let model = model::start().await;
    let url = redis_url();
    let mut proxy = RedisProxy::start(redis_addr(&url)).await;
    let proxied = url.replacen(redis_addr(&url), &proxy.addr.to_string(), 1);
    let prefix = random_prefix();
    let cluster = Cluster::start(db, &model.url, 2, 2, |node| {
        let mut env = redis_env(&proxied, &prefix);
        env.push(("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "4".into()));
        // A minute, so that the refusals below certainly hold through the outage.
        env.push(("RUNBASE_RATE_LIMITS__RUNS__WINDOW_SECS", "60".into()));
        let fail = if node == "api2" { "open" } else { "closed" };
        env.push(("RUNBASE_RATE_LIMITS__FAIL", fail.into()));
        env
    });
    let (closed, open) = (&cluster.apis[0], &cluster.apis[1]);
    let (cc, co) = (client(&closed.url, true), client(&open.url, true));
    let nodes = [&cc, &co];
    let key = closed.account("redis@example.com", 10);
    let before = closed.key("redis@example.com", &[]);
    let after = closed.key("redis@example.com", &[]);
    let probe = closed.key("redis@example.com", &[]);
    let under = closed.key("redis@example.com", &[]);

    // Through the proxy, both nodes count one limit of 4.
    for i in 0..8 {
        let r = nodes[i % 2].run(&before, "run_none").await;
        if i < 4 {
            r.assert_error(404, "run_not_found");
        } else {
            r.assert_error(429, "RATE_LIMITED");
        }
    }

    proxy.stop().await;
    for _ in 0..10 {
        cc.run(&key, "run_none")
            .await
            .assert_error(503, "service_unavailable");
        // `under` is under its limit, and nothing is counted now.
        co.run(&under, "run_none")
            .await
            .assert_error(404, "run_not_found");
        // Both nodes were refused `before` by Redis: the refusal is certain until its oldest
        // admission leaves the window, and each node answers it by itself, Redis or not.
        for c in nodes {
            c.run(&before, "run_none")
                .await
                .assert_error(429, "RATE_LIMITED");
        }
    }
    // A create through the closed node is refused before any money moves; through the open
    // node it is accepted and executed.
    cc.create(
        &key,
        json!({"model": MODEL, "input": {"prompt": "refused"}}),
    )
    .await
    .assert_error(503, "service_unavailable");
    let admitted = create(&co, &key, "admitted").await;
    let done = co.wait(&key, &admitted).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    for c in nodes {
        assert_eq!(c.get(Some(&key), "/api/v1/account").await.status, 200);
        assert_eq!(c.get(None, "/api/v1/models").await.status, 200);
    }
    assert_eq!(cc.balance(&key).await, json!(9));
    assert!(
        closed.log().contains("refused with 503"),
        "{}",
        closed.log()
    );
    assert!(
        open.log().contains("let through uncounted"),
        "{}",
        open.log()
    );

    // Redis is back: both nodes reconnect, and count one limit again.
    proxy.resume().await;
    for node in [closed, open] {
        wait_for_log(node, "connected to Redis again").await;
    }
    // The closed node admits again.
    cc.run(&probe, "run_none")
        .await
        .assert_error(404, "run_not_found");
    for i in 0..8 {
        let r = nodes[i % 2].run(&after, "run_none").await;
        if i < 4 {
            r.assert_error(404, "run_not_found");
        } else {
            r.assert_error(429, "RATE_LIMITED");
        }
    }
    let l = cluster.ledger("redis@example.com");
    assert_books(&l);
    assert_eq!(run_lines(&l, &admitted), (1, 0));
    assert_eq!(model.seen.all().len(), 1);
}

/// A worker cut off from the database mid-run (a partition, a dead connection) cannot renew
/// its lease: it stops the run itself before the lease runs out, so that when the other worker
/// takes the run over, it is the only one executing it. Money stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_from_the_database_stops_its_run_before_another_takes_it() {
    let Some(db) = services() else { return };
    let model = model::start().await;
    // Each worker reaches PostgreSQL through a proxy of its own, so one can be cut off.
    let (at, slash) = (db.url.rfind('@').unwrap(), db.url.rfind('/').unwrap());
    let server = db.url[at + 1..slash].to_owned();
    let proxies = [
        RedisProxy::start(&server).await,
        RedisProxy::start(&server).await,
    ];
    let through: Vec<String> = proxies
        .iter()
        .map(|p| format!("{}{}{}", &db.url[..=at], p.addr, &db.url[slash..]))
        .collect();
    let (url, prefix) = (redis_url(), random_prefix());
    let mut cluster = Cluster::start(db, &model.url, 1, 2, |node| {
        let mut env = redis_env(&url, &prefix);
        env.push(("RUNBASE_WORKER__LEASE_MS", "6000".into()));
        env.push(("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1000000".into()));
        env.push(("RUNBASE_WORKER__POLL_INTERVAL_MS", "100".into()));
        if let Some(i) = node.strip_prefix('w') {
            let i: usize = i.parse().unwrap();
            env.push(("RUNBASE_DATABASE_URL", through[i - 1].clone()));
        }
        env
    });
    let key = cluster.apis[0].account("partition@example.com", 100);
    let c = client(&cluster.apis[0].url, true);
    let run = create(&c, &key, "hold-first:partitioned").await;
    let first = model
        .seen
        .wait_for(&run, "the prediction", |a| !a.is_empty())
        .await;
    let victim = first[0].node.clone();
    let (cut, other) = if victim == "w1" { (0, "w2") } else { (1, "w1") };
    let mut proxies = proxies;
    proxies[cut].stop().await;

    // The cut-off worker stops its execution while the run is still leased to it: the other
    // worker has not started it yet.
    let stopped = model
        .seen
        .wait_for(&run, "the cut-off worker stopping", |a| {
            a[0].outcome != Outcome::InFlight
        })
        .await;
    assert_eq!(
        stopped.len(),
        1,
        "the run was taken over while still executing: {stopped:?}"
    );
    // Then the other worker takes it over, and it succeeds, charged once.
    let done = c.wait(&key, &run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["output"]["text"],
        format!("hold-first:partitioned ran on {other}")
    );
    let at = model.seen.attempts(&run);
    assert_eq!(at.len(), 2, "{at:?}");
    assert_eq!(
        (at[1].node.as_str(), at[1].outcome),
        (other, Outcome::Succeeded)
    );
    // Waited for, as the reclaim above: nothing orders this line before the other worker's
    // success.
    wait_for_log(
        cluster.worker(&victim),
        "could not renew the run's lease; stopping it here",
    )
    .await;
    let l = cluster.ledger("partition@example.com");
    assert_books(&l);
    assert_eq!(run_lines(&l, &run), (1, 0));
    drop(proxies);
}
