//! A TCP proxy between the workers and the orchestrator that the harness can
//! cut: every open connection is dropped at once and new ones are refused
//! (accepted and closed straight away) for a while — what a worker sees when
//! the network between it and the orchestrator fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// How long to wait for the orchestrator when opening an upstream connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    upstream: SocketAddr,
    /// New connections are closed at once until then.
    refuse_until: Mutex<Option<Instant>>,
    /// Bumped by each cut; every connection task watches it.
    cut_generation: watch::Sender<u64>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (cut_generation, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            upstream,
            refuse_until: Mutex::new(None),
            cut_generation,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones for `outage`.
    pub async fn cut(&self, outage: Duration) {
        *self.shared.refuse_until.lock().await = Some(Instant::now() + outage);
        self.shared.cut_generation.send_modify(|g| *g += 1);
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because a cut was in force.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Connection tasks end on the last cut generation.
        self.shared.cut_generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of descriptors or similar: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let refusing = {
            let mut until = shared.refuse_until.lock().await;
            match *until {
                Some(t) if Instant::now() < t => true,
                Some(_) => {
                    *until = None;
                    false
                }
                None => false,
            }
        };
        if refusing {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let cut_rx = shared.cut_generation.subscribe();
        tokio::spawn(forward(client, shared.upstream, cut_rx));
    }
}

/// Copies both ways until either side closes or a cut happens.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut cut_rx: watch::Receiver<u64>) {
    let _ = client.set_nodelay(true);
    let connect =
        tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await;
    let mut server = match connect {
        Ok(Ok(s)) => s,
        // The orchestrator is down: the client sees its connection close.
        _ => return,
    };
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // Both sockets close when dropped here; the worker sees its
        // connection end and must reconnect.
        _ = cut_rx.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that echoes whatever it receives.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(got)
    }

    /// True when the peer closed or reset the connection (read gives EOF or an error).
    async fn is_closed(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn forwards_bytes_both_ways() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_roundtrip(&mut s, b"hello").await.unwrap(), b"hello");
        assert_eq!(echo_roundtrip(&mut s, b"again").await.unwrap(), b"again");
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn cut_drops_open_connections_and_refuses_new_ones_until_the_outage_ends() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_roundtrip(&mut open, b"x").await.unwrap(), b"x");

        proxy.cut(Duration::from_millis(600)).await;
        assert!(
            is_closed(&mut open).await,
            "an open connection survived the cut"
        );

        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            is_closed(&mut during).await,
            "a connection made during the outage was served"
        );
        assert_eq!(proxy.refused(), 1);

        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_roundtrip(&mut after, b"back").await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn a_dead_upstream_closes_the_client_connection() {
        // Bind then drop: nothing listens there any more.
        let dead = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = Proxy::start(dead).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(is_closed(&mut s).await);
    }
}
