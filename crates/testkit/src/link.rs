//! A weak link on loopback: a TCP proxy with a rate per direction, a one-way
//! delay and a schedule of outages.
//!
//! Each direction of each connection is paced by its own token bucket at
//! the configured rate (the bottleneck of the link) and every piece is
//! delivered one one-way delay after the proxy read it. The proxy's sockets
//! keep small receive buffers ([`QUEUE`]), so the sender's kernel does not
//! park megabytes in them: they stand for the queue at the bottleneck.
//!
//! The link follows a [`Schedule`] of up and down periods. At the start of
//! each outage, as [`Outage`] says, either every connection is reset (both
//! sides get an RST, and new connections are refused until the link is
//! back: the listener is closed and bound again on the same port), or the
//! link goes silent: the connections open at that moment never forward
//! another byte and are never closed (as after a change of address), and
//! connections opened during the outage are accepted and held until the
//! link is back (as a retransmitted SYN that gets through once it is).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Rng;

/// The receive buffer of the proxy's sockets (the kernel doubles it): the
/// queue at the link's bottleneck.
const QUEUE: u32 = 64 * 1024;
/// The largest piece read at once (smaller at low rates: 10 ms of the rate).
const MAX_PIECE: usize = 64 * 1024;

/// What happens to connections when the link goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Every connection is reset; new ones are refused until the link is up.
    Reset,
    /// The link goes silent: open connections never move again and are never
    /// closed; new ones are accepted and held until the link is up.
    BlackHole,
}

/// The up and down periods of a link, from its start. It starts up.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Alternating periods drawn from ranges (inclusive, in milliseconds).
    Seeded {
        seed: u64,
        up: (u64, u64),
        down: (u64, u64),
    },
    /// These periods, then up for good.
    Fixed(Vec<(Duration, Duration)>),
}

impl Schedule {
    /// Up for a random time in `up`, then down for a random time in `down`,
    /// again and again; the same `seed` gives the same periods.
    pub fn seeded(seed: u64, up: (Duration, Duration), down: (Duration, Duration)) -> Self {
        let millis = |(low, high): (Duration, Duration)| {
            let low = u64::try_from(low.as_millis()).unwrap_or(u64::MAX).max(1);
            let high = u64::try_from(high.as_millis()).unwrap_or(u64::MAX);
            (low, high.max(low))
        };
        Schedule {
            kind: Kind::Seeded {
                seed,
                up: millis(up),
                down: millis(down),
            },
        }
    }

    /// These `(up, down)` periods in order, then up for good.
    pub fn fixed(periods: Vec<(Duration, Duration)>) -> Self {
        Schedule {
            kind: Kind::Fixed(periods),
        }
    }

    /// A link that never goes down.
    pub fn always_up() -> Self {
        Self::fixed(Vec::new())
    }

    /// The `(up, down)` periods in order (endless for a seeded schedule).
    pub fn periods(&self) -> Box<dyn Iterator<Item = (Duration, Duration)> + Send> {
        match &self.kind {
            Kind::Seeded { seed, up, down } => {
                let mut rng = Rng::new(*seed);
                let (up, down) = (*up, *down);
                Box::new(std::iter::from_fn(move || {
                    let u = rng.between(up.0, up.1);
                    let d = rng.between(down.0, down.1);
                    Some((Duration::from_millis(u), Duration::from_millis(d)))
                }))
            }
            Kind::Fixed(periods) => Box::new(periods.clone().into_iter()),
        }
    }

    /// How long the link is up between `from` and `to` after its start.
    pub fn uptime(&self, from: Duration, to: Duration) -> Duration {
        let mut at = Duration::ZERO;
        let mut total = Duration::ZERO;
        let overlap = |a: Duration, b: Duration| b.min(to).saturating_sub(a.max(from));
        for (up, down) in self.periods() {
            if at >= to {
                return total;
            }
            total += overlap(at, at + up);
            at += up + down;
        }
        // Up for good after the last period.
        total + to.saturating_sub(at.max(from))
    }
}

