//! A TCP proxy in front of the shared Redis, so a test can take "Redis" away from its nodes
//! (and give it back) without touching the Redis other tests use.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct RedisProxy {
    /// Where the nodes connect.
    pub addr: SocketAddr,
    target: String,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl RedisProxy {
    /// Listens on a free port and forwards every connection to `target` (`host:port`).
    pub async fn start(target: &str) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = RedisProxy {
            addr: listener.local_addr().unwrap(),
            target: target.to_owned(),
            accept: None,
            connections: Arc::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, connections) = (self.target.clone(), self.connections.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Redis goes away: the port stops listening (connections are refused) and every open
    /// connection is closed.
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            // Resolves once the task, and with it the listener, is dropped.
            let _ = accept.await;
        }
        let mut open = std::mem::take(&mut *self.connections.lock().unwrap());
        open.shutdown().await;
    }

    /// Redis comes back on the same address.
    pub async fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot listen on {} again: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }
}
