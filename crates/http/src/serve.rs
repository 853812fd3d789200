//! The accept loop: HTTP/1.1 connections with hyper's own timeouts, a cap on connections in
//! total and per client address, and graceful shutdown.
//!
//! Slow clients are bounded by settings, never by a timer of our own:
//! - hyper's header-read timeout closes a connection that has not sent a complete request head
//!   in time; hyper starts the same clock when a kept-alive connection goes idle, so it is also
//!   the keep-alive idle timeout;
//! - tower-http's [`DeadlineBody`] fails a request body that has not fully arrived in time (the
//!   handler answers `408 request_timeout`), and the connection is closed after the answer;
//! - a new connection over either cap is closed at once, before anything is read from it.

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
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client counts by its /64).
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
            max_connections: 512,
            max_connections_per_ip: 64,
            exempt: Vec::new(),
        }
    }
}

/// The most headers, and header bytes, hyper itself accepts. They are above the limits the
/// router enforces (`routes::header_limits`), so an oversized head gets the JSON envelope there
/// rather than hyper's empty `431`; only a head past these gets hyper's own answer.
const HYPER_MAX_HEADERS: usize = 200;
const HYPER_MAX_BUF: usize = 256 * 1024;

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

/// Open connections per client address.
#[derive(Clone)]
struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its address; uncounted when dropped.
struct IpSlot {
    key: IpAddr,
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
        let key = bucket(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            key,
            open: self.open.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a per-address cap counts against: an IPv4 address, or the /64 of an IPv6 one (one
/// subscriber gets a whole /64, so its addresses cost nothing to change).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
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
}
