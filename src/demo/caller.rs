//! The demo's caller: a phone that dials the self-test number and records
//! what it hears, so a newcomer can listen to the spoken verdict.
//!
//! One call, placed as a phone places it: an INVITE (through the project's
//! own line, [`crate::sip::uac::Line`]) presenting a chosen identity or
//! none, an SDP offer of one G.711 codec on an RTP socket bound on the
//! same loopback address, the early media (`183 Session Progress`) read
//! until the final response, the final response ACKed (the transaction
//! layer does that, RFC 3261 section 17.1.1.3). A call nobody ends within
//! the maximum duration is cancelled. The self-test never answers; if a
//! 200 ever arrives, the line ACKs it and hangs up, and [`Heard::answered`]
//! says so.
//!
//! What arrives is bounded: datagrams of at most [`MAX_DATAGRAM`] bytes,
//! a packet count and a sample count from the maximum duration (itself at
//! most [`MAX_DURATION`]), and a short grace after the final response for
//! packets still on their way. Only loopback addresses are called: this is
//! the demo's own phone, talking to the demo's own endpoint.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtp::packet::Packet;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use webrtc_util::marshal::Unmarshal;

use crate::media::rtp::{Codec, PACKET_TIME};
use crate::media::wav::{self, WavError};
use crate::secret::Secret;
use crate::sip::account::Account;
use crate::sip::build::host_port;
use crate::sip::transport::{CapturedMessage, Direction, Transport};
use crate::sip::uac::{CallOptions, CallOutcome, Line, LineOptions, UacError};
use crate::sip::uri::{check_uri, escape_user};

/// The longest call placed, whatever is asked: a spoken verdict is seconds
/// long.
pub const MAX_DURATION: Duration = Duration::from_secs(120);
/// The largest datagram read as RTP (an Ethernet MTU); larger ones are
/// ignored.
pub const MAX_DATAGRAM: usize = 1500;
/// After the final response, reading stops at the first quiet spell this
/// long (packets sent before the response are already in the socket)...
const GRACE_QUIET: Duration = Duration::from_millis(150);
/// ...and at the latest this long after it.
const GRACE_MAX: Duration = Duration::from_secs(1);
/// Beyond the maximum duration, how long the line may take to end the call
/// (the CANCEL's transaction, 64*T1, and a little more).
const CALL_SLACK: Duration = Duration::from_secs(40);
/// The user part of the caller's Contact: neutral, so a withheld call
/// shows nothing there either.
const CONTACT_USER: &str = "caller";
/// What a withheld call's From says (RFC 3323 section 4.1.1.3).
const ANONYMOUS_FROM: &str = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";

/// An identity to present: `"display" <sip:user@host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The display name (quoted on the wire); none when None.
    pub display: Option<String>,
    /// The user part: a number such as `+61370100142`.
    pub user: String,
    /// The host part: the PBX's domain.
    pub host: String,
}

/// What the caller shows of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerId {
    /// This identity in From, no Privacy: the caller's number shows.
    Shown(Identity),
    /// An anonymous From and `Privacy: id`, with the identity the network
    /// asserts (P-Asserted-Identity), if any.
    Withheld { asserted: Option<Identity> },
}

/// Digest credentials, for a call through a PBX that challenges.
#[derive(Debug, Clone)]
pub struct CallerAuth {
    /// The account name (and Digest username).
    pub username: String,
    /// Its password (never printed).
    pub password: Secret,
}

/// One call to place.
#[derive(Debug, Clone)]
pub struct CallerOptions {
    /// Where the INVITE goes (UDP): the endpoint, or a PBX. Loopback only.
    pub target: SocketAddr,
    /// The Request-URI's user part: the number dialled.
    pub number: String,
    /// What the caller shows of itself.
    pub caller_id: CallerId,
    /// The one G.711 codec offered.
    pub codec: Codec,
    /// Cancel the call when nothing final has arrived by then (at most
    /// [`MAX_DURATION`]).
    pub max_duration: Duration,
    /// Credentials, when the target challenges.
    pub auth: Option<CallerAuth>,
}

