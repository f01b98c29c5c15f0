//! A DEMO PBX, for `cidguard demo` only: just enough of a PBX to show
//! cidguard working with nothing else installed. It is not a PBX to put in
//! front of real phones.
//!
//! It listens on one UDP socket on loopback, says 200 to every REGISTER
//! (no authentication: it only ever talks to the demo's own lines), answers
//! OPTIONS with a `Server:` header, and bridges each line's INVITE to the
//! cidguard endpoint as a back-to-back user agent: the line's call is
//! answered here, a new call with the caller-ID rewritten by that line's rule
//! is placed to the endpoint, and the endpoint's responses are mapped back.
//! Being a B2BUA rather than a proxy means the From header can be rewritten
//! freely without breaking the line's dialog.
//!
//! Loopback UDP doesn't lose packets in practice, so retransmissions are
//! only answered (a repeated INVITE gets the last response again, a repeated
//! final response gets another ACK), never generated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::sip::build::{self, host_port, response_to, Request, Response};
use crate::sip::header::{parse_name_addr, parse_uri};
use crate::sip::message::{self, Message};

/// What the demo PBX says it is, in OPTIONS answers.
pub const SERVER: &str = "Demo PBX 1.0";
/// The domain the demo PBX puts in the identities it presents.
pub const DOMAIN: &str = "demo-pbx.invalid";
/// Calls are forgotten this long after they end.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// A line's caller-ID rule: what the PBX presents when that line calls out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anonymous From, `Privacy: id`, no asserted identity.
    Withheld,
    /// The umbrella agency's name and number in From.
    Umbrella,
    /// The line "got updated": the organisation's number asserted in
    /// P-Asserted-Identity without Privacy, and its name in From.
    Leak,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Withheld => "withheld",
            Rule::Umbrella => "umbrella",
            Rule::Leak => "leak",
        }
    }
}

/// Who the organisation and its umbrella agency are, for the rules.
#[derive(Debug, Clone)]
pub struct Identities {
    pub org_name: String,
    /// E.164 with the `+`.
    pub org_number: String,
    pub umbrella_name: String,
    pub umbrella_number: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PbxError {
    #[error("demo PBX can't listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running demo PBX. Rules can be changed while it runs.
pub struct DemoPbx {
    addr: SocketAddr,
    rules: Arc<Mutex<HashMap<String, Rule>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoPbx {
    /// Listen on `listen` (port 0 picks a free one) and relay calls to the
    /// endpoint at `endpoint`. `rules` maps a line's username to its rule;
    /// unknown users are refused.
    pub async fn start(
        listen: SocketAddr,
        endpoint: SocketAddr,
        ids: Identities,
        rules: HashMap<String, Rule>,
    ) -> Result<DemoPbx, PbxError> {
        let sock = UdpSocket::bind(listen)
            .await
            .map_err(|source| PbxError::Bind {
                addr: listen,
                source,
            })?;
        DemoPbx::start_on(sock, endpoint, ids, rules)
    }

    /// The same on a socket already bound (its address can go into the
    /// config before the endpoint's is known).
    pub fn start_on(
        sock: UdpSocket,
        endpoint: SocketAddr,
        ids: Identities,
        rules: HashMap<String, Rule>,
    ) -> Result<DemoPbx, PbxError> {
        let addr = sock.local_addr().map_err(|source| PbxError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let rules = Arc::new(Mutex::new(rules));
        let (stop, stop_rx) = watch::channel(false);
        let relay = Relay {
            sock,
            addr,
            endpoint,
            ids,
            rules: rules.clone(),
            calls: Vec::new(),
        };
        let task = tokio::spawn(relay.run(stop_rx));
        info!(%addr, "demo PBX listening");
        Ok(DemoPbx {
            addr,
            rules,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Change a line's rule; the next call uses it.
    pub fn set_rule(&self, username: &str, rule: Rule) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(username.to_string(), rule);
    }

    pub fn rule(&self, username: &str) -> Option<Rule> {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(username)
            .copied()
    }

    /// Stop relaying (bounded: the task only ever waits on its socket).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            warn!("demo PBX did not stop within 2 s");
        }
    }
}

/// One bridged call: the line's leg (A) and the endpoint's leg (B).
struct Call {
    a_invite: Message,
    a_src: SocketAddr,
    a_branch: String,
    a_tag: String,
    /// The last response sent to the line, resent on a repeated INVITE.
    a_last: Option<Vec<u8>>,
    a_final: bool,
    b_invite: Request,
    b_call_id: String,
    /// B's To with the endpoint's tag, once a final response gave one.
    b_to: Option<String>,
    b_remote_target: Option<String>,
    ended: Option<Instant>,
}

struct Relay {
    sock: UdpSocket,
    addr: SocketAddr,
    endpoint: SocketAddr,
    ids: Identities,
    rules: Arc<Mutex<HashMap<String, Rule>>>,
    calls: Vec<Call>,
}

impl Relay {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; message::MAX_MESSAGE];
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                r = self.sock.recv_from(&mut buf) => match r {
                    Ok((n, src)) => {
                        // A junk datagram must not stop the PBX.
                        match message::parse(&buf[..n]) {
                            Ok(m) => self.handle(m, src).await,
                            Err(e) => debug!(%src, error = %e, "demo PBX ignored an unreadable datagram"),
                        }
                    }
                    Err(e) => debug!(error = %e, "demo PBX receive error"),
                }
            }
            self.calls
                .retain(|c| c.ended.is_none_or(|t| t.elapsed() < FORGET_AFTER));
        }
    }

