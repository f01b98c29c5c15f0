//! The SDP the self-test needs: where a caller wants its audio and in which
//! G.711 codec (read from the INVITE's offer), and the answer that says
//! what we will send (RFC 3264 offer/answer, RFC 4566 syntax).
//!
//! Deliberately small and strict, because the offer comes from anyone who
//! dials: the text is read line by line with bounded counts (lines, media
//! sections, formats per section), every number is parsed with its range
//! checked, and anything not understood means "no audio" with a reason,
//! never a guess. The call is still judged and rejected either way.
//!
//! What is chosen: the first `m=audio` section with a port, a plain RTP
//! profile (`RTP/AVP` or `RTP/AVPF`) and a direction that lets the caller
//! receive; in it, the first format in the offer's order that is PCMU or
//! PCMA (static payload types 0 and 8, or a dynamic number mapped to
//! `PCMU/8000` or `PCMA/8000`), keeping the offer's payload type number.
//! Audio goes to the section's `c=` address, else the session's, and the
//! `m=` port: symmetric RTP (sending to where the caller's packets come
//! from) is not used, since the stream is one-way and the caller sends
//! nothing to learn an address from; a caller behind NAT without an SBC
//! may then hear nothing, and is still judged and rejected.

use std::net::{IpAddr, SocketAddr};

use super::rtp::Codec;

/// Lines read at most; a real offer has a few dozen.
const MAX_LINES: usize = 512;
/// Media sections read at most.
const MAX_MEDIA: usize = 16;
/// Formats kept per media section.
const MAX_FORMATS: usize = 64;
/// Longest line considered (a longer one is skipped as malformed).
const MAX_LINE: usize = 1024;

