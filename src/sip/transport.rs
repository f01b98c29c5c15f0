//! Transports: UDP datagrams, and TCP or TLS streams framed by
//! Content-Length (RFC 3261 section 18).
//!
//! Every inbound message, whatever the socket, passes the [`Guard`] (the
//! allow-list and its source's rate) before anything else, waits in a fair
//! queue (one lane per source, taken in turn) and is parsed when the
//! transaction layer takes it, as an [`Inbound`] with its exact bytes, the
//! flow it came on and when. Sending picks a UDP socket or a connection: an
//! existing one (responses go back on the connection the request came on,
//! section 18.2.2), or a new one for a client.
//!
//! Nothing grows without bound and nothing waits on the network without a
//! deadline: the inbound queue drops datagrams when full (per source and in
//! all); each connection buffers at most one
//! [`MAX_MESSAGE`](super::message::MAX_MESSAGE), framed in one pass however
//! the peer slices it, and must deliver each message whole within
//! `message_timeout` of its first byte; writes give up on a peer that stops
//! reading; connections are capped per source and in all. Stream
//! connections we open send RFC 5626 CRLF keep-alive pings; connections we
//! accept answer them and close when idle.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, trace, warn};

/// SIP transport.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams (the default).
    #[default]
    Udp,
    /// A TCP stream.
    Tcp,
    /// A TLS stream.
    Tls,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// Read a listen spec: `udp:127.0.0.1:5080`, `tcp:[::1]:5080`,
/// `tls:0.0.0.0:5061`. The message says how to write it.
pub fn parse_listen(spec: &str) -> Result<(Transport, SocketAddr), String> {
    let (proto, addr) = spec.split_once(':').ok_or_else(|| {
        format!("{spec:?}: write it as udp:ADDR:PORT, tcp:ADDR:PORT or tls:ADDR:PORT")
    })?;
    let t = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        other => {
            return Err(format!(
                "{spec:?}: unknown transport {other:?} (udp, tcp or tls)"
            ))
        }
    };
    let sa = addr
        .parse()
        .map_err(|_| format!("{spec:?}: {addr:?} is not an IP address and port"))?;
    Ok((t, sa))
}

use super::guard::{
    source_key, AllowList, FairQueue, Guard, GuardStats, Held, QueueLimits, SourceLimits,
};
use super::message::{parse, Framed, Message, StreamFramer, MAX_MESSAGE};

/// Where a message travelled: transport and both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// A message as it arrived.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The exact bytes received (one datagram, or one framed stream message).
    pub bytes: Vec<u8>,
    pub message: Message,
    pub flow: Flow,
    /// Monotonic receive time, for durations.
    pub at: Instant,
    /// Wall-clock receive time, for reports.
    pub wall: SystemTime,
}

/// Where to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// Name to verify the TLS certificate against (the host of the URI);
    /// the IP address is used when None.
    pub server_name: Option<String>,
}

/// What a transport failure was doing, and to whom.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("can't listen on {transport}:{addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("can't connect over {transport} to {addr}: {source}")]
    Connect {
        transport: Transport,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("timed out connecting over {transport} to {addr}")]
    ConnectTimeout {
        transport: Transport,
        addr: SocketAddr,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake { addr: SocketAddr, source: io::Error },
    #[error("{0:?} is not a usable TLS server name")]
    ServerName(String),
    #[error("no TLS client configuration, so can't reach {0} over TLS")]
    NoTlsClient(SocketAddr),
    #[error("sending {len} bytes over {transport} to {addr} failed: {source}")]
    Send {
        transport: Transport,
        addr: SocketAddr,
        len: usize,
        source: io::Error,
    },
    #[error("no UDP socket to send to {0} from")]
    NoUdpSocket(SocketAddr),
    #[error("the {transport} connection to {addr} is closed")]
    Closed {
        transport: Transport,
        addr: SocketAddr,
    },
    #[error("the {transport} connection to {addr} is not keeping up; message dropped")]
    Congested {
        transport: Transport,
        addr: SocketAddr,
    },
    #[error("at the limit of {0} connections")]
    TooManyConnections(usize),
    #[error("TLS file {path}: {reason}")]
    TlsFile { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("the transport layer is shut down")]
    Shutdown,
}

