//! Reading SIP out of a packet capture, streamed and bounded.
//!
//! ```text
//!  std::io::Read ─▶ file (pcap / pcapng records)
//!                    └▶ link (Ethernet + VLAN tags, Linux cooked SLL/SLL2, raw IP, loopback)
//!                        └▶ ip (IPv4, IPv6 + extension headers; fragments reassembled)
//!                            ├▶ UDP: one datagram, one message
//!                            └▶ tcp (per-direction streams in sequence order, framed by Content-Length)
//!                                └▶ SipMessage { time, 5-tuple, transport, bytes }
//! ```
//!
//! Pure: no async, no I/O beyond the `Read` it is given. Every buffer is
//! bounded (records, fragments in flight, TCP streams and their bytes), so
//! a capture of any size streams through in a fixed amount of memory, and
//! the peaks are counted in [`Counters`] for tests to hold it to. What
//! can't be read (TLS, IPsec, messages cut by the snap length, data a gap
//! swallowed) is counted, never guessed at. SIP is found by content, not by
//! port.
//!
//! [`inspect`] judges the INVITEs found; [`redact`] keeps the people called
//! out of what is shown.

pub mod file;
pub mod hosts;
pub mod inspect;
pub mod ip;
pub mod link;
pub mod redact;
mod sniff;
pub mod tcp;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use file::{End, FileReader, Format, Interface};
use hosts::Selector;
use ip::{Defrag, DefragLimits, Parsed};
use link::Network;
use tcp::{Event, FlowKey, Tcp, TcpLimits};

/// Why a capture can't be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("the file is empty")]
    Empty,
    #[error("not a pcap or pcapng capture: {0}")]
    NotACapture(String),
    #[error("the capture's header can't be read: {0}")]
    BadHeader(String),
    #[error("reading the capture: {0}")]
    Io(#[from] std::io::Error),
}

/// How a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// One SIP message found in the capture.
#[derive(Debug)]
pub struct SipMessage<'a> {
    /// Capture time (of the packet that completed it), ns since the epoch.
    pub time_ns: i64,
    /// Who sent it.
    pub src: SocketAddr,
    /// Who it was sent to.
    pub dst: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// The message's bytes as they were on the wire.
    pub bytes: &'a [u8],
    /// Part of the message was not captured (the snap length cut it).
    pub cut: bool,
    /// In the direction the `--from-host`/`--to-host` selection judges.
    pub selected: bool,
}

/// Limits on everything the reader holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// TCP reassembly's limits.
    pub tcp: TcpLimits,
    /// IP fragment reassembly's limits.
    pub defrag: DefragLimits,
}