impl CallerOptions {
    /// A call to `number` at `target` showing `caller_id`, offering PCMU,
    /// for at most 30 seconds, without credentials.
    pub fn new(target: SocketAddr, number: &str, caller_id: CallerId) -> CallerOptions {
        CallerOptions {
            target,
            number: number.to_string(),
            caller_id,
            codec: Codec::Pcmu,
            max_duration: Duration::from_secs(30),
            auth: None,
        }
    }
}

/// What the caller heard, and how the call went.
#[derive(Debug, Clone)]
pub struct Heard {
    /// The call's Call-ID.
    pub call_id: String,
    /// Provisional responses to the INVITE (100, 180, 183...), in order.
    pub provisional: Vec<u16>,
    /// The final response to the INVITE.
    pub final_status: u16,
    /// Its reason phrase, as received.
    pub final_reason: String,
    /// Whether any 2xx answered the INVITE (then it was ACKed and hung up
    /// with BYE). The self-test must never answer.
    pub answered: bool,
    /// Whether the caller gave up after the maximum duration and sent CANCEL.
    pub cancelled: bool,
    /// The codec offered, in which the audio was decoded.
    pub codec: Codec,
    /// The audio heard: 16-bit linear PCM at 8 kHz, packets placed by
    /// sequence number and RTP timestamp, gaps filled with silence.
    pub samples: Vec<i16>,
    /// RTP packets that made up the audio (duplicates not counted).
    pub packets: usize,
    /// Datagrams that were not part of it: not RTP, another payload type,
    /// another source or SSRC, too large, duplicates, too late or early.
    pub ignored: usize,
    /// Whether a cap (packets, samples) cut the recording short.
    pub truncated: bool,
    /// Every SIP message sent and received, in order (with an
    /// Authorization header when credentials were used).
    pub messages: Vec<CapturedMessage>,
}

impl Heard {
    /// How long the recording plays.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.samples.len() as u64 * 1000 / u64::from(wav::SAMPLE_RATE))
    }

    /// Save what was heard as an 8 kHz mono 16-bit WAV file.
    pub fn write_wav(&self, path: &Path) -> Result<(), WavError> {
        wav::write(path, &self.samples)
    }
}

