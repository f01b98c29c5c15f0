//! Writing small captures for the tests and the capture benchmark: pcap and
//! pcapng files, and the frames inside them (Ethernet with VLAN tags, Linux
//! cooked SLL/SLL2, BSD loopback, raw IP; IPv4 with fragments, IPv6 with an
//! extension header; UDP and TCP). Checksums are left zero: captures with
//! offloaded checksums look the same, and the reader does not check them.
//!
//! Also reads classic pcap records back (frames only), so a real capture's
//! packets can be reworked into edge cases.

#![allow(dead_code)]

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

pub const LINKTYPE_NULL: u16 = 0;
pub const LINKTYPE_ETHERNET: u16 = 1;
pub const LINKTYPE_RAW: u16 = 101;
pub const LINKTYPE_LINUX_SLL: u16 = 113;
pub const LINKTYPE_LINUX_SLL2: u16 = 276;

/// A classic pcap file being written (little-endian unless `big_endian`).
pub struct PcapWriter<W: Write> {
    out: W,
    nanos: bool,
    big_endian: bool,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(
        out: W,
        link_type: u16,
        snaplen: u32,
        nanos: bool,
        big_endian: bool,
    ) -> io::Result<Self> {
        let mut w = PcapWriter {
            out,
            nanos,
            big_endian,
            snaplen,
        };
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut h = Vec::new();
        w.put32(&mut h, magic);
        w.put16(&mut h, 2);
        w.put16(&mut h, 4);
        w.put32(&mut h, 0);
        w.put32(&mut h, 0);
        w.put32(&mut h, snaplen);
        w.put32(&mut h, u32::from(link_type));
        w.out.write_all(&h)?;
        Ok(w)
    }

