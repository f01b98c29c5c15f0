//! Transactions (RFC 3261 section 17, with the RFC 6026 fixes for 2xx).
//!
//! The [`Stack`] sits on the transport layer. One dispatcher task reads
//! every inbound message: responses go to the client transaction with the
//! same top-Via branch and CSeq method; requests either hit an existing
//! server transaction (a retransmission, absorbed by resending the last
//! response) or start a new one and go up to the transaction user through
//! a bounded channel, as an [`IncomingRequest`].
//!
//! Each transaction runs its timers in its own small task, on tokio time
//! (so tests could pause it). Over UDP requests and final responses are
//! retransmitted (timers A, E, G); over TCP and TLS they are not, and the
//! linger timers (D, I, J, K) are zero.
//!
//! Requests that can't be answered (no Via, From, To, Call-ID or CSeq) are
//! dropped; requests that can but are malformed get a stateless 400;
//! responses that match no transaction are dropped, never answered. A
//! [`RequestFilter`] screens every new request (and every ACK of no
//! transaction) before any state is kept for it: accept, drop, or answer
//! once without state ([`Screen::Reply`]), the same answer going again to
//! a retransmission of that request. Each source may hold only so many
//! transactions (its share in the transport's guard).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, trace, warn};

use super::build::{parse_via, response_to, Request, Response};
use super::guard::{Held, Notice};
use super::header::parse_name_addr;
use super::message::{Message, StartLine};
use super::transport::{
    Capture, Direction, Flow, Inbound, InboundRx, Target, Transport, TransportError,
    TransportOptions, Transports,
};

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate (500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: timers B, F, H, J and the 2xx retransmission limit.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Why a transaction ended without a final response.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    #[error("timed out after {after:?} waiting for a final response to {method}")]
    Timeout { method: String, after: Duration },
    #[error("transport error on {method}: {source}")]
    Transport {
        method: String,
        source: TransportError,
    },
    #[error("the request has no Via branch, so it can't start a transaction")]
    NoBranch,
    #[error("the transaction layer is shut down")]
    Shutdown,
}

/// What the transaction user decides about a new request before any state
/// is kept for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Start a server transaction and hand the request up.
    Accept,
    /// Answer without keeping state: one response to this request (and the
    /// same one again to each retransmission of it that arrives), none of
    /// our own retransmissions, no transaction. For everything that is not
    /// part of a call: a scanner's requests, requests for dialogs that
    /// don't exist, refusals.
    Reply(Reply),
    /// Say nothing.
    Drop,
}