/// What the reader saw, and the most it held at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packet records read.
    pub packets: u64,
    /// Bytes of packet data captured.
    pub bytes: u64,
    /// Earliest capture time, ns since the epoch.
    pub first_ns: Option<i64>,
    /// Latest capture time, ns since the epoch.
    pub last_ns: Option<i64>,
    /// Frames that are not IP (ARP, LLDP...).
    pub not_ip: u64,
    /// Frames of a link type this reader does not decode.
    pub unsupported_link: u64,
    /// Frames or packets with impossible headers.
    pub malformed: u64,
    /// IP packets that are neither UDP nor TCP.
    pub other_protocol: u64,
    /// UDP datagrams read.
    pub udp: u64,
    /// TCP segments read.
    pub tcp: u64,
    /// SIP messages found (both directions).
    pub sip_messages: u64,
    /// UDP datagrams in the judged direction that are neither SIP nor media.
    pub non_sip: u64,
    /// RTP/RTCP (or SRTP) datagrams in the judged direction: media, never
    /// read.
    pub media: u64,
    /// Not readable, in the judged direction: TLS streams and datagrams.
    pub tls: u64,
    /// IPsec ESP packets (encrypted; any direction: ports are inside).
    pub esp: u64,
    /// SIP messages cut by the snap length.
    pub cut_by_snaplen: u64,
    /// TCP gaps that swallowed SIP data.
    pub tcp_lost: u64,
    /// SIP stream data that could not be framed (no Content-Length...).
    pub tcp_unframed: u64,
    /// SIP messages half-read when their stream closed, was evicted or the
    /// capture ended.
    pub tcp_incomplete: u64,
    /// IP datagrams whose fragments never all arrived (any direction: the
    /// ports are in the first fragment).
    pub fragments_incomplete: u64,
    /// Fragments that could not belong to any datagram.
    pub fragments_bad: u64,
    /// Datagrams reassembled from fragments.
    pub fragments_reassembled: u64,
    /// Records larger than the reader keeps.
    pub oversized_records: u64,
    /// pcapng packets naming an interface never described.
    pub unknown_interface: u64,
    /// TCP streams (one direction of a connection) seen.
    pub tcp_streams: u64,
    /// Of those, streams found to carry SIP.
    pub tcp_sip_streams: u64,
    /// TCP streams dropped to stay within the limits.
    pub tcp_evicted: u64,
    /// Memory: the most TCP streams tracked at once.
    pub peak_tcp_streams: usize,
    /// Memory: the most bytes all TCP streams held at once.
    pub peak_tcp_bytes: usize,
    /// Memory: the most IP datagrams in reassembly at once.
    pub peak_fragment_datagrams: usize,
    /// Memory: the most fragment bytes held at once.
    pub peak_fragment_bytes: usize,
    /// Capacity of the record buffer (the largest record read).
    pub record_buffer: usize,
}

impl Counters {
    /// Everything in the judged direction that could not be read.
    pub fn not_readable(&self) -> u64 {
        self.tls
            + self.esp
            + self.cut_by_snaplen
            + self.tcp_lost
            + self.tcp_unframed
            + self.tcp_incomplete
            + self.fragments_incomplete
            + self.oversized_records
    }
}

/// A capture being read.
pub struct Capture<R: Read> {
    /// The records of the file.
    file: FileReader<R>,
    /// Which direction is judged (for counting what is unreadable there).
    selector: Selector,
    /// IP fragments being put back together.
    defrag: Defrag,
    /// TCP streams being put in order.
    tcp: Tcp,
    /// What was seen so far.
    counters: Counters,
    /// Latest capture time seen (expiry runs on it).
    now_ns: i64,
    /// When buffers were last swept for expired entries.
    last_sweep_ns: i64,
}

/// How often (capture time) fragments and streams are swept for expiry.
const SWEEP_EVERY_NS: i64 = 1_000_000_000;

impl<R: Read> Capture<R> {
    /// Read the file header; fails if this is not a capture at all.
    pub fn open(input: R, selector: Selector, limits: Limits) -> Result<Capture<R>, CaptureError> {
        Ok(Capture {
            file: FileReader::new(input)?,
            selector,
            defrag: Defrag::new(limits.defrag),
            tcp: Tcp::new(limits.tcp),
            counters: Counters::default(),
            now_ns: i64::MIN,
            last_sweep_ns: i64::MIN,
        })
    }

    pub fn format(&self) -> Format {
        self.file.format()
    }

    /// Every interface described in the file.
    pub fn interfaces(&self) -> &[Interface] {
        self.file.all_interfaces()
    }

    /// Why reading stopped (clean, truncated, damaged).
    pub fn end(&self) -> &End {
        self.file.end()
    }