/// Why the call could not be placed or recorded.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("the demo caller only calls loopback addresses, not {0}")]
    NotLoopback(SocketAddr),
    #[error("the {what} can't be used: {why}")]
    BadIdentity {
        /// Which part: "number dialled", "From", "P-Asserted-Identity".
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    #[error("can't bind the caller's RTP socket on {ip}: {source}")]
    Rtp { ip: IpAddr, source: std::io::Error },
    #[error("the call failed: {0}")]
    Call(#[from] UacError),
    #[error("the call did not end within {0:?}")]
    Timeout(Duration),
}

/// Place one call as `opts` says and record what is heard until the final
/// response.
pub async fn call_and_record(opts: &CallerOptions) -> Result<Heard, CallerError> {
    let target = opts.target;
    if !target.ip().is_loopback() {
        return Err(CallerError::NotLoopback(target));
    }
    let uri = request_uri(&opts.number, target)?;
    let (from, extra_headers) = presentation(&opts.caller_id)?;
    let max_duration = opts.max_duration.min(MAX_DURATION);

    let ip = target.ip();
    let rtp = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map(Arc::new)
        .map_err(|source| CallerError::Rtp { ip, source })?;
    let line = Line::new(
        &account(opts, max_duration),
        LineOptions {
            bind: SocketAddr::new(ip, 0),
            ..LineOptions::default()
        },
    )
    .await?;
    let (stop, stopped) = watch::channel(false);
    let reader = tokio::spawn(read_rtp(
        rtp.clone(),
        opts.codec,
        max_packets(max_duration),
        stopped,
    ));
    let call_opts = CallOptions {
        ring_timeout: Some(max_duration),
        rtp: Some(rtp),
        extra_headers,
        from: Some(from),
        codec: Some(opts.codec),
    };
    let limit = max_duration + CALL_SLACK;
    let report = timeout(limit, line.call(&uri, call_opts)).await;
    line.close();
    // The final response is in: read what is still on its way, then stop.
    let _ = stop.send(true);
    let received = match timeout(GRACE_MAX * 2, reader).await {
        Ok(Ok(r)) => r,
        // The reader can't panic on input; if it did, or overran its own
        // deadline, nothing was heard.
        _ => Received::default(),
    };
    let report = report.map_err(|_| CallerError::Timeout(limit))??;

    let assembled = assemble(&received.packets, opts.codec, max_samples(max_duration));
    let (provisional, answered) = invite_responses(&report.messages);
    Ok(Heard {
        call_id: report.call_id,
        provisional,
        final_status: report.status,
        final_reason: report.reason,
        answered: answered || report.outcome == CallOutcome::Answered,
        cancelled: sent_cancel(&report.messages),
        codec: opts.codec,
        samples: assembled.samples,
        packets: assembled.packets,
        ignored: received.ignored + assembled.ignored,
        truncated: received.truncated || assembled.truncated,
        messages: report.messages,
    })
}

/// The account the caller's line uses: the target as its registrar, the
/// credentials given (or none: a direct call is never challenged).
fn account(opts: &CallerOptions, max_duration: Duration) -> Account {
    let (username, password) = match &opts.auth {
        Some(a) => (a.username.clone(), a.password.clone()),
        None => (CONTACT_USER.to_string(), Secret::Inline(String::new())),
    };
    Account {
        registrar: host_port(opts.target),
        outbound_proxy: None,
        transport: Transport::Udp,
        username,
        auth_username: None,
        password,
        from_user: Some(CONTACT_USER.to_string()),
        from_domain: None,
        register: false,
        register_expiry: Duration::from_secs(3600),
        ring_timeout: max_duration,
    }
}

/// `sip:<number>@<target>`, checked.
fn request_uri(number: &str, target: SocketAddr) -> Result<String, CallerError> {
    let bad = |why: String| CallerError::BadIdentity {
        what: "number dialled",
        why,
    };
    if number.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let uri = format!("sip:{}@{}", escape_user(number), host_port(target));
    check_uri(&uri).map_err(bad)?;
    Ok(uri)
}

/// The From (without tag) and the headers added for a presentation.
fn presentation(id: &CallerId) -> Result<(String, Vec<(String, String)>), CallerError> {
    match id {
        CallerId::Shown(identity) => Ok((name_addr(identity, "From")?, Vec::new())),
        CallerId::Withheld { asserted } => {
            let mut headers = vec![("Privacy".to_string(), "id".to_string())];
            if let Some(a) = asserted {
                headers.push((
                    "P-Asserted-Identity".to_string(),
                    name_addr(a, "P-Asserted-Identity")?,
                ));
            }
            Ok((ANONYMOUS_FROM.to_string(), headers))
        }
    }
}

/// `"display" <sip:user@host>`, with the display name quoted (RFC 3261
/// quoted-string: backslash and double quote escaped) and the URI checked.
fn name_addr(id: &Identity, what: &'static str) -> Result<String, CallerError> {
    let bad = |why: String| CallerError::BadIdentity { what, why };
    if id.user.is_empty() || id.host.is_empty() {
        return Err(bad("it needs a user and a host".into()));
    }
    let uri = format!("sip:{}@{}", escape_user(&id.user), id.host);
    check_uri(&uri).map_err(|why| bad(format!("{}: {why}", crate::escape::clip(&uri, 80))))?;
    match &id.display {
        None => Ok(format!("<{uri}>")),
        Some(d) => {
            if let Some(c) = d.chars().find(|c| c.is_control()) {
                return Err(bad(format!("the display name contains {c:?}")));
            }
            let quoted = d.replace('\\', "\\\\").replace('"', "\\\"");
            Ok(format!("\"{quoted}\" <{uri}>"))
        }
    }
}

/// The status codes of the responses to the INVITE received, provisional
/// ones in order, and whether any was a 2xx.
fn invite_responses(messages: &[CapturedMessage]) -> (Vec<u16>, bool) {
    let mut provisional = Vec::new();
    let mut answered = false;
    for m in messages {
        if m.direction != Direction::Received {
            continue;
        }
        let Ok(msg) = crate::sip::parse(&m.bytes) else {
            continue;
        };
        let for_invite = msg
            .header("CSeq")
            .is_some_and(|c| c.split_whitespace().nth(1) == Some("INVITE"));
        match msg.status() {
            Some(code) if for_invite && code < 200 => provisional.push(code),
            Some(code) if for_invite && (200..300).contains(&code) => answered = true,
            _ => {}
        }
    }
    (provisional, answered)
}

/// Whether we sent a CANCEL.
fn sent_cancel(messages: &[CapturedMessage]) -> bool {
    messages
        .iter()
        .any(|m| m.direction == Direction::Sent && m.bytes.starts_with(b"CANCEL "))
}

/// Packets kept at most for a call this long: one every 20 ms, twice over
/// (a sender running fast), plus a few.
fn max_packets(max_duration: Duration) -> usize {
    (max_duration.as_millis() / PACKET_TIME.as_millis()) as usize * 2 + 50
}

/// Samples recorded at most: the whole maximum duration, and the grace.
fn max_samples(max_duration: Duration) -> usize {
    ((max_duration + GRACE_MAX).as_millis() as usize) * wav::SAMPLE_RATE as usize / 1000
}

/// One RTP packet of the stream, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RtpIn {
    /// Its sequence number.
    seq: u16,
    /// Its RTP timestamp (8 kHz clock).
    timestamp: u32,
    /// The G.711 codes it carries.
    payload: Vec<u8>,
}