/// Limits and behaviour of a transport layer.
#[derive(Clone)]
pub struct TransportOptions {
    /// Interval of CRLF keep-alive pings on connections we open.
    pub keepalive: Option<Duration>,
    /// Most open TCP and TLS connections (accepted and opened together).
    /// At the limit a new connection takes the place of the least recently
    /// active one of the source holding the most, when that source holds
    /// more than the newcomer's; otherwise it is refused.
    pub max_connections: usize,
    /// Close an accepted connection after this long without a whole
    /// message or keep-alive ping (bytes that don't complete one don't
    /// count).
    pub idle_timeout: Duration,
    /// Once the first byte of a stream message has arrived, the whole
    /// message must arrive within this (an absolute deadline, not one that
    /// restarts with each byte); else the connection is closed.
    pub message_timeout: Duration,
    /// Longest a write on a stream may wait for the peer to read; a peer
    /// that stops reading is disconnected.
    pub write_timeout: Duration,
    pub connect_timeout: Duration,
    /// Receive buffer asked of the kernel for UDP sockets we bind (it
    /// grants at most `net.core.rmem_max`).
    pub udp_receive_buffer: usize,
    /// Inbound messages queued for the transaction layer, in all...
    pub inbound_queue: usize,
    /// ...and their bytes.
    pub inbound_queue_bytes: usize,
    /// Needed to open TLS connections.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// Addresses answered at all (empty: everyone).
    pub allow: AllowList,
    /// Each source's share; None: unlimited (a line's own stack, which
    /// hears only its PBX).
    pub limits: Option<SourceLimits>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            keepalive: Some(Duration::from_secs(30)),
            max_connections: 256,
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            udp_receive_buffer: 4 * 1024 * 1024,
            inbound_queue: 4096,
            inbound_queue_bytes: 16 * 1024 * 1024,
            tls_client: None,
            allow: AllowList::open(),
            limits: None,
        }
    }
}

impl std::fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportOptions")
            .field("keepalive", &self.keepalive)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("message_timeout", &self.message_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("udp_receive_buffer", &self.udp_receive_buffer)
            .field("inbound_queue", &self.inbound_queue)
            .field("inbound_queue_bytes", &self.inbound_queue_bytes)
            .field("tls_client", &self.tls_client.is_some())
            .field("allow", &self.allow)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Counters, for operators and for tests that prove memory stays bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub messages_in: u64,
    pub messages_out: u64,
    /// Datagrams or stream messages that didn't parse as SIP.
    pub garbage: u64,
    /// Messages dropped because the inbound queue (or their source's lane
    /// in it) was full...
    pub queue_full: u64,
    /// ...and queued messages dropped from the source with most waiting
    /// to make room for another's.
    pub queue_pushed_out: u64,
    /// Connections now open, and the most ever open at once.
    pub connections: usize,
    pub peak_connections: usize,
    /// Connections refused at the limit, or closed for a framing error.
    pub connections_refused: u64,
    pub connections_closed_bad_framing: u64,
    /// Connections closed to make room for another source's.
    pub connections_evicted: u64,
    /// Connections closed because a message did not arrive whole within
    /// `message_timeout`.
    pub message_timeouts: u64,
    /// Connections closed because the peer stopped reading our writes.
    pub write_timeouts: u64,
    /// The largest stream receive buffer ever held, in bytes.
    pub peak_stream_buffer: usize,
    pub keepalive_pings_answered: u64,
    /// The allow-list and the per-source limits.
    pub guard: GuardStats,
}

#[derive(Default)]
struct Stats {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    garbage: AtomicU64,
    queue_full: AtomicU64,
    peak_connections: AtomicUsize,
    connections_refused: AtomicU64,
    bad_framing: AtomicU64,
    evicted: AtomicU64,
    message_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    peak_stream_buffer: AtomicUsize,
    pongs: AtomicU64,
}

/// An open stream connection, as the table knows it.
struct Conn {
    id: u64,
    local: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
    /// True for connections a peer opened to us (only those are ever
    /// closed to make room for others).
    accepted: bool,
    /// When the last whole message or ping arrived, in ms since the
    /// layer started: the least recently active goes first.
    active: Arc<AtomicU64>,
    /// Closes the connection when notified.
    close: Arc<Notify>,
}

/// A message as received, before parsing: what waits in the inbound queue
/// (parsing happens when it is taken, so a flood costs the receive loop
/// only a copy).
struct Raw {
    /// The datagram, or one framed stream message.
    bytes: Vec<u8>,
    /// Where it came from and on what.
    flow: Flow,
    /// Monotonic receive time.
    at: Instant,
    /// Wall-clock receive time.
    wall: SystemTime,
}

/// The receiving end of a transport layer: every inbound message, parsed,
/// with sources taken in turn.
pub struct InboundRx {
    /// Shared with the transport layer, which fills it.
    queue: Arc<FairQueue<Raw>>,
    /// For the messages-in and garbage counts.
    stats: Arc<Stats>,
}

impl InboundRx {
    /// The next message that parses; None once the layer is shut down.
    pub async fn recv(&mut self) -> Option<Inbound> {
        loop {
            let raw = self.queue.pop().await?;
            // A parser bug must cost one message, not the receive loop.
            match std::panic::catch_unwind(|| parse(&raw.bytes)) {
                Ok(Ok(message)) => {
                    self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                    return Some(Inbound {
                        bytes: raw.bytes,
                        message,
                        flow: raw.flow,
                        at: raw.at,
                        wall: raw.wall,
                    });
                }
                Ok(Err(e)) => {
                    self.stats.garbage.fetch_add(1, Ordering::Relaxed);
                    trace!(remote = %raw.flow.remote, error = %e, "dropped unparseable message");
                }
                Err(_) => {
                    self.stats.garbage.fetch_add(1, Ordering::Relaxed);
                    warn!(remote = %raw.flow.remote, "the parser panicked; message dropped");
                }
            }
            // Between messages that don't parse, let other tasks run: a
            // queue full of garbage must not hold a worker thread.
            tokio::task::yield_now().await;
        }
    }
}