    async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        if let Err(e) = self.sock.send_to(bytes, to).await {
            warn!(%to, error = %e, "demo PBX can't send");
        }
    }

    async fn handle(&mut self, m: Message, src: SocketAddr) {
        match m.method().map(str::to_string) {
            Some(method) => match method.as_str() {
                "REGISTER" => self.register(&m, src).await,
                "OPTIONS" => {
                    let mut r = response_to(&m, 200, Some(&build::new_tag()));
                    r.push("Server", SERVER);
                    r.push("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER");
                    self.send(src, &r.to_bytes()).await;
                }
                "INVITE" => self.invite(m, src).await,
                "ACK" => self.ack(&m).await,
                "CANCEL" => self.cancel(&m, src).await,
                "BYE" => self.bye(&m, src).await,
                _ => {
                    let r = response_to(&m, 501, Some(&build::new_tag()));
                    self.send(src, &r.to_bytes()).await;
                }
            },
            None => self.response(m).await,
        }
    }

    async fn register(&self, m: &Message, src: SocketAddr) {
        let mut r = response_to(m, 200, Some(&build::new_tag()));
        let expires = m
            .header("Expires")
            .and_then(|e| e.trim().parse::<u32>().ok())
            .unwrap_or(3600);
        if let Some(c) = m.header("Contact") {
            if c.trim() != "*" && expires > 0 {
                r.push("Contact", format!("{c};expires={expires}"));
            }
        }
        r.push("Expires", expires.to_string());
        r.push("Server", SERVER);
        self.send(src, &r.to_bytes()).await;
    }

    fn top_branch(m: &Message) -> String {
        m.header("Via")
            .and_then(build::via_branch)
            .unwrap_or_default()
    }

    fn find_a(&self, m: &Message) -> Option<usize> {
        let cid = m.call_id()?;
        let branch = Self::top_branch(m);
        self.calls.iter().position(|c| {
            c.a_invite.call_id() == Some(cid) && (c.a_branch == branch || m.is_request("ACK"))
        })
    }

    async fn invite(&mut self, m: Message, src: SocketAddr) {
        if let Some(i) = self.find_a(&m) {
            // A retransmission: say again what we last said.
            if let Some(last) = self.calls[i].a_last.clone() {
                self.send(src, &last).await;
            }
            return;
        }
        let tag = build::new_tag();
        let trying = response_to(&m, 100, None).to_bytes();
        self.send(src, &trying).await;
        let user = m
            .header("From")
            .and_then(|f| parse_name_addr(f).ok())
            .and_then(|na| parse_uri(&na.uri).user)
            .unwrap_or_default();
        let rule = self
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user)
            .copied();
        let Some(rule) = rule else {
            warn!(%user, "demo PBX refused a call from an unknown line");
            let r = response_to(&m, 403, Some(&tag)).to_bytes();
            self.send(src, &r).await;
            return;
        };
        let dialled = m
            .request_uri()
            .map(parse_uri)
            .and_then(|u| u.user)
            .unwrap_or_default();
        let b_call_id = build::new_call_id();
        let mut b = Request::new(
            "INVITE",
            &format!("sip:{dialled}@{}", host_port(self.endpoint)),
        );
        b.push(
            "Via",
            format!(
                "SIP/2.0/UDP {};rport;branch={}",
                host_port(self.addr),
                build::new_branch()
            ),
        );
        b.push("Max-Forwards", "69");
        let from_tag = build::new_tag();
        let (from, pai, privacy) = self.identity(rule, &user);
        b.push("From", format!("{from};tag={from_tag}"));
        b.push(
            "To",
            format!("<sip:{dialled}@{}>", host_port(self.endpoint)),
        );
        b.push("Call-ID", b_call_id.clone());
        b.push("CSeq", "1 INVITE");
        b.push(
            "Contact",
            format!("<sip:demo-pbx@{}>", host_port(self.addr)),
        );
        if let Some(p) = pai {
            b.push("P-Asserted-Identity", p);
        }
        if privacy {
            b.push("Privacy", "id");
        }
        b.push("User-Agent", SERVER);
        if let Some(ct) = m.header("Content-Type") {
            b.push("Content-Type", ct);
            b.body = m.body.clone();
        }
        info!(line_user = %user, rule = rule.name(), %dialled, "demo PBX bridges a call");
        self.send(self.endpoint, &b.to_bytes()).await;
        self.calls.push(Call {
            a_branch: Self::top_branch(&m),
            a_invite: m,
            a_src: src,
            a_tag: tag,
            a_last: Some(trying),
            a_final: false,
            b_invite: b,
            b_call_id,
            b_to: None,
            b_remote_target: None,
            ended: None,
        });
    }

    /// From, P-Asserted-Identity and whether to add `Privacy: id`.
    fn identity(&self, rule: Rule, user: &str) -> (String, Option<String>, bool) {
        let ids = &self.ids;
        match rule {
            Rule::Withheld => (
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>".into(),
                None,
                true,
            ),
            Rule::Umbrella => (
                format!(
                    "{} <sip:{}@{DOMAIN}>",
                    quote(&ids.umbrella_name),
                    ids.umbrella_number
                ),
                None,
                false,
            ),
            Rule::Leak => (
                format!("{} <sip:{user}@{DOMAIN}>", quote(&ids.org_name)),
                Some(format!("<sip:{}@{DOMAIN}>", ids.org_number)),
                false,
            ),
        }
    }

    async fn ack(&mut self, m: &Message) {
        // ACKs for our non-2xx finals end there; the endpoint's 2xx was
        // already ACKed on its own leg, so nothing goes further.
        if let Some(i) = self.find_a(m) {
            self.calls[i].ended.get_or_insert_with(Instant::now);
        }
    }

    async fn cancel(&mut self, m: &Message, src: SocketAddr) {
        let ok = response_to(m, 200, None).to_bytes();
        self.send(src, &ok).await;
        let Some(i) = self.find_a(m) else { return };
        if self.calls[i].a_final {
            return;
        }
        let b = &self.calls[i].b_invite;
        let mut c = Request::new("CANCEL", &b.uri);
        for h in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(v) = b.get(h) {
                c.push(h, v);
            }
        }
        c.push("CSeq", "1 CANCEL");
        self.send(self.endpoint, &c.to_bytes()).await;
    }

    async fn bye(&mut self, m: &Message, src: SocketAddr) {
        let ok = response_to(m, 200, None).to_bytes();
        self.send(src, &ok).await;
        let Some(cid) = m.call_id() else { return };
        if let Some(i) = self
            .calls
            .iter()
            .position(|c| c.a_invite.call_id() == Some(cid))
        {
            // The line hung up: hang up the endpoint's leg.
            let call = &self.calls[i];
            if let Some(to) = call.b_to.clone() {
                let uri = call
                    .b_remote_target
                    .clone()
                    .unwrap_or_else(|| call.b_invite.uri.clone());
                let mut bye = Request::new("BYE", &uri);
                bye.push(
                    "Via",
                    format!(
                        "SIP/2.0/UDP {};rport;branch={}",
                        host_port(self.addr),
                        build::new_branch()
                    ),
                );
                bye.push("Max-Forwards", "70");
                if let Some(f) = call.b_invite.get("From") {
                    bye.push("From", f);
                }
                bye.push("To", to);
                bye.push("Call-ID", call.b_call_id.clone());
                bye.push("CSeq", "2 BYE");
                self.send(self.endpoint, &bye.to_bytes()).await;
            }
            self.calls[i].ended.get_or_insert_with(Instant::now);
        } else if let Some(i) = self.calls.iter().position(|c| c.b_call_id == cid) {
            // The endpoint hung up: hang up the line's leg.
            let call = &self.calls[i];
            let a = &call.a_invite;
            let target = a
                .header("Contact")
                .and_then(|c| parse_name_addr(c).ok())
                .map(|na| na.uri)
                .or_else(|| {
                    a.header("From")
                        .and_then(|f| parse_name_addr(f).ok())
                        .map(|na| na.uri)
                })
                .unwrap_or_default();
            let mut bye = Request::new("BYE", &target);
            bye.push(
                "Via",
                format!(
                    "SIP/2.0/UDP {};rport;branch={}",
                    host_port(self.addr),
                    build::new_branch()
                ),
            );
            bye.push("Max-Forwards", "70");
            if let Some(to) = a.header("To") {
                bye.push("From", format!("{to};tag={}", call.a_tag));
            }
            if let Some(f) = a.header("From") {
                bye.push("To", f);
            }
            if let Some(cid) = a.call_id() {
                bye.push("Call-ID", cid);
            }
            bye.push("CSeq", "1 BYE");
            let dst = call.a_src;
            self.send(dst, &bye.to_bytes()).await;
            self.calls[i].ended.get_or_insert_with(Instant::now);
        }
    }

    async fn response(&mut self, m: Message) {
        let Some(code) = m.status() else { return };
        let Some((_, method)) = m.cseq() else { return };
        if method != "INVITE" {
            return;
        }
        let Some(cid) = m.call_id() else { return };
        let Some(i) = self.calls.iter().position(|c| c.b_call_id == cid) else {
            return;
        };
        if code == 100 {
            return;
        }
        if code >= 200 {
            // Every final from the endpoint is ACKed on its own leg, repeats too.
            let to = m.header("To").unwrap_or_default().to_string();
            let remote = m
                .header("Contact")
                .and_then(|c| parse_name_addr(c).ok())
                .map(|na| na.uri);
            let call = &mut self.calls[i];
            call.b_to = Some(to.clone());
            call.b_remote_target = remote.clone();
            let b = &call.b_invite;
            let (uri, via) = if code < 300 {
                // A 2xx ACK is its own transaction, to the remote target.
                (
                    remote.unwrap_or_else(|| b.uri.clone()),
                    format!(
                        "SIP/2.0/UDP {};rport;branch={}",
                        host_port(self.addr),
                        build::new_branch()
                    ),
                )
            } else {
                (b.uri.clone(), b.get("Via").unwrap_or_default().to_string())
            };
            let mut ack = Request::new("ACK", &uri);
            ack.push("Via", via);
            ack.push("Max-Forwards", "70");
            if let Some(f) = b.get("From") {
                ack.push("From", f);
            }
            ack.push("To", to);
            ack.push("Call-ID", cid);
            ack.push("CSeq", "1 ACK");
            let bytes = ack.to_bytes();
            self.send(self.endpoint, &bytes).await;
        }
        let call = &mut self.calls[i];
        if call.a_final {
            return;
        }
        let mut r: Response = response_to(&call.a_invite, code, Some(&call.a_tag));
        if let Some(reason) = reason_of(&m) {
            r.reason = reason;
        }
        if (200..300).contains(&code) {
            r.push(
                "Contact",
                format!("<sip:demo-pbx@{}>", host_port(self.addr)),
            );
        }
        r.push("Server", SERVER);
        // A provisional response's SDP answer goes back to the line (early
        // media flows between the line and the endpoint directly): a 183
        // without it is no early media to a phone, so a self-test caller
        // would hear nothing.
        if !m.body.is_empty() && code > 100 && code < 200 {
            if let Some(ct) = m.header("Content-Type") {
                r.push("Content-Type", ct);
                r.body = m.body.clone();
            }
        }
        let bytes = r.to_bytes();
        call.a_last = Some(bytes.clone());
        if code >= 200 {
            call.a_final = true;
        }
        let dst = call.a_src;
        self.send(dst, &bytes).await;
    }
}

/// The endpoint's reason phrase, passed on as it was.
fn reason_of(m: &Message) -> Option<String> {
    match &m.start {
        message::StartLine::Response { reason, .. } if !reason.is_empty() => Some(reason.clone()),
        _ => None,
    }
}

/// A quoted display name.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
