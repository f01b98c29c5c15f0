//! Reading packet records from a pcap or pcapng file, streamed.
//!
//! Only what judging SIP needs: each record's interface link type, capture
//! time, captured bytes and original length. Both byte orders, microsecond
//! and nanosecond pcap, pcapng with several sections and interfaces (each
//! with its own link type, snap length and time resolution). One record's
//! bytes are held at a time, in a buffer that is reused; a record larger
//! than [`MAX_RECORD`] is skipped without being held.
//!
//! A file that ends inside a record, or whose structure breaks mid-way, is
//! not an error: what came before is still read, and [`End`] says why the
//! reading stopped. Only a file that can't be read at all (no capture
//! header, an I/O failure) is a [`CaptureError`].

use std::io::{self, BufReader, Read};

use super::CaptureError;

/// Largest record whose bytes are kept (the largest snap length libpcap
/// uses is 262,144); a larger one is skipped and counted.
pub const MAX_RECORD: usize = 262_144 + 1024;

/// Largest pcapng block believed: anything bigger is a damaged length
/// field, not data (a packet block is at most [`MAX_RECORD`] plus options).
const MAX_BLOCK: u32 = 16 * 1024 * 1024;

/// Buffer between the file and the parser: large reads keep system calls
/// rare on multi-gigabyte files.
const READ_BUFFER: usize = 1 << 20;

const PCAP_MICRO: u32 = 0xa1b2_c3d4;
const PCAP_NANO: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;

/// Which kind of file this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap; `nanos` when timestamps are in nanoseconds.
    Pcap {
        nanos: bool,
    },
    PcapNg,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Pcap { nanos: false } => "pcap",
            Format::Pcap { nanos: true } => "pcap (nanosecond)",
            Format::PcapNg => "pcapng",
        })
    }
}

/// One capture interface (pcap has one, pcapng one per IDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    /// LINKTYPE_ value: how each record's bytes begin.
    pub link_type: u16,
    /// Largest number of bytes kept per packet (0: no limit given).
    pub snaplen: u32,
    /// Time resolution: `(base, exponent)`, a tick is `base^-exponent` s.
    resolution: (u8, u8),
    /// Seconds added to every timestamp (pcapng `if_tsoffset`).
    offset_s: i64,
}

/// One packet as captured.
#[derive(Debug)]
pub struct Record<'a> {
    /// The interface it was captured on (index into [`FileReader::interfaces`]).
    pub interface: Interface,
    /// Capture time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The bytes captured (possibly fewer than were on the wire).
    pub data: &'a [u8],
    /// How many bytes the packet had on the wire.
    pub orig_len: u32,
}

impl Record<'_> {
    /// True when the capture kept fewer bytes than the packet had (snap length).
    pub fn cut(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.orig_len)
    }
}

/// Why reading stopped before the end of the file, if it did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum End {
    /// Not yet at the end, or the file ended cleanly between records.
    #[default]
    Clean,
    /// The file ends inside a record or block (cut short while copying, or
    /// still being written): `at` is the byte offset of that record.
    Truncated { at: u64 },
    /// A record header or block is impossible (a length that can't be): the
    /// rest of the file can't be framed.
    Damaged { at: u64, what: String },
}

/// Streams records out of a pcap or pcapng file.
pub struct FileReader<R: Read> {
    /// The file, buffered.
    input: BufReader<io::Chain<io::Cursor<Vec<u8>>, R>>,
    /// Pcap or pcapng.
    format: Format,
    /// Byte order of the current section (true: big-endian).
    big_endian: bool,
    /// Interfaces of the current pcapng section (one for pcap).
    interfaces: Vec<Interface>,
    /// Every interface seen in the file, across sections, for the summary.
    all_interfaces: Vec<Interface>,
    /// Reused record buffer.
    buf: Vec<u8>,
    /// A pcapng packet block's record waiting in `buf`.
    pending: Option<Pending>,
    /// Bytes read so far (offset of the next record).
    offset: u64,
    /// Why reading stopped, once it has.
    end: End,
    /// Records skipped because they were larger than [`MAX_RECORD`].
    pub oversized: u64,
    /// pcapng packet blocks naming an interface that was never described.
    pub unknown_interface: u64,
}