    /// Counters so far, memory peaks included.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.fragments_incomplete = self.defrag.counters.incomplete;
        c.fragments_bad = self.defrag.counters.bad;
        c.fragments_reassembled = self.defrag.counters.completed;
        c.peak_fragment_datagrams = self.defrag.counters.peak_datagrams;
        c.peak_fragment_bytes = self.defrag.counters.peak_bytes;
        c.tcp_streams = self.tcp.counters.streams;
        c.tcp_sip_streams = self.tcp.counters.sip_streams;
        c.tcp_evicted = self.tcp.counters.evicted;
        c.peak_tcp_streams = self.tcp.counters.peak_streams;
        c.peak_tcp_bytes = self.tcp.counters.peak_bytes;
        c.oversized_records = self.file.oversized;
        c.unknown_interface = self.file.unknown_interface;
        c.record_buffer = self.file.buffer_capacity();
        c
    }

    /// Read the whole capture, handing every SIP message to `on_message`
    /// in capture order. Stops early only on an I/O error; a truncated or
    /// damaged file ends the reading (see [`Capture::end`]).
    pub fn run(
        &mut self,
        on_message: &mut impl FnMut(&SipMessage<'_>),
    ) -> Result<(), CaptureError> {
        let Capture {
            file,
            selector,
            defrag,
            tcp,
            counters,
            now_ns,
            last_sweep_ns,
        } = self;
        let mut parts = Parts {
            selector,
            defrag,
            tcp,
            counters,
        };
        while let Some(rec) = file.next_record()? {
            let t = rec.time_ns;
            parts.counters.packets += 1;
            parts.counters.bytes += rec.data.len() as u64;
            parts.counters.first_ns = Some(parts.counters.first_ns.map_or(t, |f| f.min(t)));
            parts.counters.last_ns = Some(parts.counters.last_ns.map_or(t, |l| l.max(t)));
            *now_ns = (*now_ns).max(t);
            if now_ns.saturating_sub(*last_sweep_ns) >= SWEEP_EVERY_NS {
                *last_sweep_ns = *now_ns;
                parts.sweep(*now_ns, on_message);
            }
            let link_type = rec.interface.link_type;
            parts.frame(t, link_type, rec.data, on_message);
        }
        parts.defrag.finish();
        let mut emit = tcp_events(parts.selector, parts.counters, i64::MAX, on_message);
        parts.tcp.finish(&mut emit);
        Ok(())
    }
}

/// The reader's state apart from the file, borrowed together.
struct Parts<'a> {
    /// Which direction is judged.
    selector: &'a Selector,
    /// IP fragment reassembly.
    defrag: &'a mut Defrag,
    /// TCP reassembly.
    tcp: &'a mut Tcp,
    /// What was seen so far.
    counters: &'a mut Counters,
}

/// Handle TCP events: messages go on, the rest is counted when it is in
/// the judged direction.
fn tcp_events<'c>(
    selector: &'c Selector,
    counters: &'c mut Counters,
    now_ns: i64,
    on_message: &'c mut impl FnMut(&SipMessage<'_>),
) -> impl FnMut(FlowKey, Event<'_>) + 'c {
    move |k: FlowKey, e: Event<'_>| {
        let selected = selector.selects(k.src, k.dst);
        match e {
            Event::Message(bytes) => {
                counters.sip_messages += 1;
                on_message(&SipMessage {
                    time_ns: now_ns,
                    src: k.src,
                    dst: k.dst,
                    transport: Transport::Tcp,
                    bytes,
                    cut: false,
                    selected,
                });
            }
            _ if !selected => {}
            Event::Tls => counters.tls += 1,
            Event::Lost => counters.tcp_lost += 1,
            Event::Cut => counters.cut_by_snaplen += 1,
            Event::Unframed => counters.tcp_unframed += 1,
            Event::Incomplete => counters.tcp_incomplete += 1,
        }
    }
}

