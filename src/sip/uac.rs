//! The line: cidguard acting as one of the organisation's phones.
//!
//! A [`Line`] registers with the PBX as the line's account and places test
//! calls through it. It answers Digest challenges (401 and 407, on REGISTER,
//! INVITE and BYE), cancels a call nobody answers within the ring timeout,
//! ACKs and hangs up a call that is answered (after an optional action while
//! it is up, such as sending a media token), and reports what happened with
//! timings and the raw bytes of every message.
//!
//! Credentials never reach a log or a report's text: only the captured
//! wire messages hold the Authorization header, as sent.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use super::account::Account;
use super::build::{
    host_port, new_branch, new_call_id, new_tag, parse_via, response_to, sdp_offer, Request,
};
use super::digest::{self, Challenge, DigestError};
use super::header::{parse_name_addr, parse_uri, split_list};
use super::transaction::{ClientTx, Dest, IncomingRequest, Stack, StackOptions, TxError};
use super::transport::{
    tls_client_config, Capture, CapturedMessage, Flow, Inbound, Target, TlsVerify, Transport,
    TransportError,
};
use super::Message;
use crate::media::rtp::Codec;

/// Methods a line accepts (advertised in Allow).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY";
/// Most authentication rounds for one request, stale nonces included.
const MAX_AUTH_ROUNDS: u32 = 4;

/// What went wrong, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum UacError {
    #[error("can't read the SIP password of {username}: {reason}")]
    Password { username: String, reason: String },
    #[error("{what} {value:?} is not a usable SIP address")]
    BadAddress { what: &'static str, value: String },
    #[error("can't resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("transport error connecting to {to}: {source}")]
    Transport { to: String, source: TransportError },
    #[error("can't bind an RTP socket on {ip}: {source}")]
    Rtp { ip: IpAddr, source: io::Error },
    #[error("{method} to {to}: {source}")]
    Transaction {
        method: String,
        to: String,
        source: Box<TxError>,
    },
    #[error("timed out waiting for {waiting_for} after {after:?}")]
    Timeout {
        waiting_for: &'static str,
        after: Duration,
    },
    #[error("{method} rejected after authenticating: {status} {reason}")]
    AuthRejected {
        method: String,
        status: u16,
        reason: String,
        /// The Server or User-Agent of the rejecting party.
        server: Option<String>,
    },
    #[error("can't answer the {status} challenge to {method}: {source}")]
    Challenge {
        method: String,
        status: u16,
        source: DigestError,
    },
    #[error("the {method} transaction ended without a final response")]
    NoFinalResponse { method: String },
    #[error("can't call {target:?}: {why}")]
    Target {
        /// The target as given.
        target: String,
        /// What is wrong with the Request-URI it makes.
        why: String,
    },
}

/// How a line reaches the network, beyond its account.
#[derive(Debug, Clone)]
pub struct LineOptions {
    /// Local address for the UDP socket (port 0 picks one).
    pub bind: SocketAddr,
    pub stack: StackOptions,
    /// How TLS servers are verified; the system's roots when None.
    pub tls: Option<TlsVerify>,
    /// Advertise this address in Contact instead of the learned one.
    pub contact: Option<SocketAddr>,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            stack: StackOptions::default(),
            tls: None,
            contact: None,
        }
    }
}

/// The outcome of a REGISTER (or of an un-REGISTER).
#[derive(Debug, Clone)]
pub struct RegisterReport {
    pub status: u16,
    pub reason: String,
    /// The registrar's Server (or User-Agent) header.
    pub server: Option<String>,
    /// The lifetime the registrar granted (zero after unregistering).
    pub expires: Option<Duration>,
    pub call_id: String,
    /// REGISTERs sent (authentication rounds included).
    pub attempts: u32,
    /// The Contact we registered.
    pub contact: String,
    pub elapsed: Duration,
    pub messages: Vec<CapturedMessage>,
}

impl RegisterReport {
    pub fn registered(&self) -> bool {
        (200..300).contains(&self.status) && self.expires.is_some_and(|e| !e.is_zero())
    }
}

/// Per-call choices.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Overrides the account's ring timeout.
    pub ring_timeout: Option<Duration>,
    /// The RTP socket to offer; one is bound on the SIP address when None.
    pub rtp: Option<Arc<UdpSocket>>,
    /// Headers added to the INVITE (say, `Privacy: id` for an experiment).
    pub extra_headers: Vec<(String, String)>,
    /// The From to present (a name-addr, without tag) instead of the
    /// account's: a caller that shows a chosen identity or none.
    pub from: Option<String>,
    /// The G.711 codec to offer (with telephone-event); PCMU when None.
    pub codec: Option<Codec>,
}

/// What an action running while the call is up gets.
#[derive(Debug, Clone)]
pub struct Answered {
    pub call_id: String,
    pub rtp: Arc<UdpSocket>,
    pub local_rtp: SocketAddr,
    /// Where the far end wants media (from its SDP).
    pub remote_rtp: Option<SocketAddr>,
    pub remote_sdp: Vec<u8>,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// 2xx: answered (and hung up).
    Answered,
    /// A final 3xx-6xx response before the ring timeout.
    Rejected,
    /// Nothing final within the ring timeout; we sent CANCEL.
    Cancelled,
}

/// Who hung up an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// We sent BYE.
    Local,
    /// The far end sent BYE.
    Remote,
}

/// Everything the check layer needs about one placed call.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub call_id: String,
    /// The Request-URI dialled.
    pub target: String,
    pub outcome: CallOutcome,
    /// Final response to the (last) INVITE.
    pub status: u16,
    pub reason: String,
    /// INVITEs sent with distinct CSeqs (authentication rounds included).
    pub attempts: u32,
    /// From the first INVITE of the final (authenticated) attempt.
    pub first_provisional: Option<Duration>,
    pub final_response: Duration,
    /// The same, from the very first INVITE.
    pub first_provisional_since_first: Option<Duration>,
    pub final_response_since_first: Duration,
    /// Server or User-Agent of the final response.
    pub server: Option<String>,
    pub remote_sdp: Option<Vec<u8>>,
    pub local_rtp: SocketAddr,
    pub cancel_status: Option<u16>,
    pub bye_status: Option<u16>,
    pub hangup: Option<Hangup>,
    /// Every message sent and received for this call, in order.
    pub messages: Vec<CapturedMessage>,
}

