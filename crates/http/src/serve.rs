//! The accept loop: HTTP/1.1 connections with hyper's own timeouts, a cap on connections in
//! total and per client address, and graceful shutdown.
//!
//! Slow clients are bounded by settings and per-connection deadlines, never by a timer loop of
//! our own:
//! - hyper's header-read timeout closes a connection that has not sent a complete request head
//!   in time; hyper starts the same clock when a kept-alive connection goes idle, so it is also
//!   the keep-alive idle timeout;
//! - tower-http's [`DeadlineBody`] fails a request body that has not fully arrived in time (the
//!   handler answers `408 request_timeout`), and the connection is closed after the answer;
//! - hyper has no write timeout, so the socket is wrapped in [`StallGuard`]: a write (or flush)
//!   the client's socket will not take for `write_timeout` fails, and hyper drops the
//!   connection. It is one tokio `Sleep` per connection, armed while a write waits and disarmed
//!   by any progress, so a client that pipelines requests and never reads its answers is cut;
//!   the backlog of pipelined requests is bounded by hyper's read buffer (`max_buf_size`),
//!   since hyper reads no further request while an answer is still being written;
//! - a new connection over any cap (total, per address, per IPv6 /48) is closed at once, before
//!   anything is read from it.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use runbase_domain::ip::canonical;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tower_http::timeout::DeadlineBody;

/// Connection-level limits of [`serve`](crate::serve).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long a client has to send a complete request head, from the moment the connection
    /// opens or goes idle after a response (so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// How long a client has to send a whole request body, from the moment its head arrived.
    pub body_timeout: Duration,
    /// How long an answer may wait on a client that does not read it (a write to the socket
    /// that makes no progress); the connection is then closed.
    pub write_timeout: Duration,
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client counts by its /64,
    /// and its /48 may hold [`IPV6_48_FACTOR`] times as many).
    pub max_connections_per_ip: usize,
    /// Peers counted only against the total: the trusted proxies, whose connections carry many
    /// clients.
    pub exempt: Vec<IpNet>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_ip: 32,
            exempt: Vec::new(),
        }
    }
}

/// The most headers, and header bytes, hyper itself accepts. They are above the limits the
/// router enforces (`routes::header_limits`), so an oversized head gets the JSON envelope there
/// rather than hyper's empty `431`; only a head past these gets hyper's own answer.
///
/// `max_buf_size` is also hyper's read buffer, which it grows up to this size while a body
/// streams in, per connection; 64 KiB leaves room for the router's 32 KiB of headers plus a
/// request line, and keeps an idle or refused connection cheap.
const HYPER_MAX_HEADERS: usize = 200;
const HYPER_MAX_BUF: usize = 64 * 1024;

/// An IPv6 /48 (a site: one customer's allocation, or one tunnel-broker account) may hold this
/// many times `max_connections_per_ip`; its /64s cannot each take the full cap.
pub const IPV6_48_FACTOR: usize = 2;

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF)
        .keep_alive(true);
    let total = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let per_ip = PerIp::new(config.max_connections_per_ip.max(1));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning (as
                    // axum's own loop does); the connection caps should keep us from getting here.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = total.clone().try_acquire_owned() else {
            tracing::debug!(client.ip = %peer.ip(), "connection refused: server connection cap reached");
            continue;
        };
        let ip = canonical(peer.ip());
        let ip_slot = if config.exempt.iter().any(|n| n.contains(&ip)) {
            None
        } else {
            match per_ip.acquire(ip) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(client.ip = %ip, "connection refused: per-address connection cap reached");
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let body_timeout = config.body_timeout;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let req = req.map(|b| Body::new(DeadlineBody::new(body_timeout, b)));
            router.clone().oneshot(req)
        });
        let stream = StallGuard::new(stream, config.write_timeout);
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop((slot, ip_slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Open connections per client address (and per IPv6 /48).
#[derive(Clone)]
struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its address (and its /48); uncounted when dropped.
struct IpSlot {
    keys: Vec<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn new(max: usize) -> Self {
        PerIp {
            max,
            open: Arc::default(),
        }
    }

    fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let caps = buckets(ip, self.max);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if caps
            .iter()
            .any(|(key, max)| open.get(key).copied().unwrap_or(0) >= *max)
        {
            return None;
        }
        for (key, _) in &caps {
            *open.entry(*key).or_insert(0) += 1;
        }
        Some(IpSlot {
            keys: caps.into_iter().map(|(k, _)| k).collect(),
            open: self.open.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            if let Some(n) = open.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    open.remove(key);
                }
            }
        }
    }
}

