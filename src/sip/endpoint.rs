//! The endpoint: cidguard's own receiving side, where the test calls land.
//!
//! It listens on UDP, TCP and TLS, accepts INVITEs only for its configured
//! numbers, and asks a [`CallHandler`] what to do with each: hold (ringing)
//! for an exact time and then reject or answer, or play an announcement as
//! early media and reject (the call-in self-test). Every message of the call is
//! kept byte for byte with its receive time, transport and source, because
//! those bytes are the evidence a privacy verdict rests on.
//!
//! It listens where SIP scanners find it, so it is built to keep serving its
//! own calls whatever else arrives: only the allow-list's addresses are
//! answered at all (when one is set); every source gets a share of messages,
//! connections, buffered bytes and transactions (see [`super::guard`]);
//! only calls keep state, and everything else (OPTIONS, stray calls,
//! requests for dialogs that don't exist) gets at most one stateless
//! answer per request; malformed requests get 400 or are dropped; calls
//! are capped; and a panicking handler costs one call, not the endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use super::account::Account;
use crate::media::rtp::{self as media_rtp, Codec, Packetizer};
use crate::media::sdp::{self as media_sdp, NoAudio};
use crate::media::Audio;

use super::build::{
    host_port, new_branch, new_tag, parse_via, response_to, sdp, Request, Response,
};
use super::guard::{source_key, AllowList, Notice, SourceLimits};
use super::header::{parse_name_addr, parse_uri, split_list};
use super::message::Message;
use super::transaction::{
    Dest, IncomingRequest, Reply, RequestFilter, Screen, ServerTx, Stack, StackOptions, StackStats,
};
use super::transport::{
    bind_udp_socket, route_source_ip, tls_acceptor, Capture, CapturedMessage, Direction, Flow,
    Inbound, Transport, TransportError, TransportOptions, TransportStats,
};
use super::uac::{Line, Refresher, RegisterReport, UacError};

/// Methods the endpoint implements (advertised in Allow).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";
/// Methods RFC 3261 and its extensions define that we know but don't
/// implement: 405 (with Allow) rather than 501.
const KNOWN_UNSUPPORTED: [&str; 7] = [
    "REGISTER",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "PUBLISH",
    "PRACK",
];

/// The headers that can reveal a caller's identity, in the order they are
/// reported.
pub const IDENTITY_HEADERS: [&str; 9] = [
    "From",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "Privacy",
    "Identity",
    "Diversion",
    "History-Info",
    "Contact",
];

/// What to do with a call for one of our numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Ring (100, 180) for exactly `hold`, measured from the INVITE's
    /// arrival to the final response leaving, then do `then`.
    Hold { hold: Duration, then: Then },
    /// Reject at once (no 180).
    Reject(u16),
    /// Play `audio` to the caller as early media, then reject with `then`
    /// (4xx-6xx); the call is never answered, so never billed. With a
    /// G.711 offer: `183 Session Progress` with an SDP answer (the offer's
    /// first PCMU or PCMA, its payload type number, `a=sendonly`, this
    /// call's RTP socket), the audio as RTP to the offer's address paced in
    /// real time, then `then` once the last packet has left. Without one
    /// (no SDP, another codec, encrypted media, a send-only offer): no
    /// 183, `then` at once. A CANCEL (or BYE on the early dialog) stops the
    /// stream and is answered 487, as during a hold. The 183 is sent
    /// unreliably: a caller that requires 100rel is refused 420 as for any
    /// other required extension (announcements are commonly sent as
    /// unreliable early media; see [`crate::media::sdp`] for addresses).
    Announce { audio: Audio, then: u16 },
}

/// What follows the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Send this final status (4xx-6xx).
    Reject(u16),
    /// Answer 200 with SDP, and send BYE ourselves if the caller hasn't
    /// hung up after `hangup_after`.
    Answer { hangup_after: Duration },
}

/// A call as it arrives, for the handler to decide on.
#[derive(Debug, Clone)]
pub struct IncomingCall {
    pub call_id: String,
    /// The configured endpoint number it matched.
    pub number: String,
    /// The user part dialled, as received (Request-URI, else To).
    pub dialled: String,
    pub request_uri: String,
    pub transport: Transport,
    pub source: SocketAddr,
    pub local: SocketAddr,
    pub received_at: SystemTime,
    /// The INVITE exactly as received.
    pub invite: Vec<u8>,
    pub message: Message,
    /// Identity-bearing headers, in order: (name as received, value).
    pub identity: Vec<(String, String)>,
    /// The RTP socket offered if the call is answered (a media-token check
    /// reads from it), and that an announcement is sent from.
    pub rtp: Arc<UdpSocket>,
    pub rtp_addr: SocketAddr,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// We sent this final 4xx-6xx.
    Rejected(u16),
    /// The caller cancelled (CANCEL, or BYE on the early dialog) before the
    /// final response; we sent 487.
    Cancelled,
    /// Answered; the caller sent BYE.
    AnsweredCallerHungUp,
    /// Answered; we sent BYE after the deadline (with its final status, if any).
    AnsweredEndpointHungUp { bye_status: Option<u16> },
    /// The handler panicked or a response could not be sent.
    Failed,
}

/// Everything the endpoint saw and did for one call.
#[derive(Debug, Clone)]
pub struct FinishedCall {
    pub call_id: String,
    pub number: String,
    pub dialled: String,
    pub request_uri: String,
    pub transport: Transport,
    pub source: SocketAddr,
    pub received_at: SystemTime,
    pub disposition: Disposition,
    /// When 180 left, after the INVITE arrived.
    pub ringing_after: Option<Duration>,
    /// The final response to the INVITE and when it left, after the INVITE
    /// arrived (the hold the caller experienced, on our side).
    pub final_status: Option<u16>,
    pub final_after: Option<Duration>,
    pub ack_received: bool,
    pub ended: CallEnd,
    pub remote_sdp: Option<Vec<u8>>,
    /// For [`Disposition::Announce`]: what was played, or why nothing was.
    pub early_media: Option<EarlyMedia>,
    /// Every message of the call, received and sent, in order, exactly as
    /// on the wire (retransmissions absorbed by the transaction excluded).
    pub messages: Vec<CapturedMessage>,
}

/// What an announcement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EarlyMedia {
    /// A 183 with our SDP answer went out and the audio was streamed.
    Played {
        codec: Codec,
        /// The payload type number used (the offer's).
        payload_type: u8,
        /// The caller's RTP address, from its offer.
        to: SocketAddr,
        /// Packets in the whole announcement.
        packets: usize,
        /// Packets handed to the socket (fewer when the caller hung up).
        sent: usize,
        /// Sends that failed locally.
        send_failures: usize,
        /// Whether every packet left before the final response.
        complete: bool,
    },
    /// Nothing was played (no 183), and why.
    NotPlayed(NoAudio),
}

/// An INVITE for a number that isn't ours (answered 404).
#[derive(Debug, Clone)]
pub struct StrayCall {
    pub call_id: String,
    pub dialled: String,
    pub request_uri: String,
    pub transport: Transport,
    pub source: SocketAddr,
    pub received_at: SystemTime,
    pub invite: Vec<u8>,
    pub identity: Vec<(String, String)>,
}

/// What the check layer plugs in.
pub trait CallHandler: Send + Sync + 'static {
    /// Decide quickly: this runs on the endpoint's request loop.
    fn on_invite(&self, call: &IncomingCall) -> Disposition;
    fn on_finished(&self, call: FinishedCall);
    fn on_stray(&self, _call: &StrayCall) {}
}

