//! Building outgoing SIP messages: requests, responses to a received request,
//! identifiers (tags, branches, Call-IDs) and the small SDP both user agents
//! offer or answer with.
//!
//! Messages are kept as ordered (name, value) pairs until serialised, so the
//! transaction layer can derive an ACK or CANCEL from the request it sent
//! without re-parsing, and Content-Length is always computed, never trusted.

use std::fmt::Write as _;
use std::net::SocketAddr;

use rand::distributions::Alphanumeric;
use rand::Rng;

use super::header::{parse_name_addr, parse_params};
use super::message::Message;
use crate::media::rtp::Codec;

/// RFC 3261 magic cookie that marks a branch as globally unique.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new Via branch (cookie plus 22 random characters, ~130 bits).
pub fn new_branch() -> String {
    format!("{BRANCH_COOKIE}{}", random_token(22))
}

/// A new From/To tag.
pub fn new_tag() -> String {
    random_token(16)
}

/// A new Call-ID. The host part is not required and would reveal our
/// address to the far end, so only random characters are used.
pub fn new_call_id() -> String {
    random_token(32)
}

/// An outgoing request before serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    /// Headers in wire order, without Content-Length (added by [`Request::to_bytes`]).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, uri: &str) -> Request {
        Request {
            method: method.to_string(),
            uri: uri.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Append a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    /// The first value of a header (case-insensitive name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replace every header of this name with one value, at the first one's
    /// position (appended when absent).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(i) => {
                self.headers[i].1 = value;
                let mut idx = 0;
                self.headers.retain(|(n, _)| {
                    idx += 1;
                    idx - 1 == i || !n.eq_ignore_ascii_case(name)
                });
            }
            None => self.push(name, value),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The top Via's branch parameter.
    pub fn branch(&self) -> Option<String> {
        via_branch(self.get("Via")?)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID")
    }

    pub fn cseq(&self) -> Option<u32> {
        self.get("CSeq")?.split_whitespace().next()?.parse().ok()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        serialise(&mut s, &self.headers, &self.body)
    }
}

fn serialise(s: &mut String, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    for (n, v) in headers {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = std::mem::take(s).into_bytes();
    out.extend_from_slice(body);
    out
}

/// An outgoing response before serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("SIP/2.0 {} {}\r\n", self.code, self.reason);
        serialise(&mut s, &self.headers, &self.body)
    }
}