/// What the per-address caps count against, with their caps: an IPv4 address; or the /64 of an
/// IPv6 one (one subscriber gets a whole /64, so its addresses cost nothing to change) and its
/// /48 (a site, which has 65,536 /64s), at `IPV6_48_FACTOR` times the cap. The two IPv6 keys
/// cannot collide: a /64's key has its low 64 bits zero, a /48's has [`V6_48_MARK`] set there.
fn buckets(ip: IpAddr, max: usize) -> Vec<(IpAddr, usize)> {
    match ip {
        IpAddr::V4(_) => vec![(ip, max)],
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let net64 = bits & !((1u128 << 64) - 1);
            let net48 = (bits & !((1u128 << 80) - 1)) | V6_48_MARK;
            vec![
                (IpAddr::V6(net64.into()), max),
                (IpAddr::V6(net48.into()), max.saturating_mul(IPV6_48_FACTOR)),
            ]
        }
    }
}

/// Set in the interface-id half of a /48's key, which a /64's key always has zero.
const V6_48_MARK: u128 = 1;

/// A socket whose writes may not stall: a write or flush that the peer's socket will not take
/// fails with `TimedOut` after `timeout` without progress, and hyper drops the connection.
/// Reads pass through (hyper's header timeout and the body deadline bound them).
struct StallGuard<S> {
    io: S,
    timeout: Duration,
    stall: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> StallGuard<S> {
    fn new(io: S, timeout: Duration) -> Self {
        StallGuard {
            io,
            timeout,
            stall: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// Passes on a write's outcome: progress disarms the clock, waiting arms it (once) and
    /// fails when it runs out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        if !self.armed {
            self.stall.as_mut().reset(Instant::now() + self.timeout);
            self.armed = true;
        }
        ready!(self.stall.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read its answer in time",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_cap_counts_and_releases() {
        let p = PerIp::new(2);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = p.acquire(ip).unwrap();
        let _b = p.acquire(ip).unwrap();
        assert!(p.acquire(ip).is_none());
        assert!(p.acquire("203.0.113.8".parse().unwrap()).is_some());
        drop(a);
        assert!(p.acquire(ip).is_some());
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let p = PerIp::new(1);
        let _a = p.acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(p.acquire("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        assert!(p.acquire("2001:db8:1:3::1".parse().unwrap()).is_some());
    }

    #[test]
    fn an_ipv6_48_holds_a_few_times_the_cap_whatever_its_64s() {
        let p = PerIp::new(2);
        let mut held = Vec::new();
        // Two /64s of one /48 fill it (2 x IPV6_48_FACTOR = 4)...
        for host in [
            "2001:db8:1:1::1",
            "2001:db8:1:1::2",
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
        ] {
            held.push(p.acquire(host.parse().unwrap()).unwrap());
        }
        // ...so a third /64 of it is refused, and another /48 is not.
        assert!(p.acquire("2001:db8:1:3::1".parse().unwrap()).is_none());
        assert!(p.acquire("2001:db8:2:3::1".parse().unwrap()).is_some());
        held.pop();
        assert!(p.acquire("2001:db8:1:3::1".parse().unwrap()).is_some());
    }

    #[tokio::test]
    async fn a_write_the_peer_does_not_take_fails_after_the_timeout() {
        use tokio::io::AsyncWriteExt;
        // A pipe of 64 bytes whose other end is never read.
        let (near, _far) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(near, Duration::from_millis(50));
        guarded.write_all(&[0; 64]).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), guarded.write_all(&[0; 64]))
            .await
            .expect("a stalled write was never given up")
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
