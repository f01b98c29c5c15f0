//! All 49 RFC 4475 torture messages, each as the RFC describes it: what the
//! parser does with it (read, read but refused with a named reason, or not
//! readable), what the verdict engine says when it is given as a call, and
//! what the real endpoint answers over UDP and over TCP (the final response
//! codes, or silence, and whether a TCP connection stays open).
//!
//! The messages are byte-exact copies from the RFC's own archive
//! (tests/fixtures/rfc4475/README.md says where each expectation comes from).
//! The endpoint listens on 127.0.0.1 port 0 and only loopback is used.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cidguard::config::{self, Transport};
use cidguard::sip::endpoint::{
    CallHandler, Disposition, Endpoint, EndpointHandle, EndpointOptions, FinishedCall, IncomingCall,
};
use cidguard::sip::message::{check_request, frame_stream, Frame, Malformed};
use cidguard::sip::{parse, Message, ParseError};
use cidguard::verdict::{judge, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::verdict_corpus::{example_policies, fixture_dir};

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(10);

/// What the parser makes of the bytes.
#[derive(Debug, Clone, Copy)]
enum Parsed {
    /// Read, and a valid request or response.
    Valid,
    /// Read, and a request that must be refused: the [`Malformed`] variant.
    Refused(&'static str),
    /// Not readable as SIP: the [`ParseError`] variant.
    Unreadable(&'static str),
}

/// What the verdict engine says for the reception (withheld) line.
#[derive(Debug, Clone, Copy)]
enum Judged {
    /// A fail with findings: the message presents someone.
    Fail,
    /// Inconclusive, with a reason containing this text.
    Inconclusive(&'static str),
}

/// What becomes of the connection after the answers (TCP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Still open: a following OPTIONS on it is answered.
    Open,
    /// Closed by the endpoint.
    Closed,
}

/// The endpoint's answers on one transport: the final responses in order
/// (none for silence), then the connection's state.
#[derive(Debug, Clone, Copy)]
struct Wire {
    finals: &'static [u16],
    after: After,
}

const fn answers(finals: &'static [u16]) -> Wire {
    Wire {
        finals,
        after: After::Open,
    }
}

const SILENT: Wire = answers(&[]);

const fn then_closed(finals: &'static [u16]) -> Wire {
    Wire {
        finals,
        after: After::Closed,
    }
}

struct Case {
    /// File name without `.dat`, as the RFC names it.
    name: &'static str,
    /// RFC 4475 section.
    section: &'static str,
    parsed: Parsed,
    judged: Judged,
    udp: Wire,
    tcp: Wire,
}

use Judged::{Fail, Inconclusive as Inc};
use Parsed::{Refused, Unreadable, Valid};

const NOT_INVITE: &str = "not an INVITE";

/// The endpoint owns the users `user` and `UserB`, so the INVITEs the RFC
/// sends to them reach the call handler (which rejects with 486) or are
/// refused for their content; other users get 404.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // 3.1.1 Valid messages: read and accepted.
    // wsinv has a To tag but no dialog: 481 (RFC 3261 section 12.2.2).
    Case { name: "wsinv", section: "3.1.1.1", parsed: Valid, judged: Fail, udp: answers(&[481]), tcp: answers(&[481]) },
    // An unknown method: 501 with Allow.
    Case { name: "intmeth", section: "3.1.1.2", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[501]), tcp: answers(&[501]) },
    // Not one of the endpoint's users.
    Case { name: "esc01", section: "3.1.1.3", parsed: Valid, judged: Fail, udp: answers(&[404]), tcp: answers(&[404]) },
    // REGISTER: the endpoint is no registrar (405).
    Case { name: "escnull", section: "3.1.1.4", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    Case { name: "esc02", section: "3.1.1.5", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[501]), tcp: answers(&[501]) },
    Case { name: "lwsdisp", section: "3.1.1.6", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[200]), tcp: answers(&[200]) },
    Case { name: "longreq", section: "3.1.1.7", parsed: Valid, judged: Fail, udp: answers(&[486]), tcp: answers(&[486]) },
    // The INVITE after the REGISTER is noise in a datagram, but a second
    // message on a stream; the five bytes its Content-Length leaves over
    // can't be framed, so the connection closes.
    Case { name: "dblreq", section: "3.1.1.8", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: then_closed(&[405, 404]) },
    Case { name: "semiuri", section: "3.1.1.9", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[200]), tcp: answers(&[200]) },
    Case { name: "transports", section: "3.1.1.10", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[200]), tcp: answers(&[200]) },
    Case { name: "mpart01", section: "3.1.1.11", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    // Responses that match no transaction are dropped.
    Case { name: "unreason", section: "3.1.1.12", parsed: Valid, judged: Inc("response"), udp: SILENT, tcp: SILENT },
    Case { name: "noreason", section: "3.1.1.13", parsed: Valid, judged: Inc("response"), udp: SILENT, tcp: SILENT },
    // 3.1.2 Invalid messages.
    Case { name: "badinv01", section: "3.1.2.1", parsed: Refused("EmptyPart"), judged: Fail, udp: answers(&[400]), tcp: answers(&[400]) },
    // Over TCP the rest of the body never comes: the connection idles out.
    Case { name: "clerr", section: "3.1.2.2", parsed: Refused("Truncated"), judged: Fail, udp: answers(&[400]), tcp: then_closed(&[]) },
    // A stream can't be framed with a negative length: closed.
    Case { name: "ncl", section: "3.1.2.3", parsed: Refused("ContentLength"), judged: Fail, udp: answers(&[400]), tcp: then_closed(&[]) },
    Case { name: "scalar02", section: "3.1.2.4", parsed: Refused("CSeqRange"), judged: Inc(NOT_INVITE), udp: answers(&[400]), tcp: answers(&[400]) },
    // A response whose CSeq can't be read matches no transaction: dropped.
    Case { name: "scalarlg", section: "3.1.2.5", parsed: Valid, judged: Inc("response"), udp: SILENT, tcp: SILENT },
    Case { name: "quotbal", section: "3.1.2.6", parsed: Refused("Address"), judged: Fail, udp: answers(&[400]), tcp: answers(&[400]) },
    Case { name: "ltgtruri", section: "3.1.2.7", parsed: Refused("RequestUri"), judged: Fail, udp: answers(&[400]), tcp: answers(&[400]) },
    Case { name: "lwsruri", section: "3.1.2.8", parsed: Refused("RequestUri"), judged: Fail, udp: answers(&[400]), tcp: answers(&[400]) },
    // Liberal where the RFC allows it: the extra spaces are ignored.
    Case { name: "lwsstart", section: "3.1.2.9", parsed: Valid, judged: Fail, udp: answers(&[486]), tcp: answers(&[486]) },
    Case { name: "trws", section: "3.1.2.10", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[200]), tcp: answers(&[200]) },
    // The escaped headers are ignored; the Date is not used.
    Case { name: "escruri", section: "3.1.2.11", parsed: Valid, judged: Fail, udp: answers(&[486]), tcp: answers(&[486]) },
    Case { name: "baddate", section: "3.1.2.12", parsed: Valid, judged: Fail, udp: answers(&[486]), tcp: answers(&[486]) },
    Case { name: "regbadct", section: "3.1.2.13", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    Case { name: "badaspec", section: "3.1.2.14", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[200]), tcp: answers(&[200]) },
    Case { name: "baddn", section: "3.1.2.15", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[200]), tcp: answers(&[200]) },
    Case { name: "badvers", section: "3.1.2.16", parsed: Refused("Version"), judged: Inc(NOT_INVITE), udp: answers(&[505]), tcp: answers(&[505]) },
    Case { name: "mismatch01", section: "3.1.2.17", parsed: Refused("CSeqMethod"), judged: Inc(NOT_INVITE), udp: answers(&[400]), tcp: answers(&[400]) },
    // The RFC prefers 501 and accepts 400.
    Case { name: "mismatch02", section: "3.1.2.18", parsed: Refused("CSeqMethod"), judged: Inc(NOT_INVITE), udp: answers(&[400]), tcp: answers(&[400]) },
    Case { name: "bigcode", section: "3.1.2.19", parsed: Unreadable("BadStatusCode"), judged: Inc("can't be read"), udp: SILENT, tcp: SILENT },
    // 3.2 Transaction layer: refused statelessly.
    Case { name: "badbranch", section: "3.2.1", parsed: Refused("Branch"), judged: Inc(NOT_INVITE), udp: answers(&[400]), tcp: answers(&[400]) },
    // 3.3 Application layer.
    Case { name: "insuf", section: "3.3.1", parsed: Refused("Missing"), judged: Inc("no From"), udp: answers(&[400]), tcp: answers(&[400]) },
    Case { name: "unkscm", section: "3.3.2", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[416]), tcp: answers(&[416]) },
    Case { name: "novelsc", section: "3.3.3", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[416]), tcp: answers(&[416]) },
    // A registrar would say 400; the endpoint is none (405).
    Case { name: "unksm2", section: "3.3.4", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    Case { name: "bext01", section: "3.3.5", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[420]), tcp: answers(&[420]) },
    Case { name: "invut", section: "3.3.6", parsed: Valid, judged: Fail, udp: answers(&[415]), tcp: answers(&[415]) },
    Case { name: "regaut01", section: "3.3.7", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    Case { name: "multi01", section: "3.3.8", parsed: Refused("Repeated"), judged: Fail, udp: answers(&[400]), tcp: answers(&[400]) },
    // Over TCP: 400 for the first framing, then the rest is not SIP: closed.
    Case { name: "mcl01", section: "3.3.9", parsed: Refused("ContentLengths"), judged: Inc(NOT_INVITE), udp: answers(&[400]), tcp: then_closed(&[400]) },
    Case { name: "bcast", section: "3.3.10", parsed: Valid, judged: Inc("response"), udp: SILENT, tcp: SILENT },
    // An endpoint treats Max-Forwards 0 as any other value.
    Case { name: "zeromf", section: "3.3.11", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[200]), tcp: answers(&[200]) },
    Case { name: "cparam01", section: "3.3.12", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    Case { name: "cparam02", section: "3.3.13", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    Case { name: "regescrt", section: "3.3.14", parsed: Valid, judged: Inc(NOT_INVITE), udp: answers(&[405]), tcp: answers(&[405]) },
    Case { name: "sdp01", section: "3.3.15", parsed: Valid, judged: Fail, udp: answers(&[406]), tcp: answers(&[406]) },
    // 3.4 Backward compatibility: accepted over UDP; a stream needs a
    // Content-Length (RFC 3261 section 18.3), so TCP closes.
    Case { name: "inv2543", section: "3.4.1", parsed: Valid, judged: Fail, udp: answers(&[486]), tcp: then_closed(&[]) },
];

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir("rfc4475").join(format!("{name}.dat")))
        .unwrap_or_else(|e| panic!("{name}.dat: {e}"))
}

