//! A fault-injecting TCP proxy on loopback.
//!
//! Each accepted connection is forwarded to the upstream server; once the
//! client has sent a random number of bytes (drawn per connection from the
//! configured range), both directions are dropped at once, as when a
//! tethered link vanishes. Responses flow untouched until then.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Rng;

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client bytes forwarded to the server.
    pub client_bytes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections the proxy cut.
    pub cuts: AtomicU64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` that cuts each connection after a random
    /// number of client bytes in `cut_range` (inclusive). Must be called
    /// within a tokio runtime.
    pub async fn start(upstream: SocketAddr, cut_range: (u64, u64), rng: Rng) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the proxy");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let stats = Arc::new(ProxyStats::default());
        let rng = Arc::new(Mutex::new(rng));
        let task = tokio::spawn({
            let stats = Arc::clone(&stats);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    let budget = rng
                        .lock()
                        .map(|mut rng| rng.between(cut_range.0, cut_range.1))
                        .unwrap_or(cut_range.1);
                    tokio::spawn(forward(client, upstream, budget, Arc::clone(&stats)));
                }
            }
        });
        FaultProxy { addr, stats, task }
    }

    /// The proxy's address; point clients here.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, budget: u64, stats: Arc<ProxyStats>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upload = async {
        let mut left = budget;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let allowed = (n as u64).min(left) as usize;
            if server_write.write_all(&buffer[..allowed]).await.is_err() {
                return false;
            }
            stats
                .client_bytes
                .fetch_add(allowed as u64, Ordering::Relaxed);
            left -= allowed as u64;
            if left == 0 {
                return true;
            }
        }
    };
    let download = tokio::io::copy(&mut server_read, &mut client_write);
    let cut = tokio::select! {
        cut = upload => cut,
        _ = download => false,
    };
    if cut {
        stats.cuts.fetch_add(1, Ordering::Relaxed);
    }
    // Dropping both halves of both sockets closes the connection both ways.
}