/// The direction attribute of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(attr: &str) -> Option<Direction> {
        Some(match attr {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// One `m=` section of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, ...
    pub kind: String,
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`...
    pub proto: String,
    /// The formats (payload types for RTP), in the offer's order.
    pub formats: Vec<String>,
    /// `a=rtpmap:` entries: payload type, encoding name, clock rate,
    /// channels.
    pub rtpmaps: Vec<(u8, String, u32, u16)>,
    /// This section's `c=` address, if any.
    pub addr: Option<IpAddr>,
    /// This section's direction attribute, if any.
    pub direction: Option<Direction>,
}

/// An SDP offer, as far as the self-test reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offer {
    /// The session-level `c=` address, if any.
    pub session_addr: Option<IpAddr>,
    /// The session-level direction attribute, if any.
    pub session_direction: Option<Direction>,
    pub media: Vec<Media>,
}

/// Where and how to send the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The caller's RTP address and port.
    pub addr: SocketAddr,
    pub codec: Codec,
    /// The payload type number the offer uses for it.
    pub payload_type: u8,
    /// Which `m=` section (0-based).
    pub media_index: usize,
}

/// Why no audio can be sent (said in logs and the call record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAudio {
    #[error("the INVITE has no SDP offer")]
    NoOffer,
    #[error("the SDP offer can't be read: {0}")]
    Unreadable(String),
    #[error("the offer has no audio stream")]
    NoAudioStream,
    #[error("the offer's audio is not plain RTP ({0}; encrypted media is not supported)")]
    Profile(String),
    #[error("the offer's audio does not include G.711 (PCMU or PCMA)")]
    NoG711,
    #[error("the offer's audio is {0}: the caller would not receive it")]
    Direction(&'static str),
    #[error("the offer gives no address for its audio")]
    NoAddress,
    #[error("the offer's audio address {0} can't be sent to")]
    BadAddress(IpAddr),
    #[error("too many announcements are playing (in all, or to that address)")]
    Busy,
}

/// The `c=` address: `IN IP4 192.0.2.1` or `IN IP6 2001:db8::1`. A
/// multicast TTL or count suffix (`/127`) is ignored.
fn connection(value: &str) -> Result<IpAddr, String> {
    let mut f = value.split_ascii_whitespace();
    let (net, kind, addr) = (f.next(), f.next(), f.next());
    if net != Some("IN") {
        return Err(format!("c= network type {net:?} is not IN"));
    }
    let addr = addr
        .ok_or("c= has no address")?
        .split('/')
        .next()
        .unwrap_or_default();
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("c= address {:?} is not an IP address", clip(addr)))?;
    match (kind, ip) {
        (Some("IP4"), IpAddr::V4(_)) | (Some("IP6"), IpAddr::V6(_)) => Ok(ip),
        _ => Err(format!("c= address type {kind:?} does not match {ip}")),
    }
}

/// A value from the offer, shortened for a message.
fn clip(s: &str) -> String {
    crate::escape::clip(s, 40).into_owned()
}

/// `a=rtpmap:<pt> <name>/<rate>[/<channels>]`.
fn rtpmap(value: &str) -> Option<(u8, String, u32, u16)> {
    let (pt, rest) = value.split_once(' ')?;
    let pt: u8 = pt.trim().parse().ok().filter(|p| *p < 128)?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.to_string();
    let rate: u32 = parts.next()?.parse().ok()?;
    let channels: u16 = match parts.next() {
        Some(c) => c.parse().ok()?,
        None => 1,
    };
    Some((pt, name, rate, channels))
}

/// Read an offer. Fails when it is not SDP, or a line the answer depends
/// on (`v=`, `m=`, `c=`) can't be read; attributes that can't be read are
/// ignored.
pub fn parse(text: &str) -> Result<Offer, String> {
    let mut offer = Offer::default();
    let mut saw_version = false;
    for (n, line) in text.lines().enumerate() {
        if n >= MAX_LINES {
            break;
        }
        let line = line.trim_end_matches('\r');
        if line.len() > MAX_LINE || line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "v" => {
                if value.trim() != "0" {
                    return Err(format!("SDP version {:?} is not 0", clip(value)));
                }
                saw_version = true;
            }
            "m" => {
                if offer.media.len() >= MAX_MEDIA {
                    // Sections after the limit are neither read nor answered.
                    break;
                }
                let mut f = value.split_ascii_whitespace();
                let kind = f.next().unwrap_or_default().to_string();
                // `port/count` (RFC 4566 section 5.14): only the port.
                let port = f
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok());
                let proto = f.next().unwrap_or_default().to_string();
                let formats: Vec<String> = f.take(MAX_FORMATS).map(str::to_string).collect();
                let Some(port) = port else {
                    return Err(format!("m= line {:?} has no port", clip(value)));
                };
                offer.media.push(Media {
                    kind,
                    port,
                    proto,
                    formats,
                    rtpmaps: Vec::new(),
                    addr: None,
                    direction: None,
                });
            }
            "c" => {
                let addr = connection(value)?;
                match offer.media.last_mut() {
                    Some(m) => m.addr = Some(addr),
                    None => offer.session_addr = Some(addr),
                }
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                if let Some(d) = Direction::parse(name) {
                    match offer.media.last_mut() {
                        Some(m) => m.direction = Some(d),
                        None => offer.session_direction = Some(d),
                    }
                } else if name == "rtpmap" {
                    if let (Some(m), Some(map)) = (offer.media.last_mut(), rtpmap(arg)) {
                        if m.rtpmaps.len() < MAX_FORMATS {
                            m.rtpmaps.push(map);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_version && offer.media.is_empty() {
        return Err("it is not SDP (no v= or m= line)".into());
    }
    Ok(offer)
}

/// The G.711 codec a format of a section stands for.
fn g711(media: &Media, format: &str) -> Option<(Codec, u8)> {
    let pt: u8 = format.parse().ok().filter(|p| *p < 128)?;
    match media.rtpmaps.iter().find(|m| m.0 == pt) {
        Some((_, name, rate, channels)) => {
            let codec = Codec::from_name(name)?;
            (*rate == 8000 && *channels == 1).then_some((codec, pt))
        }
        // Static payload types need no rtpmap (RFC 3551 table 4).
        None => match pt {
            0 => Some((Codec::Pcmu, 0)),
            8 => Some((Codec::Pcma, 8)),
            _ => None,
        },
    }
}

impl Offer {
    /// Where to send G.711 audio, or why not.
    pub fn target(&self) -> Result<Target, NoAudio> {
        let audio: Vec<(usize, &Media)> = self
            .media
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == "audio" && m.port != 0)
            .collect();
        if audio.is_empty() {
            return Err(NoAudio::NoAudioStream);
        }
        let mut why = NoAudio::NoG711;
        for (index, m) in audio {
            if m.proto != "RTP/AVP" && m.proto != "RTP/AVPF" {
                why = NoAudio::Profile(clip(&m.proto));
                continue;
            }
            let Some((codec, payload_type)) = m.formats.iter().find_map(|f| g711(m, f)) else {
                why = NoAudio::NoG711;
                continue;
            };
            match m.direction.or(self.session_direction) {
                Some(Direction::SendOnly) => return Err(NoAudio::Direction("send-only")),
                Some(Direction::Inactive) => return Err(NoAudio::Direction("inactive")),
                _ => {}
            }
            let ip = m.addr.or(self.session_addr).ok_or(NoAudio::NoAddress)?;
            // 0.0.0.0 is the old way of putting a call on hold; multicast
            // and broadcast are not a caller; the port is checked above.
            let bad = ip.is_unspecified()
                || ip.is_multicast()
                || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
            if bad {
                return Err(NoAudio::BadAddress(ip));
            }
            return Ok(Target {
                addr: SocketAddr::new(ip, m.port),
                codec,
                payload_type,
                media_index: index,
            });
        }
        Err(why)
    }

    /// Our answer (RFC 3264 section 6): one `m=` line for each offered,
    /// the chosen audio with its one format, `a=sendonly` and the address
    /// we send from; every other section refused with port 0.
    pub fn answer(&self, target: &Target, ours: SocketAddr, session_id: u64) -> Vec<u8> {
        let (ip_kind, ip) = match ours {
            SocketAddr::V4(a) => ("IP4", a.ip().to_string()),
            SocketAddr::V6(a) => ("IP6", a.ip().to_string()),
        };
        let mut s = format!(
            "v=0\r\no=- {session_id} {session_id} IN {ip_kind} {ip}\r\ns=-\r\nc=IN {ip_kind} {ip}\r\nt=0 0\r\n"
        );
        for (i, m) in self.media.iter().enumerate() {
            if i == target.media_index {
                s.push_str(&format!(
                    "m=audio {} {} {pt}\r\na=rtpmap:{pt} {}/8000\r\na=ptime:20\r\na=sendonly\r\n",
                    ours.port(),
                    m.proto,
                    target.codec.name(),
                    pt = target.payload_type,
                ));
            } else {
                // Refused: same media and protocol, port 0, one of its
                // formats (RFC 3264 section 6). The values are the offer's
                // whitespace-free tokens; anything but printable ASCII is
                // not echoed.
                let token = |t: Option<&String>, default: &'static str| -> String {
                    match t {
                        Some(t) if !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()) => {
                            t.clone()
                        }
                        _ => default.to_string(),
                    }
                };
                let kind = token(Some(&m.kind), "audio");
                let proto = token(Some(&m.proto), "RTP/AVP");
                let fmt = token(m.formats.first(), "0");
                s.push_str(&format!("m={kind} 0 {proto} {fmt}\r\n"));
            }
        }
        s.into_bytes()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const PCMU_OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    #[test]
    fn pcmu_from_a_plain_offer() {
        let offer = parse(PCMU_OFFER).unwrap();
        let t = offer.target().unwrap();
        assert_eq!(t.addr, "192.0.2.10:49170".parse().unwrap());
        assert_eq!(t.codec, Codec::Pcmu);
        assert_eq!(t.payload_type, 0);
        let ans =
            String::from_utf8(offer.answer(&t, "127.0.0.1:40000".parse().unwrap(), 7)).unwrap();
        assert!(ans.contains("c=IN IP4 127.0.0.1\r\n"), "{ans}");
        assert!(
            ans.contains("m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"),
            "{ans}"
        );
        assert!(ans.contains("a=sendonly\r\n"), "{ans}");
        assert!(!ans.contains("101"), "only the chosen format: {ans}");
        // Our answer reads back as an offer would.
        let back = parse(&ans).unwrap();
        assert_eq!(back.media[0].direction, Some(Direction::SendOnly));
    }

    /// The offer's order decides, and its payload type numbers are kept
    /// (a dynamic number for PCMA is legal).
    #[test]
    fn first_g711_in_offer_order_with_its_number() {
        let o = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 18 8 0\r\n").unwrap();
        let t = o.target().unwrap();
        assert_eq!((t.codec, t.payload_type), (Codec::Pcma, 8));
        let o = parse(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 96 0\r\na=rtpmap:96 pcma/8000/1\r\n",
        )
        .unwrap();
        let t = o.target().unwrap();
        assert_eq!((t.codec, t.payload_type), (Codec::Pcma, 96));
        // A wideband clock rate is not G.711.
        let o = parse(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 96 0\r\na=rtpmap:96 PCMA/16000\r\n",
        )
        .unwrap();
        assert_eq!(o.target().unwrap().payload_type, 0);
    }

    /// A media-level c= wins over the session's; without either there is
    /// no address; IPv6 works.
    #[test]
    fn addresses() {
        let o = parse(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.7\r\n",
        )
        .unwrap();
        assert_eq!(
            o.target().unwrap().addr,
            "198.51.100.7:4000".parse().unwrap()
        );
        let o = parse("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        assert_eq!(o.target(), Err(NoAudio::NoAddress));
        let o = parse("v=0\r\nc=IN IP6 2001:db8::5\r\nm=audio 4000 RTP/AVP 8\r\n").unwrap();
        assert_eq!(
            o.target().unwrap().addr,
            "[2001:db8::5]:4000".parse().unwrap()
        );
        for bad in ["0.0.0.0", "224.2.1.1/127", "255.255.255.255"] {
            let o = parse(&format!(
                "v=0\r\nc=IN IP4 {bad}\r\nm=audio 4000 RTP/AVP 0\r\n"
            ))
            .unwrap();
            assert!(matches!(o.target(), Err(NoAudio::BadAddress(_))), "{bad}");
        }
        assert!(parse("v=0\r\nc=IN IP4 ::1\r\nm=audio 4000 RTP/AVP 0\r\n").is_err());
        assert!(parse("v=0\r\nc=IN IP4 not-an-address\r\n").is_err());
    }

    #[test]
    fn no_audio_and_why() {
        let g729 = parse(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n",
        )
        .unwrap();
        assert_eq!(g729.target(), Err(NoAudio::NoG711));
        let srtp = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/SAVP 0\r\n").unwrap();
        assert!(matches!(srtp.target(), Err(NoAudio::Profile(_))));
        let video = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 4000 RTP/AVP 96\r\n").unwrap();
        assert_eq!(video.target(), Err(NoAudio::NoAudioStream));
        let refused = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 0 RTP/AVP 0\r\n").unwrap();
        assert_eq!(refused.target(), Err(NoAudio::NoAudioStream));
        let sendonly =
            parse("v=0\r\nc=IN IP4 192.0.2.1\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        assert_eq!(sendonly.target(), Err(NoAudio::Direction("send-only")));
        let inactive =
            parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n").unwrap();
        assert_eq!(inactive.target(), Err(NoAudio::Direction("inactive")));
        // recvonly: the caller only listens, which is what we want.
        let recvonly =
            parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n").unwrap();
        assert!(recvonly.target().is_ok());
        assert!(parse("hello").is_err());
        assert!(parse("v=1\r\n").is_err());
        assert!(parse("v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
    }

    /// Video first, then SRTP audio, then plain audio: the plain audio is
    /// chosen, and the answer has one m= line per offered one, the others
    /// refused with port 0.
    #[test]
    fn answer_keeps_every_section() {
        let o = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\nm=audio 4000 RTP/SAVP 0\r\nm=audio 4002 RTP/AVP 0\r\n").unwrap();
        let t = o.target().unwrap();
        assert_eq!(t.media_index, 2);
        assert_eq!(t.addr.port(), 4002);
        let ans = String::from_utf8(o.answer(&t, "127.0.0.1:9".parse().unwrap(), 1)).unwrap();
        let m: Vec<&str> = ans.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 0 RTP/SAVP 0",
                "m=audio 9 RTP/AVP 0"
            ]
        );
    }

    /// Hostile offers: huge counts are cut, nothing panics.
    #[test]
    fn hostile_offers_are_bounded() {
        let many_m = "m=audio 4000 RTP/AVP 0\r\n".repeat(10_000);
        let o = parse(&format!("v=0\r\nc=IN IP4 192.0.2.1\r\n{many_m}")).unwrap();
        assert!(o.media.len() <= MAX_MEDIA);
        let many_fmt = format!(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP {}\r\n",
            "99 ".repeat(100)
        );
        let o = parse(&many_fmt).unwrap();
        assert_eq!(o.media[0].formats.len(), 100.min(MAX_FORMATS));
        assert_eq!(o.target(), Err(NoAudio::NoG711));
        use proptest::prelude::*;
        proptest!(|(s in "[a-z=0-9 ./:\r\n]{0,300}")| {
            if let Ok(o) = parse(&s) {
                if let Ok(t) = o.target() {
                    let _ = o.answer(&t, "127.0.0.1:1".parse().unwrap(), 1);
                }
            }
        });
    }
}