impl<R: Read> FileReader<R> {
    /// Read the file header and get ready for records.
    pub fn new(mut input: R) -> Result<FileReader<R>, CaptureError> {
        // The magic number is read before buffering, whole even from a pipe
        // that delivers it a byte at a time, then put back in front.
        let mut magic = [0u8; 4];
        let got = read_some(&mut input, &mut magic)?;
        if got == 0 {
            return Err(CaptureError::Empty);
        }
        if got < 4 || !is_magic(magic) {
            let mut head = magic[..got].to_vec();
            let mut more = [0u8; 60];
            if got == 4 {
                let n = read_some(&mut input, &mut more)?;
                head.extend_from_slice(&more[..n]);
            }
            return Err(CaptureError::NotACapture(describe_start(&head)));
        }
        let mut r = FileReader {
            input: BufReader::with_capacity(
                READ_BUFFER,
                io::Cursor::new(magic.to_vec()).chain(input),
            ),
            format: Format::PcapNg,
            big_endian: false,
            interfaces: Vec::new(),
            all_interfaces: Vec::new(),
            buf: Vec::new(),
            pending: None,
            offset: 0,
            end: End::Clean,
            oversized: 0,
            unknown_interface: 0,
        };
        let le = u32::from_le_bytes(magic);
        let be = u32::from_be_bytes(magic);
        if le == PCAPNG_SHB {
            r.format = Format::PcapNg;
            // The first block must be a section header; read it now so a
            // bad one is an error, not an empty capture.
            match r.next_block_inner(true) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(CaptureError::BadHeader(match &r.end {
                        End::Damaged { what, .. } => what.clone(),
                        _ => "the file ends inside its section header block".into(),
                    }))
                }
                Err(e) => return Err(e),
            }
            return Ok(r);
        }
        let (big_endian, nanos) = match (le, be) {
            (PCAP_MICRO, _) => (false, false),
            (PCAP_NANO, _) => (false, true),
            (_, PCAP_MICRO) => (true, false),
            (_, PCAP_NANO) => (true, true),
            _ => {
                return Err(CaptureError::NotACapture(
                    "a \"modified\" (Kuznetsov) pcap, which is not supported: convert it with `editcap -F pcap`".into(),
                ))
            }
        };
        r.format = Format::Pcap { nanos };
        r.big_endian = big_endian;
        let mut h = [0u8; 24];
        if !read_full(&mut r.input, &mut h)? {
            return Err(CaptureError::BadHeader(
                "the file ends inside its 24-byte pcap header".into(),
            ));
        }
        r.offset = 24;
        let snaplen = r.u32_at(&h, 16);
        // The upper bits of the link-type field carry FCS information.
        let link_type = (r.u32_at(&h, 20) & 0xffff) as u16;
        let iface = Interface {
            link_type,
            snaplen,
            resolution: (10, if nanos { 9 } else { 6 }),
            offset_s: 0,
        };
        r.interfaces.push(iface);
        r.all_interfaces.push(iface);
        Ok(r)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Every interface described so far (all sections).
    pub fn all_interfaces(&self) -> &[Interface] {
        &self.all_interfaces
    }

    /// Why reading stopped (after [`FileReader::next_record`] returned None).
    pub fn end(&self) -> &End {
        &self.end
    }

    /// Bytes of the file consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Capacity of the record buffer (for the memory counters).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[at..at + 4]);
        if self.big_endian {
            u32::from_be_bytes(x)
        } else {
            u32::from_le_bytes(x)
        }
    }

    fn u16_at(&self, b: &[u8], at: usize) -> u16 {
        let x = [b[at], b[at + 1]];
        if self.big_endian {
            u16::from_be_bytes(x)
        } else {
            u16::from_le_bytes(x)
        }
    }

    /// The next packet record, or None at the end (see [`FileReader::end`]).
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        if self.end != End::Clean {
            return Ok(None);
        }
        match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg => loop {
                // Non-packet blocks are consumed here; a packet block leaves
                // its record in `self.buf` and `self.pending`.
                match self.next_block_inner(false)? {
                    false => return Ok(None),
                    true => {
                        if let Some(p) = self.pending.take() {
                            return Ok(Some(Record {
                                interface: p.interface,
                                time_ns: p.time_ns,
                                data: &self.buf[p.start..p.start + p.len],
                                orig_len: p.orig_len,
                            }));
                        }
                    }
                }
            },
        }
    }

    fn next_pcap(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        let at = self.offset;
        let mut h = [0u8; 16];
        match read_some(&mut self.input, &mut h)? {
            0 => return Ok(None),
            16 => {}
            _ => {
                self.end = End::Truncated { at };
                return Ok(None);
            }
        }
        let sec = self.u32_at(&h, 0);
        let frac = self.u32_at(&h, 4);
        let incl = self.u32_at(&h, 8);
        let orig = self.u32_at(&h, 12);
        let iface = self.interfaces[0];
        if incl > MAX_BLOCK {
            self.end = End::Damaged {
                at,
                what: format!("a record claims {incl} captured bytes, more than any packet"),
            };
            return Ok(None);
        }
        self.offset += 16;
        let incl = incl as usize;
        if incl > MAX_RECORD {
            if !skip(&mut self.input, incl as u64)? {
                self.end = End::Truncated { at };
                return Ok(None);
            }
            self.offset += incl as u64;
            self.oversized += 1;
            // Keep reading: an oversized record is counted, not fatal.
            return self.next_pcap();
        }
        self.buf.clear();
        self.buf.resize(incl, 0);
        if !read_full(&mut self.input, &mut self.buf)? {
            self.end = End::Truncated { at };
            return Ok(None);
        }
        self.offset += incl as u64;
        let nanos = matches!(self.format, Format::Pcap { nanos: true });
        let frac_ns = if nanos {
            i64::from(frac)
        } else {
            i64::from(frac) * 1000
        };
        Ok(Some(Record {
            interface: iface,
            time_ns: i64::from(sec) * 1_000_000_000 + frac_ns,
            data: &self.buf,
            orig_len: orig.max(incl as u32),
        }))
    }

    /// Read one pcapng block. Returns false at the end (clean or not).
    /// A packet block leaves its record in `self.pending`.
    fn next_block_inner(&mut self, first: bool) -> Result<bool, CaptureError> {
        let at = self.offset;
        let mut h = [0u8; 8];
        match read_some(&mut self.input, &mut h)? {
            0 => return Ok(false),
            8 => {}
            _ => {
                self.end = End::Truncated { at };
                return Ok(false);
            }
        }
        let raw_type = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        if raw_type == PCAPNG_SHB {
            // A new section: its byte-order magic follows the length.
            let mut bom = [0u8; 4];
            if !read_full(&mut self.input, &mut bom)? {
                self.end = End::Truncated { at };
                return Ok(false);
            }
            self.big_endian = match (u32::from_le_bytes(bom), u32::from_be_bytes(bom)) {
                (PCAPNG_BOM, _) => false,
                (_, PCAPNG_BOM) => true,
                _ => {
                    self.end = End::Damaged {
                        at,
                        what: "a pcapng section header with an unknown byte-order mark".into(),
                    };
                    return Ok(false);
                }
            };
            let len = self.u32_at(&h, 4);
            if !(28..=MAX_BLOCK).contains(&len) || len % 4 != 0 {
                self.end = End::Damaged {
                    at,
                    what: format!("a pcapng section header block of impossible length {len}"),
                };
                return Ok(false);
            }
            // The rest of the header (version, section length, options).
            if !skip(&mut self.input, u64::from(len) - 12)? {
                self.end = End::Truncated { at };
                return Ok(false);
            }
            self.offset += u64::from(len);
            self.interfaces.clear();
            return Ok(true);
        }
        if first {
            self.end = End::Damaged {
                at,
                what: "the file does not start with a pcapng section header".into(),
            };
            return Ok(false);
        }
        let block_type = self.u32_at(&h, 0);
        let len = self.u32_at(&h, 4);
        if len < 12 || len % 4 != 0 || len > MAX_BLOCK {
            self.end = End::Damaged {
                at,
                what: format!("a pcapng block (type {block_type:#x}) of impossible length {len}"),
            };
            return Ok(false);
        }
        let body_len = (len - 12) as usize;
        let wanted = matches!(block_type, 1 | 2 | 3 | 6);
        if !wanted || body_len > MAX_RECORD + 4096 {
            // Name resolution, statistics, decryption secrets, custom
            // blocks...: not needed. An oversized packet block is skipped too.
            if !skip(&mut self.input, u64::from(len) - 8)? {
                self.end = End::Truncated { at };
                return Ok(false);
            }
            if wanted {
                self.oversized += 1;
            }
            self.offset += u64::from(len);
            return Ok(true);
        }
        self.buf.clear();
        self.buf.resize(body_len + 4, 0);
        if !read_full(&mut self.input, &mut self.buf)? {
            self.end = End::Truncated { at };
            return Ok(false);
        }
        self.offset += u64::from(len);
        let trailer = self.u32_at(&self.buf, body_len);
        if trailer != len {
            self.end = End::Damaged {
                at,
                what: format!(
                    "a pcapng block's trailing length ({trailer}) differs from its leading length ({len})"
                ),
            };
            return Ok(false);
        }
        let body_end = body_len;
        match block_type {
            1 => self.interface_block(body_end),
            6 => self.packet_block(body_end, false),
            2 => self.packet_block(body_end, true),
            3 => self.simple_packet_block(body_end),
            _ => {}
        }
        Ok(true)
    }

    /// Interface Description Block: link type, snap length, options.
    fn interface_block(&mut self, body_end: usize) {
        if body_end < 8 {
            return;
        }
        let link_type = self.u16_at(&self.buf, 0);
        let snaplen = self.u32_at(&self.buf, 4);
        let mut iface = Interface {
            link_type,
            snaplen,
            resolution: (10, 6),
            offset_s: 0,
        };
        let mut i = 8;
        while i + 4 <= body_end {
            let code = self.u16_at(&self.buf, i);
            let olen = self.u16_at(&self.buf, i + 2) as usize;
            let start = i + 4;
            if code == 0 || start + olen > body_end {
                break;
            }
            match (code, olen) {
                (9, 1) => {
                    let v = self.buf[start];
                    iface.resolution = if v & 0x80 == 0 {
                        (10, v)
                    } else {
                        (2, v & 0x7f)
                    };
                }
                (14, 8) => {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(&self.buf[start..start + 8]);
                    iface.offset_s = if self.big_endian {
                        i64::from_be_bytes(x)
                    } else {
                        i64::from_le_bytes(x)
                    };
                }
                _ => {}
            }
            i = start + olen.div_ceil(4) * 4;
        }
        self.interfaces.push(iface);
        self.all_interfaces.push(iface);
    }

    /// Enhanced Packet Block (or the obsolete Packet Block).
    fn packet_block(&mut self, body_end: usize, obsolete: bool) {
        if body_end < 20 {
            return;
        }
        let id = if obsolete {
            u32::from(self.u16_at(&self.buf, 0))
        } else {
            self.u32_at(&self.buf, 0)
        };
        let hi = self.u32_at(&self.buf, 4);
        let lo = self.u32_at(&self.buf, 8);
        let cap = self.u32_at(&self.buf, 12) as usize;
        let orig = self.u32_at(&self.buf, 16);
        let Some(iface) = self.interfaces.get(id as usize).copied() else {
            self.unknown_interface += 1;
            return;
        };
        // A captured length past the block is damage; keep what is there.
        let cap = cap.min(body_end - 20);
        let ticks = (u64::from(hi) << 32) | u64::from(lo);
        self.pending = Some(Pending {
            interface: iface,
            time_ns: to_ns(ticks, iface.resolution, iface.offset_s),
            start: 20,
            len: cap,
            orig_len: orig.max(cap as u32),
        });
    }

    /// Simple Packet Block: interface 0, no timestamp.
    fn simple_packet_block(&mut self, body_end: usize) {
        if body_end < 4 {
            return;
        }
        let orig = self.u32_at(&self.buf, 0);
        let Some(iface) = self.interfaces.first().copied() else {
            self.unknown_interface += 1;
            return;
        };
        let mut cap = (orig as usize).min(body_end - 4);
        if iface.snaplen > 0 {
            cap = cap.min(iface.snaplen as usize);
        }
        self.pending = Some(Pending {
            interface: iface,
            time_ns: 0,
            start: 4,
            len: cap,
            orig_len: orig.max(cap as u32),
        });
    }
}

