//! One multiplexed connection to Redis, rebuilt in the background when it fails.
//!
//! A request never waits for a connection to be made: while there is none it fails at once, and
//! a command on a live connection is bounded by the command timeout. (redis-rs's own
//! `ConnectionManager` makes commands wait for its reconnection attempts, with retries, which
//! is the hang this module exists to avoid.)

use crate::script::SLIDING_WINDOW;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};
use runbase_domain::ratelimit::{RateDecision, RateLimit};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Bounds on the time Redis may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open a connection.
    pub connect: Duration,
    /// For one command's answer.
    pub command: Duration,
    /// Between two connection attempts while Redis is down.
    pub retry: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_millis(500),
            command: Duration::from_millis(250),
            retry: Duration::from_secs(1),
        }
    }
}

/// Why a decision could not be made (for the log).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not connected")]
    NotConnected,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from the script")]
    BadReply,
    #[error("the answer came after its deadline on Redis's clock")]
    Late,
}

pub struct Connection {
    current: RwLock<Option<MultiplexedConnection>>,
    /// Wakes the reconnect task when the current connection is given up.
    lost: Notify,
    timeouts: Timeouts,
    /// How far ahead of this node's wall clock Redis's clock may be, in microseconds, from the
    /// last answer: Redis's time minus when the question was sent (an upper bound, off by at
    /// most that question's round trip). `i64::MIN` until the first answer.
    clock_ahead: AtomicI64,
}

/// This node's wall clock, in microseconds since the epoch.
fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Connection {
    /// Checks the URL and spawns the task that keeps a connection open.
    pub fn start(url: &str, timeouts: Timeouts) -> Result<Arc<Self>, String> {
        let client = Client::open(url).map_err(|e| format!("redis_url: {e}"))?;
        let conn = Arc::new(Connection {
            current: RwLock::new(None),
            lost: Notify::new(),
            timeouts,
            clock_ahead: AtomicI64::new(i64::MIN),
        });
        tokio::spawn(keep_connected(Arc::downgrade(&conn), client));
        Ok(conn)
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.current.read().is_ok_and(|c| c.is_some())
    }

    fn get(&self) -> Option<MultiplexedConnection> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Gives up the current connection; the background task makes a new one.
    fn drop_connection(&self) {
        if let Ok(mut c) = self.current.write() {
            *c = None;
        }
        self.lost.notify_one();
    }

    /// The moment on Redis's clock after which a question sent at `sent` (this node's clock) is
    /// not to be counted: by then its caller has long stopped waiting. The command timeout
    /// twice over, from the latest estimate of Redis's clock, which is never behind the true
    /// one; 0 (none) before the first answer.
    fn deadline(&self, sent: i64) -> i64 {
        let ahead = self.clock_ahead.load(Ordering::Relaxed);
        if ahead == i64::MIN {
            return 0;
        }
        let margin = i64::try_from(2 * self.timeouts.command.as_micros()).unwrap_or(i64::MAX);
        sent.saturating_add(ahead).saturating_add(margin).max(1)
    }

    /// Runs the sliding-window script for `key`.
    pub async fn window(
        &self,
        key: &str,
        limit: RateLimit,
        count: bool,
    ) -> Result<RateDecision, Error> {
        let mut conn = self.get().ok_or(Error::NotConnected)?;
        let window_us = u64::try_from(limit.window.as_micros()).unwrap_or(u64::MAX);
        let nonce: u64 = rand::random();
        // One budget for the caller's wait, whether it takes one command or two.
        let give_up = tokio::time::Instant::now() + self.timeouts.command;
        let mut retried = false;
        let (allowed, used, reset_us) = loop {
            let sent = wall_micros();
            let mut call = SLIDING_WINDOW.prepare_invoke();
            call.key(key)
                .arg(limit.requests)
                .arg(window_us)
                .arg(u8::from(count))
                .arg(nonce)
                .arg(self.deadline(sent));
            let reply = tokio::time::timeout_at(
                give_up,
                call.invoke_async::<(i64, i64, i64, i64)>(&mut conn),
            )
            .await;
            let (allowed, used, reset_us, redis_now) = match reply {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    if e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout() {
                        self.drop_connection();
                    }
                    return Err(e.into());
                }
                Err(_) => {
                    // A server that stops answering (a network partition) never closes the socket.
                    self.drop_connection();
                    return Err(Error::Timeout(self.timeouts.command));
                }
            };
            self.clock_ahead
                .store(redis_now.saturating_sub(sent), Ordering::Relaxed);
            if allowed != 2 {
                break (allowed, used, reset_us);
            }
            // Past its deadline yet answered while its caller still waits: the estimate was
            // stale (a clock stepped, another Redis after a reconnect), not the command late.
            // It counted nothing, so it is asked again, once, with the estimate it corrected.
            if retried {
                return Err(Error::Late);
            }
            retried = true;
        };
        let used = u32::try_from(used).map_err(|_| Error::BadReply)?;
        let reset_us = u64::try_from(reset_us).map_err(|_| Error::BadReply)?;
        Ok(RateDecision {
            allowed: allowed == 1,
            limit: limit.requests,
            remaining: limit.requests.saturating_sub(used),
            reset_after: Duration::from_micros(reset_us),
        })
    }
}

