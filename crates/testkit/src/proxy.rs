//! A fault-injecting TCP proxy on loopback.
//!
//! Each accepted connection is forwarded to the upstream server; once the
//! client has sent a random number of bytes (drawn per connection from the
//! configured range), or the server has sent one (see [`Cut`]), both
//! directions are dropped at once, as when a tethered link vanishes. The
//! other direction flows untouched until then.
//!
//! What the link loses at a cut: the bytes the proxy read past the budget
//! (its reads are up to 64 KiB) and what waits in its socket's receive
//! queue, unread; they stand for the bytes in flight on a real link (about
//! one bandwidth-delay product). The sender's kernel counts them as
//! delivered, which a real link without a middlebox would not, so they are
//! lost to the sender like its own unsent queue. [`ProxyStats`] counts both
//! (`bench/soak` reports them per cut).
//!
//! How a cut looks to both ends is [`Cut::fault`]: a clean close (FIN, the
//! default), a reset (`SO_LINGER` 0, so the kernel sends RST and no FIN), or
//! a stall: nothing more is forwarded either way, nothing is read, and
//! nothing is closed, as when a NAT entry or a radio link dies silently.
//! A stalled connection is held until both ends closed it or the stall's
//! bound passed; [`ProxyStats`] counts which end gave up on it first.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Rng;

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client bytes forwarded to the server.
    pub client_bytes: AtomicU64,
    /// Server bytes forwarded to the client.
    pub server_bytes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections the proxy cut.
    pub cuts: AtomicU64,
    /// Bytes the proxy had read past a budget when it cut (dropped).
    pub overshoot: AtomicU64,
    /// Bytes waiting, unread, in the receive queue of the socket whose
    /// budget was spent, when the proxy cut (dropped with it).
    pub unread_at_cut: AtomicU64,
    /// Cuts made as resets (RST to both ends, [`Fault::Reset`]).
    pub resets: AtomicU64,
    /// Cuts made as stalls ([`Fault::Stall`]).
    pub stalls: AtomicU64,
    /// Stalled connections the server closed (or reset) before the client did.
    pub stalls_dropped_by_server: AtomicU64,
    /// Stalled connections the client closed (or reset) before the server did.
    pub stalls_dropped_by_client: AtomicU64,
    /// Stalled connections neither end closed within the stall's bound.
    pub stalls_outlasted: AtomicU64,
}

/// How a [`FaultProxy`] cuts a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    /// Both ends get a FIN: the connection closes cleanly.
    #[default]
    Close,
    /// Both ends get an RST (`SO_LINGER` 0 and close, no FIN first): a
    /// write or read then fails with "connection reset".
    Reset,
    /// Nothing more moves either way and nothing is closed, for at most
    /// this long (then both ends get a FIN); each end must notice the
    /// silence itself.
    Stall(Duration),
}