/// A packet block's record, waiting in the buffer to be handed out.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The interface it was captured on.
    interface: Interface,
    /// Capture time in nanoseconds since the epoch.
    time_ns: i64,
    /// Where its bytes start in the buffer.
    start: usize,
    /// How many bytes were captured.
    len: usize,
    /// How many bytes it had on the wire.
    orig_len: u32,
}

/// A magic number this reader opens (pcap either resolution and byte
/// order, pcapng, or the modified pcap it explains it can't read).
fn is_magic(m: [u8; 4]) -> bool {
    let (le, be) = (u32::from_le_bytes(m), u32::from_be_bytes(m));
    le == PCAPNG_SHB
        || [PCAP_MICRO, PCAP_NANO, 0xa1b2_cd34]
            .iter()
            .any(|x| *x == le || *x == be)
}

/// Timestamp ticks at a resolution to nanoseconds since the epoch.
fn to_ns(ticks: u64, (base, exp): (u8, u8), offset_s: i64) -> i64 {
    let ns: u128 = if base == 2 {
        (u128::from(ticks) * 1_000_000_000) >> exp.min(127)
    } else if exp <= 9 {
        u128::from(ticks) * 10u128.pow(9 - u32::from(exp))
    } else {
        u128::from(ticks) / 10u128.pow(u32::from(exp.min(38)) - 9)
    };
    // A timestamp past the year 2262 saturates rather than wraps.
    i64::try_from(ns)
        .unwrap_or(i64::MAX)
        .saturating_add(offset_s.saturating_mul(1_000_000_000))
}