/// A stateless response: its status and the headers to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn new(code: u16) -> Reply {
        Reply {
            code,
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// A hook run on every new request (not retransmissions), ACKs that match
/// no transaction included, before any state is kept for it.
pub trait RequestFilter: Send + Sync {
    fn screen(&self, request: &Inbound) -> Screen;
}

/// Configuration of a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub timers: Timers,
    pub transport: TransportOptions,
    /// Most server transactions alive at once; more get a stateless 503.
    pub max_server_transactions: usize,
    /// New requests queued for the transaction user.
    pub request_queue: usize,
    /// Sent as User-Agent / Server.
    pub user_agent: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            timers: Timers::default(),
            transport: TransportOptions::default(),
            max_server_transactions: 4096,
            request_queue: 256,
            user_agent: format!("cidguard/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Counters of the transaction layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    pub server_transactions: usize,
    pub peak_server_transactions: usize,
    pub client_transactions: usize,
    /// Requests answered statelessly (malformed, filtered, over a limit).
    pub stateless_responses: u64,
    /// Requests too broken to answer, dropped.
    pub unanswerable: u64,
    /// Responses that matched no client transaction.
    pub stray_responses: u64,
    /// Retransmitted requests absorbed by a server transaction.
    pub retransmissions_absorbed: u64,
    /// Times the dispatcher panicked on a message and was restarted.
    pub dispatcher_panics: u64,
}

#[derive(Default)]
struct Counters {
    peak_server: AtomicUsize,
    stateless: AtomicU64,
    unanswerable: AtomicU64,
    stray_responses: AtomicU64,
    absorbed: AtomicU64,
    panics: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    /// A request with the same branch on another transport is not a
    /// retransmission, and its responses must not go to the first flow.
    transport: Transport,
    branch: String,
    sent_by: String,
    /// ACK maps to INVITE: it belongs to the INVITE transaction.
    method: String,
}

enum ServerEvent {
    /// The request was received again.
    Retransmission,
    Ack,
    /// The transaction user sent a final response.
    Final(u16),
    /// The transaction user saw the ACK for its 2xx.
    Acked,
    /// The transaction user dropped the handle without a final response.
    Abandoned,
}

/// A request for the transaction user.
#[derive(Debug)]
pub struct IncomingRequest {
    pub inbound: Inbound,
    /// The server transaction to answer on; None for ACK, which has none.
    pub tx: Option<ServerTx>,
}

/// The SIP stack: transport plus transaction layer. Cheap to clone.
#[derive(Clone)]
pub struct Stack {
    inner: Arc<StackInner>,
}

struct StackInner {
    transports: Transports,
    opts: StackOptions,
    clients: Mutex<HashMap<ClientKey, mpsc::Sender<Inbound>>>,
    servers: Mutex<HashMap<ServerKey, mpsc::Sender<ServerEvent>>>,
    requests: mpsc::Sender<IncomingRequest>,
    filter: Option<Arc<dyn RequestFilter>>,
    /// Requests answered without state, for their retransmissions.
    recent: Mutex<Recent>,
    counters: Counters,
    /// Rate-limited log lines.
    notices: StackNotices,
    shutdown: watch::Sender<bool>,
}

#[derive(Default)]
struct StackNotices {
    /// The server transaction table is full.
    table_full: Notice,
}

/// Most stateless answers remembered for retransmissions.
const RECENT_REPLIES: usize = 2048;

/// The last [`RECENT_REPLIES`] stateless answers, each for 64*T1 (how long
/// a client retransmits), oldest forgotten first.
#[derive(Default)]
struct Recent {
    /// Each answer's bytes and when it was sent.
    map: HashMap<ServerKey, (Vec<u8>, Instant)>,
    /// Keys in the order they came, oldest first.
    order: VecDeque<ServerKey>,
}

impl Recent {
    const KEEP: Duration = Duration::from_secs(32);

    fn get(&mut self, key: &ServerKey, now: Instant) -> Option<Vec<u8>> {
        match self.map.get(key) {
            Some((bytes, at)) if now.saturating_duration_since(*at) < Self::KEEP => {
                Some(bytes.clone())
            }
            _ => None,
        }
    }

    fn put(&mut self, key: ServerKey, bytes: Vec<u8>, now: Instant) {
        while self.order.len() >= RECENT_REPLIES {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        if self.map.insert(key.clone(), (bytes, now)).is_none() {
            self.order.push_back(key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a panic in a
    // holder doesn't make the data unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Stack {
    /// A stack with no sockets yet (add them through [`Stack::transports`]),
    /// and the receiver of new requests.
    pub fn new(
        opts: StackOptions,
        filter: Option<Arc<dyn RequestFilter>>,
    ) -> (Stack, mpsc::Receiver<IncomingRequest>) {
        let (transports, inbound) = Transports::new(opts.transport.clone());
        let (req_tx, req_rx) = mpsc::channel(opts.request_queue.max(1));
        let (shutdown, _) = watch::channel(false);
        let stack = Stack {
            inner: Arc::new(StackInner {
                transports,
                opts,
                clients: Mutex::new(HashMap::new()),
                servers: Mutex::new(HashMap::new()),
                requests: req_tx,
                filter,
                recent: Mutex::new(Recent::default()),
                counters: Counters::default(),
                notices: StackNotices::default(),
                shutdown,
            }),
        };
        let s = stack.clone();
        let inbound = Arc::new(tokio::sync::Mutex::new(inbound));
        // The supervisor runs until the dispatcher returns (at shutdown).
        spawn_restarting(
            move || {
                let s = s.clone();
                let inbound = inbound.clone();
                async move { s.dispatch(inbound).await }
            },
            {
                let s = stack.clone();
                move || {
                    s.inner.counters.panics.fetch_add(1, Ordering::Relaxed);
                }
            },
        );
        (stack, req_rx)
    }

    pub fn transports(&self) -> &Transports {
        &self.inner.transports
    }

    pub fn timers(&self) -> Timers {
        self.inner.opts.timers
    }

    pub fn user_agent(&self) -> &str {
        &self.inner.opts.user_agent
    }

    /// Stop the dispatcher, every transaction and every socket.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.transports.shutdown();
        lock(&self.inner.clients).clear();
        lock(&self.inner.servers).clear();
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Resolves when [`Stack::shutdown`] has been called.
    pub async fn wait_shutdown(&self) {
        let mut rx = self.stopped();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    pub fn stats(&self) -> StackStats {
        let c = &self.inner.counters;
        StackStats {
            server_transactions: lock(&self.inner.servers).len(),
            peak_server_transactions: c.peak_server.load(Ordering::Relaxed),
            client_transactions: lock(&self.inner.clients).len(),
            stateless_responses: c.stateless.load(Ordering::Relaxed),
            unanswerable: c.unanswerable.load(Ordering::Relaxed),
            stray_responses: c.stray_responses.load(Ordering::Relaxed),
            retransmissions_absorbed: c.absorbed.load(Ordering::Relaxed),
            dispatcher_panics: c.panics.load(Ordering::Relaxed),
        }
    }

    async fn dispatch(&self, inbound: Arc<tokio::sync::Mutex<InboundRx>>) {
        let mut inbound = inbound.lock().await;
        let mut stop = self.stopped();
        loop {
            let m = tokio::select! {
                m = inbound.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            match m.message.start {
                StartLine::Response { .. } => self.route_response(m),
                StartLine::Request { .. } => self.route_request(m).await,
            }
        }
    }

    fn route_response(&self, m: Inbound) {
        let branch = m
            .message
            .header("Via")
            .and_then(parse_via)
            .and_then(|v| v.branch().map(str::to_string));
        let method = m.message.cseq().map(|(_, meth)| meth.to_string());
        let (Some(branch), Some(method)) = (branch, method) else {
            self.inner
                .counters
                .unanswerable
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let key = ClientKey { branch, method };
        let tx = lock(&self.inner.clients).get(&key).cloned();
        match tx {
            Some(tx) => {
                // A full queue means a storm of retransmitted responses;
                // the transaction has already seen one of them.
                let _ = tx.try_send(m);
            }
            None => {
                self.inner
                    .counters
                    .stray_responses
                    .fetch_add(1, Ordering::Relaxed);
                trace!(branch = %key.branch, "response matches no transaction");
            }
        }
    }

    async fn route_request(&self, mut m: Inbound) {
        let msg = &m.message;
        let Some(via) = msg.header("Via").and_then(parse_via) else {
            self.inner
                .counters
                .unanswerable
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Without a CSeq the sender couldn't match an answer; a request
        // missing From, To or Call-ID is answered 400 below (RFC 4475
        // section 3.3.1).
        if msg.header("CSeq").is_none() {
            self.inner
                .counters
                .unanswerable
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        stamp_received(&mut m);
        let method = m.message.method().unwrap_or_default().to_string();
        if let Some(code) = malformed(&m.message) {
            debug!(method = %crate::escape::control(&method), code, remote = %m.flow.remote, "malformed request");
            if method != "ACK" {
                self.respond_stateless(&m, code, None).await;
            }
            return;
        }
        let call_id = m.message.call_id().unwrap_or_default().to_string();
        let key = server_key(&m.message, &via, &method, m.flow.transport);
        let existing = lock(&self.inner.servers).get(&key).cloned();
        if method == "ACK" {
            match existing {
                Some(tx) => {
                    let _ = tx.try_send(ServerEvent::Ack);
                }
                // An ACK of no transaction of ours goes up only if the
                // transaction user wants it (the ACK of a call's 2xx);
                // one for nothing is dropped here, never answered.
                None => match &self.inner.filter {
                    Some(f) if f.screen(&m) != Screen::Accept => return,
                    _ => {}
                },
            }
            // ACKs go up: for a 2xx they belong to the dialog, and the
            // endpoint keeps every ACK as evidence.
            let _ = self.inner.requests.try_send(IncomingRequest {
                inbound: m,
                tx: None,
            });
            return;
        }
        if let Some(tx) = existing {
            self.inner.counters.absorbed.fetch_add(1, Ordering::Relaxed);
            let _ = tx.try_send(ServerEvent::Retransmission);
            return;
        }
        // A retransmission of a request answered without state gets the
        // same answer again, and the transaction user doesn't see it twice.
        let again = lock(&self.inner.recent).get(&key, Instant::now());
        if let Some(bytes) = again {
            self.inner.counters.absorbed.fetch_add(1, Ordering::Relaxed);
            self.send_stateless(&m, &bytes).await;
            return;
        }
        if let Some(f) = &self.inner.filter {
            match f.screen(&m) {
                Screen::Accept => {}
                Screen::Drop => return,
                Screen::Reply(reply) => {
                    let bytes = self.stateless_response(&m, &reply);
                    self.send_stateless(&m, &bytes).await;
                    lock(&self.inner.recent).put(key, bytes, Instant::now());
                    return;
                }
            }
        }
        // Each source may hold only so many transactions.
        let Some(held) = self
            .inner
            .transports
            .guard()
            .transaction(m.flow.remote.ip())
        else {
            return;
        };
        if lock(&self.inner.servers).len() >= self.inner.opts.max_server_transactions {
            self.inner.notices.table_full.hit(|n| {
                warn!(
                    refused = n,
                    "server transaction limit reached; answering 503"
                )
            });
            self.respond_stateless(&m, 503, Some(5)).await;
            return;
        }
        let tx = self.new_server_tx(key, &m, &method, &call_id, held);
        if let Err(mpsc::error::TrySendError::Full(req))
        | Err(mpsc::error::TrySendError::Closed(req)) =
            self.inner.requests.try_send(IncomingRequest {
                inbound: m,
                tx: Some(tx),
            })
        {
            if let Some(tx) = req.tx {
                let mut r = response_to(&req.inbound.message, 503, None);
                r.push("Retry-After", "5");
                let _ = tx.respond(r).await;
            }
        }
    }

    fn new_server_tx(
        &self,
        key: ServerKey,
        m: &Inbound,
        method: &str,
        call_id: &str,
        held: Held,
    ) -> ServerTx {
        let (ev_tx, ev_rx) = mpsc::channel(16);
        {
            let mut servers = lock(&self.inner.servers);
            servers.insert(key.clone(), ev_tx.clone());
            self.inner
                .counters
                .peak_server
                .fetch_max(servers.len(), Ordering::Relaxed);
        }
        let shared = Arc::new(Mutex::new(ServerState {
            last: None,
            final_code: None,
        }));
        let flow = response_flow(m);
        let task = ServerTask {
            stack: self.clone(),
            key,
            invite: method == "INVITE",
            flow,
            shared: shared.clone(),
            request: m.message.clone(),
            call_id: call_id.to_string(),
            _held: held,
        };
        tokio::spawn(task.run(ev_rx));
        ServerTx {
            stack: self.clone(),
            flow,
            shared,
            events: ev_tx,
            method: method.to_string(),
        }
    }

    /// Answer without keeping state (malformed or refused requests).
    pub async fn respond_stateless(&self, req: &Inbound, code: u16, retry_after: Option<u32>) {
        let mut reply = Reply::new(code);
        if let Some(s) = retry_after {
            reply = reply.with("Retry-After", s.to_string());
        }
        let bytes = self.stateless_response(req, &reply);
        self.send_stateless(req, &bytes).await;
    }

    fn stateless_response(&self, req: &Inbound, reply: &Reply) -> Vec<u8> {
        let mut r = response_to(&req.message, reply.code, Some(&super::build::new_tag()));
        for (n, v) in &reply.headers {
            r.push(n, v.clone());
        }
        r.push("Server", self.user_agent());
        r.to_bytes()
    }

    async fn send_stateless(&self, req: &Inbound, bytes: &[u8]) {
        self.inner
            .counters
            .stateless
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self
            .inner
            .transports
            .send_on(&response_flow(req), bytes)
            .await
        {
            debug!(error = %e, "stateless response not sent");
        }
    }

    /// Send a request outside any transaction (the ACK for a 2xx).
    pub async fn send_request(
        &self,
        req: &Request,
        dest: &Dest,
        capture: Option<&Capture>,
    ) -> Result<Flow, TransportError> {
        let bytes = req.to_bytes();
        let flow = self.send_to(dest, &bytes).await?;
        if let Some(c) = capture {
            c.record(Direction::Sent, flow, &bytes, Instant::now());
        }
        Ok(flow)
    }

    async fn send_to(&self, dest: &Dest, bytes: &[u8]) -> Result<Flow, TransportError> {
        match dest {
            Dest::Target(t) => self.inner.transports.send(t, bytes).await,
            Dest::Flow(f) => self.inner.transports.send_on(f, bytes).await.map(|_| *f),
        }
    }

    /// Start a client transaction for `req`, which must carry its Via with
    /// a fresh branch. The first transmission has happened when this returns.
    pub async fn start_client(
        &self,
        req: Request,
        dest: &Dest,
        capture: Option<Capture>,
    ) -> Result<ClientTx, TxError> {
        if *self.inner.shutdown.borrow() {
            return Err(TxError::Shutdown);
        }
        let branch = req.branch().ok_or(TxError::NoBranch)?;
        let key = ClientKey {
            branch,
            method: req.method.clone(),
        };
        let (resp_tx, resp_rx) = mpsc::channel(16);
        lock(&self.inner.clients).insert(key.clone(), resp_tx);
        let bytes = req.to_bytes();
        let sent_at = Instant::now();
        let flow = match self.send_to(dest, &bytes).await {
            Ok(f) => f,
            Err(source) => {
                lock(&self.inner.clients).remove(&key);
                return Err(TxError::Transport {
                    method: req.method.clone(),
                    source,
                });
            }
        };
        if let Some(c) = &capture {
            c.record(Direction::Sent, flow, &bytes, sent_at);
        }
        let (ev_tx, ev_rx) = mpsc::channel(16);
        let ack_2xx = Arc::new(Mutex::new(None));
        let task = ClientTask {
            stack: self.clone(),
            key,
            flow,
            request: req.clone(),
            bytes,
            capture,
            to_tu: ev_tx,
            ack_2xx: ack_2xx.clone(),
        };
        tokio::spawn(task.run(resp_rx, sent_at));
        Ok(ClientTx {
            events: ev_rx,
            flow,
            request: req,
            sent_at,
            ack_2xx,
        })
    }
}

/// Run a long-lived loop, starting it again if it panics (losing only the
/// message it was handling), and stopping when it returns. Loops share
/// their receiver through a mutex so a restarted one picks it up again.
pub fn spawn_restarting<M, F>(
    make: M,
    on_panic: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    M: Fn() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Err(e) if e.is_panic() => {
                    warn!("a SIP loop panicked; restarting it");
                    on_panic();
                }
                _ => return,
            }
        }
    })
}

/// Where a request goes: resolved target, or an existing flow (in-dialog
/// requests back over the connection a dialog came in on).
#[derive(Debug, Clone)]
pub enum Dest {
    Target(Target),
    Flow(Flow),
}

/// Add `received` and fill `rport` on the top Via (RFC 3261 section
/// 18.2.1, RFC 3581), so responses built from the request carry them.
fn stamp_received(m: &mut Inbound) {
    let src = m.flow.remote;
    let Some(h) = m.message.headers.iter_mut().find(|h| h.canonical == "Via") else {
        return;
    };
    // Only the first Via of a comma-joined value is ours to stamp.
    let list = super::header::split_list(&h.value);
    let Some(first) = list.first().map(|s| s.to_string()) else {
        return;
    };
    let rest: Vec<String> = list[1..].iter().map(|s| s.to_string()).collect();
    let Some(via) = parse_via(&first) else {
        return;
    };
    let ip = src.ip().to_string();
    let wants_rport = via.param("rport").is_some();
    if !wants_rport && via.host == ip {
        return;
    }
    let mut out = String::new();
    for part in first.split(';') {
        let name = part.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") || name.eq_ignore_ascii_case("received") {
            continue;
        }
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(part);
    }
    out.push_str(&format!(";received={ip}"));
    if wants_rport {
        out.push_str(&format!(";rport={}", src.port()));
    }
    let mut value = out;
    for r in rest {
        value.push_str(", ");
        value.push_str(&r);
    }
    h.value = value;
}

/// Why a request that can be answered must get an error instead of being
/// processed, as the status code to send. The rules live with the parser
/// ([`super::message::check_request`]), which names the reason.
fn malformed(m: &Message) -> Option<u16> {
    super::message::check_request(m).err().map(|e| e.status())
}

fn server_key(
    m: &Message,
    via: &super::build::Via,
    method: &str,
    transport: Transport,
) -> ServerKey {
    let method = if method == "ACK" { "INVITE" } else { method }.to_string();
    match via.branch() {
        Some(b) if b.starts_with(super::build::BRANCH_COOKIE) => ServerKey {
            transport,
            branch: b.to_string(),
            sent_by: via.sent_by().to_ascii_lowercase(),
            method,
        },
        // RFC 2543 peers: no unique branch, so match on what identifies the
        // request instead (section 17.2.3's fallback, simplified).
        _ => {
            let from_tag = m
                .header("From")
                .and_then(|f| parse_name_addr(f).ok())
                .and_then(|na| na.param("tag").flatten().map(str::to_string))
                .unwrap_or_default();
            let cseq = m.cseq().map(|(n, _)| n).unwrap_or_default();
            ServerKey {
                transport,
                branch: format!(
                    "2543:{}:{}:{}:{}",
                    m.call_id().unwrap_or_default(),
                    cseq,
                    from_tag,
                    via.branch().unwrap_or_default()
                ),
                sent_by: via.sent_by().to_ascii_lowercase(),
                method,
            }
        }
    }
}

/// Where responses to a request go: back where it came from. For TCP/TLS
/// that is its connection (RFC 3261 section 18.2.2); for UDP the source
/// address and port, as RFC 3581 does when asked and as most SBCs do
/// always: behind NAT the Via port is often unreachable, and answering only
/// to the source means a forged Via can't aim our responses elsewhere.
pub fn response_flow(req: &Inbound) -> Flow {
    req.flow
}

struct ServerState {
    last: Option<Vec<u8>>,
    final_code: Option<u16>,
}

/// A server transaction, for the transaction user to respond on.
/// Dropping it without a final response makes the transaction answer 500.
#[derive(Debug)]
pub struct ServerTx {
    stack: Stack,
    flow: Flow,
    shared: Arc<Mutex<ServerState>>,
    events: mpsc::Sender<ServerEvent>,
    method: String,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stack")
    }
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("final_code", &self.final_code)
            .finish()
    }
}

impl std::fmt::Debug for ServerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerEvent")
    }
}

impl ServerTx {
    /// Where this transaction's responses go.
    pub fn flow(&self) -> Flow {
        self.flow
    }

    /// The final status sent, if any.
    pub fn final_code(&self) -> Option<u16> {
        lock(&self.shared).final_code
    }

    /// Send a response now, and return when it went out. A second final
    /// response is refused (returns Ok(None)).
    pub async fn respond(&self, resp: Response) -> Result<Option<Instant>, TxError> {
        let code = resp.code;
        let bytes = resp.to_bytes();
        {
            let mut s = lock(&self.shared);
            if s.final_code.is_some() {
                return Ok(None);
            }
            if code >= 200 {
                s.final_code = Some(code);
            }
            s.last = Some(bytes.clone());
        }
        let res = self.stack.transports().send_on(&self.flow, &bytes).await;
        let at = Instant::now();
        if code >= 200 {
            let _ = self.events.try_send(ServerEvent::Final(code));
        }
        res.map(|_| Some(at)).map_err(|source| TxError::Transport {
            method: self.method.clone(),
            source,
        })
    }

    /// The ACK for our 2xx arrived: stop retransmitting it.
    pub fn acked(&self) {
        let _ = self.events.try_send(ServerEvent::Acked);
    }
}

impl Drop for ServerTx {
    fn drop(&mut self) {
        if lock(&self.shared).final_code.is_none() {
            let _ = self.events.try_send(ServerEvent::Abandoned);
        }
    }
}

struct ServerTask {
    stack: Stack,
    key: ServerKey,
    invite: bool,
    flow: Flow,
    shared: Arc<Mutex<ServerState>>,
    request: Message,
    call_id: String,
    /// The source's transaction share, given back when the task ends.
    _held: Held,
}

/// Longest a server transaction waits for its user's final response before
/// answering 500 itself: a stuck user must not pin state forever.
const SERVER_TX_MAX_PROCEEDING: Duration = Duration::from_secs(30 * 60);

impl ServerTask {
    async fn run(self, mut events: mpsc::Receiver<ServerEvent>) {
        let t = self.stack.timers();
        let reliable = self.flow.transport != Transport::Udp;
        let mut stop = self.stack.stopped();
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        // Timer for the automatic 100 Trying (INVITE, RFC 3261 17.2.1).
        let mut trying_at = if self.invite {
            Instant::now() + Duration::from_millis(200)
        } else {
            far
        };
        let mut retransmit_at = far;
        let mut interval = t.t1;
        let mut end_at = Instant::now() + SERVER_TX_MAX_PROCEEDING;
        let mut final_code: Option<u16> = None;
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        ServerEvent::Retransmission => {
                            trace!(call_id = %self.call_id, "request retransmission absorbed");
                            self.resend().await;
                        }
                        ServerEvent::Ack => {
                            if self.invite && final_code.is_some_and(|c| c >= 300) {
                                // Confirmed: linger timer I to absorb ACKs.
                                retransmit_at = far;
                                let linger = if reliable { Duration::ZERO } else { t.t4 };
                                end_at = end_at.min(Instant::now() + linger);
                            }
                        }
                        ServerEvent::Acked => {
                            retransmit_at = far;
                            end_at = Instant::now() + if reliable { Duration::ZERO } else { t.t4 };
                        }
                        ServerEvent::Final(code) => {
                            trying_at = far;
                            final_code = Some(code);
                            if self.invite {
                                // Timer G for non-2xx; for 2xx the same
                                // schedule is the UAS core's (section 13.3.1.4).
                                if !reliable {
                                    interval = t.t1;
                                    retransmit_at = Instant::now() + interval;
                                }
                                // Timer H (non-2xx) / RFC 6026 timer L (2xx).
                                end_at = Instant::now() + t.timeout();
                            } else {
                                // Timer J.
                                end_at = Instant::now() + if reliable { Duration::ZERO } else { t.timeout() };
                            }
                        }
                        ServerEvent::Abandoned => {
                            if final_code.is_none() {
                                warn!(call_id = %crate::escape::control(&self.call_id), "request left unanswered; sending 500");
                                let r = response_to(&self.request, 500, Some(&super::build::new_tag()));
                                {
                                    let mut s = lock(&self.shared);
                                    s.final_code = Some(500);
                                    s.last = Some(r.to_bytes());
                                }
                                self.resend().await;
                                final_code = Some(500);
                                end_at = Instant::now() + if reliable { Duration::ZERO } else { t.timeout() };
                                if self.invite && !reliable {
                                    retransmit_at = Instant::now() + interval;
                                }
                            }
                        }
                    }
                }
                _ = sleep_until(trying_at) => {
                    trying_at = far;
                    let unanswered = lock(&self.shared).last.is_none();
                    if unanswered {
                        let r = response_to(&self.request, 100, None);
                        lock(&self.shared).last = Some(r.to_bytes());
                        self.resend().await;
                    }
                }
                _ = sleep_until(retransmit_at) => {
                    // Timer G: retransmit the final response until the ACK.
                    self.resend().await;
                    interval = (interval * 2).min(t.t2);
                    retransmit_at = Instant::now() + interval;
                }
                _ = sleep_until(end_at) => {
                    if final_code.is_none() {
                        // The user is stuck: answer so the client stops waiting.
                        let r = response_to(&self.request, 500, Some(&super::build::new_tag()));
                        let _ = self.stack.transports().send_on(&self.flow, &r.to_bytes()).await;
                    } else if retransmit_at != far {
                        debug!(call_id = %crate::escape::control(&self.call_id), "no ACK for the final response");
                    }
                    break;
                }
                _ = stop.changed() => break,
            }
        }
        lock(&self.stack.inner.servers).remove(&self.key);
    }

    async fn resend(&self) {
        let last = lock(&self.shared).last.clone();
        if let Some(b) = last {
            if let Err(e) = self.stack.transports().send_on(&self.flow, &b).await {
                debug!(call_id = %crate::escape::control(&self.call_id), error = %e, "response retransmission failed");
            }
        }
    }
}