/// Where a [`FaultProxy`] cuts each connection: after a random number of
/// bytes in a range (inclusive), drawn per connection and per direction;
/// `None` never cuts that direction. The first budget spent cuts both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// Client→server bytes (request bodies: uploads).
    pub upload: Option<(u64, u64)>,
    /// Server→client bytes (responses: downloads).
    pub download: Option<(u64, u64)>,
    /// What the cut does to the connection.
    pub fault: Fault,
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
        Self::start_with(
            upstream,
            Cut {
                upload: Some(cut_range),
                download: None,
                fault: Fault::Close,
            },
            rng,
        )
        .await
    }

    /// Starts a proxy to `upstream` that cuts each connection as `cut`
    /// says. Must be called within a tokio runtime.
    pub async fn start_with(upstream: SocketAddr, cut: Cut, rng: Rng) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, cut, rng).await
    }

    /// Like [`FaultProxy::start_with`], listening on `listen` (the address of
    /// a proxy dropped before: a server that comes back on its port).
    /// Dropping the proxy closes its listener and every connection through
    /// it, as when the server behind it is killed.
    pub async fn start_at(listen: SocketAddr, upstream: SocketAddr, cut: Cut, rng: Rng) -> Self {
        let listener = TcpListener::bind(listen)
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
                // Owned by this task: aborting it (the drop) ends every
                // connection too.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    while connections.try_join_next().is_some() {}
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    let draw = |range: Option<(u64, u64)>| {
                        range.map(|(low, high)| {
                            rng.lock()
                                .map(|mut rng| rng.between(low, high))
                                .unwrap_or(high)
                        })
                    };
                    let budgets = (draw(cut.upload), draw(cut.download));
                    connections.spawn(forward(
                        client,
                        upstream,
                        budgets,
                        cut.fault,
                        Arc::clone(&stats),
                    ));
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

/// Copies `from` to `to` until `budget` bytes (`None`: no limit) went
/// through (then `Some(bytes read past it)`: cut) or either side closes
/// (`None`).
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    budget: Option<u64>,
    counter: &AtomicU64,
) -> Option<u64> {
    let mut left = budget.unwrap_or(u64::MAX);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let allowed = usize::try_from((n as u64).min(left)).unwrap_or(n);
        if to.write_all(&buffer[..allowed]).await.is_err() {
            return None;
        }
        counter.fetch_add(allowed as u64, Ordering::Relaxed);
        left -= allowed as u64;
        if left == 0 {
            let _ = to.flush().await;
            return Some((n - allowed) as u64);
        }
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    (up_budget, down_budget): (Option<u64>, Option<u64>),
    fault: Fault,
    stats: Arc<ProxyStats>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Either side closing, or a cut, ends both directions.
    let cut = {
        let upload = pump(
            &mut client_read,
            &mut server_write,
            up_budget,
            &stats.client_bytes,
        );
        let download = pump(
            &mut server_read,
            &mut client_write,
            down_budget,
            &stats.server_bytes,
        );
        tokio::pin!(upload, download);
        tokio::select! {
            cut = &mut upload => cut.map(|overshoot| (overshoot, true)),
            cut = &mut download => cut.map(|overshoot| (overshoot, false)),
        }
    };
    let Some((overshoot, upload)) = cut else {
        // Dropping both halves of both sockets closes the connection both ways.
        return;
    };
    let source = if upload { &client_read } else { &server_read };
    stats.cuts.fetch_add(1, Ordering::Relaxed);
    stats.overshoot.fetch_add(overshoot, Ordering::Relaxed);
    let unread = rustix::io::ioctl_fionread(source.as_ref()).unwrap_or(0);
    stats.unread_at_cut.fetch_add(unread, Ordering::Relaxed);
    match fault {
        // Dropping the halves: each write half sends its FIN, then the
        // sockets close.
        Fault::Close => {}
        Fault::Reset => {
            stats.resets.fetch_add(1, Ordering::Relaxed);
            for read in [&client_read, &server_read] {
                let _ = rustix::net::sockopt::set_socket_linger(
                    AsRef::<TcpStream>::as_ref(read),
                    Some(Duration::ZERO),
                );
            }
            // No FIN first: closing with a zero linger sends the RST.
            client_write.forget();
            server_write.forget();
        }
        Fault::Stall(bound) => {
            stats.stalls.fetch_add(1, Ordering::Relaxed);
            stall(&client_read, &server_read, bound, &stats).await;
        }
    }
}

/// An end of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Holds a stalled connection, reading nothing, until both ends closed it
/// (or reset it) or `bound` passed; counts, as soon as it happens, the end
/// that gave up first.
async fn stall(
    client: &OwnedReadHalf,
    server: &OwnedReadHalf,
    bound: Duration,
    stats: &ProxyStats,
) {
    let until = Instant::now() + bound;
    let mut first = None;
    let mut closed = [false, false];
    while Instant::now() < until {
        for (index, (side, half)) in [(Side::Client, client), (Side::Server, server)]
            .into_iter()
            .enumerate()
        {
            if !closed[index] && hung_up(AsRef::<TcpStream>::as_ref(half)) {
                closed[index] = true;
                if first.is_none() {
                    first = Some(side);
                    let counter = match side {
                        Side::Server => &stats.stalls_dropped_by_server,
                        Side::Client => &stats.stalls_dropped_by_client,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if closed == [true, true] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if first.is_none() {
        stats.stalls_outlasted.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether the peer of `socket` closed or reset it, whatever data still
/// waits unread (`POLLRDHUP`).
fn hung_up(socket: impl AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&socket, PollFlags::RDHUP)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(0) => false,
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
        Err(_) => true,
    }
}