fn variant<T: std::fmt::Debug>(v: &T) -> String {
    let d = format!("{v:?}");
    d.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn rfc4475_all_49_messages_are_present_and_listed_once() {
    assert_eq!(CASES.len(), 49);
    let mut files: Vec<String> = std::fs::read_dir(fixture_dir("rfc4475"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.name.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
    let mut sections: Vec<&str> = CASES.iter().map(|c| c.section).collect();
    sections.sort();
    sections.dedup();
    assert_eq!(sections.len(), 49, "a section listed twice");
}

/// (a) and (b): the parser's reading and the verdict, per the table.
#[test]
fn rfc4475_each_message_is_read_or_refused_as_the_rfc_expects() {
    let policies = example_policies();
    let mut wrong = Vec::new();
    for c in CASES {
        let raw = read(c.name);
        let parsed = parse(&raw);
        let got = match &parsed {
            Ok(m) => match check_request(m) {
                Ok(()) => "Valid".to_string(),
                Err(e) => format!("Refused({}): {e}", variant(&e)),
            },
            Err(e) => format!("Unreadable({}): {e}", variant(e)),
        };
        let ok = match (c.parsed, &parsed) {
            (Valid, Ok(m)) => check_request(m).is_ok(),
            (Refused(v), Ok(m)) => check_request(m).err().is_some_and(|e| variant(&e) == v),
            (Unreadable(v), Err(e)) => variant(e) == v,
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{} ({}): expected {:?}, got {got}",
                c.name, c.section, c.parsed
            ));
        }
        for p in &policies {
            let v = judge(p, &raw);
            assert_ne!(
                v.outcome,
                Outcome::Pass,
                "{}: passed as {}: {v:#?}",
                c.name,
                p.line
            );
        }
        let v = judge(&policies[0], &raw);
        let ok = match c.judged {
            Fail => v.outcome == Outcome::Fail && !v.findings.is_empty(),
            Inc(why) => {
                v.outcome == Outcome::Inconclusive
                    && v.reason.as_deref().is_some_and(|r| r.contains(why))
            }
        };
        if !ok {
            wrong.push(format!(
                "{} ({}): expected verdict {:?}, got {} ({})",
                c.name,
                c.section,
                c.judged,
                v.outcome,
                v.summary()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The details the RFC spells out for some of the valid messages.
#[test]
fn rfc4475_valid_messages_keep_their_details() {
    use cidguard::sip::header::{parse_name_addr, parse_uri, split_list};
    let msg = |n: &str| parse(&read(n)).unwrap();
    // 3.1.1.1: folded, odd-case headers, escaped quotes, an empty Subject.
    let m = msg("wsinv");
    assert_eq!(m.header("Subject"), Some(""));
    assert_eq!(m.cseq(), Some((9, "INVITE")));
    assert_eq!(m.header("Max-Forwards"), Some("0068"));
    assert_eq!(
        parse_name_addr(m.header("From").unwrap())
            .unwrap()
            .display
            .as_deref(),
        Some(r#"J Rosenberg \""#)
    );
    assert_eq!(m.headers_named("Via").count(), 2);
    assert_eq!(m.header("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(m.body.len(), 150);
    // 3.1.1.2: % is no escape in a method; the To display name keeps its
    // quoted BEL, NUL and DEL.
    let m = msg("intmeth");
    assert_eq!(
        m.method(),
        Some("!interesting-Method0123456789_*+`.%indeed'~")
    );
    let to = parse_name_addr(m.header("To").unwrap()).unwrap();
    assert_eq!(
        to.display.as_deref(),
        Some("BEL:\u{7} NUL:\u{0} DEL:\u{7f}")
    );
    // 3.1.1.3: escapes in user parts are undone once.
    let m = msg("esc01");
    let ruri = parse_uri(m.request_uri().unwrap());
    assert_eq!(ruri.user.as_deref(), Some("sips:user@example.com"));
    assert_eq!(ruri.host, "example.net");
    // 3.1.1.4: the escaped NULs are kept, not cut at.
    let m = msg("escnull");
    let to = parse_uri(&parse_name_addr(m.header("To").unwrap()).unwrap().uri);
    assert_eq!(to.user.as_deref(), Some("null-\u{0}-null"));
    assert_eq!(m.headers_named("Contact").count(), 2);
    // 3.1.1.5: two Contacts, not three; RE%47IST%45R is not REGISTER.
    let m = msg("esc02");
    assert_eq!(m.headers_named("Contact").count(), 2);
    assert!(!m.is_request("REGISTER"));
    // 3.1.1.8: the INVITE after the REGISTER is trailing noise.
    let m = msg("dblreq");
    assert!(m.is_request("REGISTER") && m.body.is_empty());
    assert!(m.trailing.windows(6).any(|w| w == b"INVITE"));
    // 3.1.1.9: the user part keeps its parameter.
    let m = msg("semiuri");
    assert_eq!(
        parse_uri(m.request_uri().unwrap()).user.as_deref(),
        Some("user;par=u@example.net")
    );
    // 3.1.1.11: a binary body with NULs, framed by its Content-Length.
    let m = msg("mpart01");
    assert_eq!(m.body.len(), 553);
    assert!(m.body.contains(&0));
    // 3.1.1.12 and 3.1.1.13: any reason phrase, or none.
    assert_eq!(msg("unreason").status(), Some(200));
    let m = msg("noreason");
    assert_eq!(
        (m.status(), &m.start.to_string()[..11]),
        (Some(100), "SIP/2.0 100")
    );
    // 3.1.2.5: the response's CSeq can't be read, so no transaction matches.
    assert_eq!(msg("scalarlg").cseq(), None);
    // 3.3.3: soap.beep is a scheme.
    assert_eq!(
        parse_uri(msg("novelsc").request_uri().unwrap()).scheme,
        "soap.beep"
    );
    // 3.3.12 and 3.3.13: a header parameter, then a URI parameter.
    let c = parse_name_addr(msg("cparam01").header("Contact").unwrap()).unwrap();
    assert!(c.param("unknownparam").is_some() && !c.uri.contains("unknownparam"));
    let c = parse_name_addr(msg("cparam02").header("Contact").unwrap()).unwrap();
    assert!(c.param("unknownparam").is_none() && c.uri.contains("unknownparam"));
    // 3.3.14: the escaped Route header in the Contact URI.
    let c = parse_name_addr(msg("regescrt").header("Contact").unwrap()).unwrap();
    assert_eq!(
        parse_uri(&c.uri).headers.as_deref(),
        Some("Route=<sip:sip.example.com>")
    );
    // 3.4.1: no Content-Length: the body is the rest of the datagram.
    let m = msg("inv2543");
    assert!(m.header("Content-Length").is_none() && m.body.ends_with(b"RTP/AVP 0\r\n"));
    // 3.1.1.10: five Vias, one with a transport nobody knows.
    assert_eq!(msg("transports").headers_named("Via").count(), 5);
    assert_eq!(
        split_list(msg("semiuri").header("Accept").unwrap()).len(),
        6
    );
}

// ---------------------------------------------------------------------------
// The real endpoint

/// Rejects every call at once with 486.
struct Reject486;

impl CallHandler for Reject486 {
    fn on_invite(&self, _call: &IncomingCall) -> Disposition {
        Disposition::Reject(486)
    }
    fn on_finished(&self, _call: FinishedCall) {}
}

async fn start_endpoint() -> EndpointHandle {
    let cfg: config::Endpoint = toml::from_str(
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\nnumbers = [\"user\", \"UserB\"]\n",
    )
    .unwrap();
    let mut opts = EndpointOptions::default();
    // clerr over TCP waits for a body that never comes: a short limit on a
    // whole message's arrival shows the connection being closed without a
    // long wait.
    opts.stack.transport.idle_timeout = Duration::from_millis(1500);
    opts.stack.transport.message_timeout = Duration::from_millis(1500);
    // A message and a probe in quick succession from one address: the rate
    // limit is not under test here.
    opts.invite_rate = 100.0;
    opts.invite_burst = 100.0;
    let spec = cidguard::plan::endpoint_spec(&cfg, None).unwrap();
    Endpoint::start_with(&spec, Arc::new(Reject486), opts)
        .await
        .unwrap()
}

/// An OPTIONS with its own Call-ID, to show the endpoint has nothing more
/// to say about what came before it on the same socket or connection.
fn probe(id: &str, transport: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:user@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK-probe-{id}\r\n\
         From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:user@127.0.0.1>\r\nCall-ID: probe-{id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A final response and its Call-ID, or why there is none.
fn final_of(bytes: &[u8]) -> Option<(u16, Message)> {
    let m = parse(bytes).ok()?;
    let code = m.status()?;
    (code >= 200).then_some((code, m))
}

async fn udp_answers(ep: SocketAddr, name: &str, raw: &[u8], want: usize) -> Vec<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(raw, ep).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let mut finals = Vec::new();
    while finals.len() < want {
        let Ok(Ok((n, _))) = tokio::time::timeout(WAIT, s.recv_from(&mut buf)).await else {
            break;
        };
        if let Some((code, _)) = final_of(&buf[..n]) {
            finals.push(code);
        }
    }
    // Anything else the endpoint says about the message comes before its
    // answer to a probe sent after it.
    s.send_to(&probe(name, "UDP"), ep).await.unwrap();
    loop {
        let r = tokio::time::timeout(WAIT, s.recv_from(&mut buf)).await;
        let (n, _) = r
            .unwrap_or_else(|_| panic!("{name} over UDP: the probe was not answered"))
            .unwrap();
        if let Some((code, m)) = final_of(&buf[..n]) {
            if m.call_id().is_some_and(|c| c.starts_with("probe-")) {
                assert_eq!(code, 200, "{name} over UDP: probe");
                break;
            }
            finals.push(code);
        }
    }
    finals
}

/// Reads whole responses off a stream; None at end of stream.
struct Reader {
    conn: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    async fn next_final(&mut self) -> Option<(u16, Message)> {
        let mut chunk = [0u8; 4096];
        loop {
            while let Frame::Complete(n) | Frame::KeepAlive(n) = frame_stream(&self.buf) {
                let bytes: Vec<u8> = self.buf.drain(..n).collect();
                if let Some(f) = final_of(&bytes) {
                    return Some(f);
                }
            }
            let r = tokio::time::timeout(WAIT, self.conn.read(&mut chunk)).await;
            match r.expect("a response or the end of the connection in time") {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                // End of stream or reset: closed.
                _ => return None,
            }
        }
    }
}

async fn tcp_answers(ep: SocketAddr, name: &str, raw: &[u8], want: &Wire) -> (Vec<u16>, After) {
    let mut r = Reader {
        conn: TcpStream::connect(ep).await.unwrap(),
        buf: Vec::new(),
    };
    r.conn.write_all(raw).await.unwrap();
    let mut finals = Vec::new();
    while finals.len() < want.finals.len() {
        match r.next_final().await {
            Some((code, _)) => finals.push(code),
            None => return (finals, After::Closed),
        }
    }
    if want.after == After::Closed {
        // Expect the end of the connection (within WAIT), nothing else.
        return match r.next_final().await {
            None => (finals, After::Closed),
            Some((code, _)) => {
                finals.push(code);
                (finals, After::Open)
            }
        };
    }
    if r.conn.write_all(&probe(name, "TCP")).await.is_err() {
        return (finals, After::Closed);
    }
    loop {
        match r.next_final().await {
            None => return (finals, After::Closed),
            Some((code, m)) if m.call_id().is_some_and(|c| c.starts_with("probe-")) => {
                assert_eq!(code, 200, "{name} over TCP: probe");
                return (finals, After::Open);
            }
            Some((code, _)) => finals.push(code),
        }
    }
}

/// (c): the real endpoint's answers over UDP and TCP, per the table, and it
/// counts no panics. Each message goes to an endpoint of its own: several
/// RFC 4475 messages share a Via branch and sent-by (z9hG4bKkdjuw...), and one
/// endpoint would rightly take the second as a retransmission of the first;
/// the same INVITE over UDP and then TCP would be a merged request (482).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_endpoint_answers_each_message_over_udp_and_tcp() {
    let mut wrong = Vec::new();
    for c in CASES {
        let raw = read(c.name);
        let ep = start_endpoint().await;
        let got = udp_answers(
            ep.addr(Transport::Udp).unwrap(),
            c.name,
            &raw,
            c.udp.finals.len(),
        )
        .await;
        if got != c.udp.finals {
            wrong.push(format!(
                "{} ({}) over UDP: expected {:?}, got {got:?}",
                c.name, c.section, c.udp.finals
            ));
        }
        no_panics(&ep, c.name);
        ep.shutdown().await;
        let ep = start_endpoint().await;
        let (got, after) =
            tcp_answers(ep.addr(Transport::Tcp).unwrap(), c.name, &raw, &c.tcp).await;
        if got != c.tcp.finals || after != c.tcp.after {
            wrong.push(format!(
                "{} ({}) over TCP: expected {:?} then {:?}, got {got:?} then {after:?}",
                c.name, c.section, c.tcp.finals, c.tcp.after
            ));
        }
        no_panics(&ep, c.name);
        ep.shutdown().await;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn no_panics(ep: &EndpointHandle, name: &str) {
    let st = ep.stats();
    assert_eq!(
        (
            st.handler_panics,
            st.task_panics,
            st.stack.dispatcher_panics
        ),
        (0, 0, 0),
        "{name}: {st:?}"
    );
}

/// The headers the RFC asks for in three of the answers: 501 lists the
/// methods understood (3.1.1.2), 420 lists the Require options (3.3.5),
/// 415 says what is accepted (3.3.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_answers_carry_the_headers_the_rfc_asks_for() {
    let ep = start_endpoint().await;
    let udp = ep.addr(Transport::Udp).unwrap();
    let m = answer(udp, "intmeth").await;
    assert!(
        m.header("Allow").is_some_and(|a| a.contains("INVITE")),
        "{m:?}"
    );
    let m = answer(udp, "bext01").await;
    assert_eq!(
        m.header("Unsupported"),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    let m = answer(udp, "invut").await;
    assert_eq!(m.header("Accept"), Some("application/sdp"));
    let m = answer(udp, "badvers").await;
    assert_eq!(m.status(), Some(505));
    ep.shutdown().await;
}

/// The final response the endpoint sends to one message over UDP.
async fn answer(ep: SocketAddr, name: &str) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&read(name), ep).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name}: no answer"))
            .unwrap();
        if let Some((_, m)) = final_of(&buf[..n]) {
            return m;
        }
    }
}

/// A request the parser could not read at all is never answered, and the
/// reason is named.
#[test]
fn rfc4475_unreadable_reasons_are_named() {
    let e = parse(&read("bigcode")).unwrap_err();
    assert_eq!(e, ParseError::BadStatusCode("4294967301".into()));
    let m = parse(&read("insuf")).unwrap();
    assert_eq!(
        check_request(&m),
        Err(Malformed::Missing(vec!["From", "To", "Call-ID"]))
    );
    assert_eq!(
        check_request(&m).unwrap_err().to_string(),
        "no From, no To, no Call-ID header"
    );
}