/// What a connection's tasks share with the table: its id, its activity
/// time and the signal that closes it.
struct ConnCtl {
    /// Tells this connection from a later one to the same address.
    id: u64,
    /// When its last whole message or ping arrived (ms since start).
    active: Arc<AtomicU64>,
    /// Notified to close it.
    close: Arc<Notify>,
}

/// Messages queued for writing on one connection.
const CONN_WRITE_QUEUE: usize = 64;
/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing stream stays writable after its last message.
const STREAM_LINGER: Duration = Duration::from_secs(1);
/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_535;
/// Messages framed from one stream before its reader lets other tasks run.
const FRAMES_PER_TURN: usize = 16;
/// How long a stream message waits for room in a full inbound queue (a
/// stream can't lose a message quietly; a datagram can, and doesn't wait).
const STREAM_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The transport layer: cheap to clone, shut down with [`Transports::shutdown`].
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

struct Inner {
    opts: TransportOptions,
    udp: Mutex<Vec<Arc<UdpSocket>>>,
    conns: Mutex<HashMap<(Transport, SocketAddr), Conn>>,
    /// Serialises opening connections, so two sends to the same peer share one.
    connecting: tokio::sync::Mutex<()>,
    /// Every inbound message, waiting in its source's lane.
    inbound: Arc<FairQueue<Raw>>,
    /// The allow-list and the per-source shares.
    guard: Arc<Guard>,
    stats: Arc<Stats>,
    next_id: AtomicU64,
    /// For connections' activity times.
    started: Instant,
    shutdown: watch::Sender<bool>,
}