/// What a file that is not a capture starts with, in words.
fn describe_start(head: &[u8]) -> String {
    if head.starts_with(&[0x1f, 0x8b]) {
        return "it is gzip-compressed: decompress it first (gunzip)".into();
    }
    if head.starts_with(b"\x28\xb5\x2f\xfd") {
        return "it is zstd-compressed: decompress it first (zstd -d)".into();
    }
    let text = head
        .iter()
        .take(64)
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        let t = String::from_utf8_lossy(&head[..head.len().min(64)]);
        if t.starts_with("INVITE ") || t.starts_with("SIP/2.0") || t.contains(" SIP/2.0") {
            return "it is the text of a SIP message, not a capture: judge one message with `cidguard inspect --line L FILE` (without --pcap)".into();
        }
        return "it is text, not a pcap or pcapng capture".into();
    }
    let shown: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!(
        "it starts with the bytes {}, which is neither pcap (a1 b2 c3 d4 or a1 b2 3c 4d, either byte order) nor pcapng (0a 0d 0d 0a)",
        shown.join(" ")
    )
}

/// Fill `buf` completely. False if the input ended first (after a partial read).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    Ok(read_some(r, buf)? == buf.len())
}

/// Read up to `buf.len()` bytes, stopping only at the end of the input.
fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Skip `n` bytes. False if the input ended first.
fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<bool> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    Ok(copied == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(bytes: &[u8]) -> (usize, End) {
        let mut r = match FileReader::new(bytes) {
            Ok(r) => r,
            Err(_) => return (0, End::Clean),
        };
        let mut n = 0;
        while let Ok(Some(_)) = r.next_record() {
            n += 1;
        }
        (n, r.end().clone())
    }

    #[test]
    fn timestamps_at_every_resolution() {
        assert_eq!(to_ns(1_500_000, (10, 6), 0), 1_500_000_000);
        assert_eq!(to_ns(3, (10, 0), 1), 4_000_000_000);
        assert_eq!(to_ns(1 << 20, (2, 20), 0), 1_000_000_000);
        assert_eq!(to_ns(u64::MAX, (10, 0), 0), i64::MAX);
    }

    #[test]
    fn a_record_cut_short_is_truncation_not_an_error() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65_535u32.to_le_bytes());
        f.extend_from_slice(&101u32.to_le_bytes());
        let mut rec = vec![0u8; 8];
        rec.extend_from_slice(&20u32.to_le_bytes());
        rec.extend_from_slice(&20u32.to_le_bytes());
        rec.extend_from_slice(&[0x45; 20]);
        f.extend_from_slice(&rec);
        assert_eq!(records(&f), (1, End::Clean));
        let cut = f.len() - 5;
        assert_eq!(records(&f[..cut]), (0, End::Truncated { at: 24 }));
    }

    /// A pipe that hands over one byte per read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), out.first_mut()) {
                (Some((b, rest)), Some(o)) => {
                    *o = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn a_pipe_delivering_a_byte_at_a_time_reads_the_same() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65_535u32.to_le_bytes());
        f.extend_from_slice(&101u32.to_le_bytes());
        for _ in 0..3 {
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(&20u32.to_le_bytes());
            f.extend_from_slice(&20u32.to_le_bytes());
            f.extend_from_slice(&[0x45; 20]);
        }
        let mut r = FileReader::new(Trickle(&f)).unwrap();
        let mut n = 0;
        while let Some(rec) = r.next_record().unwrap() {
            assert_eq!(rec.data.len(), 20);
            n += 1;
        }
        assert_eq!((n, r.end().clone()), (3, End::Clean));
        assert!(matches!(
            FileReader::new(Trickle(b"ab")),
            Err(CaptureError::NotACapture(_))
        ));
        assert!(matches!(
            FileReader::new(Trickle(b"")),
            Err(CaptureError::Empty)
        ));
    }

    #[test]
    fn any_bytes_after_a_valid_magic_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        let heads: [&[u8]; 3] = [
            &[0xd4, 0xc3, 0xb2, 0xa1],
            &[0xa1, 0xb2, 0x3c, 0x4d],
            &[0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a],
        ];
        for round in 0..3000usize {
            let mut f = heads[round % 3].to_vec();
            let n = round % 400;
            f.extend((0..n).map(|_| rnd()));
            let _ = records(&f);
        }
    }
}
