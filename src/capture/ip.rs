//! IPv4 and IPv6: headers, IPv6 extension headers, and fragment
//! reassembly (bounded in datagrams, bytes and capture time).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
const PROTO_ESP: u8 = 50;
const PROTO_AH: u8 = 51;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_NONE: u8 = 59;
/// IPv6 extension headers with the generic (next, length in 8-octet units)
/// layout: hop-by-hop, routing, destination options, mobility, HIP, shim6.
const GENERIC_EXT: [u8; 6] = [0, 43, 60, 135, 139, 140];
/// Extension headers followed at most before giving up on a packet.
const MAX_EXT_HEADERS: usize = 12;
/// Largest reassembled datagram payload (the IP length field's limit).
pub const MAX_DATAGRAM: usize = 65_535;

/// One IP packet, headers read.
#[derive(Debug)]
pub struct IpPacket<'a> {
    /// The sender's address.
    pub src: IpAddr,
    /// The receiver's address.
    pub dst: IpAddr,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// The transport header and data, as far as captured.
    pub payload: &'a [u8],
    /// Fewer bytes were captured than the IP header says the packet had.
    pub cut: bool,
    /// Bytes of transport header and data the packet had on the wire.
    pub wire_len: usize,
    /// Set when this packet is one fragment of a larger datagram.
    pub fragment: Option<Fragment>,
}

/// Where a fragment belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The datagram's identification.
    pub id: u32,
    /// Byte offset of this fragment's data in the datagram's payload.
    pub offset: usize,
    /// More fragments follow.
    pub more: bool,
}

/// What an IP packet turned out to be.
#[derive(Debug)]
pub enum Parsed<'a> {
    Packet(IpPacket<'a>),
    /// IPsec ESP: encrypted, can't be read.
    Esp,
    /// No upper layer (IPv6 "no next header"), or nothing of interest.
    Nothing,
    /// A header that can't be (too short, impossible lengths).
    Malformed(&'static str),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Read an IPv4 or IPv6 packet.
pub fn parse(p: &[u8]) -> Parsed<'_> {
    match p.first().map(|b| b >> 4) {
        Some(4) => parse_v4(p),
        Some(6) => parse_v6(p),
        _ => Parsed::Malformed("not IPv4 or IPv6"),
    }
}

fn parse_v4(p: &[u8]) -> Parsed<'_> {
    if p.len() < 20 {
        return Parsed::Malformed("IPv4 header cut short");
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return Parsed::Malformed("IPv4 header length impossible");
    }
    let mut total = usize::from(be16(p, 2).unwrap_or(0));
    // Zero with segmentation offload: the captured length is the length.
    if total == 0 {
        total = p.len();
    }
    if total < ihl {
        return Parsed::Malformed("IPv4 total length shorter than its header");
    }
    let flags = be16(p, 6).unwrap_or(0);
    let more = flags & 0x2000 != 0;
    let offset = usize::from(flags & 0x1fff) * 8;
    let proto = p[9];
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    let cut = p.len() < total;
    // Ethernet pads short frames: the IP length says where the packet ends.
    let payload = &p[ihl..total.min(p.len())];
    if proto == PROTO_ESP {
        return Parsed::Esp;
    }
    let fragment = (more || offset > 0).then(|| Fragment {
        id: u32::from(be16(p, 4).unwrap_or(0)),
        offset,
        more,
    });
    Parsed::Packet(IpPacket {
        src,
        dst,
        proto,
        payload,
        cut,
        wire_len: total - ihl,
        fragment,
    })
}