    fn put32(&self, v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&if self.big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    fn put16(&self, v: &mut Vec<u8>, x: u16) {
        v.extend_from_slice(&if self.big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    /// Write a frame captured at `time_ns`, cut to the snap length.
    pub fn packet(&mut self, time_ns: i64, frame: &[u8]) -> io::Result<()> {
        let cap = frame.len().min(self.snaplen as usize);
        let mut h = Vec::with_capacity(16);
        let sec = (time_ns / 1_000_000_000) as u32;
        let frac = (time_ns % 1_000_000_000) as u32;
        self.put32(&mut h, sec);
        self.put32(&mut h, if self.nanos { frac } else { frac / 1000 });
        self.put32(&mut h, cap as u32);
        self.put32(&mut h, frame.len() as u32);
        self.out.write_all(&h)?;
        self.out.write_all(&frame[..cap])
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A pcapng file being written: one section, any number of interfaces.
pub struct PcapNgWriter<W: Write> {
    out: W,
    big_endian: bool,
    /// (snap length, ticks per second) per interface.
    interfaces: Vec<(u32, u64)>,
}

impl<W: Write> PcapNgWriter<W> {
    pub fn new(out: W, big_endian: bool) -> io::Result<Self> {
        let mut w = PcapNgWriter {
            out,
            big_endian,
            interfaces: Vec::new(),
        };
        let mut body = Vec::new();
        w.put32(&mut body, 0x1a2b_3c4d);
        w.put16(&mut body, 1);
        w.put16(&mut body, 0);
        body.extend_from_slice(&(-1i64).to_le_bytes());
        w.block(0x0a0d_0d0a, &body)?;
        Ok(w)
    }

    fn put32(&self, v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&if self.big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    fn put16(&self, v: &mut Vec<u8>, x: u16) {
        v.extend_from_slice(&if self.big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    fn block(&mut self, kind: u32, body: &[u8]) -> io::Result<()> {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        let mut b = Vec::with_capacity(len as usize);
        self.put32(&mut b, kind);
        self.put32(&mut b, len);
        b.extend_from_slice(body);
        b.extend(std::iter::repeat_n(0, pad));
        self.put32(&mut b, len);
        self.out.write_all(&b)
    }

    /// Describe an interface; `tsresol` is the if_tsresol byte (6 for
    /// microseconds, 9 for nanoseconds). Returns its id.
    pub fn interface(&mut self, link_type: u16, snaplen: u32, tsresol: u8) -> io::Result<u32> {
        let mut body = Vec::new();
        self.put16(&mut body, link_type);
        self.put16(&mut body, 0);
        self.put32(&mut body, snaplen);
        // if_tsresol option, padded, then end of options.
        self.put16(&mut body, 9);
        self.put16(&mut body, 1);
        body.extend_from_slice(&[tsresol, 0, 0, 0]);
        self.put16(&mut body, 0);
        self.put16(&mut body, 0);
        self.block(1, &body)?;
        self.interfaces
            .push((snaplen, 10u64.pow(u32::from(tsresol))));
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// An Enhanced Packet Block on an interface.
    pub fn packet(&mut self, iface: u32, time_ns: i64, frame: &[u8]) -> io::Result<()> {
        let (snaplen, per_sec) = self.interfaces[iface as usize];
        let cap = frame.len().min(snaplen as usize);
        let ticks = (time_ns as u128 * u128::from(per_sec) / 1_000_000_000) as u64;
        let mut body = Vec::with_capacity(20 + cap);
        self.put32(&mut body, iface);
        self.put32(&mut body, (ticks >> 32) as u32);
        self.put32(&mut body, ticks as u32);
        self.put32(&mut body, cap as u32);
        self.put32(&mut body, frame.len() as u32);
        body.extend_from_slice(&frame[..cap]);
        self.block(6, &body)
    }

    /// A block the reader must skip (a name resolution block).
    pub fn other_block(&mut self) -> io::Result<()> {
        self.block(4, &[0, 0, 0, 0])
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Ethernet II around an IP packet, with VLAN tags (outer first; 0x88a8
/// for the first of two, as QinQ does).
pub fn ethernet(ip: &[u8], vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, v) in vlans.iter().enumerate() {
        let tpid: u16 = if i == 0 && vlans.len() > 1 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype(ip).to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn ethertype(ip: &[u8]) -> u16 {
    if ip.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    }
}

/// Linux cooked capture v1 (tcpdump -i any, older libpcap).
pub fn sll(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&ethertype(ip).to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// Linux cooked capture v2 (tcpdump -i any, libpcap 1.10+).
pub fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut f = ethertype(ip).to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(ip);
    f
}

/// BSD loopback (address family in little-endian host order).
pub fn null_loopback(ip: &[u8]) -> Vec<u8> {
    let fam: u32 = if ip.first().map(|b| b >> 4) == Some(6) {
        30
    } else {
        2
    };
    let mut f = fam.to_le_bytes().to_vec();
    f.extend_from_slice(ip);
    f
}

/// An IP packet (v4 or v6 by the addresses) around a transport payload.
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, transport: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4(s.octets(), d.octets(), proto, 0x1234, 0, false, transport)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s.octets(), d.octets(), proto, transport, false),
        _ => panic!("mixed address families"),
    }
}

/// An IPv4 header (no options) and payload; `offset` in bytes.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    offset: usize,
    more: bool,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + payload.len();
    let fo = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&fo.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 header and payload; with `dest_opts` a destination options
/// extension header (8 bytes of padding options) comes first.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], proto: u8, payload: &[u8], dest_opts: bool) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut next = proto;
    if dest_opts {
        ext.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
        next = 60;
    }
    let plen = ext.len() + payload.len();
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(plen as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&ext);
    p.extend_from_slice(payload);
    p
}

/// A UDP header and payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_PSH: u8 = 0x08;

/// A TCP header (no options) and payload.
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// A UDP datagram between two socket addresses, as a raw IP packet.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    ip(
        src.ip(),
        dst.ip(),
        17,
        &udp(src.port(), dst.port(), payload),
    )
}

/// A TCP segment between two socket addresses, as a raw IP packet.
pub fn tcp_packet(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    ip(
        src.ip(),
        dst.ip(),
        6,
        &tcp(src.port(), dst.port(), seq, flags, payload),
    )
}

/// Split an IPv4 packet (no options) into fragments of at most `mtu`
/// bytes each, in order.
pub fn fragment_ipv4(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    assert_eq!(packet[0], 0x45, "an IPv4 packet without options");
    let payload = &packet[20..];
    let id = u16::from_be_bytes([packet[4], packet[5]]);
    let proto = packet[9];
    let mut src = [0u8; 4];
    let mut dst = [0u8; 4];
    src.copy_from_slice(&packet[12..16]);
    dst.copy_from_slice(&packet[16..20]);
    let step = (mtu - 20) / 8 * 8;
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + step).min(payload.len());
        out.push(ipv4(
            src,
            dst,
            proto,
            id,
            off,
            end < payload.len(),
            &payload[off..end],
        ));
        off = end;
    }
    out
}

/// A classic pcap's records: (time ns, link type, frame). Panics on
/// anything unexpected (it reads captures the tests just made).
pub fn read_pcap(bytes: &[u8]) -> Vec<(i64, u16, Vec<u8>)> {
    let magic = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let nanos = match magic {
        0xa1b2_c3d4 => false,
        0xa1b2_3c4d => true,
        m => panic!("not a little-endian pcap: {m:#x}"),
    };
    let link = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as u16;
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let f = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
        let (sec, frac, incl) = (f(0), f(4), f(8) as usize);
        let ns = i64::from(sec) * 1_000_000_000
            + if nanos {
                i64::from(frac)
            } else {
                i64::from(frac) * 1000
            };
        at += 16;
        if at + incl > bytes.len() {
            break;
        }
        out.push((ns, link, bytes[at..at + incl].to_vec()));
        at += incl;
    }
    out
}

/// The IP packet inside an Ethernet, SLL, SLL2, null or raw frame (no
/// VLAN tags).
pub fn ip_of(link: u16, frame: &[u8]) -> &[u8] {
    match link {
        LINKTYPE_ETHERNET => &frame[14..],
        LINKTYPE_LINUX_SLL => &frame[16..],
        LINKTYPE_LINUX_SLL2 => &frame[20..],
        LINKTYPE_NULL => &frame[4..],
        _ => frame,
    }
}

/// An IPv6 datagram's payload split into fragments of `chunk` bytes (a
/// multiple of 8), each with a fragment header, in order.
pub fn fragment_ipv6(
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    id: u32,
    payload: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0);
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + chunk).min(payload.len());
        let more = end < payload.len();
        let mut frag = vec![proto, 0];
        frag.extend_from_slice(&((off as u16) | u16::from(more)).to_be_bytes());
        frag.extend_from_slice(&id.to_be_bytes());
        frag.extend_from_slice(&payload[off..end]);
        out.push(ipv6(src, dst, 44, &frag, false));
        off = end;
    }
    out
}