/// A client transaction, as its user sees it.
#[derive(Debug)]
pub struct ClientTx {
    events: mpsc::Receiver<Result<Inbound, TxError>>,
    flow: Flow,
    request: Request,
    sent_at: Instant,
    ack_2xx: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ClientTx {
    /// The next response, provisional or final, or why none will come.
    /// Retransmitted final responses are absorbed, not repeated here; None
    /// once the transaction has ended.
    pub async fn recv(&mut self) -> Option<Result<Inbound, TxError>> {
        self.events.recv().await
    }

    /// The flow the request went out on.
    pub fn flow(&self) -> Flow {
        self.flow
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// When the request was first sent.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }

    /// The ACK the user sent for the 2xx: resent by the transaction if the
    /// 2xx is retransmitted (RFC 6026 Accepted state).
    pub fn set_2xx_ack(&self, bytes: Vec<u8>) {
        *lock(&self.ack_2xx) = Some(bytes);
    }
}

struct ClientTask {
    stack: Stack,
    key: ClientKey,
    flow: Flow,
    request: Request,
    bytes: Vec<u8>,
    capture: Option<Capture>,
    to_tu: mpsc::Sender<Result<Inbound, TxError>>,
    ack_2xx: Arc<Mutex<Option<Vec<u8>>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// Calling (INVITE) or Trying (non-INVITE).
    Trying,
    Proceeding,
    Completed,
    /// INVITE after a 2xx (RFC 6026).
    Accepted,
}

impl ClientTask {
    async fn run(self, mut responses: mpsc::Receiver<Inbound>, sent_at: Instant) {
        let t = self.stack.timers();
        let invite = self.request.method == "INVITE";
        let reliable = self.flow.transport != Transport::Udp;
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let mut stop = self.stack.stopped();
        let mut state = ClientState::Trying;
        let mut interval = t.t1;
        let mut retransmit_at = if reliable { far } else { sent_at + t.t1 };
        // Timer B / F.
        let mut timeout_at = sent_at + t.timeout();
        let mut end_at = far;
        let mut ack: Option<Vec<u8>> = None;
        loop {
            tokio::select! {
                r = responses.recv() => {
                    let Some(r) = r else { break };
                    let Some(code) = r.message.status() else { continue };
                    if let Some(c) = &self.capture {
                        c.record_inbound(&r);
                    }
                    match (state, code) {
                        (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                            state = ClientState::Proceeding;
                            if invite {
                                retransmit_at = far;
                                timeout_at = far;
                            } else if !reliable {
                                // Timer E continues at T2 once provisional.
                                interval = t.t2;
                                retransmit_at = retransmit_at.min(Instant::now() + t.t2);
                            }
                            let _ = self.to_tu.send(Ok(r)).await;
                        }
                        (ClientState::Trying | ClientState::Proceeding, 200..=299) if invite => {
                            state = ClientState::Accepted;
                            retransmit_at = far;
                            timeout_at = far;
                            // Timer M.
                            end_at = Instant::now() + t.timeout();
                            let _ = self.to_tu.send(Ok(r)).await;
                        }
                        (ClientState::Trying | ClientState::Proceeding, _) => {
                            state = ClientState::Completed;
                            retransmit_at = far;
                            timeout_at = far;
                            if invite {
                                let a = ack_for(&self.request, &r.message).to_bytes();
                                self.send(&a).await;
                                ack = Some(a);
                                // Timer D.
                                end_at = Instant::now() + if reliable { Duration::ZERO } else { Duration::from_secs(32) };
                            } else {
                                // Timer K.
                                end_at = Instant::now() + if reliable { Duration::ZERO } else { t.t4 };
                            }
                            let _ = self.to_tu.send(Ok(r)).await;
                        }
                        (ClientState::Completed, 300..=699) if invite => {
                            if let Some(a) = &ack {
                                self.send(a).await;
                            }
                        }
                        (ClientState::Accepted, 200..=299) => {
                            let a = lock(&self.ack_2xx).clone();
                            if let Some(a) = a {
                                self.send(&a).await;
                            }
                        }
                        _ => {}
                    }
                }
                _ = sleep_until(retransmit_at) => {
                    self.send(&self.bytes.clone()).await;
                    interval = if invite { interval * 2 } else { (interval * 2).min(t.t2) };
                    retransmit_at = Instant::now() + interval;
                }
                _ = sleep_until(timeout_at) => {
                    let _ = self.to_tu.send(Err(TxError::Timeout {
                        method: self.request.method.clone(),
                        after: t.timeout(),
                    })).await;
                    break;
                }
                _ = sleep_until(end_at) => break,
                _ = stop.changed() => {
                    let _ = self.to_tu.try_send(Err(TxError::Shutdown));
                    break;
                }
            }
        }
        lock(&self.stack.inner.clients).remove(&self.key);
    }

    async fn send(&self, bytes: &[u8]) {
        match self.stack.transports().send_on(&self.flow, bytes).await {
            Ok(()) => {
                if let Some(c) = &self.capture {
                    c.record(Direction::Sent, self.flow, bytes, Instant::now());
                }
            }
            Err(e) => {
                debug!(method = %self.request.method, error = %e, "send failed");
                let _ = self.to_tu.try_send(Err(TxError::Transport {
                    method: self.request.method.clone(),
                    source: e,
                }));
            }
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 section 17.1.1.3): same
/// Request-URI, top Via, From, Call-ID and Route as the INVITE, To from
/// the response, CSeq number of the INVITE.
pub fn ack_for(invite: &Request, resp: &Message) -> Request {
    let mut a = Request::new("ACK", &invite.uri);
    if let Some(v) = invite.get("Via") {
        a.push("Via", v);
    }
    a.push("Max-Forwards", "70");
    for (n, v) in &invite.headers {
        if n.eq_ignore_ascii_case("From") {
            a.push("From", v.clone());
        }
    }
    a.push(
        "To",
        resp.header("To")
            .or_else(|| invite.get("To"))
            .unwrap_or_default(),
    );
    if let Some(c) = invite.get("Call-ID") {
        a.push("Call-ID", c);
    }
    a.push("CSeq", format!("{} ACK", invite.cseq().unwrap_or(1)));
    for (n, v) in &invite.headers {
        if n.eq_ignore_ascii_case("Route") {
            a.push("Route", v.clone());
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    fn inbound(raw: &str, remote: &str) -> Inbound {
        Inbound {
            bytes: raw.as_bytes().to_vec(),
            message: parse(raw.as_bytes()).unwrap(),
            flow: Flow {
                transport: Transport::Udp,
                local: "127.0.0.1:5060".parse().unwrap(),
                remote: remote.parse().unwrap(),
            },
            at: Instant::now(),
            wall: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn rport_and_received_are_stamped() {
        let mut m = inbound(
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1\r\n\r\n",
            "192.0.2.7:40000",
        );
        stamp_received(&mut m);
        assert_eq!(
            m.message.header("Via"),
            Some("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=192.0.2.7;rport=40000")
        );
        assert_eq!(response_flow(&m).remote, "192.0.2.7:40000".parse().unwrap());
        let m = inbound(
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK1\r\n\r\n",
            "192.0.2.7:40000",
        );
        assert_eq!(response_flow(&m).remote, "192.0.2.7:40000".parse().unwrap());
    }

    #[test]
    fn malformed_requests() {
        let base = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\n";
        let ok =
            format!("OPTIONS sip:x SIP/2.0\r\n{base}CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(malformed(&parse(ok.as_bytes()).unwrap()), None);
        let bad_cseq = format!("OPTIONS sip:x SIP/2.0\r\n{base}CSeq: 1 INVITE\r\n\r\n");
        assert_eq!(malformed(&parse(bad_cseq.as_bytes()).unwrap()), Some(400));
        let two_cl = format!(
            "OPTIONS sip:x SIP/2.0\r\n{base}CSeq: 1 OPTIONS\r\nl: 0\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(malformed(&parse(two_cl.as_bytes()).unwrap()), Some(400));
        let v3 = format!("OPTIONS sip:x SIP/7.0\r\n{base}CSeq: 1 OPTIONS\r\n\r\n");
        assert_eq!(malformed(&parse(v3.as_bytes()).unwrap()), Some(505));
        let neg =
            format!("OPTIONS sip:x SIP/2.0\r\n{base}CSeq: 1 OPTIONS\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(malformed(&parse(neg.as_bytes()).unwrap()), Some(400));
    }

    #[test]
    fn stateless_answers_remembered_are_bounded() {
        let now = Instant::now();
        let mut r = Recent::default();
        let key = |i: usize| ServerKey {
            transport: Transport::Udp,
            branch: format!("z9hG4bK{i}"),
            sent_by: "h".into(),
            method: "OPTIONS".into(),
        };
        for i in 0..RECENT_REPLIES + 100 {
            r.put(key(i), vec![1], now);
        }
        assert_eq!(r.map.len(), RECENT_REPLIES);
        assert_eq!(r.order.len(), RECENT_REPLIES);
        // The oldest went first.
        assert!(r.get(&key(0), now).is_none());
        assert_eq!(r.get(&key(RECENT_REPLIES + 99), now), Some(vec![1]));
        // And each is kept only as long as a client retransmits.
        assert!(r
            .get(&key(RECENT_REPLIES + 99), now + Recent::KEEP)
            .is_none());
    }

    #[test]
    fn ack_for_non_2xx() {
        let mut inv = Request::new("INVITE", "sip:1@x");
        inv.push("Via", "SIP/2.0/UDP a:1;branch=z9hG4bKq");
        inv.push("Route", "<sip:p;lr>");
        inv.push("From", "<sip:a@x>;tag=f");
        inv.push("To", "<sip:1@x>");
        inv.push("Call-ID", "c");
        inv.push("CSeq", "2 INVITE");
        let resp = parse(b"SIP/2.0 486 Busy Here\r\nTo: <sip:1@x>;tag=t\r\n\r\n").unwrap();
        let a = ack_for(&inv, &resp);
        assert_eq!(a.get("CSeq"), Some("2 ACK"));
        assert_eq!(a.get("To"), Some("<sip:1@x>;tag=t"));
        assert_eq!(a.branch().as_deref(), Some("z9hG4bKq"));
        assert_eq!(a.get("Route"), Some("<sip:p;lr>"));
    }
}