/// Lock a std mutex, carrying on with the data if a holder panicked: every
/// critical section here leaves the map consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transports {
    /// A transport layer with no sockets yet, and the receiver of everything
    /// that will arrive on them.
    pub fn new(opts: TransportOptions) -> (Transports, InboundRx) {
        let per_source = opts
            .limits
            .as_ref()
            .map_or((opts.inbound_queue, opts.inbound_queue_bytes), |l| {
                (l.max_queued, l.max_buffered.max(MAX_MESSAGE))
            });
        let queue = Arc::new(FairQueue::new(QueueLimits {
            items: opts.inbound_queue,
            bytes: opts.inbound_queue_bytes,
            items_per_source: per_source.0,
            bytes_per_source: per_source.1,
        }));
        let stats = Arc::new(Stats::default());
        let (shutdown, _) = watch::channel(false);
        let guard = Arc::new(Guard::new(opts.allow.clone(), opts.limits.clone()));
        let t = Transports {
            inner: Arc::new(Inner {
                opts,
                udp: Mutex::new(Vec::new()),
                conns: Mutex::new(HashMap::new()),
                connecting: tokio::sync::Mutex::new(()),
                inbound: queue.clone(),
                guard,
                stats: stats.clone(),
                next_id: AtomicU64::new(1),
                started: Instant::now(),
                shutdown,
            }),
        };
        (t, InboundRx { queue, stats })
    }

    /// Stop every socket and connection task.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.inbound.close();
        lock(&self.inner.udp).clear();
        lock(&self.inner.conns).clear();
    }

    fn is_shut_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// The allow-list and per-source limits this layer enforces.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.inner.guard
    }

    pub fn stats(&self) -> TransportStats {
        let s = &self.inner.stats;
        TransportStats {
            messages_in: s.messages_in.load(Ordering::Relaxed),
            messages_out: s.messages_out.load(Ordering::Relaxed),
            garbage: s.garbage.load(Ordering::Relaxed),
            queue_full: s.queue_full.load(Ordering::Relaxed),
            queue_pushed_out: self.inner.inbound.pushed_out(),
            connections: lock(&self.inner.conns).len(),
            peak_connections: s.peak_connections.load(Ordering::Relaxed),
            connections_refused: s.connections_refused.load(Ordering::Relaxed),
            connections_closed_bad_framing: s.bad_framing.load(Ordering::Relaxed),
            connections_evicted: s.evicted.load(Ordering::Relaxed),
            message_timeouts: s.message_timeouts.load(Ordering::Relaxed),
            write_timeouts: s.write_timeouts.load(Ordering::Relaxed),
            peak_stream_buffer: s.peak_stream_buffer.load(Ordering::Relaxed),
            keepalive_pings_answered: s.pongs.load(Ordering::Relaxed),
            guard: self.inner.guard.stats(),
        }
    }

    /// Bind a UDP socket and start receiving on it.
    pub async fn bind_udp(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let err = |source| TransportError::Bind {
            transport: Transport::Udp,
            addr,
            source,
        };
        let sock = bind_udp_socket(addr, self.inner.opts.udp_receive_buffer).map_err(err)?;
        self.add_udp(sock).map_err(err)
    }

    /// Start receiving on a UDP socket the caller bound.
    pub fn add_udp(&self, sock: UdpSocket) -> io::Result<SocketAddr> {
        let local = sock.local_addr()?;
        let sock = Arc::new(sock);
        lock(&self.inner.udp).push(sock.clone());
        let this = self.clone();
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                // The socket's readiness takes part in tokio's cooperative
                // budget, so a socket that always has a datagram waiting
                // still lets other tasks run.
                let r = tokio::select! {
                    r = sock.recv_from(&mut buf) => r,
                    _ = stop.changed() => break,
                };
                match r {
                    Ok((n, peer)) => {
                        // Before anything else: the allow-list and the
                        // source's rate. Nothing over them is parsed.
                        if !this.inner.guard.admit(peer.ip()) {
                            continue;
                        }
                        // Bare CRLFs are keep-alives (or noise): not messages.
                        if buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                            continue;
                        }
                        let flow = Flow {
                            transport: Transport::Udp,
                            local,
                            remote: peer,
                        };
                        let raw = Raw {
                            bytes: buf[..n].to_vec(),
                            flow,
                            at: Instant::now(),
                            wall: SystemTime::now(),
                        };
                        if this.inner.inbound.try_push(peer.ip(), raw, n).is_err() {
                            this.inner.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        // An ICMP error from an earlier send surfaces here on
                        // some systems; it concerns that send, not this socket.
                        debug!(%local, error = %e, "UDP receive error");
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        Ok(local)
    }

    /// Listen for TCP connections.
    pub async fn listen_tcp(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        self.listen(addr, Transport::Tcp, None).await
    }

    /// Listen for TLS connections, with the certificate in `acceptor`.
    pub async fn listen_tls(
        &self,
        addr: SocketAddr,
        acceptor: TlsAcceptor,
    ) -> Result<SocketAddr, TransportError> {
        self.listen(addr, Transport::Tls, Some(acceptor)).await
    }

    async fn listen(
        &self,
        addr: SocketAddr,
        transport: Transport,
        acceptor: Option<TlsAcceptor>,
    ) -> Result<SocketAddr, TransportError> {
        let bind_err = |source| TransportError::Bind {
            transport,
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        self.add_listener(listener, transport, acceptor)
            .map_err(bind_err)
    }

    /// Start accepting TCP (`acceptor` None) or TLS connections on a
    /// listener the caller bound.
    pub fn add_listener(
        &self,
        listener: TcpListener,
        transport: Transport,
        acceptor: Option<TlsAcceptor>,
    ) -> io::Result<SocketAddr> {
        let local = listener.local_addr()?;
        let this = self.clone();
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stop.changed() => break,
                };
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors, usually: back off briefly
                        // rather than spin.
                        warn!(%local, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // From outside the allow-list: closed before a byte is read.
                if !this.inner.guard.allowed(peer.ip()) {
                    drop(stream);
                    continue;
                }
                let Some(slot) = this.inner.guard.connection(peer.ip()) else {
                    this.inner
                        .stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                if !this.make_room(Some(peer.ip())) {
                    this.inner
                        .stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "connection refused: at the connection limit");
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let flow = Flow {
                    transport,
                    local,
                    remote: peer,
                };
                match &acceptor {
                    None => this.start_stream(stream, flow, Some(slot)),
                    Some(acc) => {
                        // Handshake in its own task so a slow client can't
                        // stall the accept loop; it holds a slot meanwhile.
                        let (conn, rx) = this.register_conn(flow, true);
                        let acc = acc.clone();
                        let this = this.clone();
                        tokio::spawn(async move {
                            let hs = tokio::select! {
                                r = tokio::time::timeout(
                                    this.inner.opts.connect_timeout,
                                    acc.accept(stream),
                                ) => r,
                                _ = conn.close.notified() => {
                                    this.unregister_conn(flow, conn.id);
                                    return;
                                }
                            };
                            match hs {
                                Ok(Ok(tls)) => {
                                    this.run_stream(tls, flow, conn, rx, Some(slot)).await
                                }
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "TLS handshake failed");
                                    this.unregister_conn(flow, conn.id);
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    this.unregister_conn(flow, conn.id);
                                }
                            }
                        });
                    }
                }
            }
        });
        Ok(local)
    }

    /// Make room for one more connection, for a peer at `newcomer` (None:
    /// one we open). Below the limit there is room. At it, the least
    /// recently active accepted connection of the source holding the most
    /// is closed, if that source holds more than the newcomer's does: so
    /// many connections from a few addresses can't lock everyone else out.
    fn make_room(&self, newcomer: Option<IpAddr>) -> bool {
        let max = self.inner.opts.max_connections;
        let mut conns = lock(&self.inner.conns);
        if conns.len() < max {
            return true;
        }
        let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
        for ((_, remote), c) in conns.iter() {
            if c.accepted {
                *per_source.entry(source_key(remote.ip())).or_default() += 1;
            }
        }
        let mine = newcomer.map_or(0, |ip| {
            per_source.get(&source_key(ip)).copied().unwrap_or_default()
        });
        let Some(most) = per_source.values().copied().max() else {
            return false;
        };
        if most <= mine {
            return false;
        }
        let victim = conns
            .iter()
            .filter(|((_, remote), c)| {
                c.accepted && per_source.get(&source_key(remote.ip())) == Some(&most)
            })
            .min_by_key(|(_, c)| c.active.load(Ordering::Relaxed))
            .map(|(k, _)| *k);
        let Some(victim) = victim else {
            return false;
        };
        if let Some(c) = conns.remove(&victim) {
            c.close.notify_one();
            self.inner.stats.evicted.fetch_add(1, Ordering::Relaxed);
            debug!(remote = %victim.1, "connection closed to make room for another source");
        }
        true
    }

    /// Milliseconds since the layer started, for activity times.
    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    fn register_conn(&self, flow: Flow, accepted: bool) -> (ConnCtl, mpsc::Receiver<Vec<u8>>) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONN_WRITE_QUEUE);
        let ctl = ConnCtl {
            id,
            active: Arc::new(AtomicU64::new(self.now_ms())),
            close: Arc::new(Notify::new()),
        };
        let mut conns = lock(&self.inner.conns);
        let old = conns.insert(
            (flow.transport, flow.remote),
            Conn {
                id,
                local: flow.local,
                tx,
                accepted,
                active: ctl.active.clone(),
                close: ctl.close.clone(),
            },
        );
        // A second connection from the same address and port replaces the
        // first in the table: close the first rather than orphan it.
        if let Some(old) = old {
            old.close.notify_one();
        }
        self.inner
            .stats
            .peak_connections
            .fetch_max(conns.len(), Ordering::Relaxed);
        (ctl, rx)
    }

    fn unregister_conn(&self, flow: Flow, id: u64) {
        let mut conns = lock(&self.inner.conns);
        if conns
            .get(&(flow.transport, flow.remote))
            .is_some_and(|c| c.id == id)
        {
            conns.remove(&(flow.transport, flow.remote));
        }
    }

    fn start_stream<S>(&self, stream: S, flow: Flow, slot: Option<Held>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (ctl, rx) = self.register_conn(flow, slot.is_some());
        let this = self.clone();
        tokio::spawn(async move { this.run_stream(stream, flow, ctl, rx, slot).await });
    }

    /// Read and write one connection until it closes, fails to frame, idles
    /// out (accepted ones), misses a message deadline, is closed to make
    /// room, or the layer shuts down. `slot` is the source's connection
    /// share, held for accepted connections until the end.
    async fn run_stream<S>(
        &self,
        stream: S,
        flow: Flow,
        ctl: ConnCtl,
        mut rx: mpsc::Receiver<Vec<u8>>,
        slot: Option<Held>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let accepted = slot.is_some();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut stop = self.inner.shutdown.subscribe();
        let keepalive = if accepted {
            None
        } else {
            self.inner.opts.keepalive
        };
        let pong_tx = lock(&self.inner.conns)
            .get(&(flow.transport, flow.remote))
            .map(|c| c.tx.clone());

        // The writer is its own task so that, when the reader gives up on
        // the connection, responses already queued (a 400 to the last
        // message, say) still go out before the socket closes.
        let mut wstop = self.inner.shutdown.subscribe();
        let remote = flow.remote;
        let write_timeout = self.inner.opts.write_timeout;
        let close = ctl.close.clone();
        let stats = self.inner.stats.clone();
        let writer = tokio::spawn(async move {
            let period = keepalive.unwrap_or(Duration::from_secs(3600));
            let mut ping = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                let bytes = tokio::select! {
                    m = rx.recv() => match m {
                        Some(b) => b,
                        None => break,
                    },
                    _ = ping.tick(), if keepalive.is_some() => b"\r\n\r\n".to_vec(),
                    _ = wstop.changed() => break,
                };
                match tokio::time::timeout(write_timeout, wr.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(%remote, error = %e, "stream write failed");
                        close.notify_one();
                        return;
                    }
                    Err(_) => {
                        // The peer stopped reading: it can't hold our
                        // buffers (or this task) for ever.
                        debug!(%remote, "stream write timed out; closing");
                        stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
                        close.notify_one();
                        return;
                    }
                }
            }
            let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
        });

        // Returns when the last message was handed up, if any, and whether
        // the peer closed its side.
        let reader = async {
            let guard = &self.inner.guard;
            let opts = &self.inner.opts;
            let ip = flow.remote.ip();
            let mut last_delivery: Option<Instant> = None;
            let mut framer = StreamFramer::new();
            // This connection's bytes in its source's buffered share.
            let mut held = guard.buffer(ip);
            let mut chunk = vec![0u8; READ_CHUNK];
            let idle = if accepted {
                opts.idle_timeout
            } else {
                Duration::from_secs(24 * 3600)
            };
            let mut idle_until = Instant::now() + idle;
            // Set when a message's first byte arrives; cleared when it is whole.
            let mut message_until: Option<Instant> = None;
            loop {
                // Take every whole message at the front of the buffer,
                // letting other tasks run every few.
                let mut taken = 0;
                loop {
                    let framed = match framer.next_frame() {
                        Ok(f) => f,
                        Err(why) => {
                            // Stream framing is lost for good: close
                            // (RFC 3261 section 18.3).
                            debug!(remote = %flow.remote, %why, "closing stream");
                            self.inner.stats.bad_framing.fetch_add(1, Ordering::Relaxed);
                            return (last_delivery, false);
                        }
                    };
                    match framed {
                        Framed::Incomplete => break,
                        Framed::Message(msg) => {
                            message_until = None;
                            idle_until = Instant::now() + idle;
                            ctl.active.store(self.now_ms(), Ordering::Relaxed);
                            if guard.admit(ip) && !self.deliver_stream(msg, flow).await {
                                return (last_delivery, false);
                            }
                            last_delivery = Some(Instant::now());
                        }
                        Framed::KeepAlive { ping } => {
                            // A double CRLF is a ping (RFC 5626 section
                            // 4.4.1): answered with a single CRLF pong, and
                            // counted against the source's rate like any
                            // message (a pong is a response).
                            if ping {
                                idle_until = Instant::now() + idle;
                                ctl.active.store(self.now_ms(), Ordering::Relaxed);
                                if accepted && guard.admit(ip) {
                                    if let Some(tx) = &pong_tx {
                                        let _ = tx.try_send(b"\r\n".to_vec());
                                        self.inner.stats.pongs.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    }
                    taken += 1;
                    if taken % FRAMES_PER_TURN == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                held.resize(framer.buffered());
                // A message in progress has its own absolute deadline; only
                // between messages may a connection idle.
                let deadline = if framer.buffered() > 0 {
                    *message_until.get_or_insert(Instant::now() + opts.message_timeout)
                } else {
                    message_until = None;
                    idle_until
                };
                let want = framer.room().min(READ_CHUNK);
                let read = tokio::select! {
                    r = tokio::time::timeout_at(deadline, rd.read(&mut chunk[..want])) => r,
                    _ = ctl.close.notified() => return (None, false),
                };
                let n = match read {
                    Ok(Ok(0)) => return (last_delivery, true),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        debug!(remote = %flow.remote, error = %e, "stream read failed");
                        return (None, true);
                    }
                    Err(_) => {
                        if framer.buffered() > 0 {
                            debug!(remote = %flow.remote, "closing stream: message not complete in time");
                            self.inner
                                .stats
                                .message_timeouts
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        return (last_delivery, false);
                    }
                };
                if !held.resize(framer.buffered() + n) {
                    guard.note_buffer_limit(ip);
                    return (last_delivery, false);
                }
                framer.push(&chunk[..n]);
                self.inner
                    .stats
                    .peak_stream_buffer
                    .fetch_max(framer.buffered(), Ordering::Relaxed);
            }
        };

        let mut slot = slot;
        let last_delivery = tokio::select! {
            (l, peer_closed) = reader => {
                if peer_closed {
                    // The peer has gone: what is left is our side's last
                    // writes, bounded by the linger below and the overall
                    // connection limit. Its source may connect again.
                    slot.take();
                }
                l
            }
            _ = stop.changed() => None,
        };
        // Responses to what was just handed up are still being made: keep
        // the connection writable for a moment (RFC 3261 section 18.2.2
        // wants them on this connection).
        if let Some(at) = last_delivery {
            tokio::select! {
                _ = tokio::time::sleep_until(at + STREAM_LINGER) => {}
                _ = stop.changed() => {}
                _ = ctl.close.notified() => {}
            }
        }
        // Dropping the last senders lets the writer drain and finish.
        self.unregister_conn(flow, ctl.id);
        drop(pong_tx);
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
        drop(slot);
        trace!(remote = %flow.remote, "connection closed");
    }

    /// Queue a message framed on a stream, waiting a little for room (the
    /// peer won't retransmit it). False when the layer is shutting down.
    async fn deliver_stream(&self, bytes: Vec<u8>, flow: Flow) -> bool {
        let n = bytes.len();
        let raw = Raw {
            bytes,
            flow,
            at: Instant::now(),
            wall: SystemTime::now(),
        };
        let deadline = Instant::now() + STREAM_QUEUE_WAIT;
        if self
            .inner
            .inbound
            .push(flow.remote.ip(), raw, n, deadline)
            .await
            .is_err()
        {
            if self.is_shut_down() {
                return false;
            }
            self.inner.stats.queue_full.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Make sure `target` can be reached and say from which local address:
    /// for UDP the socket's (with an unspecified IP replaced by the one the
    /// route uses), for TCP/TLS an existing or new connection's.
    pub async fn connect(&self, target: &Target) -> Result<Flow, TransportError> {
        if self.is_shut_down() {
            return Err(TransportError::Shutdown);
        }
        match target.transport {
            Transport::Udp => {
                let sock = self.udp_socket(target.addr, None)?;
                let mut local = sock
                    .local_addr()
                    .map_err(|_| TransportError::NoUdpSocket(target.addr))?;
                if local.ip().is_unspecified() {
                    if let Some(ip) = route_source_ip(target.addr) {
                        local.set_ip(ip);
                    }
                }
                Ok(Flow {
                    transport: Transport::Udp,
                    local,
                    remote: target.addr,
                })
            }
            Transport::Tcp | Transport::Tls => {
                let (_, local) = self.stream_conn(target).await?;
                Ok(Flow {
                    transport: target.transport,
                    local,
                    remote: target.addr,
                })
            }
        }
    }

    fn udp_socket(
        &self,
        dest: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Result<Arc<UdpSocket>, TransportError> {
        let socks = lock(&self.inner.udp);
        let same_family = |s: &&Arc<UdpSocket>| {
            s.local_addr()
                .map(|a| a.is_ipv4() == dest.is_ipv4())
                .unwrap_or(false)
        };
        local
            .and_then(|l| {
                socks
                    .iter()
                    .find(|s| s.local_addr().map(|a| a == l).unwrap_or(false))
            })
            .or_else(|| socks.iter().find(same_family))
            .cloned()
            .ok_or(TransportError::NoUdpSocket(dest))
    }

    async fn stream_conn(
        &self,
        target: &Target,
    ) -> Result<(mpsc::Sender<Vec<u8>>, SocketAddr), TransportError> {
        let key = (target.transport, target.addr);
        if let Some(c) = lock(&self.inner.conns).get(&key) {
            return Ok((c.tx.clone(), c.local));
        }
        let _guard = self.inner.connecting.lock().await;
        if let Some(c) = lock(&self.inner.conns).get(&key) {
            return Ok((c.tx.clone(), c.local));
        }
        if !self.make_room(None) {
            return Err(TransportError::TooManyConnections(
                self.inner.opts.max_connections,
            ));
        }
        let (transport, addr) = key;
        let tcp = tokio::time::timeout(self.inner.opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| TransportError::ConnectTimeout { transport, addr })?
            .map_err(|source| TransportError::Connect {
                transport,
                addr,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map_err(|source| TransportError::Connect {
            transport,
            addr,
            source,
        })?;
        let flow = Flow {
            transport,
            local,
            remote: addr,
        };
        match transport {
            Transport::Tls => {
                let cfg = self
                    .inner
                    .opts
                    .tls_client
                    .clone()
                    .ok_or(TransportError::NoTlsClient(addr))?;
                let name = match &target.server_name {
                    Some(n) => ServerName::try_from(n.clone())
                        .map_err(|_| TransportError::ServerName(n.clone()))?,
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                let tls = tokio::time::timeout(
                    self.inner.opts.connect_timeout,
                    TlsConnector::from(cfg).connect(name, tcp),
                )
                .await
                .map_err(|_| TransportError::ConnectTimeout { transport, addr })?
                .map_err(|source| TransportError::Handshake { addr, source })?;
                self.start_stream(tls, flow, None);
            }
            _ => self.start_stream(tcp, flow, None),
        }
        lock(&self.inner.conns)
            .get(&key)
            .map(|c| (c.tx.clone(), c.local))
            .ok_or(TransportError::Closed { transport, addr })
    }

    /// Send a message to a target, opening a connection if needed.
    pub async fn send(&self, target: &Target, bytes: &[u8]) -> Result<Flow, TransportError> {
        let flow = self.connect(target).await?;
        self.send_on(&flow, bytes).await?;
        Ok(flow)
    }

    /// Send on a known flow: for UDP from the socket bound to `flow.local`,
    /// for streams on the open connection to `flow.remote` (a response goes
    /// back the way its request came).
    pub async fn send_on(&self, flow: &Flow, bytes: &[u8]) -> Result<(), TransportError> {
        if self.is_shut_down() {
            return Err(TransportError::Shutdown);
        }
        let (transport, addr) = (flow.transport, flow.remote);
        match transport {
            Transport::Udp => {
                let sock = self.udp_socket(addr, Some(flow.local))?;
                sock.send_to(bytes, addr)
                    .await
                    .map_err(|source| TransportError::Send {
                        transport,
                        addr,
                        len: bytes.len(),
                        source,
                    })?;
            }
            Transport::Tcp | Transport::Tls => {
                let tx = lock(&self.inner.conns)
                    .get(&(transport, addr))
                    .map(|c| c.tx.clone())
                    .ok_or(TransportError::Closed { transport, addr })?;
                tx.try_send(bytes.to_vec()).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => {
                        TransportError::Congested { transport, addr }
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        TransportError::Closed { transport, addr }
                    }
                })?;
            }
        }
        self.inner
            .stats
            .messages_out
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A bound, non-blocking UDP socket with (best effort) a receive buffer
/// of `recv_buffer` bytes: during a burst the kernel queues datagrams here
/// until the receive loop sheds them by source, instead of dropping them
/// without regard to who sent them.
/// A UDP socket bound at `addr`, with a receive buffer of `recv_buffer`
/// bytes when the system allows it (so a burst is shed by the per-source
/// checks, not by the kernel).
pub fn bind_udp_socket(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = sock.set_recv_buffer_size(recv_buffer) {
        debug!(%addr, error = %e, "could not enlarge the UDP receive buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// The local IP the system would send from to reach `dest`, found by
/// connecting an unbound UDP socket (which sends nothing).
pub fn route_source_ip(dest: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if dest.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(dest).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// How a TLS client checks the server's certificate.
#[derive(Debug, Clone)]
pub enum TlsVerify {
    /// Against these trust anchors (PEM file contents, or the system bundle).
    Roots(Vec<CertificateDer<'static>>),
    /// Accept any certificate. Only for tests against self-signed peers:
    /// the connection is then encrypted but not authenticated.
    DangerAcceptInvalidCerts,
}

impl TlsVerify {
    /// Trust the certificates in a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<TlsVerify, TransportError> {
        Ok(TlsVerify::Roots(read_certs(path)?))
    }

    /// Trust the system's CA bundle (the usual locations on Linux and BSD).
    pub fn system() -> Result<TlsVerify, TransportError> {
        const BUNDLES: [&str; 4] = [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
            "/usr/local/share/certs/ca-root-nss.crt",
        ];
        for b in BUNDLES {
            let p = Path::new(b);
            if p.exists() {
                return TlsVerify::from_pem_file(p);
            }
        }
        Err(TransportError::TlsFile {
            path: BUNDLES.join(", "),
            reason: "no system CA bundle found; configure one".into(),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client configuration.
pub fn tls_client_config(verify: TlsVerify) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let cfg = match verify {
        TlsVerify::Roots(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsVerify::DangerAcceptInvalidCerts => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A TLS acceptor with the chain and key from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TransportError> {
    let chain = read_certs(cert)?;
    let key_err = |reason: String| TransportError::TlsFile {
        path: key.display().to_string(),
        reason,
    };
    let key_pem = std::fs::read(key).map_err(|e| key_err(e.to_string()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| key_err(e.to_string()))?
        .ok_or_else(|| key_err("no private key in the file".into()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let err = |reason: String| TransportError::TlsFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Skips chain and name checks but still verifies handshake signatures, so
/// the peer at least holds the key of the certificate it showed.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether a message went out or came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// One message as it was on the wire, for evidence.
#[derive(Debug, Clone)]
pub struct CapturedMessage {
    pub direction: Direction,
    pub wall: SystemTime,
    /// Time since the capture started (the first INVITE sent or received).
    pub elapsed: Duration,
    pub flow: Flow,
    pub bytes: Vec<u8>,
}

/// Most messages and bytes one capture keeps: a peer looping re-INVITEs
/// must not grow a call's evidence without bound.
const CAPTURE_MAX_MESSAGES: usize = 256;
const CAPTURE_MAX_BYTES: usize = 2 * 1024 * 1024;

/// A shared, bounded recorder of the messages of one call or registration.
#[derive(Debug, Clone)]
pub struct Capture {
    inner: Arc<Mutex<CaptureInner>>,
}

#[derive(Debug)]
struct CaptureInner {
    start: Instant,
    messages: Vec<CapturedMessage>,
    bytes: usize,
    dropped: usize,
}

impl Capture {
    pub fn new(start: Instant) -> Capture {
        Capture {
            inner: Arc::new(Mutex::new(CaptureInner {
                start,
                messages: Vec::new(),
                bytes: 0,
                dropped: 0,
            })),
        }
    }

    pub fn start(&self) -> Instant {
        lock(&self.inner).start
    }

    pub fn record(&self, direction: Direction, flow: Flow, bytes: &[u8], at: Instant) {
        let mut c = lock(&self.inner);
        if c.messages.len() >= CAPTURE_MAX_MESSAGES || c.bytes + bytes.len() > CAPTURE_MAX_BYTES {
            c.dropped += 1;
            return;
        }
        let elapsed = at.saturating_duration_since(c.start);
        c.bytes += bytes.len();
        c.messages.push(CapturedMessage {
            direction,
            wall: SystemTime::now(),
            elapsed,
            flow,
            bytes: bytes.to_vec(),
        });
    }

    pub fn record_inbound(&self, m: &Inbound) {
        self.record(Direction::Received, m.flow, &m.bytes, m.at);
    }

    /// The messages so far, in order.
    pub fn messages(&self) -> Vec<CapturedMessage> {
        lock(&self.inner).messages.clone()
    }

    /// Messages not kept because the capture was full.
    pub fn dropped(&self) -> usize {
        lock(&self.inner).dropped
    }
}