impl Parts<'_> {
    fn sweep(&mut self, now_ns: i64, on_message: &mut impl FnMut(&SipMessage<'_>)) {
        self.defrag.expire(now_ns);
        let mut emit = tcp_events(self.selector, self.counters, now_ns, on_message);
        self.tcp.expire(now_ns, &mut emit);
    }

    fn frame(
        &mut self,
        t: i64,
        link_type: u16,
        data: &[u8],
        on_message: &mut impl FnMut(&SipMessage<'_>),
    ) {
        let packet = match link::network(link_type, data) {
            Network::Ip(p) => p,
            Network::NotIp => {
                self.counters.not_ip += 1;
                return;
            }
            Network::Short => {
                self.counters.malformed += 1;
                return;
            }
            Network::Unsupported => {
                self.counters.unsupported_link += 1;
                return;
            }
        };
        let pkt = match ip::parse(packet) {
            Parsed::Packet(p) => p,
            Parsed::Esp => {
                self.counters.esp += 1;
                return;
            }
            Parsed::Nothing => return,
            Parsed::Malformed(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        if let Some(frag) = pkt.fragment {
            if let Some(whole) = self.defrag.add(t, &pkt, frag) {
                let (proto, skip) = if whole.src.is_ipv6() {
                    match ip::skip_v6_extensions(whole.proto, &whole.data) {
                        Some(x) => x,
                        None => {
                            self.counters.malformed += 1;
                            return;
                        }
                    }
                } else {
                    (whole.proto, 0)
                };
                let len = whole.data.len() - skip;
                self.transport(
                    t,
                    whole.src,
                    whole.dst,
                    proto,
                    &whole.data[skip..],
                    len,
                    on_message,
                );
            }
            return;
        }
        self.transport(
            t,
            pkt.src,
            pkt.dst,
            pkt.proto,
            pkt.payload,
            pkt.wire_len,
            on_message,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        t: i64,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        data: &[u8],
        wire_len: usize,
        on_message: &mut impl FnMut(&SipMessage<'_>),
    ) {
        match proto {
            ip::PROTO_UDP => self.udp(t, src, dst, data, wire_len, on_message),
            ip::PROTO_TCP => {
                self.counters.tcp += 1;
                let Some((sport, dport, seg, payload)) = tcp::parse(data, Some(wire_len)) else {
                    self.counters.malformed += 1;
                    return;
                };
                let key = FlowKey {
                    src: SocketAddr::new(src, sport),
                    dst: SocketAddr::new(dst, dport),
                };
                let mut emit = tcp_events(self.selector, self.counters, t, on_message);
                self.tcp.segment(t, key, seg, payload, &mut emit);
            }
            _ => self.counters.other_protocol += 1,
        }
    }

    fn udp(
        &mut self,
        t: i64,
        src: IpAddr,
        dst: IpAddr,
        data: &[u8],
        wire_len: usize,
        on_message: &mut impl FnMut(&SipMessage<'_>),
    ) {
        self.counters.udp += 1;
        if data.len() < 8 {
            self.counters.malformed += 1;
            return;
        }
        let sport = u16::from_be_bytes([data[0], data[1]]);
        let dport = u16::from_be_bytes([data[2], data[3]]);
        let mut ulen = usize::from(u16::from_be_bytes([data[4], data[5]]));
        // Zero or nonsense (offloaded, or a jumbogram): the IP length says.
        if ulen < 8 {
            ulen = wire_len;
        }
        let end = ulen.min(data.len());
        let payload = &data[8..end];
        let cut = data.len() < ulen.min(wire_len.max(data.len()));
        let src = SocketAddr::new(src, sport);
        let dst = SocketAddr::new(dst, dport);
        let selected = self.selector.selects(src, dst);
        if sniff::is_sip(payload) {
            self.counters.sip_messages += 1;
            if cut && selected {
                self.counters.cut_by_snaplen += 1;
            }
            on_message(&SipMessage {
                time_ns: t,
                src,
                dst,
                transport: Transport::Udp,
                bytes: payload,
                cut,
                selected,
            });
            return;
        }
        if !selected || sniff::is_keepalive(payload) {
            return;
        }
        if sniff::is_tls_record(payload) {
            self.counters.tls += 1;
        } else if sniff::is_rtp(payload) {
            self.counters.media += 1;
        } else {
            self.counters.non_sip += 1;
        }
    }
}