/// Limits and timings; the defaults suit a single PBX sending test calls.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// The stack's options; `stack.transport.limits` is each source's
    /// share of the endpoint (messages per second of every kind,
    /// connections, buffered bytes, transactions), and the allow-list comes
    /// from the configuration.
    pub stack: StackOptions,
    /// Calls in progress at once; more get 503.
    pub max_calls: usize,
    /// New INVITEs per second from one source (an IPv4 address or IPv6
    /// /64, whatever the port)...
    pub invite_rate: f64,
    /// ...and how many may come at once above that rate. Over the limit: a
    /// 503 with Retry-After once a second, silence otherwise. Requests that
    /// are not calls (OPTIONS, requests for dialogs that don't exist...)
    /// get five times both, and are dropped over them.
    pub invite_burst: f64,
    /// Sources tracked by the rate limiter (those that owe nothing are
    /// forgotten first).
    pub max_sources: usize,
    /// After a final response, how long to wait for the ACK before the call
    /// is reported.
    pub ack_wait: Duration,
    /// Announcements ([`Disposition::Announce`]) playing at once; a call
    /// beyond is rejected without audio. The audio goes wherever the
    /// caller's SDP says, so whoever can reach the endpoint could point
    /// it at someone else: this bounds what that can cost a third party
    /// (each stream is 64 kbit/s of payload for seconds).
    pub max_announcements: usize,
    /// ...and to any one IP address (a media relay carries several
    /// callers; one victim gets no more than this).
    pub max_announcements_per_address: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        let mut stack = StackOptions::default();
        // Exposed to whatever reaches its address: each source gets its
        // share, and no more.
        stack.transport.limits = Some(SourceLimits::default());
        EndpointOptions {
            stack,
            max_calls: 64,
            invite_rate: 10.0,
            invite_burst: 20.0,
            max_sources: 4096,
            ack_wait: Duration::from_secs(4),
            max_announcements: 16,
            max_announcements_per_address: 4,
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint.listen: {0}")]
    Listen(String),
    #[error("a tls: listener needs endpoint.tls_cert and endpoint.tls_key")]
    NoTlsFiles,
    #[error("endpoint.allow[{0}]: {1}")]
    Allow(usize, String),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Counters, to watch the endpoint and to prove it stays bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub transport: TransportStats,
    pub stack: StackStats,
    pub active_calls: usize,
    pub peak_calls: usize,
    pub calls: u64,
    pub stray: u64,
    pub rate_limited: u64,
    pub over_capacity: u64,
    pub handler_panics: u64,
    pub task_panics: u64,
    pub rate_limiter_sources: usize,
}

#[derive(Default)]
struct Counters {
    active: AtomicUsize,
    peak: AtomicUsize,
    calls: AtomicU64,
    stray: AtomicU64,
    rate_limited: AtomicU64,
    over_capacity: AtomicU64,
    handler_panics: AtomicU64,
    task_panics: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections here never leave the data half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running endpoint.
pub struct EndpointHandle {
    stack: Stack,
    addrs: Vec<(Transport, SocketAddr)>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    registration: Option<Registration>,
}

impl std::fmt::Debug for EndpointHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointHandle")
            .field("addrs", &self.addrs)
            .finish()
    }
}

impl EndpointHandle {
    /// Every bound listener (port 0 resolved).
    pub fn addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.addrs
    }

    /// The first listener of a transport.
    pub fn addr(&self, t: Transport) -> Option<SocketAddr> {
        self.addrs.iter().find(|(tt, _)| *tt == t).map(|(_, a)| *a)
    }

    /// Successful registration refreshes so far, when registered.
    pub fn registration_refreshes(&self) -> Option<tokio::sync::watch::Receiver<u32>> {
        self.registration
            .as_ref()
            .and_then(|r| r.refresher.as_ref())
            .map(|r| r.refreshes())
    }

    /// The outcome of registering at the provider, when configured.
    pub fn registration(&self) -> Option<&Result<RegisterReport, UacError>> {
        self.registration.as_ref().map(|r| &r.result)
    }

    pub fn stats(&self) -> EndpointStats {
        let c = &self.shared.counters;
        EndpointStats {
            transport: self.stack.transports().stats(),
            stack: self.stack.stats(),
            active_calls: c.active.load(Ordering::Relaxed),
            peak_calls: c.peak.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            stray: c.stray.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            over_capacity: c.over_capacity.load(Ordering::Relaxed),
            handler_panics: c.handler_panics.load(Ordering::Relaxed),
            task_panics: c.task_panics.load(Ordering::Relaxed),
            rate_limiter_sources: self.shared.limiter.invites.len()
                + self.shared.limiter.others.len(),
        }
    }

    /// Unregister (if registered) and stop everything. Calls in progress are
    /// abandoned without being reported.
    pub async fn shutdown(mut self) {
        if let Some(reg) = self.registration.take() {
            drop(reg.refresher);
            if let (Some(line), Ok(r)) = (reg.line, reg.result) {
                if r.registered() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), line.unregister()).await;
                }
            }
        }
        self.stack.shutdown();
        self.task.abort();
    }
}

/// What the endpoint listens on and answers for. The app's plan builds it
/// from `[endpoint]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Where to listen: each transport and address (port 0: a free port).
    pub listen: Vec<(Transport, SocketAddr)>,
    /// The numbers test calls are dialled to; calls to anything else are
    /// stray (404, not handed to the handler).
    pub numbers: Vec<EndpointNumber>,
    /// TLS certificate chain (PEM), needed for a TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), needed for a TLS listener.
    pub tls_key: Option<PathBuf>,
    /// Addresses or CIDR blocks answered at all; empty: every address.
    pub allow: Vec<String>,
    /// Register at a provider as this account, so calls to its DID arrive
    /// here (`register_expiry` is the lifetime asked for).
    pub register: Option<Account>,
}

/// One number the endpoint answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointNumber {
    /// As configured: what the handler is told a call was for.
    pub number: String,
    /// Every normalised form ([`normalise_number`]) a call to it may arrive
    /// with (the plan adds the national and international forms).
    pub keys: Vec<String>,
}

impl EndpointNumber {
    /// A number known only as written: a call must dial its digits (or its
    /// user name) exactly.
    pub fn as_written(number: &str) -> EndpointNumber {
        EndpointNumber {
            number: number.to_string(),
            keys: vec![normalise_number(number)],
        }
    }
}

/// The endpoint's listening sockets, bound before it starts: whoever wires
/// the service binds them first (a port in use is found before anything
/// runs, and port 0 can be asked for and read back).
#[derive(Debug)]
pub struct Listeners {
    /// The UDP sockets.
    udp: Vec<tokio::net::UdpSocket>,
    /// The stream listeners, each with its transport (TCP or TLS).
    streams: Vec<(Transport, tokio::net::TcpListener)>,
}

impl Listeners {
    /// Bind every address of `listen`, UDP sockets with the receive buffer
    /// of `opts`.
    pub async fn bind(
        listen: &[(Transport, SocketAddr)],
        opts: &TransportOptions,
    ) -> Result<Listeners, EndpointError> {
        let mut out = Listeners {
            udp: Vec::new(),
            streams: Vec::new(),
        };
        for &(transport, addr) in listen {
            let err = |source| {
                EndpointError::Transport(TransportError::Bind {
                    transport,
                    addr,
                    source,
                })
            };
            match transport {
                Transport::Udp => out
                    .udp
                    .push(bind_udp_socket(addr, opts.udp_receive_buffer).map_err(err)?),
                Transport::Tcp | Transport::Tls => out.streams.push((
                    transport,
                    tokio::net::TcpListener::bind(addr).await.map_err(err)?,
                )),
            }
        }
        Ok(out)
    }

