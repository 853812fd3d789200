//! The Redis limiter against a real Redis (`RUNBASE_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379; `.ci/run` starts one). Without Redis the tests are skipped, except
//! under CI where they fail. Each test uses its own random key prefix; nothing is flushed.

use runbase_domain::ratelimit::{RateLimit, RateLimiter};
use runbase_ratelimit_redis::{FailMode, RedisLimits, Timeouts};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn redis_url() -> String {
    std::env::var("RUNBASE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The `host:port` of [`redis_url`], for raw TCP (a probe, a relay).
fn redis_addr() -> String {
    redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

/// Whether Redis answers; panics under CI when it does not.
async fn redis_up() -> bool {
    let (url, addr) = (redis_url(), redis_addr());
    let up = match tokio::net::TcpStream::connect(&addr).await {
        Ok(mut s) => {
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").await.is_ok()
                && s.read_exact(&mut buf).await.is_ok()
                && &buf == b"+PONG\r\n"
        }
        Err(_) => false,
    };
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "Redis is not reachable at {url} (.ci/run starts it)"
        );
        eprintln!("skipped: no Redis at {url}");
    }
    up
}

fn prefix() -> String {
    format!("runbase-test:{:016x}:", rand::random::<u64>())
}

fn per(requests: u32, window: Duration) -> RateLimit {
    RateLimit { requests, window }
}

/// Waits until the limiter has connected (it connects in the background).
async fn connected(limits: &RedisLimits) {
    let probe = limits.limiter("probe", per(1, Duration::from_secs(1)));
    for _ in 0..200 {
        if probe.peek("x").await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the limiter never connected to Redis");
}

fn limits(url: &str, prefix: &str, fail: FailMode) -> RedisLimits {
    RedisLimits::connect(url, prefix, fail, Timeouts::default()).expect("valid url")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_admit_exactly_the_limit_under_concurrency() {
    if !redis_up().await {
        return;
    }
    let prefix = prefix();
    // Two instances, two connections: two nodes of one deployment. An hour's window, so that no
    // admission can leave it while the test runs, whatever the machine's load.
    let nodes = [
        limits(&redis_url(), &prefix, FailMode::Closed),
        limits(&redis_url(), &prefix, FailMode::Closed),
    ];
    for n in &nodes {
        connected(n).await;
    }
    let limit = per(20, Duration::from_secs(3600));
    let limiters: Vec<_> = nodes
        .iter()
        .map(|n| std::sync::Arc::new(n.limiter("runs", limit)))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let l = limiters[i % 2].clone();
        tasks.push(tokio::spawn(async move { l.check("key-1").await }));
    }
    let mut allowed = 0;
    let mut remaining = Vec::new();
    for t in tasks {
        let d = t.await.expect("task").expect("Redis answers");
        if d.allowed {
            allowed += 1;
            remaining.push(d.remaining);
        } else {
            assert_eq!(d.remaining, 0);
            assert!(d.reset_after > Duration::ZERO && d.reset_after <= limit.window);
        }
    }
    assert_eq!(allowed, 20);
    // Each admission saw its own count: remaining 19, 18, ..., 0 once each.
    remaining.sort_unstable();
    assert_eq!(remaining, (0..20).collect::<Vec<u32>>());
    // Another key, and the same key in another scope, are counted apart.
    assert!(limiters[0].check("key-2").await.expect("answer").allowed);
    let auth = nodes[1].limiter("auth", limit);
    assert!(auth.check("key-1").await.expect("answer").allowed);
    // A peek counts nothing.
    let p = limiters[1].peek("key-2").await.expect("answer");
    assert_eq!((p.allowed, p.remaining), (true, 19));
}

#[tokio::test]
async fn a_slot_frees_when_the_oldest_request_leaves_the_window() {
    if !redis_up().await {
        return;
    }
    let node = limits(&redis_url(), &prefix(), FailMode::Closed);
    connected(&node).await;
    let window = Duration::from_millis(1000);
    let l = node.limiter("runs", per(2, window));
    assert!(l.check("k").await.expect("answer").allowed);
    // Time has to pass in this test: the window is what is under test.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(l.check("k").await.expect("answer").allowed);
    let refused = l.check("k").await.expect("answer");
    assert!(!refused.allowed);
    assert!(refused.reset_after <= window);
    tokio::time::sleep(refused.reset_after + Duration::from_millis(20)).await;
    let d = l.check("k").await.expect("answer");
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.remaining, 0, "the second request is still in the window");
}

/// Sends one inline command to Redis and returns its first reply line.
async fn redis_command(line: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(redis_addr())
        .await
        .expect("redis");
    s.write_all(format!("{line}\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
}

#[tokio::test]
async fn a_node_answers_a_certain_refusal_itself_until_the_window_frees() {
    if !redis_up().await {
        return;
    }
    let prefix = prefix();
    let (a, b) = (
        limits(&redis_url(), &prefix, FailMode::Closed),
        limits(&redis_url(), &prefix, FailMode::Closed),
    );
    connected(&a).await;
    connected(&b).await;
    let window = Duration::from_millis(1500);
    let (la, lb) = (
        a.limiter("runs", per(2, window)),
        b.limiter("runs", per(2, window)),
    );
    assert!(la.check("k").await.expect("answer").allowed);
    assert!(lb.check("k").await.expect("answer").allowed);
    let first = la.check("k").await.expect("answer");
    assert!(!first.allowed);
    // Redis is no longer asked by node A: with the key deleted behind its back (the one way to
    // shorten a window), A still refuses, for no longer than Redis said, while B, which has not
    // been refused yet, asks Redis and is admitted.
    assert_eq!(redis_command(&format!("DEL {prefix}runs:k")).await, ":1");
    let cached = la.check("k").await.expect("answer");
    assert!(!cached.allowed);
    assert_eq!(cached.remaining, 0);
    assert!(
        cached.reset_after <= first.reset_after,
        "{cached:?} after {first:?}"
    );
    assert!(la.peek("k").await.expect("answer").allowed.eq(&false));
    assert!(lb.check("k").await.expect("answer").allowed);
    // Once the moment passes, A asks Redis again.
    tokio::time::sleep(cached.reset_after + Duration::from_millis(20)).await;
    assert!(la.check("k").await.expect("answer").allowed);
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn unreachable_redis_fails_closed_or_open_without_waiting() {
    let url = format!("redis://127.0.0.1:{}", closed_port().await);
    let limit = per(20, Duration::from_secs(10));
    let closed = limits(&url, &prefix(), FailMode::Closed).limiter("runs", limit);
    let open = limits(&url, &prefix(), FailMode::Open).limiter("runs", limit);
    for _ in 0..50 {
        // The bound is a hang detector, not a performance assertion.
        let c = tokio::time::timeout(Duration::from_secs(5), closed.check("k"))
            .await
            .expect("answers");
        assert!(c.is_err());
        let o = tokio::time::timeout(Duration::from_secs(5), open.check("k"))
            .await
            .expect("answers")
            .expect("fail open lets the request through");
        assert!(o.allowed);
        assert_eq!(o.remaining, 20);
    }
}

/// A TCP relay to Redis that can be cut and restored, like a network partition.
struct Relay {
    port: u16,
    stop: tokio::sync::watch::Sender<bool>,
    freeze: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(port: u16, target: String) -> Relay {
        // Restarted on its old port, the relay may find the previous listener not yet closed
        // (its task ends after the stop is seen): try again for a while.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 100 && e.kind() == std::io::ErrorKind::AddrInUse => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind relay: {e}"),
            }
        };
        let port = listener.local_addr().expect("addr").port();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (freeze, freeze_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let mut rx1 = rx.clone();
                let (mut inbound, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                    _ = rx1.wait_for(|s| *s) => return,
                };
                let target = target.clone();
                let mut rx2 = rx.clone();
                let mut frozen = freeze_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let mut stopped = rx2.clone();
                    let frozen_or_stopped = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => false,
                        _ = rx2.wait_for(|s| *s) => false,
                        _ = frozen.wait_for(|f| *f) => true,
                    };
                    if frozen_or_stopped {
                        // Frozen: the sockets stay open and nothing more passes, like a
                        // network partition.
                        let _ = stopped.wait_for(|s| *s).await;
                    }
                });
            }
        });
        Relay { port, stop, freeze }
    }

    /// Stops passing bytes, keeping every connection open.
    fn freeze(&self) {
        let _ = self.freeze.send(true);
    }

    fn cut(self) -> u16 {
        let _ = self.stop.send(true);
        self.port
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_in_the_background_after_an_outage() {
    if !redis_up().await {
        return;
    }
    let target = redis_addr();
    let relay = Relay::start(0, target.clone()).await;
    let url = format!("redis://127.0.0.1:{}", relay.port);
    let node = limits(&url, &prefix(), FailMode::Closed);
    connected(&node).await;
    let l = node.limiter("runs", per(100, Duration::from_secs(3600)));
    assert!(l.check("k").await.expect("answer").allowed);

    let port = relay.cut();
    // The cut is noticed by the first request that uses the dead connection. It takes effect
    // when the relay's tasks see it: requests answered before then were counted.
    let mut refused = false;
    let mut counted = 0;
    for _ in 0..100 {
        if l.check("k").await.is_err() {
            refused = true;
            break;
        }
        counted += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "requests kept being counted with Redis cut off");

    let _relay = Relay::start(port, target).await;
    let mut back = None;
    for _ in 0..400 {
        if let Ok(d) = l.check("k").await {
            back = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let d = back.expect("the limiter reconnected");
    // The count survived the outage: it lives in Redis. The request that found the connection
    // cut may have reached Redis before the relay dropped its answer (counted, answered 503).
    let before = 98 - counted;
    assert!(
        d.remaining == before || d.remaining + 1 == before,
        "remaining {} after {counted} counted during the cut",
        d.remaining
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_is_given_up_after_the_command_timeout() {
    if !redis_up().await {
        return;
    }
    let target = redis_addr();
    let relay = Relay::start(0, target).await;
    let url = format!("redis://127.0.0.1:{}", relay.port);
    let node = limits(&url, &prefix(), FailMode::Closed);
    connected(&node).await;
    let l = node.limiter("runs", per(100, Duration::from_secs(3600)));
    assert!(l.check("k").await.expect("answer").allowed);
    relay.freeze();
    // The socket stays open and silent: every check still answers (a refusal), none hangs.
    // The bound is a hang detector, not a performance assertion.
    for _ in 0..20 {
        let r = tokio::time::timeout(Duration::from_secs(5), l.check("k"))
            .await
            .expect("answers");
        assert!(r.is_err());
    }
    drop(relay);
}

/// A TCP relay to Redis that can hold what clients send and deliver it later, like a Redis
/// that stalls (stopped, swapping) while its socket keeps taking commands: a held command
/// reaches Redis even if its client has hung up meanwhile.
struct HoldingRelay {
    port: u16,
    held: tokio::sync::watch::Sender<bool>,
}

impl HoldingRelay {
    async fn start(target: String) -> HoldingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let (held, held_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(out) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_redis, mut to_redis) = out.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_redis, &mut to_client).await;
                });
                let mut held = held_rx.clone();
                tokio::spawn(async move {
                    let (mut buf, mut pending) = (vec![0u8; 4096], Vec::new());
                    let mut open = true;
                    loop {
                        tokio::select! {
                            r = from_client.read(&mut buf), if open => match r {
                                Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                                _ => open = false,
                            },
                            c = held.changed() => if c.is_err() { return },
                        }
                        if !*held.borrow() && !pending.is_empty() {
                            if to_redis.write_all(&pending).await.is_err() {
                                return;
                            }
                            pending.clear();
                        }
                        if !open && pending.is_empty() {
                            let _ = to_redis.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        HoldingRelay { port, held }
    }

    fn hold(&self, on: bool) {
        let _ = self.held.send(on);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_that_reaches_redis_after_its_caller_gave_up_is_not_counted() {
    if !redis_up().await {
        return;
    }
    let target = redis_addr();
    let relay = HoldingRelay::start(target).await;
    let prefix = prefix();
    let node = limits(
        &format!("redis://127.0.0.1:{}", relay.port),
        &prefix,
        FailMode::Closed,
    );
    connected(&node).await;
    let l = std::sync::Arc::new(node.limiter("runs", per(3, Duration::from_secs(3600))));
    assert!(l.check("k").await.expect("answer").allowed);

    // Redis stalls: five requests are sent, held, and given up after the command timeout
    // (answered 503 by the caller).
    relay.hold(true);
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.check("k").await })
        })
        .collect();
    for w in waiting {
        assert!(w.await.expect("task").is_err(), "answered while held");
    }
    // Well past their deadline, the held commands reach Redis; they must count nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    relay.hold(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        redis_command(&format!("ZCARD {prefix}runs:k")).await,
        ":1",
        "the requests given up were counted"
    );
    // The node reconnects and counts on from where it was.
    let mut next = None;
    for _ in 0..200 {
        if let Ok(d) = l.check("k").await {
            next = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let d = next.expect("the limiter reconnected");
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
}