/// What the reader collected.
#[derive(Debug, Default)]
struct Received {
    /// The stream's packets, in arrival order.
    packets: Vec<RtpIn>,
    /// Datagrams that were not the stream.
    ignored: usize,
    /// Whether the packet cap was reached.
    truncated: bool,
}

/// Read the stream from `socket` until told to stop, then until it has
/// been quiet for [`GRACE_QUIET`] (at most [`GRACE_MAX`]). The stream is
/// the first source and SSRC that sends RTP version 2 of the offered
/// codec's payload type; every other datagram is counted and dropped.
async fn read_rtp(
    socket: Arc<UdpSocket>,
    codec: Codec,
    max_packets: usize,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut got = Received::default();
    let mut stream: Option<(SocketAddr, u32)> = None;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut stop_by: Option<Instant> = None;
    loop {
        let arrived = match stop_by {
            None => tokio::select! {
                r = socket.recv_from(&mut buf) => r,
                _ = stop.changed() => {
                    stop_by = Some(Instant::now() + GRACE_MAX);
                    continue;
                }
            },
            Some(by) => {
                let wait = GRACE_QUIET.min(by.saturating_duration_since(Instant::now()));
                match timeout(wait, socket.recv_from(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => return got,
                }
            }
        };
        let Ok((n, from)) = arrived else {
            // A UDP receive fails only locally (an ICMP error for an
            // earlier send); nothing to do but read on.
            continue;
        };
        if n > MAX_DATAGRAM {
            got.ignored += 1;
            continue;
        }
        let mut bytes = Bytes::copy_from_slice(&buf[..n]);
        let Ok(p) = Packet::unmarshal(&mut bytes) else {
            got.ignored += 1;
            continue;
        };
        let h = &p.header;
        let ours = h.version == 2
            && h.payload_type == codec.static_payload_type()
            && !p.payload.is_empty()
            && *stream.get_or_insert((from, h.ssrc)) == (from, h.ssrc);
        if !ours {
            got.ignored += 1;
            continue;
        }
        if got.packets.len() >= max_packets {
            got.truncated = true;
            got.ignored += 1;
            continue;
        }
        got.packets.push(RtpIn {
            seq: h.sequence_number,
            timestamp: h.timestamp,
            payload: p.payload.to_vec(),
        });
    }
}

/// The audio of a stream's packets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Assembled {
    /// Decoded samples, silence in the gaps.
    samples: Vec<i16>,
    /// Packets placed.
    packets: usize,
    /// Packets dropped: duplicates, or timed before the first.
    ignored: usize,
    /// Whether the sample cap cut it short.
    truncated: bool,
}