/// A response to `req` (RFC 3261 section 8.2.6.2): Via, From, To, Call-ID
/// and CSeq copied, and `to_tag` added to To unless it already has a tag
/// (never on 100 Trying, which must not create a dialog).
pub fn response_to(req: &Message, code: u16, to_tag: Option<&str>) -> Response {
    let mut r = Response {
        code,
        reason: reason_phrase(code).to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    for h in req.headers_named("Via") {
        r.push("Via", h.value.clone());
    }
    if let Some(v) = req.header("From") {
        r.push("From", v);
    }
    if let Some(v) = req.header("To") {
        let has_tag = parse_name_addr(v)
            .map(|na| na.param("tag").is_some())
            .unwrap_or(false);
        match to_tag {
            Some(t) if !has_tag && code > 100 => r.push("To", format!("{v};tag={t}")),
            _ => r.push("To", v),
        }
    }
    if let Some(v) = req.header("Call-ID") {
        r.push("Call-ID", v);
    }
    if let Some(v) = req.header("CSeq") {
        r.push("CSeq", v);
    }
    r
}

/// The standard reason phrase for a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        433 => "Anonymity Disallowed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// The parts of a Via header value we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`... upper-cased.
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// `host[:port]` as sent, for transaction matching.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Parse the first Via in a header value (`SIP/2.0/UDP host:port;params`,
/// possibly followed by `, SIP/2.0/...`).
pub fn parse_via(value: &str) -> Option<Via> {
    let first = super::header::split_list(value).into_iter().next()?;
    // sent-protocol is three tokens joined by '/', with optional whitespace
    // around each slash (RFC 4475 section 3.1.1.1 exercises this).
    let mut rest = first.trim_start();
    let mut tokens = [""; 3];
    for (i, slot) in tokens.iter_mut().enumerate() {
        if i > 0 {
            rest = rest.trim_start().strip_prefix('/')?.trim_start();
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(rest.len());
        *slot = &rest[..end];
        rest = &rest[end..];
    }
    let [name, _version, transport] = tokens;
    if !name.eq_ignore_ascii_case("SIP") || transport.is_empty() {
        return None;
    }
    let rest = rest.trim();
    let (hostport, params) = match rest.find(';') {
        Some(i) => (&rest[..i], parse_params(&rest[i..])),
        None => (rest, Vec::new()),
    };
    let hostport = hostport.trim();
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let end = r.find(']')?;
        (
            r[..end].to_string(),
            r[end + 1..]
                .trim()
                .strip_prefix(':')
                .and_then(|p| p.trim().parse().ok()),
        )
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.trim().to_string(), Some(p.trim().parse().ok()?)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Via {
        transport: transport.to_ascii_uppercase(),
        host,
        port,
        params,
    })
}

/// The branch of the first Via in a header value.
pub fn via_branch(value: &str) -> Option<String> {
    parse_via(value).and_then(|v| v.branch().map(str::to_string))
}

/// Format an address for use in a URI or Via (IPv6 in brackets).
pub fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// The SDP both sides use: one audio stream, PCMU plus RFC 4733
/// telephone-event, on a real RTP port so a PBX that checks media (or a
/// later media-token check) finds something there.
pub fn sdp(addr: SocketAddr, session_id: u64) -> Vec<u8> {
    sdp_offer(addr, session_id, Codec::Pcmu)
}

/// The same with `codec` (PCMU or PCMA, static payload type) as the one
/// audio format besides telephone-event.
pub fn sdp_offer(addr: SocketAddr, session_id: u64, codec: Codec) -> Vec<u8> {
    let (ip_kind, ip) = match addr {
        SocketAddr::V4(a) => ("IP4", a.ip().to_string()),
        SocketAddr::V6(a) => ("IP6", a.ip().to_string()),
    };
    format!(
        "v=0\r\n\
         o=- {session_id} {session_id} IN {ip_kind} {ip}\r\n\
         s=-\r\n\
         c=IN {ip_kind} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP {pt} 101\r\n\
         a=rtpmap:{pt} {name}/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        port = addr.port(),
        pt = codec.static_payload_type(),
        name = codec.name(),
    )
    .into_bytes()
}

/// The audio address in an SDP body (the session or media `c=` line and the
/// first `m=audio` port), for sending media or tokens to the far end.
pub fn sdp_audio_addr(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip = None;
    let mut port = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("c=") {
            // Only the session-level c= or the first audio stream's.
            if port.is_none() || ip.is_none() {
                ip = c.split_whitespace().nth(2).and_then(|a| a.parse().ok());
            }
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            if port.is_none() {
                port = m.split_whitespace().next().and_then(|p| p.parse().ok());
            }
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_set_replaces_all() {
        let mut r = Request::new("INVITE", "sip:a@b");
        r.push("X", "1");
        r.push("Via", "a");
        r.push("X", "2");
        r.set("x", "3");
        assert_eq!(
            r.headers,
            vec![("X".into(), "3".into()), ("Via".into(), "a".into())]
        );
        let bytes = r.to_bytes();
        assert!(bytes.ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn response_copies_and_tags() {
        let m = crate::sip::parse(
            b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP b\r\n\
              f: <sip:a@x>;tag=1\r\nt: <sip:1@x>\r\ni: c\r\nCSeq: 1 INVITE\r\n\r\n",
        )
        .unwrap();
        let r = response_to(&m, 180, Some("abc"));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with(
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b\r\n"
        ));
        assert!(text.contains("To: <sip:1@x>;tag=abc\r\n"));
        let r = response_to(&m, 100, Some("abc"));
        assert!(!String::from_utf8(r.to_bytes()).unwrap().contains("tag=abc"));
    }

    #[test]
    fn via_parsing() {
        let v =
            parse_via("SIP/2.0/udp 10.0.0.1:5062;rport;branch=z9hG4bKx, SIP/2.0/TCP y").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.param("rport"), Some(None));
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        let v = parse_via("SIP / 2.0 / TCP [2001:db8::9]:5060 ; branch = z9hG4bKy").unwrap();
        assert_eq!(v.host, "2001:db8::9");
        assert_eq!(v.branch(), Some("z9hG4bKy"));
        assert!(parse_via("garbage").is_none());
    }

    #[test]
    fn sdp_roundtrip() {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(sdp_audio_addr(&sdp(a, 1)), Some(a));
    }

    /// An offer of PCMA is read by the self-test's SDP reader as PCMA.
    #[test]
    fn sdp_offer_names_its_codec() {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let body = String::from_utf8(sdp_offer(a, 1, codec)).unwrap();
            let t = crate::media::sdp::parse(&body).unwrap().target().unwrap();
            assert_eq!((t.codec, t.addr), (codec, a));
        }
        assert_eq!(sdp(a, 7), sdp_offer(a, 7, Codec::Pcmu));
    }
}