fn parse_v6(p: &[u8]) -> Parsed<'_> {
    if p.len() < 40 {
        return Parsed::Malformed("IPv6 header cut short");
    }
    let plen = usize::from(be16(p, 4).unwrap_or(0));
    // Zero: a jumbogram or segmentation offload; take what was captured.
    let total = if plen == 0 { p.len() } else { 40 + plen };
    let cut = p.len() < total;
    let data = &p[..total.min(p.len())];
    let mut a = [0u8; 16];
    a.copy_from_slice(&p[8..24]);
    let src = IpAddr::V6(Ipv6Addr::from(a));
    a.copy_from_slice(&p[24..40]);
    let dst = IpAddr::V6(Ipv6Addr::from(a));
    let mut next = p[6];
    let mut off = 40;
    let mut fragment = None;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            n if GENERIC_EXT.contains(&n) => {
                let (Some(&nh), Some(&len)) = (data.get(off), data.get(off + 1)) else {
                    return Parsed::Malformed("IPv6 extension header cut short");
                };
                next = nh;
                off += (usize::from(len) + 1) * 8;
            }
            PROTO_AH => {
                let (Some(&nh), Some(&len)) = (data.get(off), data.get(off + 1)) else {
                    return Parsed::Malformed("IPv6 authentication header cut short");
                };
                next = nh;
                off += (usize::from(len) + 2) * 4;
            }
            PROTO_FRAGMENT => {
                let (Some(&nh), Some(fo)) = (data.get(off), be16(data, off + 2)) else {
                    return Parsed::Malformed("IPv6 fragment header cut short");
                };
                let Some(id) = data.get(off + 4..off + 8) else {
                    return Parsed::Malformed("IPv6 fragment header cut short");
                };
                let offset = usize::from(fo & 0xfff8);
                let more = fo & 1 != 0;
                // An "atomic fragment" (offset 0, no more) is a whole packet.
                if offset > 0 || more {
                    fragment = Some(Fragment {
                        id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
                        offset,
                        more,
                    });
                }
                next = nh;
                off += 8;
                if fragment.is_some() {
                    // Headers after this one are inside the fragmented data.
                    break;
                }
            }
            PROTO_ESP => return Parsed::Esp,
            PROTO_NONE => return Parsed::Nothing,
            _ => break,
        }
    }
    if off > data.len() {
        return Parsed::Malformed("IPv6 extension headers longer than the packet");
    }
    Parsed::Packet(IpPacket {
        src,
        dst,
        proto: next,
        payload: &data[off..],
        cut,
        wire_len: total.saturating_sub(off),
        fragment,
    })
}

/// After IPv6 reassembly the data may still start with extension headers
/// (destination options after the fragment header): skip them.
pub fn skip_v6_extensions(mut proto: u8, data: &[u8]) -> Option<(u8, usize)> {
    let mut off = 0;
    for _ in 0..MAX_EXT_HEADERS {
        if !GENERIC_EXT.contains(&proto) {
            return (off <= data.len()).then_some((proto, off));
        }
        let (&nh, &len) = (data.get(off)?, data.get(off + 1)?);
        proto = nh;
        off += (usize::from(len) + 1) * 8;
    }
    None
}

/// Limits on reassembly.
#[derive(Debug, Clone, Copy)]
pub struct DefragLimits {
    /// Datagrams being reassembled at once; the oldest is dropped beyond it.
    pub max_datagrams: usize,
    /// A datagram not complete this long (capture time) after its first
    /// fragment is dropped.
    pub timeout_ns: i64,
}