/// Put packets in sequence order (sequence numbers wrap: each is read
/// relative to the first to arrive), drop duplicates, and place each
/// packet's decoded audio at its RTP timestamp relative to the earliest
/// packet's, leaving silence where nothing arrived; at most `max_samples`.
fn assemble(packets: &[RtpIn], codec: Codec, max_samples: usize) -> Assembled {
    let mut out = Assembled::default();
    let Some(first) = packets.first() else {
        return out;
    };
    // A 16-bit distance either way from the first arrival: a stream
    // reordered by less than half the sequence space (any real one).
    let position = |p: &RtpIn| i32::from(p.seq.wrapping_sub(first.seq) as i16);
    let mut ordered: Vec<&RtpIn> = packets.iter().collect();
    ordered.sort_by_key(|p| position(p));
    ordered.dedup_by_key(|p| position(p));
    out.ignored = packets.len() - ordered.len();
    let base = ordered[0].timestamp;
    for p in ordered {
        // Read as signed: a timestamp before the earliest packet's is a
        // sender's mistake, not audio four days later.
        let offset = p.timestamp.wrapping_sub(base) as i32;
        let Ok(at) = usize::try_from(offset) else {
            out.ignored += 1;
            continue;
        };
        if at >= max_samples {
            out.truncated = true;
            continue;
        }
        let room = max_samples - at;
        if p.payload.len() > room {
            out.truncated = true;
        }
        let payload = &p.payload[..p.payload.len().min(room)];
        let end = at + payload.len();
        if out.samples.len() < end {
            out.samples.resize(end, 0);
        }
        for (slot, &code) in out.samples[at..end].iter_mut().zip(payload) {
            *slot = codec.decode(code);
        }
        out.packets += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, timestamp: u32, codes: &[u8]) -> RtpIn {
        RtpIn {
            seq,
            timestamp,
            payload: codes.to_vec(),
        }
    }

    #[test]
    fn packets_are_reordered_by_sequence_and_placed_by_timestamp() {
        let c = Codec::Pcmu;
        let a = [c.encode(1000); 4];
        let b = [c.encode(-2000); 4];
        let d = [c.encode(3000); 4];
        // Sequence numbers wrap; the second packet arrives last and once
        // twice; a packet is missing between b and d (timestamps say so).
        let got = assemble(
            &[
                pkt(65535, u32::MAX - 3, &a),
                pkt(1, 4 + 4, &d),
                pkt(0, 0, &b),
                pkt(0, 0, &b),
            ],
            c,
            1000,
        );
        let mut want = vec![c.decode(a[0]); 4];
        want.extend([c.decode(b[0]); 4]);
        want.extend([0; 4]);
        want.extend([c.decode(d[0]); 4]);
        assert_eq!(got.samples, want);
        assert_eq!((got.packets, got.ignored, got.truncated), (3, 1, false));
    }

    #[test]
    fn the_sample_cap_holds_against_a_timestamp_jump() {
        let c = Codec::Pcma;
        let got = assemble(
            &[pkt(10, 0, &[0xD5; 160]), pkt(11, 3_000_000, &[0xD5; 160])],
            c,
            8000,
        );
        assert_eq!(got.samples.len(), 160);
        assert!(got.truncated);
        let got = assemble(&[pkt(10, 7900, &[0xD5; 160])], c, 8000);
        assert_eq!(got.samples.len(), 160);
        // A packet that would start before the first is dropped.
        let got = assemble(&[pkt(10, 1000, &[1; 4]), pkt(11, 500, &[2; 4])], c, 8000);
        assert_eq!((got.packets, got.ignored), (1, 1));
        assert_eq!(assemble(&[], c, 10), Assembled::default());
    }

    #[test]
    fn presentations_on_the_wire() {
        let org = Identity {
            display: Some("Eastside \"Women's\" Refuge".into()),
            user: "+61370100142".into(),
            host: "pbx.example.org".into(),
        };
        let (from, headers) = presentation(&CallerId::Shown(org.clone())).unwrap();
        assert_eq!(
            from,
            "\"Eastside \\\"Women's\\\" Refuge\" <sip:+61370100142@pbx.example.org>"
        );
        assert!(headers.is_empty());
        let parsed = crate::sip::header::parse_name_addr(&from).unwrap();
        assert_eq!(parsed.display.as_deref(), org.display.as_deref());

        let (from, headers) = presentation(&CallerId::Withheld {
            asserted: Some(Identity {
                display: None,
                ..org.clone()
            }),
        })
        .unwrap();
        assert_eq!(from, ANONYMOUS_FROM);
        assert_eq!(
            headers,
            [
                ("Privacy".to_string(), "id".to_string()),
                (
                    "P-Asserted-Identity".to_string(),
                    "<sip:+61370100142@pbx.example.org>".to_string()
                )
            ]
        );
        let (_, headers) = presentation(&CallerId::Withheld { asserted: None }).unwrap();
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn bad_identities_and_numbers_are_refused() {
        let id = |display: Option<&str>, user: &str, host: &str| {
            CallerId::Shown(Identity {
                display: display.map(str::to_string),
                user: user.into(),
                host: host.into(),
            })
        };
        for bad in [
            id(Some("a\r\nX-Injected: 1"), "1", "h"),
            id(None, "1 2", "h"),
            id(None, "", "h"),
            id(None, "1", ""),
            id(None, "1", "h>;x"),
        ] {
            assert!(
                matches!(presentation(&bad), Err(CallerError::BadIdentity { .. })),
                "{bad:?}"
            );
        }
        let t: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(
            request_uri("0399990001", t).unwrap(),
            "sip:0399990001@127.0.0.1:5060"
        );
        assert_eq!(request_uri("*99#", t).unwrap(), "sip:*99%23@127.0.0.1:5060");
        assert!(request_uri("", t).is_err());
        assert!(request_uri("12\r\n", t).is_err());
    }

    /// Refused before any socket is bound or packet sent.
    #[tokio::test]
    async fn only_loopback_is_called() {
        let opts = CallerOptions::new(
            "192.0.2.1:5060".parse().unwrap(),
            "1",
            CallerId::Withheld { asserted: None },
        );
        assert!(matches!(
            call_and_record(&opts).await,
            Err(CallerError::NotLoopback(_))
        ));
    }

    /// The reader keeps the first source's stream of the offered payload
    /// type and counts everything else; after the stop it drains what is
    /// already there and ends once quiet.
    #[tokio::test]
    async fn the_reader_keeps_one_stream_and_ends_after_the_grace() {
        use crate::media::rtp::Packetizer;
        let rx = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = watch::channel(false);
        let reader = tokio::spawn(read_rtp(rx, Codec::Pcmu, 3, stopped));
        let mut stream = Packetizer::with_state(0, 7, 100, 0);
        let mut alaw = Packetizer::with_state(8, 7, 100, 0);
        let mut other_ssrc = Packetizer::with_state(0, 8, 100, 0);
        let sends: Vec<(&UdpSocket, Vec<u8>)> = vec![
            (&tx, stream.packet(&[0xFF; 160])),
            (&tx, alaw.packet(&[0xD5; 160])),
            (&tx, other_ssrc.packet(&[0xFF; 160])),
            (&other, stream.clone().packet(&[0xFF; 160])),
            (&tx, b"not RTP".to_vec()),
            (&tx, vec![0x80; MAX_DATAGRAM + 1]),
            (&tx, stream.packet(&[0xFF; 160])),
            (&tx, stream.packet(&[0xFF; 160])),
            // Over the cap of three.
            (&tx, stream.packet(&[0xFF; 160])),
        ];
        for (sock, bytes) in &sends {
            sock.send_to(bytes, to).await.unwrap();
        }
        stop.send(true).unwrap();
        let got = timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader ends after the grace")
            .unwrap();
        assert_eq!(
            got.packets.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [100, 101, 102]
        );
        assert_eq!((got.ignored, got.truncated), (6, true));
    }

    #[test]
    fn caps_follow_the_duration() {
        assert_eq!(max_packets(Duration::from_secs(1)), 150);
        assert_eq!(max_samples(Duration::from_secs(1)), 16_000);
    }
}