/// How often an idle connection is checked with a PING.
const IDLE_CHECK: Duration = Duration::from_secs(5);

async fn keep_connected(conn: std::sync::Weak<Connection>, client: Client) {
    let mut was_down = false;
    loop {
        let Some(c) = conn.upgrade() else { return };
        let timeouts = c.timeouts;
        if c.get().is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeouts.connect))
                .set_response_timeout(Some(timeouts.command));
            let attempt = match tokio::time::timeout(
                timeouts.connect,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await
            {
                Ok(Ok(mut m)) => match ping(&mut m, timeouts.command).await {
                    true => Ok(m),
                    false => Err("connected, but PING got no answer".to_owned()),
                },
                // The server's reason (a wrong password, a database number it lacks, ...) is
                // what the operator needs to see.
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no connection within {:?}", timeouts.connect)),
            };
            match attempt {
                Ok(m) => {
                    if let Ok(mut cur) = c.current.write() {
                        *cur = Some(m);
                    }
                    if was_down {
                        tracing::info!("rate limiter: connected to Redis again");
                    } else {
                        tracing::info!("rate limiter: connected to Redis");
                    }
                    was_down = false;
                }
                Err(reason) => {
                    if !was_down {
                        tracing::warn!(
                            error = %reason,
                            "rate limiter: cannot connect to Redis; retrying every {:?}",
                            timeouts.retry
                        );
                    }
                    was_down = true;
                    drop(c);
                    tokio::time::sleep(timeouts.retry).await;
                    continue;
                }
            }
        }
        // Wait until a request gives the connection up, checking it every few seconds
        // meanwhile: a connection the server closed while this node was idle (a Redis restart,
        // its `timeout`, a load balancer's) is replaced before requests find it dead, instead
        // of costing them a 503. The strong reference is let go at each check, so the task
        // ends soon after the limiters are dropped.
        tokio::select! {
            () = c.lost.notified() => {}
            () = tokio::time::sleep(IDLE_CHECK) => {
                if let Some(mut m) = c.get()
                    && !ping(&mut m, timeouts.command).await
                {
                    tracing::warn!("rate limiter: the Redis connection stopped answering; reconnecting");
                    c.drop_connection();
                }
            }
        }
    }
}

async fn ping(conn: &mut MultiplexedConnection, timeout: Duration) -> bool {
    let cmd = redis::cmd("PING");
    matches!(
        tokio::time::timeout(timeout, conn.req_packed_command(&cmd)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_url() -> String {
        std::env::var("RUNBASE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// Redis's clock stepped ahead of this node's since the last answer (or the node reconnected
    /// to another Redis whose clock is ahead): the estimate is too low, and the next command
    /// finds its deadline passed although it is answered at once. That must not fail a request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_clock_estimate_does_not_fail_a_command_answered_in_time() {
        let addr = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                std::env::var("CI").is_err(),
                "Redis is not running at {addr}"
            );
            return;
        }
        let conn = Connection::start(&redis_url(), Timeouts::default()).expect("url");
        let key = format!("runbase-test:{:016x}:stale", rand::random::<u64>());
        let limit = RateLimit {
            requests: 5,
            window: Duration::from_secs(60),
        };
        let mut first = None;
        for _ in 0..200 {
            if let Ok(d) = conn.window(&key, limit, true).await {
                first = Some(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(first.expect("connected").remaining, 4);
        // As if Redis's clock had stepped 2 s ahead since that answer.
        let ahead = conn.clock_ahead.load(Ordering::Relaxed);
        conn.clock_ahead.store(ahead - 2_000_000, Ordering::Relaxed);
        let d = conn
            .window(&key, limit, true)
            .await
            .expect("a command answered in time is not dropped as late");
        assert!(d.allowed);
        assert_eq!(d.remaining, 3, "counted once");
        let d = conn.window(&key, limit, false).await.expect("peek");
        assert_eq!(d.remaining, 3);
        if let Some(mut m) = conn.get() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut m).await;
        }
    }
}