impl Default for DefragLimits {
    fn default() -> DefragLimits {
        DefragLimits {
            max_datagrams: 1024,
            // Linux's ipfrag_time.
            timeout_ns: 30_000_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FragKey {
    /// Sender.
    src: IpAddr,
    /// Receiver.
    dst: IpAddr,
    /// Upper-layer protocol.
    proto: u8,
    /// The datagram's identification.
    id: u32,
}

/// A datagram being put back together.
#[derive(Debug)]
struct Pending {
    /// Capture time of its first fragment.
    first_ns: i64,
    /// The payload so far (holes are zeros until filled).
    data: Vec<u8>,
    /// Byte ranges received, sorted and merged.
    have: Vec<(usize, usize)>,
    /// The payload's length, known once the last fragment arrived.
    total: Option<usize>,
    /// A fragment of it was cut by the snap length: it can't complete.
    cut: bool,
}

/// What happened to the datagrams that never completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DefragCounters {
    /// Datagrams reassembled.
    pub completed: u64,
    /// Datagrams dropped unfinished (expired, evicted, or at the end).
    pub incomplete: u64,
    /// Of those, datagrams with a fragment cut by the snap length.
    pub cut: u64,
    /// Fragments that can't belong to any datagram (past 64 KiB,
    /// conflicting ends).
    pub bad: u64,
    /// Most datagrams in reassembly at once.
    pub peak_datagrams: usize,
    /// Most payload bytes held at once.
    pub peak_bytes: usize,
}

/// A completed datagram.
#[derive(Debug)]
pub struct Reassembled {
    /// Sender.
    pub src: IpAddr,
    /// Receiver.
    pub dst: IpAddr,
    /// Upper-layer protocol.
    pub proto: u8,
    /// The whole payload (transport header and data).
    pub data: Vec<u8>,
}

/// IP fragment reassembly, bounded.
#[derive(Debug, Default)]
pub struct Defrag {
    /// The bounds on what is held.
    limits: DefragLimits,
    /// Datagrams being reassembled.
    pending: HashMap<FragKey, Pending>,
    /// Payload bytes held now.
    bytes: usize,
    /// Completed, dropped, peaks.
    pub counters: DefragCounters,
}

impl Defrag {
    pub fn new(limits: DefragLimits) -> Defrag {
        Defrag {
            limits,
            ..Default::default()
        }
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Add a fragment; returns the datagram when this completed it.
    pub fn add(&mut self, now_ns: i64, pkt: &IpPacket<'_>, frag: Fragment) -> Option<Reassembled> {
        let key = FragKey {
            src: pkt.src,
            dst: pkt.dst,
            proto: pkt.proto,
            id: frag.id,
        };
        let end = frag.offset + pkt.payload.len();
        if end > MAX_DATAGRAM || (frag.more && pkt.payload.len() % 8 != 0 && !pkt.cut) {
            self.counters.bad += 1;
            return None;
        }
        if !self.pending.contains_key(&key) && self.pending.len() >= self.limits.max_datagrams {
            self.evict_oldest();
        }
        let p = self.pending.entry(key).or_insert_with(|| Pending {
            first_ns: now_ns,
            data: Vec::new(),
            have: Vec::new(),
            total: None,
            cut: false,
        });
        if pkt.cut {
            p.cut = true;
        }
        if !frag.more {
            match p.total {
                Some(t) if t != end => {
                    self.counters.bad += 1;
                    return None;
                }
                _ => p.total = Some(end),
            }
        }
        if p.data.len() < end {
            self.bytes += end - p.data.len();
            p.data.resize(end, 0);
        }
        p.data[frag.offset..end].copy_from_slice(pkt.payload);
        add_range(&mut p.have, frag.offset, end);
        let complete = !p.cut
            && p.total
                .is_some_and(|t| p.have.len() == 1 && p.have[0] == (0, t) && p.data.len() == t);
        self.counters.peak_datagrams = self.counters.peak_datagrams.max(self.pending.len());
        self.counters.peak_bytes = self.counters.peak_bytes.max(self.bytes);
        if !complete {
            return None;
        }
        let p = self.pending.remove(&key)?;
        self.bytes -= p.data.len();
        self.counters.completed += 1;
        Some(Reassembled {
            src: key.src,
            dst: key.dst,
            proto: key.proto,
            data: p.data,
        })
    }

    /// Drop datagrams whose first fragment is older than the timeout.
    pub fn expire(&mut self, now_ns: i64) {
        let timeout = self.limits.timeout_ns;
        let mut dropped = Vec::new();
        self.pending.retain(|_, p| {
            let keep = now_ns.saturating_sub(p.first_ns) <= timeout;
            if !keep {
                dropped.push((p.data.len(), p.cut));
            }
            keep
        });
        for (len, cut) in dropped {
            self.drop_counts(len, cut);
        }
    }

    /// Count whatever is still unfinished (at the end of the capture).
    pub fn finish(&mut self) {
        let left: Vec<(usize, bool)> = self
            .pending
            .drain()
            .map(|(_, p)| (p.data.len(), p.cut))
            .collect();
        for (len, cut) in left {
            self.drop_counts(len, cut);
        }
    }

    fn drop_counts(&mut self, len: usize, cut: bool) {
        self.bytes -= len;
        self.counters.incomplete += 1;
        if cut {
            self.counters.cut += 1;
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.first_ns)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            if let Some(p) = self.pending.remove(&k) {
                self.drop_counts(p.data.len(), p.cut);
            }
        }
    }
}

/// Insert [start, end) into sorted, merged ranges.
fn add_range(have: &mut Vec<(usize, usize)>, start: usize, end: usize) {
    if start >= end {
        return;
    }
    let mut s = start;
    let mut e = end;
    let mut out = Vec::with_capacity(have.len() + 1);
    let mut placed = false;
    for &(a, b) in have.iter() {
        if b < s {
            out.push((a, b));
        } else if a > e {
            if !placed {
                out.push((s, e));
                placed = true;
            }
            out.push((a, b));
        } else {
            s = s.min(a);
            e = e.max(b);
        }
    }
    if !placed {
        out.push((s, e));
    }
    *have = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        let mut h = Vec::new();
        add_range(&mut h, 16, 24);
        add_range(&mut h, 0, 8);
        assert_eq!(h, vec![(0, 8), (16, 24)]);
        add_range(&mut h, 8, 16);
        assert_eq!(h, vec![(0, 24)]);
    }

    fn v4_fragment(id: u16, offset: usize, more: bool, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8];
        let fo = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&fo.to_be_bytes());
        p.extend_from_slice(&[64, PROTO_UDP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fragments_in_any_order_reassemble_once() {
        let data: Vec<u8> = (0..40u8).collect();
        let a = v4_fragment(7, 0, true, &data[..16]);
        let b = v4_fragment(7, 16, true, &data[16..32]);
        let c = v4_fragment(7, 32, false, &data[32..]);
        let mut d = Defrag::new(DefragLimits::default());
        let mut out = None;
        for f in [&c, &a, &b] {
            let Parsed::Packet(p) = parse(f) else {
                panic!()
            };
            let frag = p.fragment.unwrap();
            if let Some(r) = d.add(0, &p, frag) {
                out = Some(r);
            }
        }
        assert_eq!(out.unwrap().data, data);
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(d.counters.completed, 1);
    }

    #[test]
    fn in_flight_datagrams_are_bounded_and_expire() {
        let mut d = Defrag::new(DefragLimits {
            max_datagrams: 4,
            timeout_ns: 1000,
        });
        for id in 0..10u16 {
            let f = v4_fragment(id, 0, true, &[0u8; 8]);
            let Parsed::Packet(p) = parse(&f) else {
                panic!()
            };
            assert!(d.add(i64::from(id), &p, p.fragment.unwrap()).is_none());
        }
        assert_eq!(d.counters.peak_datagrams, 4);
        assert_eq!(d.counters.incomplete, 6);
        d.expire(10_000);
        assert_eq!(d.counters.incomplete, 10);
        assert_eq!(d.held_bytes(), 0);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 9;
        for len in 0..3000usize {
            let mut b: Vec<u8> = (0..len % 120)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Some(f) = b.first_mut() {
                *f = if len % 2 == 0 { 0x45 } else { 0x60 };
            }
            let _ = parse(&b);
            let _ = skip_v6_extensions(0, &b);
        }
    }
}