/// The settings of a [`WeakLink`].
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Client→server rate in bytes per second (`None`: unlimited).
    pub uplink: Option<u64>,
    /// Server→client rate in bytes per second (`None`: unlimited).
    pub downlink: Option<u64>,
    /// The one-way delay, each direction.
    pub delay: Duration,
    /// When the link is down.
    pub schedule: Schedule,
    /// What an outage does to connections.
    pub outage: Outage,
}

impl Default for LinkConfig {
    /// Unlimited, no delay, always up, resetting.
    fn default() -> Self {
        LinkConfig {
            uplink: None,
            downlink: None,
            delay: Duration::ZERO,
            schedule: Schedule::always_up(),
            outage: Outage::Reset,
        }
    }
}

/// What a [`WeakLink`] did so far.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Client bytes delivered to the server.
    pub client_bytes: AtomicU64,
    /// Server bytes delivered to the client.
    pub server_bytes: AtomicU64,
    /// Connections forwarded to the server.
    pub connections: AtomicU64,
    /// Connections reset at an outage.
    pub resets: AtomicU64,
    /// Connections that went silent at an outage.
    pub silenced: AtomicU64,
    /// Connections refused (arrived while a resetting link was down).
    pub refused: AtomicU64,
    /// When the link changed state (`true`: came up), since its start.
    transitions: Mutex<Vec<(Duration, bool)>>,
}

impl LinkStats {
    /// When the link changed state (`true`: it came up), as offsets from
    /// the link's start, in order.
    pub fn transitions(&self) -> Vec<(Duration, bool)> {
        self.transitions
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }
}

/// The link's state: up or down, and the number of outages so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    up: bool,
    outages: u64,
}

/// A running weak link to an upstream server; stops when dropped (every
/// connection it holds is closed).
#[derive(Debug)]
pub struct WeakLink {
    addr: SocketAddr,
    started: Instant,
    stats: Arc<LinkStats>,
    tasks: Vec<JoinHandle<()>>,
    /// Dropped with the link: held connections end.
    _alive: watch::Sender<()>,
}

impl WeakLink {
    /// Starts a link to `upstream` on `127.0.0.1:0`. Must be called within a
    /// tokio runtime. Its clock (the schedule's time 0) starts now.
    pub async fn start(upstream: SocketAddr, config: LinkConfig) -> Self {
        let listener = listen("127.0.0.1:0".parse().expect("an address"))
            .expect("cannot bind the link's listener");
        let addr = listener.local_addr().expect("a bound listener");
        let started = Instant::now();
        let stats = Arc::new(LinkStats::default());
        let (phase_tx, phase) = watch::channel(Phase {
            up: true,
            outages: 0,
        });
        let (alive, _) = watch::channel(());
        let config = Arc::new(config);
        let clock = tokio::spawn(run_schedule(
            config.schedule.clone(),
            started,
            phase_tx,
            Arc::clone(&stats),
        ));
        let accept = tokio::spawn(accept_loop(
            listener,
            addr,
            upstream,
            Arc::clone(&config),
            phase,
            alive.subscribe(),
            Arc::clone(&stats),
        ));
        WeakLink {
            addr,
            started,
            stats,
            tasks: vec![clock, accept],
            _alive: alive,
        }
    }

    /// The link's address; point clients here.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When the link started (time 0 of its schedule).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Counters and the log of state changes.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The same, shared: for a task that watches the link while it runs.
    pub fn stats_handle(&self) -> Arc<LinkStats> {
        Arc::clone(&self.stats)
    }
}