    /// Every socket's transport and address (port 0 resolved).
    pub fn addrs(&self) -> Vec<(Transport, SocketAddr)> {
        let udp = self
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok().map(|a| (Transport::Udp, a)));
        let streams = self
            .streams
            .iter()
            .filter_map(|(t, l)| l.local_addr().ok().map(|a| (*t, a)));
        udp.chain(streams).collect()
    }
}

/// The endpoint's entry point.
pub struct Endpoint;

impl Endpoint {
    /// Bind every listener of `spec` and start answering, with default limits.
    pub async fn start(
        spec: &EndpointSpec,
        handler: Arc<dyn CallHandler>,
    ) -> Result<EndpointHandle, EndpointError> {
        Endpoint::start_with(spec, handler, EndpointOptions::default()).await
    }

    /// Bind every listener of `spec` and start answering.
    pub async fn start_with(
        spec: &EndpointSpec,
        handler: Arc<dyn CallHandler>,
        opts: EndpointOptions,
    ) -> Result<EndpointHandle, EndpointError> {
        let listeners = Listeners::bind(&spec.listen, &opts.stack.transport).await?;
        Endpoint::start_on(spec, listeners, handler, opts).await
    }

    /// Start answering on listeners already bound (`spec.listen` is not
    /// bound again).
    pub async fn start_on(
        spec: &EndpointSpec,
        listeners: Listeners,
        handler: Arc<dyn CallHandler>,
        opts: EndpointOptions,
    ) -> Result<EndpointHandle, EndpointError> {
        let counters = Arc::new(Counters::default());
        let calls: Calls = Arc::new(Mutex::new(HashMap::new()));
        let numbers: Numbers = Arc::new(
            spec.numbers
                .iter()
                .map(|n| (n.keys.clone(), n.number.clone()))
                .collect(),
        );
        let limiter = Arc::new(Limiter {
            invites: Buckets::new(opts.invite_rate, opts.invite_burst, opts.max_sources),
            others: Buckets::new(
                opts.invite_rate * 5.0,
                opts.invite_burst * 5.0,
                opts.max_sources,
            ),
            max_calls: opts.max_calls,
            counters: counters.clone(),
            calls: calls.clone(),
            numbers: numbers.clone(),
            handler: handler.clone(),
            notices: EndpointNotices::default(),
        });
        let mut stack_opts = opts.stack.clone();
        stack_opts.transport.allow =
            AllowList::parse(&spec.allow).map_err(|(i, e)| EndpointError::Allow(i, e))?;
        let (stack, requests) = Stack::new(stack_opts, Some(limiter.clone()));
        let mut addrs = Vec::new();
        for sock in listeners.udp {
            match stack.transports().add_udp(sock) {
                Ok(a) => addrs.push((Transport::Udp, a)),
                Err(e) => {
                    stack.shutdown();
                    return Err(EndpointError::Listen(format!("a UDP socket: {e}")));
                }
            }
        }
        for (t, listener) in listeners.streams {
            let acceptor = match t {
                Transport::Tls => {
                    let (Some(cert), Some(key)) = (&spec.tls_cert, &spec.tls_key) else {
                        stack.shutdown();
                        return Err(EndpointError::NoTlsFiles);
                    };
                    match tls_acceptor(cert, key) {
                        Ok(acc) => Some(acc),
                        Err(e) => {
                            stack.shutdown();
                            return Err(e.into());
                        }
                    }
                }
                Transport::Tcp | Transport::Udp => None,
            };
            match stack.transports().add_listener(listener, t, acceptor) {
                Ok(a) => addrs.push((t, a)),
                Err(e) => {
                    stack.shutdown();
                    return Err(EndpointError::Listen(format!("a {t} listener: {e}")));
                }
            }
        }
        let shared = Arc::new(Shared {
            announcing: Mutex::new(HashMap::new()),
            handler,
            numbers,
            calls,
            opts,
            counters,
            limiter,
            stack: stack.clone(),
        });
        let requests = Arc::new(tokio::sync::Mutex::new(requests));
        let task = {
            let shared = shared.clone();
            let counters = shared.counters.clone();
            super::transaction::spawn_restarting(
                move || serve(shared.clone(), requests.clone()),
                move || {
                    counters.task_panics.fetch_add(1, Ordering::Relaxed);
                },
            )
        };
        info!(?addrs, "endpoint listening");

        let registration = match &spec.register {
            None => None,
            Some(account) => Some(register_endpoint(account, &stack, &addrs).await),
        };
        Ok(EndpointHandle {
            stack,
            addrs,
            shared,
            task,
            registration,
        })
    }
}

async fn register_endpoint(
    account: &Account,
    stack: &Stack,
    addrs: &[(Transport, SocketAddr)],
) -> Registration {
    // Register the listener of the registration's transport, so calls to
    // the DID arrive where we listen.
    let contact = addrs
        .iter()
        .find(|(t, _)| *t == account.transport)
        .map(|(_, a)| *a)
        .map(|mut a| {
            if a.ip().is_unspecified() {
                if let Some(ip) = route_source_ip(a) {
                    a.set_ip(ip);
                }
            }
            a
        });
    let line = match Line::on_stack(account, stack.clone(), contact).await {
        Ok(l) => {
            // The provider's answers must reach us whatever endpoint.allow says.
            stack
                .transports()
                .guard()
                .also_allow(l.next_hop().addr.ip());
            l
        }
        Err(e) => {
            warn!(error = %e, "endpoint registration not possible");
            return Registration {
                line: None,
                result: Err(e),
                refresher: None,
            };
        }
    };
    let result = line.register().await;
    let refresher = match &result {
        Ok(r) if r.registered() => {
            info!(expires = ?r.expires, "endpoint registered");
            Some(line.spawn_refresher(r.expires.unwrap_or(account.register_expiry)))
        }
        Ok(r) => {
            warn!(status = r.status, "endpoint registration refused");
            None
        }
        Err(e) => {
            warn!(error = %crate::escape::control(&e.to_string()), "endpoint registration failed");
            None
        }
    };
    Registration {
        line: Some(line),
        result,
        refresher,
    }
}

/// The endpoint's own registration at a provider.
struct Registration {
    line: Option<Line>,
    result: Result<RegisterReport, UacError>,
    refresher: Option<Refresher>,
}

/// Digits of a number with `+`, visual separators and URI parameters
/// removed; a user part that isn't a number is compared case-insensitively.
pub fn normalise_number(s: &str) -> String {
    let s = s.split(';').next().unwrap_or(s).trim();
    let is_number = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || "+-.() ".contains(c))
        && s.chars().any(|c| c.is_ascii_digit());
    if is_number {
        s.chars().filter(char::is_ascii_digit).collect()
    } else {
        s.to_lowercase()
    }
}