/// The password, kept out of Debug output.
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A host and optional port from a configured SIP address.
#[derive(Debug, Clone)]
struct HostPort {
    host: String,
    port: Option<u16>,
}

impl HostPort {
    fn parse(what: &'static str, s: &str) -> Result<HostPort, UacError> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        let with_scheme = if lower.starts_with("sip:") || lower.starts_with("sips:") {
            s.to_string()
        } else {
            format!("sip:{s}")
        };
        let u = parse_uri(&with_scheme);
        if u.host.is_empty() || u.host.contains(['/', ' ', '@']) {
            return Err(UacError::BadAddress {
                what,
                value: s.to_string(),
            });
        }
        Ok(HostPort {
            host: u.host,
            port: u.port,
        })
    }

    /// For a URI: IPv6 in brackets, port when one was given.
    fn uri_part(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{h}:{p}"),
            None => h,
        }
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, UacError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| UacError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    // IPv4 first: most PBXs in the field listen there.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| UacError::NoAddress {
            host: host.to_string(),
        })
}

fn default_port(t: Transport) -> u16 {
    if t == Transport::Tls {
        5061
    } else {
        5060
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across every critical section.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct RegState {
    call_id: String,
    from_tag: String,
    cseq: u32,
}

type Dialogs = Arc<Mutex<HashMap<String, mpsc::Sender<IncomingRequest>>>>;

/// The registrar as it goes in a Request-URI (`host[:port]`, IPv6 in
/// brackets), read from `account.registrar` the way a line reads it.
pub fn registrar_uri_part(registrar: &str) -> Result<String, UacError> {
    HostPort::parse("registrar", registrar).map(|h| h.uri_part())
}

/// A line: one SIP account on the PBX. Cheap to clone.
#[derive(Clone)]
pub struct Line {
    inner: Arc<LineInner>,
}

struct LineInner {
    stack: Stack,
    owns_stack: bool,
    username: String,
    auth_username: String,
    password: Password,
    from_user: String,
    domain: String,
    registrar: HostPort,
    register_expiry: Duration,
    ring_timeout: Duration,
    /// Where every request goes first (outbound proxy or registrar).
    next_hop: Target,
    /// `Route` for the outbound proxy.
    proxy_route: Option<String>,
    contact_override: Option<SocketAddr>,
    /// Our address as the registrar saw it (received/rport).
    public: Mutex<Option<SocketAddr>>,
    digest: Mutex<digest::Session>,
    reg: Mutex<RegState>,
    dialogs: Dialogs,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("username", &self.inner.username)
            .field("next_hop", &self.inner.next_hop)
            .field("password", &self.inner.password)
            .finish()
    }
}

impl Drop for LineInner {
    fn drop(&mut self) {
        if self.owns_stack {
            self.stack.shutdown();
        }
    }
}

impl Line {
    /// A line with its own stack: binds a UDP socket at `opts.bind` and
    /// resolves the PBX (or outbound proxy).
    pub async fn new(account: &Account, opts: LineOptions) -> Result<Line, UacError> {
        let mut stack_opts = opts.stack.clone();
        if account.transport == Transport::Tls || opts.tls.is_some() {
            let verify = match opts.tls.clone() {
                Some(v) => v,
                None => TlsVerify::system().map_err(|source| UacError::Transport {
                    to: account.registrar.clone(),
                    source,
                })?,
            };
            stack_opts.transport.tls_client = Some(tls_client_config(verify).map_err(
                |source| UacError::Transport {
                    to: account.registrar.clone(),
                    source,
                },
            )?);
        }
        let (stack, requests) = Stack::new(stack_opts, None);
        if let Err(source) = stack.transports().bind_udp(opts.bind).await {
            stack.shutdown();
            return Err(UacError::Transport {
                to: opts.bind.to_string(),
                source,
            });
        }
        let line = match Line::build(account, stack.clone(), true, opts.contact).await {
            Ok(l) => l,
            Err(e) => {
                stack.shutdown();
                return Err(e);
            }
        };
        tokio::spawn(serve_requests(stack, requests, line.inner.dialogs.clone()));
        Ok(line)
    }

    /// A line on an existing stack (the endpoint registering itself): the
    /// stack's owner handles incoming requests, and `contact` is where it
    /// listens.
    pub async fn on_stack(
        account: &Account,
        stack: Stack,
        contact: Option<SocketAddr>,
    ) -> Result<Line, UacError> {
        Line::build(account, stack, false, contact).await
    }

    async fn build(
        account: &Account,
        stack: Stack,
        owns_stack: bool,
        contact: Option<SocketAddr>,
    ) -> Result<Line, UacError> {
        let password = account
            .password
            .reveal()
            .map_err(|reason| UacError::Password {
                username: account.username.clone(),
                reason,
            })?;
        let registrar = HostPort::parse("registrar", &account.registrar)?;
        let hop = match &account.outbound_proxy {
            Some(p) => HostPort::parse("outbound proxy", p)?,
            None => registrar.clone(),
        };
        let addr = resolve(
            &hop.host,
            hop.port.unwrap_or(default_port(account.transport)),
        )
        .await?;
        let next_hop = Target {
            transport: account.transport,
            addr,
            server_name: (hop.host.parse::<IpAddr>().is_err()).then(|| hop.host.clone()),
        };
        let proxy_route = account.outbound_proxy.as_ref().map(|_| {
            let t = match account.transport {
                Transport::Udp => String::new(),
                t => format!(";transport={t}"),
            };
            format!("<sip:{}{t};lr>", hop.uri_part())
        });
        let domain = account
            .from_domain
            .clone()
            .unwrap_or_else(|| registrar.host.clone());
        Ok(Line {
            inner: Arc::new(LineInner {
                stack,
                owns_stack,
                username: account.username.clone(),
                auth_username: account
                    .auth_username
                    .clone()
                    .unwrap_or_else(|| account.username.clone()),
                password: Password(password),
                from_user: account
                    .from_user
                    .clone()
                    .unwrap_or_else(|| account.username.clone()),
                domain,
                registrar,
                register_expiry: account.register_expiry,
                ring_timeout: account.ring_timeout,
                next_hop,
                proxy_route,
                contact_override: contact,
                public: Mutex::new(None),
                digest: Mutex::new(digest::Session::default()),
                reg: Mutex::new(RegState {
                    call_id: new_call_id(),
                    from_tag: new_tag(),
                    cseq: 0,
                }),
                dialogs: Arc::new(Mutex::new(HashMap::new())),
            }),
        })
    }

    pub fn stack(&self) -> &Stack {
        &self.inner.stack
    }

    /// Where requests are sent.
    pub fn next_hop(&self) -> &Target {
        &self.inner.next_hop
    }

    /// Stop the line's own stack (no-op on a shared one).
    pub fn close(&self) {
        if self.inner.owns_stack {
            self.inner.stack.shutdown();
        }
    }

    /// The Request-URI for a target: a full URI as given, else
    /// `sip:<target>@<registrar>` with the target as the user part; checked
    /// before it is used. (A test call's URI is built by the plan's dialling
    /// rules and always comes here whole.)
    pub fn target_uri(&self, target: &str) -> Result<String, UacError> {
        let t = target.trim();
        let uri = if super::uri::is_uri(t) {
            t.to_string()
        } else {
            format!(
                "sip:{}@{}",
                super::uri::escape_user(t),
                self.inner.registrar.uri_part()
            )
        };
        super::uri::check_uri(&uri).map_err(|why| UacError::Target {
            target: t.to_string(),
            why,
        })?;
        Ok(uri)
    }

    fn via(&self, flow: &Flow, branch: &str) -> String {
        let t = match flow.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        };
        format!(
            "SIP/2.0/{t} {};rport;branch={branch}",
            host_port(flow.local)
        )
    }

    /// The address to advertise: configured, else learned from rport/received
    /// (behind NAT), else the local address of the flow.
    fn contact_addr(&self, flow: &Flow) -> SocketAddr {
        if let Some(c) = self.inner.contact_override {
            return c;
        }
        if flow.transport == Transport::Udp {
            if let Some(p) = *lock(&self.inner.public) {
                return p;
            }
        }
        flow.local
    }

    fn contact(&self, flow: &Flow, user: &str) -> String {
        let t = match flow.transport {
            Transport::Udp => String::new(),
            t => format!(";transport={t}"),
        };
        format!("<sip:{user}@{}{t}>", host_port(self.contact_addr(flow)))
    }

    /// Remember our address as the far end saw it (RFC 3581).
    fn learn_public(&self, resp: &Message, flow: &Flow) {
        let Some(seen) = seen_address(resp, flow.local) else {
            return;
        };
        let mut public = lock(&self.inner.public);
        if *public != Some(seen) {
            if seen != flow.local {
                debug!(%seen, local = %flow.local, "learned our public address");
            }
            *public = Some(seen);
        }
    }

    async fn connect(&self) -> Result<Flow, UacError> {
        self.inner
            .stack
            .transports()
            .connect(&self.inner.next_hop)
            .await
            .map_err(|source| UacError::Transport {
                to: self.inner.next_hop.addr.to_string(),
                source,
            })
    }

    fn server_of(m: &Message) -> Option<String> {
        m.header("Server")
            .or_else(|| m.header("User-Agent"))
            .map(str::to_string)
    }

    /// Ask the PBX who it is: an OPTIONS to the registrar, out of any
    /// dialog. Returns the final status and the Server (or User-Agent)
    /// header; an auth challenge still names the software, so it is not
    /// answered.
    pub async fn options(&self) -> Result<(u16, Option<String>), UacError> {
        let capture = Capture::new(Instant::now());
        let flow = self.connect().await?;
        let uri = format!("sip:{}", self.inner.registrar.uri_part());
        let from = format!("sip:{}@{}", self.inner.username, self.inner.domain);
        let mut req = Request::new("OPTIONS", &uri);
        req.push("Via", self.via(&flow, &new_branch()));
        req.push("Max-Forwards", "70");
        if let Some(r) = &self.inner.proxy_route {
            req.push("Route", r.clone());
        }
        req.push("From", format!("<{from}>;tag={}", new_tag()));
        req.push("To", format!("<{uri}>"));
        req.push("Call-ID", new_call_id());
        req.push("CSeq", "1 OPTIONS");
        req.push("User-Agent", self.inner.stack.user_agent());
        req.push("Accept", "application/sdp");
        let resp = self.final_response(req, &capture, &flow).await?;
        Ok((
            resp.message.status().unwrap_or_default(),
            Self::server_of(&resp.message),
        ))
    }

    /// Register for the account's configured lifetime.
    pub async fn register(&self) -> Result<RegisterReport, UacError> {
        self.register_for(self.inner.register_expiry).await
    }

    /// Remove our binding (Expires: 0), as on shutdown.
    pub async fn unregister(&self) -> Result<RegisterReport, UacError> {
        self.register_for(Duration::ZERO).await
    }

    /// REGISTER asking for `expiry` (zero unregisters).
    pub async fn register_for(&self, expiry: Duration) -> Result<RegisterReport, UacError> {
        let call_id = lock(&self.inner.reg).call_id.clone();
        let span = info_span!("register", %call_id, user = %self.inner.username);
        self.register_inner(expiry, call_id).instrument(span).await
    }

    async fn register_inner(
        &self,
        mut expiry: Duration,
        call_id: String,
    ) -> Result<RegisterReport, UacError> {
        let started = Instant::now();
        let capture = Capture::new(started);
        let mut attempts = 0;
        let mut challenges: Vec<Challenge> = Vec::new();
        let mut interval_retried = false;
        loop {
            attempts += 1;
            let flow = self.connect().await?;
            let contact = self.contact(&flow, &self.inner.username);
            let (from_tag, cseq) = {
                let mut r = lock(&self.inner.reg);
                r.cseq += 1;
                (r.from_tag.clone(), r.cseq)
            };
            let aor = format!("sip:{}@{}", self.inner.username, self.inner.domain);
            let uri = format!("sip:{}", self.inner.registrar.uri_part());
            let mut req = Request::new("REGISTER", &uri);
            req.push("Via", self.via(&flow, &new_branch()));
            req.push("Max-Forwards", "70");
            if let Some(r) = &self.inner.proxy_route {
                req.push("Route", r.clone());
            }
            req.push("From", format!("<{aor}>;tag={from_tag}"));
            req.push("To", format!("<{aor}>"));
            req.push("Call-ID", call_id.clone());
            req.push("CSeq", format!("{cseq} REGISTER"));
            req.push("Contact", contact.clone());
            req.push("Expires", expiry.as_secs().to_string());
            self.authorize(&mut req, &challenges, "REGISTER", 0)?;
            req.push("User-Agent", self.inner.stack.user_agent());
            req.push("Allow", ALLOW);
            let resp = self.final_response(req, &capture, &flow).await?;
            let code = resp.message.status().unwrap_or_default();
            match code {
                401 | 407 => {
                    self.absorb_challenge(&resp.message, &mut challenges, "REGISTER", attempts)?;
                    continue;
                }
                423 if !interval_retried => {
                    // Interval Too Brief: ask again for the minimum.
                    if let Some(min) = resp
                        .message
                        .header("Min-Expires")
                        .and_then(super::message::delta_seconds)
                        .map(u64::from)
                    {
                        interval_retried = true;
                        expiry = Duration::from_secs(min);
                        continue;
                    }
                }
                _ => {}
            }
            let expires = if (200..300).contains(&code) {
                Some(granted_expiry(&resp.message, &contact, expiry))
            } else {
                None
            };
            let report = RegisterReport {
                status: code,
                reason: reason_of(&resp.message),
                server: Self::server_of(&resp.message),
                expires,
                call_id: call_id.clone(),
                attempts,
                contact,
                elapsed: started.elapsed(),
                messages: capture.messages(),
            };
            info!(status = code, expires = ?report.expires, "REGISTER finished");
            return Ok(report);
        }
    }

    /// Add Authorization / Proxy-Authorization headers for the challenges
    /// being answered.
    fn authorize(
        &self,
        req: &mut Request,
        challenges: &[Challenge],
        method: &str,
        status: u16,
    ) -> Result<(), UacError> {
        if challenges.is_empty() {
            return Ok(());
        }
        req.remove("Authorization");
        req.remove("Proxy-Authorization");
        let uri = req.uri.clone();
        let body = req.body.clone();
        let headers = lock(&self.inner.digest)
            .authorize(
                challenges,
                &self.inner.auth_username,
                &self.inner.password.0,
                digest::Request {
                    method,
                    uri: &uri,
                    body: &body,
                },
            )
            .map_err(|source| UacError::Challenge {
                method: method.to_string(),
                status,
                source,
            })?;
        for (n, v) in headers {
            req.push(n, v);
        }
        Ok(())
    }

    /// Fold a 401/407's challenges into the set being answered. A challenge
    /// for a realm we already answered means the credentials were refused,
    /// unless the server says the nonce was merely stale.
    fn absorb_challenge(
        &self,
        resp: &Message,
        challenges: &mut Vec<Challenge>,
        method: &str,
        attempts: u32,
    ) -> Result<(), UacError> {
        let status = resp.status().unwrap_or_default();
        let rejected = || UacError::AuthRejected {
            method: method.to_string(),
            status,
            reason: reason_of(resp),
            server: Self::server_of(resp),
        };
        if attempts >= MAX_AUTH_ROUNDS {
            return Err(rejected());
        }
        let new = digest::challenges(resp).map_err(|source| UacError::Challenge {
            method: method.to_string(),
            status,
            source,
        })?;
        for ch in new {
            match challenges
                .iter_mut()
                .find(|c| c.proxy == ch.proxy && c.realm == ch.realm)
            {
                Some(old) if ch.stale => *old = ch,
                Some(_) => return Err(rejected()),
                None => challenges.push(ch),
            }
        }
        debug!(method, status, "answering an authentication challenge");
        Ok(())
    }

    /// Run a non-INVITE client transaction to its final response.
    async fn final_response(
        &self,
        req: Request,
        capture: &Capture,
        flow: &Flow,
    ) -> Result<Inbound, UacError> {
        let method = req.method.clone();
        let dest = Dest::Target(Target {
            transport: flow.transport,
            addr: flow.remote,
            server_name: self.inner.next_hop.server_name.clone(),
        });
        self.run_non_invite(req, &dest, capture)
            .await
            .map_err(|e| match e {
                NonInviteError::Tx(source) => UacError::Transaction {
                    method,
                    to: flow.remote.to_string(),
                    source: Box::new(source),
                },
                NonInviteError::NoFinal => UacError::NoFinalResponse { method },
            })
    }

    async fn run_non_invite(
        &self,
        req: Request,
        dest: &Dest,
        capture: &Capture,
    ) -> Result<Inbound, NonInviteError> {
        let mut tx = self
            .inner
            .stack
            .start_client(req, dest, Some(capture.clone()))
            .await
            .map_err(NonInviteError::Tx)?;
        loop {
            match tx.recv().await {
                None => return Err(NonInviteError::NoFinal),
                Some(Err(e)) => return Err(NonInviteError::Tx(e)),
                Some(Ok(r)) => {
                    self.learn_public(&r.message, &tx.flow());
                    if r.message.status().unwrap_or_default() >= 200 {
                        return Ok(r);
                    }
                }
            }
        }
    }

    /// Keep the registration alive: re-register well before it expires,
    /// and after a failure retry on a shorter interval.
    pub fn spawn_refresher(&self, granted: Duration) -> Refresher {
        let line = self.clone();
        let (count_tx, count_rx) = tokio::sync::watch::channel(0u32);
        let handle = tokio::spawn(async move {
            let mut wait = refresh_after(granted);
            loop {
                tokio::time::sleep(wait).await;
                wait = match line.register().await {
                    Ok(r) if r.registered() => {
                        count_tx.send_modify(|n| *n += 1);
                        refresh_after(r.expires.unwrap_or(line.inner.register_expiry))
                    }
                    Ok(r) => {
                        warn!(status = r.status, "registration refresh refused");
                        Duration::from_secs(30)
                    }
                    Err(e) => {
                        warn!(error = %crate::escape::control(&e.to_string()), "registration refresh failed");
                        Duration::from_secs(30)
                    }
                };
            }
        });
        Refresher {
            handle,
            refreshes: count_rx,
        }
    }

    /// Call a target and hang up when answered.
    pub async fn call(&self, target: &str, opts: CallOptions) -> Result<CallReport, UacError> {
        self.call_with(target, opts, |_| async {}).await
    }

    /// Call a target; if answered, run `while_up` (the call stays up until it
    /// finishes or the far end hangs up), then send BYE.
    pub async fn call_with<F, Fut>(
        &self,
        target: &str,
        opts: CallOptions,
        while_up: F,
    ) -> Result<CallReport, UacError>
    where
        F: FnOnce(Answered) -> Fut,
        Fut: Future<Output = ()>,
    {
        let call_id = new_call_id();
        let span = info_span!("call", %call_id, line = %self.inner.username);
        let (tx, rx) = mpsc::channel(16);
        lock(&self.inner.dialogs).insert(call_id.clone(), tx);
        let r = self
            .call_inner(target, opts, while_up, call_id.clone(), rx)
            .instrument(span)
            .await;
        lock(&self.inner.dialogs).remove(&call_id);
        r
    }

    async fn call_inner<F, Fut>(
        &self,
        target: &str,
        opts: CallOptions,
        while_up: F,
        call_id: String,
        mut in_dialog: mpsc::Receiver<IncomingRequest>,
    ) -> Result<CallReport, UacError>
    where
        F: FnOnce(Answered) -> Fut,
        Fut: Future<Output = ()>,
    {
        let target_uri = self.target_uri(target)?;
        let ring_timeout = opts.ring_timeout.unwrap_or(self.inner.ring_timeout);
        let from_tag = new_tag();
        let from = match &opts.from {
            Some(f) => format!("{f};tag={from_tag}"),
            None => format!(
                "<sip:{}@{}>;tag={from_tag}",
                self.inner.from_user, self.inner.domain
            ),
        };
        let to = format!("<{target_uri}>");
        let first_flow = self.connect().await?;
        let rtp = match opts.rtp.clone() {
            Some(s) => s,
            None => {
                let ip = first_flow.local.ip();
                Arc::new(
                    UdpSocket::bind(SocketAddr::new(ip, 0))
                        .await
                        .map_err(|source| UacError::Rtp { ip, source })?,
                )
            }
        };
        let local_rtp = rtp.local_addr().map_err(|source| UacError::Rtp {
            ip: first_flow.local.ip(),
            source,
        })?;
        // Offer (and report) an address the far end can send to.
        let mut offer_addr = local_rtp;
        if local_rtp.ip().is_unspecified() {
            offer_addr.set_ip(first_flow.local.ip());
        }
        let local_rtp = offer_addr;
        let body = sdp_offer(
            offer_addr,
            rand::random::<u32>() as u64,
            opts.codec.unwrap_or(Codec::Pcmu),
        );
        let capture = Capture::new(Instant::now());
        let mut first_sent: Option<Instant> = None;
        let mut challenges: Vec<Challenge> = Vec::new();
        let mut cseq = 0u32;
        let mut attempts = 0u32;
        info!(target = %target_uri, "placing call");

        // One pass per INVITE (authentication rounds send a new one).
        let (tx, invite, final_resp, attempt_start, first_1xx, cancel_status, cancel_wanted) = loop {
            attempts += 1;
            cseq += 1;
            let flow = self.connect().await?;
            let mut inv = Request::new("INVITE", &target_uri);
            inv.push("Via", self.via(&flow, &new_branch()));
            inv.push("Max-Forwards", "70");
            if let Some(r) = &self.inner.proxy_route {
                inv.push("Route", r.clone());
            }
            inv.push("From", from.clone());
            inv.push("To", to.clone());
            inv.push("Call-ID", call_id.clone());
            inv.push("CSeq", format!("{cseq} INVITE"));
            inv.push("Contact", self.contact(&flow, &self.inner.from_user));
            inv.body = body.clone();
            self.authorize(&mut inv, &challenges, "INVITE", 0)?;
            inv.push("User-Agent", self.inner.stack.user_agent());
            inv.push("Allow", ALLOW);
            for (n, v) in &opts.extra_headers {
                inv.push(n, v.clone());
            }
            inv.push("Content-Type", "application/sdp");
            let dest = Dest::Target(Target {
                transport: flow.transport,
                addr: flow.remote,
                server_name: self.inner.next_hop.server_name.clone(),
            });
            let mut tx = self
                .inner
                .stack
                .start_client(inv.clone(), &dest, Some(capture.clone()))
                .await
                .map_err(|source| UacError::Transaction {
                    method: "INVITE".into(),
                    to: flow.remote.to_string(),
                    source: Box::new(source),
                })?;
            let attempt_start = tx.sent_at();
            first_sent.get_or_insert(attempt_start);
            let ring_deadline = attempt_start
                .checked_add(ring_timeout)
                .unwrap_or(attempt_start + Duration::from_secs(365 * 86400));
            let mut first_1xx: Option<Instant> = None;
            let mut cancel: Option<ClientTx> = None;
            let mut cancel_status = None;
            let mut cancel_deadline: Option<Instant> = None;
            let mut cancel_wanted = false;
            let final_resp = loop {
                tokio::select! {
                    r = tx.recv() => {
                        let r = match r {
                            None => return Err(UacError::NoFinalResponse { method: "INVITE".into() }),
                            Some(Err(source)) => return Err(UacError::Transaction {
                                method: "INVITE".into(),
                                to: flow.remote.to_string(),
                                source: Box::new(source),
                            }),
                            Some(Ok(r)) => r,
                        };
                        self.learn_public(&r.message, &flow);
                        let code = r.message.status().unwrap_or_default();
                        if code < 200 {
                            if first_1xx.is_none() {
                                first_1xx = Some(r.at);
                                debug!(code, "first provisional response");
                            }
                            if cancel_wanted && cancel.is_none() {
                                cancel = Some(self.send_cancel(&inv, &tx, &capture).await?);
                                cancel_deadline = Some(Instant::now() + self.inner.stack.timers().timeout());
                            }
                            continue;
                        }
                        break r;
                    }
                    _ = sleep_until(ring_deadline), if !cancel_wanted => {
                        cancel_wanted = true;
                        info!(?ring_timeout, "no answer within the ring timeout; cancelling");
                        // A CANCEL may only follow a provisional response
                        // (RFC 3261 section 9.1); otherwise wait for one.
                        if first_1xx.is_some() {
                            cancel = Some(self.send_cancel(&inv, &tx, &capture).await?);
                        }
                        cancel_deadline = Some(Instant::now() + self.inner.stack.timers().timeout());
                    }
                    r = recv_opt(&mut cancel) => {
                        match r {
                            Some(Ok(resp)) => {
                                let code = resp.message.status().unwrap_or_default();
                                if code >= 200 {
                                    cancel_status = Some(code);
                                    cancel = None;
                                }
                            }
                            Some(Err(e)) => {
                                debug!(error = %e, "CANCEL transaction failed");
                                cancel = None;
                            }
                            None => cancel = None,
                        }
                    }
                    _ = sleep_opt(cancel_deadline) => {
                        return Err(UacError::Timeout {
                            waiting_for: "the final response after CANCEL",
                            after: self.inner.stack.timers().timeout(),
                        });
                    }
                    req = in_dialog.recv() => {
                        if let Some(req) = req {
                            self.answer_in_dialog(req, &capture).await;
                        }
                    }
                }
            };
            let code = final_resp.message.status().unwrap_or_default();
            if (code == 401 || code == 407) && !cancel_wanted {
                self.absorb_challenge(&final_resp.message, &mut challenges, "INVITE", attempts)?;
                continue;
            }
            // Collect the 200 to a CANCEL sent just before the final response.
            if let Some(c) = cancel.as_mut() {
                if let Ok(Some(Ok(r))) =
                    tokio::time::timeout(Duration::from_millis(500), c.recv()).await
                {
                    cancel_status = r.message.status();
                }
            }
            break (
                tx,
                inv,
                final_resp,
                attempt_start,
                first_1xx,
                cancel_status,
                cancel_wanted,
            );
        };

        let code = final_resp.message.status().unwrap_or_default();
        let first = first_sent.unwrap_or(attempt_start);
        let mut report = CallReport {
            call_id: call_id.clone(),
            target: target_uri.clone(),
            outcome: CallOutcome::Rejected,
            status: code,
            reason: reason_of(&final_resp.message),
            attempts,
            first_provisional: first_1xx.map(|t| t.saturating_duration_since(attempt_start)),
            final_response: final_resp.at.saturating_duration_since(attempt_start),
            first_provisional_since_first: first_1xx.map(|t| t.saturating_duration_since(first)),
            final_response_since_first: final_resp.at.saturating_duration_since(first),
            server: Self::server_of(&final_resp.message),
            remote_sdp: None,
            local_rtp,
            cancel_status,
            bye_status: None,
            hangup: None,
            messages: Vec::new(),
        };
        info!(status = code, after = ?report.final_response, "final response");

        if (200..300).contains(&code) {
            report.outcome = CallOutcome::Answered;
            report.remote_sdp =
                (!final_resp.message.body.is_empty()).then(|| final_resp.message.body.clone());
            let dialog = self.dialog_from_2xx(&invite, &final_resp, &tx).await?;
            let flow = self.dialog_flow(&dialog).await?;
            let ack = dialog.request("ACK", cseq, self, &flow);
            tx.set_2xx_ack(ack.to_bytes());
            self.inner
                .stack
                .send_request(&ack, &Dest::Flow(flow), Some(&capture))
                .await
                .map_err(|source| UacError::Transport {
                    to: flow.remote.to_string(),
                    source,
                })?;
            let remote_bye = if cancel_wanted {
                // We had given up: hang up at once.
                None
            } else {
                let answered = Answered {
                    call_id: call_id.clone(),
                    rtp: rtp.clone(),
                    local_rtp,
                    remote_rtp: super::build::sdp_audio_addr(&final_resp.message.body),
                    remote_sdp: final_resp.message.body.clone(),
                };
                let action = while_up(answered);
                tokio::pin!(action);
                loop {
                    tokio::select! {
                        _ = &mut action => break None,
                        req = in_dialog.recv() => {
                            let Some(req) = req else { break None };
                            if req.inbound.message.is_request("BYE") {
                                break Some(req);
                            }
                            self.answer_in_dialog(req, &capture).await;
                        }
                    }
                }
            };
            match remote_bye {
                Some(bye) => {
                    capture.record_inbound(&bye.inbound);
                    if let Some(stx) = bye.tx {
                        let r = response_to(&bye.inbound.message, 200, None);
                        self.respond_captured(&stx, r, &capture).await;
                    }
                    report.hangup = Some(Hangup::Remote);
                }
                None => {
                    report.bye_status = Some(self.send_bye(&dialog, cseq + 1, &capture).await?);
                    report.hangup = Some(Hangup::Local);
                }
            }
        } else if cancel_status.is_some() || code == 487 {
            report.outcome = CallOutcome::Cancelled;
        }
        report.messages = capture.messages();
        Ok(report)
    }

    async fn send_cancel(
        &self,
        invite: &Request,
        tx: &ClientTx,
        capture: &Capture,
    ) -> Result<ClientTx, UacError> {
        let mut c = Request::new("CANCEL", &invite.uri);
        for name in ["Via", "Max-Forwards", "Route", "From", "To", "Call-ID"] {
            for (n, v) in &invite.headers {
                if n.eq_ignore_ascii_case(name) {
                    c.push(name, v.clone());
                }
            }
        }
        c.push("CSeq", format!("{} CANCEL", invite.cseq().unwrap_or(1)));
        c.push("User-Agent", self.inner.stack.user_agent());
        self.inner
            .stack
            .start_client(c, &Dest::Flow(tx.flow()), Some(capture.clone()))
            .await
            .map_err(|source| UacError::Transaction {
                method: "CANCEL".into(),
                to: tx.flow().remote.to_string(),
                source: Box::new(source),
            })
    }

    async fn dialog_from_2xx(
        &self,
        invite: &Request,
        resp: &Inbound,
        tx: &ClientTx,
    ) -> Result<Dialog, UacError> {
        let m = &resp.message;
        let remote_target = m
            .header("Contact")
            .and_then(|c| split_list(c).into_iter().next().map(str::to_string))
            .and_then(|c| parse_name_addr(&c).ok())
            .map(|na| na.uri)
            .unwrap_or_else(|| invite.uri.clone());
        // The route set is the Record-Route list, reversed (section 12.1.2).
        let mut route: Vec<String> = m
            .headers_named("Record-Route")
            .flat_map(|h| {
                split_list(&h.value)
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        route.reverse();
        if route.is_empty() {
            if let Some(r) = &self.inner.proxy_route {
                route.push(r.clone());
            }
        }
        // Next hop: the outbound proxy, else the first route, else the
        // remote target; over the INVITE's transport.
        let hop_uri = if self.inner.proxy_route.is_some() {
            None
        } else {
            route
                .first()
                .and_then(|r| parse_name_addr(r).ok())
                .map(|na| na.uri)
                .or_else(|| Some(remote_target.clone()))
        };
        let flow = tx.flow();
        let dest = match hop_uri {
            None => Dest::Flow(flow),
            Some(u) => {
                let u = parse_uri(&u);
                let port = u.port.unwrap_or(default_port(flow.transport));
                match resolve(&u.host, port).await {
                    // The connection we have already reaches it.
                    Ok(addr) if addr == flow.remote => Dest::Flow(flow),
                    Ok(addr) => Dest::Target(Target {
                        transport: flow.transport,
                        addr,
                        server_name: (u.host.parse::<IpAddr>().is_err()).then(|| u.host.clone()),
                    }),
                    Err(e) => {
                        debug!(error = %e, "can't resolve the remote target; using the INVITE's flow");
                        Dest::Flow(flow)
                    }
                }
            }
        };
        Ok(Dialog {
            call_id: invite.call_id().unwrap_or_default().to_string(),
            local: invite.get("From").unwrap_or_default().to_string(),
            remote: m.header("To").unwrap_or_default().to_string(),
            remote_target,
            route,
            dest,
        })
    }

    /// The flow in-dialog requests go on: the INVITE's, or one to the
    /// resolved next hop.
    async fn dialog_flow(&self, dialog: &Dialog) -> Result<Flow, UacError> {
        match &dialog.dest {
            Dest::Flow(f) => Ok(*f),
            Dest::Target(t) => self
                .inner
                .stack
                .transports()
                .connect(t)
                .await
                .map_err(|source| UacError::Transport {
                    to: t.addr.to_string(),
                    source,
                }),
        }
    }

    async fn send_bye(
        &self,
        dialog: &Dialog,
        cseq: u32,
        capture: &Capture,
    ) -> Result<u16, UacError> {
        let mut challenges = Vec::new();
        let mut attempts = 0;
        let mut cseq = cseq;
        loop {
            attempts += 1;
            let flow = self.dialog_flow(dialog).await?;
            let mut bye = dialog.request("BYE", cseq, self, &flow);
            self.authorize(&mut bye, &challenges, "BYE", 0)?;
            let resp = self
                .run_non_invite(bye, &Dest::Flow(flow), capture)
                .await
                .map_err(|e| match e {
                    NonInviteError::Tx(source) => UacError::Transaction {
                        method: "BYE".into(),
                        to: flow.remote.to_string(),
                        source: Box::new(source),
                    },
                    NonInviteError::NoFinal => UacError::NoFinalResponse {
                        method: "BYE".into(),
                    },
                })?;
            let code = resp.message.status().unwrap_or_default();
            if code == 401 || code == 407 {
                self.absorb_challenge(&resp.message, &mut challenges, "BYE", attempts)?;
                cseq += 1;
                continue;
            }
            return Ok(code);
        }
    }

    /// Answer a request that arrived inside a call we placed.
    async fn answer_in_dialog(&self, req: IncomingRequest, capture: &Capture) {
        capture.record_inbound(&req.inbound);
        let Some(stx) = req.tx else { return };
        let m = &req.inbound.message;
        let code = match m.method() {
            Some("BYE") | Some("OPTIONS") | Some("UPDATE") | Some("INFO") | Some("NOTIFY") => 200,
            // A re-INVITE would need an offer/answer we don't do mid-call.
            Some("INVITE") => 488,
            _ => 501,
        };
        let r = response_to(m, code, None);
        self.respond_captured(&stx, r, capture).await;
    }

    async fn respond_captured(
        &self,
        stx: &super::transaction::ServerTx,
        mut r: super::build::Response,
        capture: &Capture,
    ) {
        r.push("Server", self.inner.stack.user_agent());
        let bytes = r.to_bytes();
        match stx.respond(r).await {
            Ok(Some(at)) => {
                capture.record(super::transport::Direction::Sent, stx.flow(), &bytes, at)
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "response not sent"),
        }
    }
}

enum NonInviteError {
    Tx(TxError),
    NoFinal,
}

async fn recv_opt(c: &mut Option<ClientTx>) -> Option<Result<Inbound, TxError>> {
    match c {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// An established call's dialog state, as the caller.
#[derive(Debug, Clone)]
struct Dialog {
    call_id: String,
    /// Our From (with tag).
    local: String,
    /// Their To (with tag).
    remote: String,
    remote_target: String,
    route: Vec<String>,
    dest: Dest,
}

impl Dialog {
    /// An in-dialog request to send on `flow` (whose local address the Via
    /// must name).
    fn request(&self, method: &str, cseq: u32, line: &Line, flow: &Flow) -> Request {
        let mut r = Request::new(method, &self.remote_target);
        r.push("Via", line.via(flow, &new_branch()));
        r.push("Max-Forwards", "70");
        for rt in &self.route {
            r.push("Route", rt.clone());
        }
        r.push("From", self.local.clone());
        r.push("To", self.remote.clone());
        r.push("Call-ID", self.call_id.clone());
        r.push("CSeq", format!("{cseq} {method}"));
        if method != "ACK" {
            r.push("User-Agent", line.inner.stack.user_agent());
        }
        r
    }
}

/// Our address as the sender of a response saw it: the top Via's
/// `received` and `rport` (RFC 3581), each defaulting to our own; None when
/// the response carries neither.
fn seen_address(resp: &Message, local: SocketAddr) -> Option<SocketAddr> {
    let via = resp.header("Via").and_then(parse_via)?;
    let ip = via
        .param("received")
        .flatten()
        .and_then(|r| r.parse::<IpAddr>().ok());
    let port = via
        .param("rport")
        .flatten()
        .and_then(|p| p.parse::<u16>().ok());
    if ip.is_none() && port.is_none() {
        return None;
    }
    Some(SocketAddr::new(
        ip.unwrap_or(local.ip()),
        port.unwrap_or(local.port()),
    ))
}

/// The lifetime granted in a 2xx to REGISTER: our Contact's `expires`
/// parameter, else the Expires header, else what we asked for.
fn granted_expiry(m: &Message, our_contact: &str, asked: Duration) -> Duration {
    let ours = parse_name_addr(our_contact)
        .ok()
        .map(|na| parse_uri(&na.uri));
    let mut contacts = Vec::new();
    for h in m.headers_named("Contact") {
        for c in split_list(&h.value) {
            if let Ok(na) = parse_name_addr(c) {
                contacts.push(na);
            }
        }
    }
    let expires_of = |na: &super::header::NameAddr| {
        na.param("expires")
            .flatten()
            .and_then(super::message::delta_seconds)
            .map(u64::from)
    };
    let matching = contacts.iter().find(|na| {
        let u = parse_uri(&na.uri);
        ours.as_ref()
            .is_some_and(|o| o.host == u.host && o.port == u.port && o.user == u.user)
    });
    if let Some(e) = matching.and_then(expires_of) {
        return Duration::from_secs(e);
    }
    if let Some(e) = m
        .header("Expires")
        .and_then(super::message::delta_seconds)
        .map(u64::from)
    {
        return Duration::from_secs(e);
    }
    if contacts.len() == 1 {
        if let Some(e) = expires_of(&contacts[0]) {
            return Duration::from_secs(e);
        }
    }
    asked
}

fn reason_of(m: &Message) -> String {
    match &m.start {
        super::StartLine::Response { reason, .. } => reason.clone(),
        _ => String::new(),
    }
}

/// When to refresh a registration of this lifetime: halfway for short ones,
/// a minute or so early for long ones.
fn refresh_after(granted: Duration) -> Duration {
    let g = granted.as_secs();
    let secs = if g <= 120 { g / 2 } else { g - 60 };
    Duration::from_secs(secs.max(1))
}

/// A running registration refresher; dropping it stops it.
#[derive(Debug)]
pub struct Refresher {
    handle: JoinHandle<()>,
    refreshes: tokio::sync::watch::Receiver<u32>,
}

impl Refresher {
    /// Stop refreshing (the binding then lapses unless unregistered).
    pub fn stop(self) {}

    /// Successful refreshes so far, to watch.
    pub fn refreshes(&self) -> tokio::sync::watch::Receiver<u32> {
        self.refreshes.clone()
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Answer requests that reach a line outside its calls: in-dialog ones go
/// to their call; OPTIONS pings and NOTIFYs get 200; calls to the line 480.
async fn serve_requests(
    stack: Stack,
    mut requests: mpsc::Receiver<IncomingRequest>,
    dialogs: Dialogs,
) {
    loop {
        let req = tokio::select! {
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = stack.wait_shutdown() => return,
        };
        let call_id = req
            .inbound
            .message
            .call_id()
            .unwrap_or_default()
            .to_string();
        let dialog = lock(&dialogs).get(&call_id).cloned();
        let req = match dialog {
            Some(d) => match d.try_send(req) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) => r,
            },
            None => req,
        };
        let Some(tx) = req.tx else { continue };
        let m = &req.inbound.message;
        let has_to_tag = m
            .header("To")
            .and_then(|t| parse_name_addr(t).ok())
            .is_some_and(|na| na.param("tag").is_some());
        let code = match m.method().unwrap_or_default() {
            "OPTIONS" | "NOTIFY" => 200,
            "INVITE" if !has_to_tag => 480,
            "BYE" | "CANCEL" | "INVITE" | "UPDATE" | "INFO" => 481,
            _ => 501,
        };
        let mut r = response_to(m, code, Some(&new_tag()));
        if code == 200 || code == 501 {
            r.push("Allow", ALLOW);
        }
        r.push("Server", stack.user_agent());
        let _ = tx.respond(r).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_from_contact_or_header() {
        let m = crate::sip::parse(
            b"SIP/2.0 200 OK\r\nContact: <sip:u@1.2.3.4:5>;expires=60, <sip:u@9.9.9.9>;expires=10\r\nExpires: 30\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            granted_expiry(&m, "<sip:u@1.2.3.4:5>", Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            granted_expiry(&m, "<sip:u@7.7.7.7:5>", Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        let m = crate::sip::parse(b"SIP/2.0 200 OK\r\n\r\n").unwrap();
        assert_eq!(
            granted_expiry(&m, "<sip:u@1.2.3.4:5>", Duration::from_secs(600)),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn public_address_from_received_and_rport() {
        let local: SocketAddr = "10.0.0.5:5070".parse().unwrap();
        let m = |via: &str| {
            crate::sip::parse(format!("SIP/2.0 200 OK\r\nVia: {via}\r\n\r\n").as_bytes()).unwrap()
        };
        let nat = m("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKx;received=203.0.113.9;rport=61000");
        assert_eq!(
            seen_address(&nat, local),
            Some("203.0.113.9:61000".parse().unwrap())
        );
        let only_received = m("SIP/2.0/UDP 10.0.0.5:5070;received=203.0.113.9;rport");
        assert_eq!(
            seen_address(&only_received, local),
            Some("203.0.113.9:5070".parse().unwrap())
        );
        assert_eq!(
            seen_address(&m("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKx"), local),
            None
        );
    }

    #[test]
    fn refresh_timing() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn host_port_forms() {
        let h = HostPort::parse("registrar", "sip:pbx.example.org:5070;transport=tcp").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("pbx.example.org", Some(5070)));
        let h = HostPort::parse("registrar", "127.0.0.1:5060").unwrap();
        assert_eq!(h.uri_part(), "127.0.0.1:5060");
        let h = HostPort::parse("registrar", "pbx").unwrap();
        assert_eq!(h.uri_part(), "pbx");
        assert!(HostPort::parse("registrar", "").is_err());
    }
}