impl Drop for WeakLink {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A listener on `addr` (reusable at once) whose accepted sockets have the
/// small receive buffer of the link.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_recv_buffer_size(QUEUE)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Drives the link's state through the schedule.
async fn run_schedule(
    schedule: Schedule,
    started: Instant,
    phase: watch::Sender<Phase>,
    stats: Arc<LinkStats>,
) {
    let log = |up: bool| {
        if let Ok(mut t) = stats.transitions.lock() {
            t.push((started.elapsed(), up));
        }
    };
    let mut at = Duration::ZERO;
    for (outages, (up, down)) in (1..).zip(schedule.periods()) {
        at += up;
        tokio::time::sleep_until(started + at).await;
        phase.send_replace(Phase { up: false, outages });
        log(false);
        at += down;
        tokio::time::sleep_until(started + at).await;
        phase.send_replace(Phase { up: true, outages });
        log(true);
    }
    // Up for good: keep the sender (and the state) alive.
    std::future::pending::<()>().await;
}

/// Waits until the link is up; returns its outage count then.
async fn until_up(phase: &mut watch::Receiver<Phase>) -> Option<u64> {
    phase.wait_for(|p| p.up).await.ok().map(|p| p.outages)
}

/// Waits until the link has gone down after outage number `outages`.
async fn until_outage(mut phase: watch::Receiver<Phase>, outages: u64) {
    // A closed channel means the link stops: the connection ends anyway.
    let _ = phase.wait_for(|p| p.outages != outages).await;
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    config: Arc<LinkConfig>,
    mut phase: watch::Receiver<Phase>,
    alive: watch::Receiver<()>,
    stats: Arc<LinkStats>,
) {
    loop {
        let now = *phase.borrow_and_update();
        if !now.up && config.outage == Outage::Reset {
            // Refuse: no listener while the link is down.
            drop(listener);
            if until_up(&mut phase).await.is_none() {
                return;
            }
            listener = loop {
                match listen(addr) {
                    Ok(listener) => break listener,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if !phase.borrow().up && config.outage == Outage::Reset {
                    // Came in as the link went down.
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_zero_linger();
                    continue;
                }
                tokio::spawn(connection(
                    client,
                    upstream,
                    Arc::clone(&config),
                    phase.clone(),
                    alive.clone(),
                    Arc::clone(&stats),
                ));
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// One connection through the link, from (a held) accept to its end.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    config: Arc<LinkConfig>,
    mut phase: watch::Receiver<Phase>,
    mut alive: watch::Receiver<()>,
    stats: Arc<LinkStats>,
) {
    // A connection opened during a silent outage is held until the link is up.
    let Some(outages) = until_up(&mut phase).await else {
        return;
    };
    let Ok(server) = connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let flows = async {
        tokio::join!(
            pipe(
                &client_read,
                &server_write,
                config.uplink,
                config.delay,
                &stats.client_bytes
            ),
            pipe(
                &server_read,
                &client_write,
                config.downlink,
                config.delay,
                &stats.server_bytes
            ),
        )
    };
    let outage = tokio::select! {
        _ = flows => false,
        () = until_outage(phase, outages) => true,
    };
    if !outage {
        return;
    }
    match config.outage {
        Outage::Reset => {
            stats.resets.fetch_add(1, Ordering::Relaxed);
            // Closed with SO_LINGER 0: an RST each way, and no FIN first
            // (dropping a write half would send one).
            for (read, write) in [(client_read, client_write), (server_read, server_write)] {
                let _ = read.as_ref().set_zero_linger();
                write.forget();
                drop(read);
            }
        }
        Outage::BlackHole => {
            stats.silenced.fetch_add(1, Ordering::Relaxed);
            // Hold both sockets open, silent, until the link stops.
            let _ = alive.changed().await;
        }
    }
}

/// A connection to the server, with the link's small receive buffer.
async fn connect(upstream: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if upstream.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(QUEUE)?;
    socket.connect(upstream).await
}

/// One direction: reads `from` paced at `rate`, delivers each piece to `to`
/// `delay` after it was read. At the end of `from`, shuts `to` down for
/// writing (the other direction goes on); returns on any error.
async fn pipe(
    from: &OwnedReadHalf,
    to: &OwnedWriteHalf,
    rate: Option<u64>,
    delay: Duration,
    counter: &AtomicU64,
) {
    let piece = rate.map_or(MAX_PIECE, |r| {
        usize::try_from(r / 100)
            .unwrap_or(MAX_PIECE)
            .clamp(1024, MAX_PIECE)
    });
    // Pieces in flight: bounded by the rate times the delay anyway.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let read = async move {
        let mut next = Instant::now();
        loop {
            tokio::time::sleep_until(next).await;
            let mut buffer = vec![0u8; piece];
            let n = match read_some(from, &mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buffer.truncate(n);
            let now = Instant::now();
            if let Some(rate) = rate.filter(|r| *r > 0) {
                let cost = Duration::from_secs_f64(n as f64 / rate as f64);
                next = next.max(now - Duration::from_millis(5)) + cost;
            }
            if tx.send((now + delay, buffer)).await.is_err() {
                return;
            }
        }
    };
    let write = async {
        while let Some((due, piece)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if write_all(to, &piece).await.is_err() {
                return false;
            }
            counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        true
    };
    let (_, clean) = tokio::join!(read, write);
    if clean {
        let _ = shutdown(to).await;
    }
}

/// `read` on a shared read half.
async fn read_some(from: &OwnedReadHalf, buffer: &mut [u8]) -> std::io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read(buffer) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// `write_all` on a shared write half.
async fn write_all(to: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Half-closes the socket behind a shared write half.
async fn shutdown(to: &OwnedWriteHalf) -> std::io::Result<()> {
    let stream: &TcpStream = to.as_ref();
    let fd = std::os::fd::AsFd::as_fd(stream);
    rustix::net::shutdown(fd, rustix::net::Shutdown::Write).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn seeded_schedules_repeat_and_stay_in_range() {
        let make = || Schedule::seeded(7, (MS(500), MS(1200)), (MS(300), MS(2000)));
        let a: Vec<_> = make().periods().take(50).collect();
        let b: Vec<_> = make().periods().take(50).collect();
        assert_eq!(a, b);
        assert!(
            a.iter()
                .all(|(u, d)| (MS(500)..=MS(1200)).contains(u) && (MS(300)..=MS(2000)).contains(d))
        );
        let other: Vec<_> = Schedule::seeded(8, (MS(500), MS(1200)), (MS(300), MS(2000)))
            .periods()
            .take(50)
            .collect();
        assert_ne!(a, other);
    }

    #[test]
    fn uptime_counts_only_up_periods() {
        let s = Schedule::fixed(vec![(MS(100), MS(50)), (MS(200), MS(100))]);
        // up 0-100, down 100-150, up 150-350, down 350-450, then up.
        assert_eq!(s.uptime(MS(0), MS(100)), MS(100));
        assert_eq!(s.uptime(MS(0), MS(150)), MS(100));
        assert_eq!(s.uptime(MS(50), MS(200)), MS(100));
        assert_eq!(s.uptime(MS(0), MS(450)), MS(300));
        assert_eq!(s.uptime(MS(400), MS(500)), MS(50));
        assert_eq!(Schedule::always_up().uptime(MS(3), MS(10)), MS(7));
    }

    /// An upstream that answers every connection with `reply` bytes after
    /// reading `expect` bytes, or counts what it reads.
    async fn sink() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&got);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 65536];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        if buffer[..n].contains(&b'?') {
                            let _ = socket.write_all(b"!").await;
                        }
                    }
                });
            }
        });
        (addr, got)
    }

    #[tokio::test]
    async fn the_uplink_rate_is_honoured() {
        let (upstream, got) = sink().await;
        let link = WeakLink::start(
            upstream,
            LinkConfig {
                uplink: Some(1_000_000),
                ..LinkConfig::default()
            },
        )
        .await;
        let mut client = TcpStream::connect(link.addr()).await.expect("connect");
        let started = Instant::now();
        let data = vec![7u8; 500_000];
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&data).await;
            client
        });
        let deadline = started + Duration::from_secs(5);
        while got.load(Ordering::Relaxed) < 500_000 && Instant::now() < deadline {
            tokio::time::sleep(MS(5)).await;
        }
        let took = started.elapsed();
        assert_eq!(got.load(Ordering::Relaxed), 500_000);
        // 0.5 s at 1 MB/s, within 20%.
        assert!(took >= MS(400) && took <= MS(600), "took {took:?}");
        drop(writer);
    }

    #[tokio::test]
    async fn the_delay_is_one_way() {
        let (upstream, _) = sink().await;
        let link = WeakLink::start(
            upstream,
            LinkConfig {
                delay: MS(100),
                ..LinkConfig::default()
            },
        )
        .await;
        let mut client = TcpStream::connect(link.addr()).await.expect("connect");
        // Let the upstream connection come up first.
        tokio::time::sleep(MS(50)).await;
        let started = Instant::now();
        client.write_all(b"?").await.expect("write");
        let mut answer = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut answer))
            .await
            .expect("an answer in time")
            .expect("read");
        let rtt = started.elapsed();
        assert!(rtt >= MS(200) && rtt < MS(400), "round trip {rtt:?}");
    }

    #[tokio::test]
    async fn a_resetting_outage_resets_and_refuses_until_up() {
        let (upstream, _) = sink().await;
        let link = WeakLink::start(
            upstream,
            LinkConfig {
                schedule: Schedule::fixed(vec![(MS(300), MS(600))]),
                ..LinkConfig::default()
            },
        )
        .await;
        let mut client = TcpStream::connect(link.addr()).await.expect("connect");
        client.write_all(b"x").await.expect("write while up");
        tokio::time::sleep(MS(450)).await;
        // Reset: the read ends with an error (or at worst EOF), at once.
        let mut buffer = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(1), client.read(&mut buffer))
            .await
            .expect("not silent");
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        // Refused while down.
        let refused = TcpStream::connect(link.addr()).await;
        assert!(refused.is_err(), "connected during the outage");
        // Up again at 900 ms.
        tokio::time::sleep_until(link.started() + MS(950)).await;
        let mut again = TcpStream::connect(link.addr()).await.expect("up again");
        again.write_all(b"?").await.expect("write");
        tokio::time::timeout(Duration::from_secs(2), again.read_exact(&mut buffer[..1]))
            .await
            .expect("an answer")
            .expect("read");
        assert_eq!(link.stats().resets.load(Ordering::Relaxed), 1);
        let log = link.stats().transitions();
        assert_eq!(log.len(), 2);
        assert!(!log[0].1 && log[1].1);
        assert!(log[0].0 >= MS(300) && log[1].0 >= MS(900), "{log:?}");
    }

    #[tokio::test]
    async fn a_silent_outage_holds_connections() {
        let (upstream, got) = sink().await;
        let link = WeakLink::start(
            upstream,
            LinkConfig {
                schedule: Schedule::fixed(vec![(MS(300), MS(500))]),
                outage: Outage::BlackHole,
                ..LinkConfig::default()
            },
        )
        .await;
        let mut old = TcpStream::connect(link.addr()).await.expect("connect");
        old.write_all(b"ab").await.expect("write");
        tokio::time::sleep(MS(400)).await;
        // Down: the old connection stays open and silent.
        old.write_all(b"?")
            .await
            .expect("a silent link takes writes");
        let mut buffer = [0u8; 1];
        let silent = tokio::time::timeout(MS(300), old.read(&mut buffer)).await;
        assert!(silent.is_err(), "the old connection answered: {silent:?}");
        // A new connection is accepted but held until the link is up (800 ms).
        let mut new = TcpStream::connect(link.addr()).await.expect("held");
        new.write_all(b"?").await.expect("write");
        tokio::time::timeout(Duration::from_secs(2), new.read_exact(&mut buffer))
            .await
            .expect("answered once up")
            .expect("read");
        assert!(link.started().elapsed() >= MS(800));
        // The old one stays dead after the outage too.
        let dead = tokio::time::timeout(MS(300), old.read(&mut buffer)).await;
        assert!(dead.is_err(), "the old connection came back: {dead:?}");
        assert_eq!(got.load(Ordering::Relaxed), 3, "ab and the new ?");
        assert_eq!(link.stats().silenced.load(Ordering::Relaxed), 1);
        assert_eq!(link.stats().resets.load(Ordering::Relaxed), 0);
    }
}