/// The identity-bearing headers of a message: (name as received, value),
/// in message order.
pub fn identity_headers(m: &Message) -> Vec<(String, String)> {
    m.headers
        .iter()
        .filter(|h| {
            IDENTITY_HEADERS
                .iter()
                .any(|n| h.canonical.eq_ignore_ascii_case(n))
        })
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

/// Calls in progress by Call-ID, and where their requests go.
type Calls = Arc<Mutex<HashMap<String, mpsc::Sender<IncomingRequest>>>>;

/// The endpoint's numbers: for each, every normalised form a PBX may
/// deliver it in ([`EndpointNumber::keys`]), and the number as configured.
type Numbers = Arc<Vec<(Vec<String>, String)>>;

struct Shared {
    /// Announcements playing, by the address they go to.
    announcing: Mutex<HashMap<IpAddr, usize>>,
    handler: Arc<dyn CallHandler>,
    /// The endpoint's numbers: (every normalised form it may be delivered
    /// in, as configured).
    numbers: Numbers,
    calls: Calls,
    opts: EndpointOptions,
    counters: Arc<Counters>,
    limiter: Arc<Limiter>,
    stack: Stack,
}

/// Screens every new request before the stack keeps any state for it.
/// Only calls get transactions: a new INVITE for one of our numbers (rate
/// limited per source, within the call cap) and the requests of a call in
/// progress. Everything else gets one stateless answer (OPTIONS, stray
/// calls, requests for dialogs that don't exist, unsupported methods),
/// within its source's rate, or nothing: a scanner can't fill the
/// transaction table, and no request draws more than one response.
struct Limiter {
    /// New INVITEs per source.
    invites: Buckets,
    /// Out-of-dialog requests other than INVITE (OPTIONS, REGISTER...),
    /// and requests for calls that don't exist.
    others: Buckets,
    /// Calls in progress at once; more get 503.
    max_calls: usize,
    /// The endpoint's counters (rate-limited, stray, over capacity...).
    counters: Arc<Counters>,
    /// Calls in progress (shared with the request loop).
    calls: Calls,
    /// The endpoint's numbers: (every normalised form it may be delivered
    /// in, as configured).
    numbers: Numbers,
    /// Told of stray calls (the screen answers them).
    handler: Arc<dyn CallHandler>,
    /// Rate-limited log lines.
    notices: EndpointNotices,
}

/// Rate-limited log lines of the endpoint.
#[derive(Default)]
struct EndpointNotices {
    /// Stray calls answered 404.
    stray: Notice,
    /// Requests refused over a source's request rate.
    rate_limited: Notice,
    /// Calls refused at the call limit.
    over_capacity: Notice,
}

/// What a bucket says about one more request.
enum Take {
    Allowed,
    /// Over the limit. `tell` is true for the first refusal in
    /// [`TELL_BUSY_EVERY`] (worth a 503), false for the rest (silence).
    Over {
        tell: bool,
    },
}

/// A source over its INVITE rate gets at most one 503 this often: a busy
/// peer learns to retry, a flood draws next to nothing.
const TELL_BUSY_EVERY: Duration = Duration::from_secs(1);

/// Token buckets keyed by source (an IPv4 address or IPv6 /64: a new port
/// is not a new source).
struct Buckets {
    map: Mutex<HashMap<IpAddr, Bucket>>,
    rate: f64,
    burst: f64,
    max_sources: usize,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    /// When this source was last told it is over the rate.
    told: Option<Instant>,
}

impl Buckets {
    fn new(rate: f64, burst: f64, max_sources: usize) -> Buckets {
        Buckets {
            map: Mutex::new(HashMap::new()),
            rate: rate.max(0.001),
            burst: burst.max(1.0),
            max_sources: max_sources.max(1),
        }
    }

    fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Take a token for `src`'s source; None when the table is full of
    /// sources.
    fn take(&self, src: IpAddr) -> Option<Take> {
        let src = source_key(src);
        let now = Instant::now();
        let mut map = lock(&self.map);
        if map.len() >= self.max_sources && !map.contains_key(&src) {
            // Forget sources that have refilled completely: they owe nothing.
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            if map.len() >= self.max_sources {
                return None;
            }
        }
        let b = map.entry(src).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            told: None,
        });
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Some(Take::Allowed);
        }
        // Each refused request deepens the debt a little, so a source that
        // keeps flooding stays refused; bounded so it can recover.
        if b.tokens > -self.burst {
            b.tokens -= 0.1;
        }
        let tell = b
            .told
            .is_none_or(|t| now.saturating_duration_since(t) >= TELL_BUSY_EVERY);
        if tell {
            b.told = Some(now);
        }
        Some(Take::Over { tell })
    }
}

impl Limiter {
    /// Take from a bucket: Allowed, or counted and logged (rate-limited)
    /// and None.
    fn take(&self, buckets: &Buckets, src: SocketAddr) -> Option<Take> {
        let t = buckets.take(src.ip());
        if !matches!(t, Some(Take::Allowed)) {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.notices.rate_limited.hit(|n| {
                warn!(
                    refused = n,
                    latest = %source_key(src.ip()),
                    "refusing requests from sources over the endpoint's request rate"
                )
            });
        }
        t
    }

    /// Answer `reply` if the source is within its rate for requests that
    /// are not calls; else say nothing.
    fn other(&self, src: SocketAddr, reply: Reply) -> Screen {
        match self.take(&self.others, src) {
            Some(Take::Allowed) => Screen::Reply(reply),
            _ => Screen::Drop,
        }
    }

    /// A new INVITE: over the rate, one 503 a second at most (a peer that
    /// is merely busy learns to retry) and silence otherwise, as with the
    /// source table full (a flood must not turn us into a reflector).
    fn invite(&self, src: SocketAddr, allowed: Screen) -> Screen {
        match self.take(&self.invites, src) {
            Some(Take::Allowed) => allowed,
            Some(Take::Over { tell: true }) => {
                Screen::Reply(Reply::new(503).with("Retry-After", "1"))
            }
            _ => Screen::Drop,
        }
    }

    fn stray(&self, req: &Inbound) {
        let m = &req.message;
        self.counters.stray.fetch_add(1, Ordering::Relaxed);
        let source = req.flow.remote;
        // Not the number dialled nor the caller's: neither is the
        // organisation's, so neither is logged.
        self.notices.stray.hit(|n| {
            warn!(
                calls = n,
                latest = %source,
                "stray calls (to numbers that are not the endpoint's) answered 404"
            )
        });
        let stray = StrayCall {
            call_id: m.call_id().unwrap_or_default().to_string(),
            dialled: dialled_user(m).unwrap_or_default(),
            request_uri: m.request_uri().unwrap_or_default().to_string(),
            transport: req.flow.transport,
            source,
            received_at: req.wall,
            invite: req.bytes.clone(),
            identity: identity_headers(m),
        };
        if catch_unwind(AssertUnwindSafe(|| self.handler.on_stray(&stray))).is_err() {
            self.counters.handler_panics.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl RequestFilter for Limiter {
    fn screen(&self, req: &Inbound) -> Screen {
        let m = &req.message;
        let src = req.flow.remote;
        // Part of a call in progress (its ACK, CANCEL, BYE, re-INVITE...).
        if lock(&self.calls).contains_key(m.call_id().unwrap_or_default()) {
            return Screen::Accept;
        }
        let method = m.method().unwrap_or_default();
        if method == "ACK" {
            // Of nothing we know: never answered.
            return Screen::Drop;
        }
        let scheme = parse_uri(m.request_uri().unwrap_or_default()).scheme;
        if !["sip", "sips", "tel"].contains(&scheme.as_str()) {
            return self.other(src, Reply::new(416));
        }
        // Option tags we would have to understand (section 8.2.2.3; never
        // for CANCEL). We implement none.
        if method != "CANCEL" {
            let required: Vec<String> = m
                .headers_named("Require")
                .flat_map(|h| {
                    split_list(&h.value)
                        .into_iter()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            if !required.is_empty() {
                return self.other(
                    src,
                    Reply::new(420).with("Unsupported", required.join(", ")),
                );
            }
        }
        match method {
            "INVITE" if !has_to_tag(m) => match our_number(&self.numbers, m) {
                None => {
                    let screen = self.invite(src, Screen::Reply(Reply::new(404)));
                    if matches!(&screen, Screen::Reply(r) if r.code == 404) {
                        self.stray(req);
                    }
                    screen
                }
                Some(_) => {
                    if self.counters.active.load(Ordering::Relaxed) >= self.max_calls {
                        self.counters.over_capacity.fetch_add(1, Ordering::Relaxed);
                        self.notices.over_capacity.hit(|n| {
                            warn!(
                                refused = n,
                                max_calls = self.max_calls,
                                "calls refused 503: at the call limit"
                            )
                        });
                        return Screen::Reply(Reply::new(503).with("Retry-After", "5"));
                    }
                    self.invite(src, Screen::Accept)
                }
            },
            "OPTIONS" => self.other(
                src,
                Reply::new(200)
                    .with("Allow", ALLOW)
                    .with("Accept", "application/sdp")
                    .with("Accept-Language", "en"),
            ),
            // A request inside a dialog, or a CANCEL, for no call of ours:
            // one 481, never retransmitted.
            "INVITE" | "BYE" | "CANCEL" | "UPDATE" | "INFO" => self.other(src, Reply::new(481)),
            m if KNOWN_UNSUPPORTED.contains(&m) => {
                self.other(src, Reply::new(405).with("Allow", ALLOW))
            }
            _ => self.other(src, Reply::new(501).with("Allow", ALLOW)),
        }
    }
}

/// The configured number a new INVITE was dialled to, if it is one of ours.
fn our_number(numbers: &[(Vec<String>, String)], m: &Message) -> Option<String> {
    let wanted = normalise_number(&dialled_user(m).unwrap_or_default());
    numbers
        .iter()
        .find(|(keys, _)| !wanted.is_empty() && keys.contains(&wanted))
        .map(|(_, orig)| orig.clone())
}

fn has_to_tag(m: &Message) -> bool {
    m.header("To")
        .and_then(|t| parse_name_addr(t).ok())
        .is_some_and(|na| na.param("tag").is_some())
}

/// The endpoint's request loop: new calls, in-dialog routing, and the
/// out-of-dialog methods.
async fn serve(
    shared: Arc<Shared>,
    requests: Arc<tokio::sync::Mutex<mpsc::Receiver<IncomingRequest>>>,
) {
    let mut requests = requests.lock().await;
    let stack = shared.stack.clone();
    loop {
        let req = tokio::select! {
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = stack.wait_shutdown() => return,
        };
        let m = &req.inbound.message;
        let method = m.method().unwrap_or_default().to_string();
        let call_id = m.call_id().unwrap_or_default().to_string();
        let active = lock(&shared.calls).get(&call_id).cloned();
        if let Some(call) = active {
            if method == "INVITE" && !has_to_tag(m) {
                // Same Call-ID, new INVITE outside the dialog: a merged
                // request (RFC 3261 section 8.2.2.2).
                respond(&shared, req, 482, None).await;
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) =
                call.try_send(req)
            {
                respond(&shared, r, 503, None).await;
            }
            continue;
        }
        if method == "ACK" {
            continue;
        }
        let scheme = parse_uri(m.request_uri().unwrap_or_default()).scheme;
        if !["sip", "sips", "tel"].contains(&scheme.as_str()) {
            respond(&shared, req, 416, None).await;
            continue;
        }
        // Option tags we would have to understand (section 8.2.2.3; never
        // for CANCEL). We implement none.
        if method != "CANCEL" {
            let required: Vec<String> = m
                .headers_named("Require")
                .flat_map(|h| {
                    split_list(&h.value)
                        .into_iter()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            if !required.is_empty() {
                respond(
                    &shared,
                    req,
                    420,
                    Some(("Unsupported", required.join(", "))),
                )
                .await;
                continue;
            }
        }
        match method.as_str() {
            "INVITE" if !has_to_tag(m) => new_call(&shared, req).await,
            "ACK" => {}
            "OPTIONS" => {
                let mut r = response_to(m, 200, Some(&new_tag()));
                r.push("Allow", ALLOW);
                r.push("Accept", "application/sdp");
                r.push("Accept-Language", "en");
                r.push("Server", stack.user_agent());
                send(req.tx, r).await;
            }
            "INVITE" | "BYE" | "CANCEL" | "UPDATE" | "INFO" => {
                respond(&shared, req, 481, None).await
            }
            m if KNOWN_UNSUPPORTED.contains(&m) => respond(&shared, req, 405, None).await,
            _ => respond(&shared, req, 501, None).await,
        }
    }
}

async fn send(tx: Option<ServerTx>, r: Response) {
    if let Some(tx) = tx {
        if let Err(e) = tx.respond(r).await {
            debug!(error = %e, "response not sent");
        }
    }
}

async fn respond(shared: &Shared, req: IncomingRequest, code: u16, extra: Option<(&str, String)>) {
    let mut r = response_to(&req.inbound.message, code, Some(&new_tag()));
    if code == 405 || code == 501 {
        r.push("Allow", ALLOW);
    }
    if let Some((n, v)) = extra {
        r.push(n, v);
    }
    r.push("Server", shared.stack.user_agent());
    send(req.tx, r).await;
}

/// The user part a call was dialled to: the Request-URI's, else the To's.
fn dialled_user(m: &Message) -> Option<String> {
    let from_ruri = m.request_uri().map(parse_uri).and_then(|u| u.user);
    from_ruri.or_else(|| {
        m.header("To")
            .and_then(|t| parse_name_addr(t).ok())
            .and_then(|na| parse_uri(&na.uri).user)
    })
}

async fn new_call(shared: &Arc<Shared>, req: IncomingRequest) {
    let m = &req.inbound.message;
    let ruri = m.request_uri().unwrap_or_default().to_string();
    let dialled = dialled_user(m).unwrap_or_default();
    let call_id = m.call_id().unwrap_or_default().to_string();
    // The screen sent stray calls their 404 already; this is a backstop.
    let Some(number) = our_number(&shared.numbers, m) else {
        respond(shared, req, 404, None).await;
        return;
    };
    if let Some((code, extra)) = content_refusal(m) {
        info!(%call_id, code, "call refused: its body or Accept can't be served");
        respond(shared, req, code, extra).await;
        return;
    }
    if shared.counters.active.load(Ordering::Relaxed) >= shared.opts.max_calls {
        shared
            .counters
            .over_capacity
            .fetch_add(1, Ordering::Relaxed);
        respond(shared, req, 503, Some(("Retry-After", "5".into()))).await;
        return;
    }
    let flow = req.inbound.flow;
    let rtp_ip = flow.local.ip();
    let rtp = match UdpSocket::bind(SocketAddr::new(rtp_ip, 0)).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(call_id = %crate::escape::control(&call_id), error = %e, "can't bind an RTP socket");
            respond(shared, req, 500, None).await;
            return;
        }
    };
    let mut rtp_addr = rtp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(rtp_ip, 0));
    if rtp_addr.ip().is_unspecified() {
        if let Some(ip) = route_source_ip(flow.remote) {
            rtp_addr.set_ip(ip);
        }
    }
    let call = IncomingCall {
        call_id: call_id.clone(),
        number,
        dialled,
        request_uri: ruri,
        transport: flow.transport,
        source: flow.remote,
        local: flow.local,
        received_at: req.inbound.wall,
        invite: req.inbound.bytes.clone(),
        message: m.clone(),
        identity: identity_headers(m),
        rtp,
        rtp_addr,
    };
    let disposition = match catch_unwind(AssertUnwindSafe(|| shared.handler.on_invite(&call))) {
        Ok(d) => d,
        Err(_) => {
            shared
                .counters
                .handler_panics
                .fetch_add(1, Ordering::Relaxed);
            respond(shared, req, 500, None).await;
            return;
        }
    };
    let (tx, rx) = mpsc::channel(32);
    lock(&shared.calls).insert(call_id.clone(), tx);
    let active = shared.counters.active.fetch_add(1, Ordering::Relaxed) + 1;
    shared.counters.peak.fetch_max(active, Ordering::Relaxed);
    shared.counters.calls.fetch_add(1, Ordering::Relaxed);
    info!(call_id = %crate::escape::control(&call_id), number = %call.number, source = %call.source, transport = %call.transport, ?disposition, "call arrived");

    let shared2 = shared.clone();
    let span = info_span!("endpoint_call", call_id = %crate::escape::control(&call_id));
    let task = tokio::spawn(run_call(shared.clone(), req, call, disposition, rx).instrument(span));
    // Supervise: whatever happens to the call task, the call is removed
    // and counted, so a panic can't leak a slot.
    tokio::spawn(async move {
        if let Err(e) = task.await {
            if e.is_panic() {
                shared2.counters.task_panics.fetch_add(1, Ordering::Relaxed);
                warn!(call_id = %crate::escape::control(&call_id), "call task panicked");
            }
        }
        lock(&shared2.calls).remove(&call_id);
        shared2.counters.active.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Why an INVITE for one of our numbers can't be taken as offered (RFC 3261
/// section 8.2.3; RFC 4475 sections 3.3.6 and 3.3.15): a body that is
/// neither SDP nor multipart (415, saying what we accept), or an Accept
/// that rules out the SDP we would answer with (406).
fn content_refusal(m: &Message) -> Option<(u16, Option<(&'static str, String)>)> {
    let media = |v: &str| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    if !m.body.is_empty() {
        // A body without a Content-Type is read as SDP (RFC 2543 peers).
        let ct = m.header("Content-Type").map(media);
        if ct.is_some_and(|t| t != "application/sdp" && !t.starts_with("multipart/")) {
            return Some((415, Some(("Accept", "application/sdp".into()))));
        }
    }
    let mut accepts = m.headers_named("Accept").peekable();
    if accepts.peek().is_some() {
        // An empty Accept accepts nothing (RFC 3261 section 20.1).
        let sdp_ok = accepts.flat_map(|h| split_list(&h.value)).any(|r| {
            matches!(
                media(r).as_str(),
                "application/sdp" | "application/*" | "*/*"
            )
        });
        if !sdp_ok {
            return Some((406, None));
        }
    }
    None
}

/// State of one call on the endpoint.
struct CallCtx {
    shared: Arc<Shared>,
    invite: Inbound,
    stx: ServerTx,
    capture: Capture,
    to_tag: String,
    contact: String,
    final_status: Option<u16>,
    final_after: Option<Duration>,
    ack_received: bool,
}

impl CallCtx {
    async fn send(&mut self, mut r: Response) -> Option<Instant> {
        if r.code > 100 && r.code < 300 {
            r.push("Contact", self.contact.clone());
        }
        r.push("Server", self.shared.stack.user_agent());
        let bytes = r.to_bytes();
        let code = r.code;
        match self.stx.respond(r).await {
            Ok(Some(at)) => {
                self.capture
                    .record(Direction::Sent, self.stx.flow(), &bytes, at);
                if code >= 200 {
                    self.final_status = Some(code);
                    self.final_after = Some(at.saturating_duration_since(self.invite.at));
                }
                Some(at)
            }
            Ok(None) => None,
            Err(e) => {
                warn!(code, error = %e, "response not sent");
                None
            }
        }
    }

    fn response(&self, code: u16) -> Response {
        let mut r = response_to(&self.invite.message, code, Some(&self.to_tag));
        // Responses that create a dialog carry the Record-Route set back, so
        // the caller's ACK and BYE follow the proxies (section 12.1.1).
        if (101..300).contains(&code) {
            for h in self.invite.message.headers_named("Record-Route") {
                r.push("Record-Route", h.value.clone());
            }
        }
        r
    }

    /// Answer a request that isn't the INVITE (on its own transaction).
    async fn answer_other(&self, req: IncomingRequest, code: u16, body: Option<Vec<u8>>) {
        let Some(tx) = req.tx else { return };
        let mut r = response_to(&req.inbound.message, code, Some(&self.to_tag));
        if let Some(b) = body {
            r.push("Contact", self.contact.clone());
            r.push("Content-Type", "application/sdp");
            r.body = b;
        }
        r.push("Server", self.shared.stack.user_agent());
        let bytes = r.to_bytes();
        match tx.respond(r).await {
            Ok(Some(at)) => self.capture.record(Direction::Sent, tx.flow(), &bytes, at),
            Ok(None) => {}
            Err(e) => debug!(error = %e, "response not sent"),
        }
    }

    /// Wait (bounded) for the ACK of our final response, recording it and
    /// answering anything else that arrives meanwhile.
    async fn wait_ack(&mut self, rx: &mut mpsc::Receiver<IncomingRequest>, deadline: Instant) {
        while !self.ack_received {
            let req = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = sleep_until(deadline) => return,
            };
            self.capture.record_inbound(&req.inbound);
            if req.inbound.message.is_request("ACK") {
                self.ack_received = true;
                self.stx.acked();
            } else {
                self.answer_other(req, 481, None).await;
            }
        }
    }
}

async fn run_call(
    shared: Arc<Shared>,
    mut req: IncomingRequest,
    call: IncomingCall,
    disposition: Disposition,
    mut rx: mpsc::Receiver<IncomingRequest>,
) {
    let invite = req.inbound.clone();
    let capture = Capture::new(invite.at);
    capture.record_inbound(&invite);
    let Some(stx) = req.tx.take() else { return };
    let flow = stx.flow();
    let mut contact_addr = flow.local;
    if contact_addr.ip().is_unspecified() {
        if let Some(ip) = route_source_ip(flow.remote) {
            contact_addr.set_ip(ip);
        }
    }
    let tparam = match flow.transport {
        Transport::Udp => String::new(),
        t => format!(";transport={t}"),
    };
    let mut ctx = CallCtx {
        shared: shared.clone(),
        invite,
        stx,
        capture,
        to_tag: new_tag(),
        contact: format!("<sip:{}@{}{tparam}>", call.dialled, host_port(contact_addr)),
        final_status: None,
        final_after: None,
        ack_received: false,
    };
    let ack_wait = shared.opts.ack_wait;
    let remote_sdp = (!ctx.invite.message.body.is_empty()).then(|| ctx.invite.message.body.clone());
    let mut ringing_after = None;

    let r = ctx.response(100);
    ctx.send(r).await;

    let mut early_media = None;
    let ended = match &disposition {
        &Disposition::Reject(code) => {
            let r = ctx.response(code);
            ctx.send(r).await;
            ctx.wait_ack(&mut rx, after(Instant::now(), ack_wait)).await;
            CallEnd::Rejected(code)
        }
        Disposition::Announce { audio, then } => {
            let (ended, played) = announce(&mut ctx, &mut rx, &call, audio, *then).await;
            early_media = Some(played);
            ended
        }
        &Disposition::Hold { hold, then } => {
            let r = ctx.response(180);
            if let Some(at) = ctx.send(r).await {
                ringing_after = Some(at.saturating_duration_since(ctx.invite.at));
            }
            let deadline = after(ctx.invite.at, hold);
            if hold_until(&mut ctx, &mut rx, deadline).await {
                debug!("caller gave up during the hold");
                ctx.wait_ack(&mut rx, after(Instant::now(), ack_wait)).await;
                CallEnd::Cancelled
            } else {
                match then {
                    Then::Reject(code) => {
                        let r = ctx.response(code);
                        ctx.send(r).await;
                        ctx.wait_ack(&mut rx, after(Instant::now(), ack_wait)).await;
                        CallEnd::Rejected(code)
                    }
                    Then::Answer { hangup_after } => {
                        answer(&mut ctx, &mut rx, &call, hangup_after).await
                    }
                }
            }
        }
    };
    info!(status = ?ctx.final_status, after = ?ctx.final_after, ?ended, "call finished");
    let finished = FinishedCall {
        call_id: call.call_id.clone(),
        number: call.number.clone(),
        dialled: call.dialled.clone(),
        request_uri: call.request_uri.clone(),
        transport: call.transport,
        source: call.source,
        received_at: call.received_at,
        disposition,
        ringing_after,
        final_status: ctx.final_status,
        final_after: ctx.final_after,
        ack_received: ctx.ack_received,
        ended: if ctx.final_status.is_none() {
            CallEnd::Failed
        } else {
            ended
        },
        remote_sdp,
        early_media,
        messages: ctx.capture.messages(),
    };
    if catch_unwind(AssertUnwindSafe(|| shared.handler.on_finished(finished))).is_err() {
        shared
            .counters
            .handler_panics
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// `at + d`, saturating: a handler may ask for any duration, and an
/// overflowing deadline would panic.
fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86400))
}

/// Ring until the deadline. True if the caller cancelled first (we then
/// answered 487).
async fn hold_until(
    ctx: &mut CallCtx,
    rx: &mut mpsc::Receiver<IncomingRequest>,
    deadline: Instant,
) -> bool {
    ring_until(ctx, rx, sleep_until(deadline)).await
}

/// Keep the early dialog until `until` completes, answering what arrives
/// meanwhile. True if the caller cancelled first (we then answered 487).
async fn ring_until(
    ctx: &mut CallCtx,
    rx: &mut mpsc::Receiver<IncomingRequest>,
    until: impl Future<Output = ()>,
) -> bool {
    tokio::pin!(until);
    loop {
        let req = tokio::select! {
            _ = &mut until => return false,
            r = rx.recv() => match r {
                Some(r) => r,
                None => return false,
            },
        };
        ctx.capture.record_inbound(&req.inbound);
        let m = &req.inbound.message;
        match m.method().unwrap_or_default() {
            "CANCEL" => {
                // A CANCEL matches the INVITE by its top Via branch (9.2).
                let branch = |m: &Message| {
                    m.header("Via")
                        .and_then(parse_via)
                        .and_then(|v| v.branch().map(str::to_string))
                };
                if branch(m) == branch(&ctx.invite.message) {
                    ctx.answer_other(req, 200, None).await;
                    let r = ctx.response(487);
                    ctx.send(r).await;
                    return true;
                }
                ctx.answer_other(req, 481, None).await;
            }
            "BYE" => {
                // BYE on the early dialog ends it, too.
                ctx.answer_other(req, 200, None).await;
                let r = ctx.response(487);
                ctx.send(r).await;
                return true;
            }
            "ACK" => {}
            "UPDATE" | "INFO" | "OPTIONS" => ctx.answer_other(req, 200, None).await,
            _ => ctx.answer_other(req, 481, None).await,
        }
    }
}

/// Play `audio` as early media and reject with `then` (see
/// [`Disposition::Announce`]).
async fn announce(
    ctx: &mut CallCtx,
    rx: &mut mpsc::Receiver<IncomingRequest>,
    call: &IncomingCall,
    audio: &Audio,
    then: u16,
) -> (CallEnd, EarlyMedia) {
    let ack_wait = ctx.shared.opts.ack_wait;
    let m = &ctx.invite.message;
    let offer = crate::sip::body::sdp_offer(
        m.header("Content-Type"),
        m.header("Content-Encoding"),
        &m.body,
    )
    .ok_or(NoAudio::NoOffer)
    .and_then(|text| media_sdp::parse(&text).map_err(NoAudio::Unreadable))
    .and_then(|offer| {
        let target = offer.target()?;
        // The RTP socket was bound on the address the INVITE arrived at;
        // audio can only go to the same address family from it.
        if target.addr.is_ipv4() != call.rtp_addr.is_ipv4() {
            return Err(NoAudio::BadAddress(target.addr.ip()));
        }
        let slot = AnnouncementSlot::take(&ctx.shared, target.addr.ip()).ok_or(NoAudio::Busy)?;
        Ok((offer, target, slot))
    });
    let (offer, target, _slot) = match offer {
        Ok(o) => o,
        Err(why) => {
            info!(reason = %why, status = then, "no early media; rejected at once");
            let r = ctx.response(then);
            ctx.send(r).await;
            ctx.wait_ack(rx, after(Instant::now(), ack_wait)).await;
            return (CallEnd::Rejected(then), EarlyMedia::NotPlayed(why));
        }
    };
    let mut r = ctx.response(183);
    r.push("Allow", ALLOW);
    r.push("Content-Type", "application/sdp");
    r.body = offer.answer(&target, call.rtp_addr, rand::random::<u32>() as u64);
    ctx.send(r).await;

    let mut packetizer = Packetizer::new(target.payload_type);
    let packets = media_rtp::packets(audio.samples(), target.codec, &mut packetizer);
    let count = packets.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (socket, sent, failures) = (call.rtp.clone(), sent.clone(), failures.clone());
        let dest = target.addr;
        tokio::spawn(async move {
            let start = Instant::now();
            let f = crate::media::stream::send_paced(&socket, dest, &packets, start, &sent).await;
            failures.store(f, Ordering::Relaxed);
        })
    };
    info!(codec = %target.codec, to = %target.addr, packets = count, "playing the announcement as early media");
    let mut stream = AbortOnDrop(stream);
    let cancelled = ring_until(ctx, rx, async {
        // Finished or failed, the stream is over either way.
        let _ = (&mut stream.0).await;
    })
    .await;
    stream.0.abort();
    // abort() doesn't wait: a send in progress on another worker finishes
    // (and is counted) first. Wait for the task to be gone, so `sent` is
    // every packet that left and no packet leaves after it is read. It
    // holds no lock and stops at its next await, so this is immediate.
    if !stream.0.is_finished() {
        let _ = (&mut stream.0).await;
    }
    let sent = sent.load(Ordering::Relaxed);
    let played = EarlyMedia::Played {
        codec: target.codec,
        payload_type: target.payload_type,
        to: target.addr,
        packets: count,
        sent,
        send_failures: failures.load(Ordering::Relaxed),
        complete: !cancelled && sent + failures.load(Ordering::Relaxed) == count,
    };
    if cancelled {
        debug!(
            sent,
            packets = count,
            "caller hung up during the announcement"
        );
        ctx.wait_ack(rx, after(Instant::now(), ack_wait)).await;
        return (CallEnd::Cancelled, played);
    }
    let r = ctx.response(then);
    ctx.send(r).await;
    ctx.wait_ack(rx, after(Instant::now(), ack_wait)).await;
    (CallEnd::Rejected(then), played)
}

/// One of the announcements allowed to play at once (see
/// [`EndpointOptions::max_announcements`]); given back when dropped.
struct AnnouncementSlot {
    shared: Arc<Shared>,
    to: IpAddr,
}

impl AnnouncementSlot {
    fn take(shared: &Arc<Shared>, to: IpAddr) -> Option<AnnouncementSlot> {
        let mut playing = lock(&shared.announcing);
        let total: usize = playing.values().sum();
        let here = playing.get(&to).copied().unwrap_or(0);
        if total >= shared.opts.max_announcements
            || here >= shared.opts.max_announcements_per_address
        {
            return None;
        }
        *playing.entry(to).or_insert(0) += 1;
        Some(AnnouncementSlot {
            shared: shared.clone(),
            to,
        })
    }
}

impl Drop for AnnouncementSlot {
    fn drop(&mut self) {
        let mut playing = lock(&self.shared.announcing);
        if let Some(n) = playing.get_mut(&self.to) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                playing.remove(&self.to);
            }
        }
    }
}

/// A task that is stopped when its handle goes (the call task ending or
/// being aborted must not leave a stream playing).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answer, keep the call up until the caller's BYE or `hangup_after`, and
/// hang up ourselves in the latter case.
async fn answer(
    ctx: &mut CallCtx,
    rx: &mut mpsc::Receiver<IncomingRequest>,
    call: &IncomingCall,
    hangup_after: Duration,
) -> CallEnd {
    let session_id = rand::random::<u32>() as u64;
    let our_sdp = sdp(call.rtp_addr, session_id);
    let mut r = ctx.response(200);
    r.push("Allow", ALLOW);
    r.push("Content-Type", "application/sdp");
    r.body = our_sdp.clone();
    let Some(answered_at) = ctx.send(r).await else {
        return CallEnd::Failed;
    };
    let deadline = after(answered_at, hangup_after);
    loop {
        let req = tokio::select! {
            _ = sleep_until(deadline) => break,
            r = rx.recv() => match r { Some(r) => r, None => break },
        };
        ctx.capture.record_inbound(&req.inbound);
        let m = &req.inbound.message;
        match m.method().unwrap_or_default() {
            "ACK" => {
                if !ctx.ack_received {
                    ctx.ack_received = true;
                    ctx.stx.acked();
                }
            }
            "BYE" => {
                ctx.answer_other(req, 200, None).await;
                return CallEnd::AnsweredCallerHungUp;
            }
            // A re-INVITE or UPDATE with an offer gets our (unchanged) SDP.
            "INVITE" | "UPDATE" => {
                let body = (!req.inbound.message.body.is_empty()).then(|| our_sdp.clone());
                ctx.answer_other(req, 200, body).await;
            }
            "OPTIONS" | "INFO" => ctx.answer_other(req, 200, None).await,
            "CANCEL" => ctx.answer_other(req, 200, None).await,
            _ => ctx.answer_other(req, 501, None).await,
        }
    }
    let bye_status = send_bye(ctx, rx).await;
    CallEnd::AnsweredEndpointHungUp { bye_status }
}

/// BYE from the callee side: From/To swapped, the Record-Route set in
/// order, sent back the way the INVITE came (the caller's source address
/// reaches it through NAT or an SBC, where its Contact may not).
async fn send_bye(ctx: &mut CallCtx, rx: &mut mpsc::Receiver<IncomingRequest>) -> Option<u16> {
    let m = &ctx.invite.message;
    let target = m
        .header("Contact")
        .and_then(|c| split_list(c).first().map(|s| s.to_string()))
        .and_then(|c| parse_name_addr(&c).ok())
        .map(|na| na.uri)
        .unwrap_or_else(|| m.request_uri().unwrap_or_default().to_string());
    let mut flow: Flow = ctx.stx.flow();
    if flow.local.ip().is_unspecified() {
        if let Some(ip) = route_source_ip(flow.remote) {
            flow.local.set_ip(ip);
        }
    }
    let t = match flow.transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    };
    let mut bye = Request::new("BYE", &target);
    bye.push(
        "Via",
        format!(
            "SIP/2.0/{t} {};rport;branch={}",
            host_port(flow.local),
            new_branch()
        ),
    );
    bye.push("Max-Forwards", "70");
    for h in m.headers_named("Record-Route") {
        for r in split_list(&h.value) {
            bye.push("Route", r);
        }
    }
    let to = m.header("To").unwrap_or_default();
    bye.push("From", format!("{to};tag={}", ctx.to_tag));
    bye.push("To", m.header("From").unwrap_or_default());
    bye.push("Call-ID", m.call_id().unwrap_or_default());
    bye.push("CSeq", "1 BYE");
    bye.push("User-Agent", ctx.shared.stack.user_agent());
    // Over UDP the INVITE's source; over a stream its connection.
    let dest = Dest::Flow(ctx.stx.flow());
    let mut tx = match ctx
        .shared
        .stack
        .start_client(bye, &dest, Some(ctx.capture.clone()))
        .await
    {
        Ok(tx) => tx,
        Err(e) => {
            warn!(error = %e, "BYE not sent");
            return None;
        }
    };
    loop {
        tokio::select! {
            r = tx.recv() => match r {
                Some(Ok(resp)) => {
                    let code = resp.message.status().unwrap_or_default();
                    if code >= 200 {
                        return Some(code);
                    }
                }
                Some(Err(e)) => {
                    debug!(error = %e, "BYE failed");
                    return None;
                }
                None => return None,
            },
            r = rx.recv() => {
                let Some(req) = r else { continue };
                ctx.capture.record_inbound(&req.inbound);
                if req.inbound.message.is_request("ACK") {
                    ctx.ack_received = true;
                } else {
                    ctx.answer_other(req, 200, None).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_buckets() {
        let b = Buckets::new(1.0, 2.0, 1);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(b.take(a), Some(Take::Allowed)));
        assert!(matches!(b.take(a), Some(Take::Allowed)));
        assert!(matches!(b.take(a), Some(Take::Over { tell: true })));
        // Told once; then silence until a second has passed.
        assert!(matches!(b.take(a), Some(Take::Over { tell: false })));
        // A second source while the table is full and the first still owes.
        assert!(b.take("127.0.0.2".parse().unwrap()).is_none());
        // Debt is bounded by the burst.
        for _ in 0..1000 {
            b.take(a);
        }
        assert!(lock(&b.map)[&a].tokens >= -2.1);
    }

    #[test]
    fn number_normalisation() {
        assert_eq!(normalise_number("+61 3 7010-0142"), "61370100142");
        assert_eq!(normalise_number("+61370100142;user=phone"), "61370100142");
        assert_eq!(normalise_number("(03) 7010.0142"), "0370100142");
        assert_eq!(normalise_number("CidGuard"), "cidguard");
        assert_eq!(normalise_number(""), "");
    }

    #[test]
    fn identity_headers_in_order() {
        let m = crate::sip::parse(
            b"INVITE sip:1@x SIP/2.0\r\nf: <sip:a@b>;tag=1\r\nPrivacy: id\r\nVia: x\r\nP-Asserted-Identity: <tel:+1>\r\nm: <sip:c@d>\r\n\r\n",
        )
        .unwrap();
        let ids = identity_headers(&m);
        let names: Vec<&str> = ids.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["f", "Privacy", "P-Asserted-Identity", "m"]);
    }
}
