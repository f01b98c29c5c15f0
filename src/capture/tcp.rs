//! TCP: per-direction stream reassembly and SIP framing on the stream.
//!
//! Each direction of a connection is a stream. Segments are put in order
//! by sequence number (retransmissions and overlaps trimmed, a bounded
//! number of out-of-order segments held), and the in-order bytes are framed
//! into SIP messages by Content-Length with the same framing the endpoint
//! uses. Bounded everywhere: streams, bytes per stream, held out-of-order
//! data, all buffers together, idle time. Whatever is lost (a gap that never
//! fills, a segment cut by the snap length, a stream evicted with a message
//! half-read) is reported as an [`Event`], and reading resumes at the next
//! message start.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::sniff;
use crate::sip::message::{frame_stream, Frame, MAX_MESSAGE};

/// Limits on reassembly.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Streams tracked at once; beyond it the least recently active go.
    pub max_streams: usize,
    /// Out-of-order bytes held per stream waiting for a gap to fill.
    pub max_out_of_order: usize,
    /// Out-of-order segments held per stream.
    pub max_out_of_order_segments: usize,
    /// All streams' buffers together; beyond it the least recently active
    /// streams go.
    pub max_total_bytes: usize,
    /// A stream idle this long (capture time) is forgotten.
    pub idle_timeout_ns: i64,
    /// Bytes examined at the start of a stream for a SIP start line before
    /// deciding it is not SIP.
    pub probe_bytes: usize,
}

impl Default for TcpLimits {
    fn default() -> TcpLimits {
        TcpLimits {
            max_streams: 16_384,
            max_out_of_order: 256 * 1024,
            max_out_of_order_segments: 128,
            max_total_bytes: 64 * 1024 * 1024,
            // SIP trunks keep connections open; an idle one holding nothing
            // loses nothing when forgotten, and is picked up again.
            idle_timeout_ns: 300_000_000_000,
            probe_bytes: 64 * 1024,
        }
    }
}

/// One direction of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The sender.
    pub src: SocketAddr,
    /// The receiver.
    pub dst: SocketAddr,
}

/// What reassembly reports.
#[derive(Debug)]
pub enum Event<'a> {
    /// A whole SIP message.
    Message(&'a [u8]),
    /// The stream carries TLS (reported once per stream).
    Tls,
    /// Bytes of a SIP stream never arrived (a gap that did not fill): the
    /// message in progress, if any, is lost.
    Lost,
    /// A segment of a SIP stream was cut by the snap length: the message it
    /// belonged to is lost.
    Cut,
    /// SIP data that could not be framed (no or bad Content-Length, a
    /// message over the size limit); skipped to the next message start.
    Unframed,
    /// A stream ended, was evicted or the capture ended with part of a SIP
    /// message read.
    Incomplete,
}

/// What a stream turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not decided yet: looking for a SIP start line.
    Unknown,
    Sip,
    Tls,
    /// Something else (HTTP, a database...): its bytes are dropped.
    Other,
}

#[derive(Debug)]
struct Stream {
    /// What it carries, once known.
    kind: Kind,
    /// Sequence number of the next in-order byte, once known.
    next_seq: Option<u32>,
    /// In-order bytes not yet framed.
    buf: Vec<u8>,
    /// Looking for a message start (stream picked up mid-way, after a gap,
    /// or after data that could not be framed).
    hunting: bool,
    /// Segments past a gap: (sequence number, bytes).
    ooo: Vec<(u32, Vec<u8>)>,
    /// Bytes in `ooo`.
    ooo_bytes: usize,
    /// Capture time of the last segment.
    last_ns: i64,
    /// Bytes examined while the kind was unknown.
    probed: usize,
}

impl Stream {
    fn held(&self) -> usize {
        self.buf.capacity() + self.ooo_bytes
    }

    /// A SIP message is half-read (more than keep-alive line ends).
    fn partial(&self) -> bool {
        self.kind == Kind::Sip
            && !self.hunting
            && !sniff::is_keepalive(&self.buf)
            && !self.buf.is_empty()
    }
}

/// Counters about the streams themselves.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// Streams seen.
    pub streams: u64,
    /// Streams found to carry SIP.
    pub sip_streams: u64,
    /// Streams found to carry something else.
    pub other_streams: u64,
    /// Streams dropped because too many were open or held too much.
    pub evicted: u64,
    /// Most streams tracked at once.
    pub peak_streams: usize,
    /// Most bytes held by all streams at once (buffers and out-of-order data).
    pub peak_bytes: usize,
}

/// Every TCP stream in the capture.
#[derive(Debug, Default)]
pub struct Tcp {
    /// The bounds on everything held.
    limits: TcpLimits,
    /// Every stream being tracked.
    streams: HashMap<FlowKey, Stream>,
    /// Bytes held by all streams now.
    held: usize,
    /// Streams seen, kinds, evictions, peaks.
    pub counters: TcpCounters,
}

/// TCP header fields needed here.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Sequence number of its first byte (of the SYN for a SYN).
    pub seq: u32,
    /// Opens a connection.
    pub syn: bool,
    /// Closes the sender's direction.
    pub fin: bool,
    /// Aborts the connection.
    pub rst: bool,
    /// Payload bytes the segment had on the wire (more than captured when
    /// the snap length cut it).
    pub wire_len: usize,
}

/// Read a TCP header: (ports, segment, payload as captured).
pub fn parse(data: &[u8], ip_len_known: Option<usize>) -> Option<(u16, u16, Segment, &[u8])> {
    if data.len() < 20 {
        return None;
    }
    let sport = u16::from_be_bytes([data[0], data[1]]);
    let dport = u16::from_be_bytes([data[2], data[3]]);
    let seq = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let off = usize::from(data[12] >> 4) * 4;
    if off < 20 || off > data.len() {
        return None;
    }
    let flags = data[13];
    let payload = &data[off..];
    let wire_len = ip_len_known.map_or(payload.len(), |l| l.saturating_sub(off));
    Some((
        sport,
        dport,
        Segment {
            seq,
            syn: flags & 0x02 != 0,
            fin: flags & 0x01 != 0,
            rst: flags & 0x04 != 0,
            wire_len: wire_len.max(payload.len()),
        },
        payload,
    ))
}

impl Tcp {
    pub fn new(limits: TcpLimits) -> Tcp {
        Tcp {
            limits,
            ..Default::default()
        }
    }

    /// Bytes held by all streams now.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Streams tracked now.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Take one segment.
    pub fn segment(
        &mut self,
        now_ns: i64,
        key: FlowKey,
        seg: Segment,
        payload: &[u8],
        emit: &mut impl FnMut(FlowKey, Event<'_>),
    ) {
        if !self.streams.contains_key(&key) {
            if seg.rst || (payload.is_empty() && !seg.syn) {
                // Nothing to read, and no stream to close.
                return;
            }
            if self.streams.len() >= self.limits.max_streams {
                self.make_room(emit);
            }
            self.streams.insert(
                key,
                Stream {
                    kind: Kind::Unknown,
                    next_seq: None,
                    buf: Vec::new(),
                    hunting: false,
                    ooo: Vec::new(),
                    ooo_bytes: 0,
                    last_ns: now_ns,
                    probed: 0,
                },
            );
            self.counters.streams += 1;
            self.counters.peak_streams = self.counters.peak_streams.max(self.streams.len());
        }
        let limits = self.limits;
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let before = s.held();
        s.last_ns = s.last_ns.max(now_ns);
        let mut close = seg.rst;
        if seg.syn {
            if s.next_seq.is_some() && s.partial() {
                emit(key, Event::Incomplete);
            }
            // A new connection on the same addresses starts afresh.
            s.buf.clear();
            s.ooo.clear();
            s.ooo_bytes = 0;
            s.hunting = false;
            s.next_seq = Some(seg.seq.wrapping_add(1));
        }
        if !payload.is_empty() || seg.wire_len > 0 {
            let data_seq = if seg.syn {
                seg.seq.wrapping_add(1)
            } else {
                seg.seq
            };
            let was = s.kind;
            take_data(s, key, data_seq, seg, payload, &limits, emit);
            if was != s.kind {
                match s.kind {
                    Kind::Sip => self.counters.sip_streams += 1,
                    Kind::Other | Kind::Tls => self.counters.other_streams += 1,
                    Kind::Unknown => {}
                }
            }
        }
        if seg.fin {
            close = true;
        }
        if close {
            if s.partial() {
                emit(key, Event::Incomplete);
            }
            // The stream's bytes go with it.
            self.streams.remove(&key);
            self.held = self.held.saturating_sub(before);
        } else {
            let after = s.held();
            self.held = self.held + after - before;
        }
        self.counters.peak_bytes = self.counters.peak_bytes.max(self.held);
        if self.held > self.limits.max_total_bytes {
            self.make_room(emit);
        }
    }

    /// Forget streams idle longer than the timeout.
    pub fn expire(&mut self, now_ns: i64, emit: &mut impl FnMut(FlowKey, Event<'_>)) {
        let timeout = self.limits.idle_timeout_ns;
        let old: Vec<FlowKey> = self
            .streams
            .iter()
            .filter(|(_, s)| now_ns.saturating_sub(s.last_ns) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.remove(k, emit);
        }
    }

    /// The capture ended: report every half-read message.
    pub fn finish(&mut self, emit: &mut impl FnMut(FlowKey, Event<'_>)) {
        let keys: Vec<FlowKey> = self.streams.keys().copied().collect();
        for k in keys {
            self.remove(k, emit);
        }
    }

    fn remove(&mut self, k: FlowKey, emit: &mut impl FnMut(FlowKey, Event<'_>)) {
        if let Some(s) = self.streams.remove(&k) {
            if s.partial() {
                emit(k, Event::Incomplete);
            }
            self.held = self.held.saturating_sub(s.held());
        }
    }

    /// Too many streams or too many bytes: drop the least recently active
    /// eighth (in one sort, so a flood of new streams costs little each).
    fn make_room(&mut self, emit: &mut impl FnMut(FlowKey, Event<'_>)) {
        let mut by_age: Vec<(i64, FlowKey)> =
            self.streams.iter().map(|(k, s)| (s.last_ns, *k)).collect();
        by_age.sort_unstable_by_key(|(t, _)| *t);
        let n = (by_age.len() / 8).max(1);
        for (_, k) in by_age.into_iter().take(n) {
            self.counters.evicted += 1;
            self.remove(k, emit);
        }
        // Still over the byte limit (a few huge streams): keep going.
        if self.held > self.limits.max_total_bytes && !self.streams.is_empty() {
            self.make_room(emit);
        }
    }
}

/// Put a segment's data in order and frame what can be framed.
fn take_data(
    s: &mut Stream,
    key: FlowKey,
    seq: u32,
    seg: Segment,
    payload: &[u8],
    limits: &TcpLimits,
    emit: &mut impl FnMut(FlowKey, Event<'_>),
) {
    if matches!(s.kind, Kind::Tls | Kind::Other) {
        // Nothing to read: just follow the sequence numbers.
        s.next_seq = Some(seq.wrapping_add(seg.wire_len as u32));
        return;
    }
    let cut = payload.len() < seg.wire_len;
    let next = match s.next_seq {
        Some(n) => n,
        None => {
            // Picked up mid-stream: start here, at a message start or not.
            s.hunting = true;
            seq
        }
    };
    let rel = seq.wrapping_sub(next) as i32;
    if rel > 0 {
        // A gap: hold the segment until the gap fills.
        let fits = s.ooo.len() < limits.max_out_of_order_segments
            && s.ooo_bytes + payload.len() <= limits.max_out_of_order
            && (rel as usize) < limits.max_out_of_order * 4;
        if fits && !cut {
            if !s.ooo.iter().any(|(q, _)| *q == seq) {
                s.ooo_bytes += payload.len();
                s.ooo.push((seq, payload.to_vec()));
            }
            return;
        }
        // The gap won't fill: what was missing is lost. Carry on from the
        // earliest segment held (or this one).
        lose(s, key, emit);
        let earliest = s
            .ooo
            .iter()
            .map(|(q, _)| *q)
            .chain(std::iter::once(seq))
            .min_by_key(|q| q.wrapping_sub(next))
            .unwrap_or(seq);
        s.next_seq = Some(earliest);
        if earliest == seq {
            in_order(s, key, seq, seg, payload, cut, emit, limits);
        } else if cut {
            // Part of this segment was never captured; its place becomes a gap.
            if s.kind == Kind::Sip {
                emit(key, Event::Cut);
            }
        } else {
            s.ooo_bytes += payload.len();
            s.ooo.push((seq, payload.to_vec()));
        }
    } else {
        let overlap = rel.unsigned_abs() as usize;
        if overlap >= payload.len() && !(overlap == 0 && cut) {
            // A retransmission of bytes already taken.
            return;
        }
        in_order(s, key, seq, seg, payload, cut, emit, limits);
    }
    // Held segments that are now in order.
    while !s.ooo.is_empty() {
        let Some(n) = s.next_seq else { break };
        let Some(i) = s.ooo.iter().position(|(q, d)| {
            (q.wrapping_sub(n) as i32) <= 0 && d.len() > n.wrapping_sub(*q) as usize
        }) else {
            // Drop segments wholly behind, then stop.
            let before = s.ooo.len();
            s.ooo.retain(|(q, d)| {
                let r = q.wrapping_sub(n) as i32;
                r > 0 || d.len() > r.unsigned_abs() as usize
            });
            if s.ooo.len() == before {
                break;
            }
            s.ooo_bytes = s.ooo.iter().map(|(_, d)| d.len()).sum();
            continue;
        };
        let (q, d) = s.ooo.swap_remove(i);
        s.ooo_bytes -= d.len();
        let seg = Segment {
            seq: q,
            syn: false,
            fin: false,
            rst: false,
            wire_len: d.len(),
        };
        in_order(s, key, q, seg, &d, false, emit, limits);
    }
}

/// The data before `next_seq` is gone: drop the message in progress.
fn lose(s: &mut Stream, key: FlowKey, emit: &mut impl FnMut(FlowKey, Event<'_>)) {
    if s.kind == Kind::Sip {
        emit(key, Event::Lost);
    }
    s.buf.clear();
    s.hunting = true;
}

/// Append bytes that start at or before `next_seq` (the overlap trimmed).
#[allow(clippy::too_many_arguments)]
fn in_order(
    s: &mut Stream,
    key: FlowKey,
    seq: u32,
    seg: Segment,
    payload: &[u8],
    cut: bool,
    emit: &mut impl FnMut(FlowKey, Event<'_>),
    limits: &TcpLimits,
) {
    let next = s.next_seq.unwrap_or(seq);
    let skip = (next.wrapping_sub(seq) as usize).min(payload.len());
    let data = &payload[skip..];
    s.next_seq = Some(seq.wrapping_add(seg.wire_len.max(payload.len()) as u32));
    feed(s, key, data, emit, limits);
    if cut {
        // The rest of this segment was never captured.
        if s.kind == Kind::Sip {
            emit(key, Event::Cut);
        }
        s.buf.clear();
        s.hunting = true;
    }
    if s.buf.is_empty() && s.buf.capacity() > 4096 {
        s.buf = Vec::new();
    }
}

/// Frame in-order bytes: from the segment itself when nothing is pending
/// (no copy), else after appending to the stream's buffer.
fn feed(
    s: &mut Stream,
    key: FlowKey,
    data: &[u8],
    emit: &mut impl FnMut(FlowKey, Event<'_>),
    limits: &TcpLimits,
) {
    if data.is_empty() {
        return;
    }
    if s.kind == Kind::Unknown {
        s.probed += data.len();
        if s.buf.is_empty() && sniff::is_tls_record(data) {
            s.kind = Kind::Tls;
            emit(key, Event::Tls);
            return;
        }
    }
    if s.buf.is_empty() {
        let used = frame(s, key, data, emit);
        s.buf.extend_from_slice(&data[used..]);
    } else {
        s.buf.extend_from_slice(data);
        let buf = std::mem::take(&mut s.buf);
        let used = frame(s, key, &buf, emit);
        s.buf = buf;
        s.buf.drain(..used);
    }
    if s.kind == Kind::Unknown && s.probed > limits.probe_bytes {
        s.kind = if sniff::contains_tls_record(&s.buf) {
            emit(key, Event::Tls);
            Kind::Tls
        } else {
            Kind::Other
        };
        s.buf = Vec::new();
    }
}

/// Frame messages from the front of `data`; returns the bytes consumed.
fn frame(
    s: &mut Stream,
    key: FlowKey,
    data: &[u8],
    emit: &mut impl FnMut(FlowKey, Event<'_>),
) -> usize {
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        if rest.is_empty() {
            return pos;
        }
        if s.hunting || s.kind == Kind::Unknown {
            let lead = rest
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            match sniff::find_start(&rest[lead..]) {
                Some(at) => {
                    pos += lead + at;
                    s.hunting = false;
                    if s.kind == Kind::Unknown {
                        s.kind = Kind::Sip;
                    }
                }
                None => {
                    // Keep a line that may still become a start line.
                    let keep_from = rest.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                    let tail = rest.len() - keep_from;
                    return if tail > 8192 {
                        data.len()
                    } else {
                        pos + keep_from
                    };
                }
            }
            continue;
        }
        match frame_stream(rest) {
            Frame::Complete(n) => {
                emit(key, Event::Message(&rest[..n]));
                pos += n;
            }
            Frame::KeepAlive(n) => pos += n,
            Frame::Incomplete => return pos,
            Frame::Invalid(_) => {
                emit(key, Event::Unframed);
                s.hunting = true;
                // Step past this start line so it isn't found again.
                let line = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                pos += line.min(MAX_MESSAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey {
            src: "10.0.0.1:5060".parse().unwrap(),
            dst: "10.0.0.2:5060".parse().unwrap(),
        }
    }

    fn msg(n: u32) -> Vec<u8> {
        let body = "v=0\r\n";
        format!(
            "OPTIONS sip:x@y SIP/2.0\r\nCall-ID: {n}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn seg(seq: u32, len: usize) -> Segment {
        Segment {
            seq,
            syn: false,
            fin: false,
            rst: false,
            wire_len: len,
        }
    }

    fn run(t: &mut Tcp, parts: &[(u32, &[u8])]) -> (Vec<Vec<u8>>, Vec<String>) {
        let mut msgs = Vec::new();
        let mut events = Vec::new();
        let mut emit = |_: FlowKey, e: Event<'_>| match e {
            Event::Message(m) => msgs.push(m.to_vec()),
            other => events.push(format!("{other:?}")),
        };
        for (seq, d) in parts {
            t.segment(0, key(), seg(*seq, d.len()), d, &mut emit);
        }
        (msgs, events)
    }

    #[test]
    fn split_merged_and_reordered_segments() {
        let mut all = Vec::new();
        for n in 0..3 {
            all.extend(msg(n));
        }
        let base = 1000u32;
        let a = &all[..30];
        let b = &all[30..70];
        let c = &all[70..];
        let mut t = Tcp::new(TcpLimits::default());
        let (msgs, events) = run(
            &mut t,
            &[
                (base, a),
                (base + 70, c),
                (base + 30, b),
                // A retransmission changes nothing.
                (base + 30, b),
            ],
        );
        assert_eq!(msgs, vec![msg(0), msg(1), msg(2)], "{events:?}");
        assert!(events.is_empty(), "{events:?}");
        // Only a small buffer's capacity stays with the open stream.
        assert!(t.held_bytes() <= 4096, "{}", t.held_bytes());
    }

    #[test]
    fn picked_up_mid_message_resyncs() {
        let mut all = b"ent-Length: 0\r\n\r\n".to_vec();
        all.extend(msg(7));
        let mut t = Tcp::new(TcpLimits::default());
        let (msgs, _) = run(&mut t, &[(5, &all)]);
        assert_eq!(msgs, vec![msg(7)]);
    }

    #[test]
    fn a_gap_that_never_fills_is_lost_not_guessed() {
        let m = msg(1);
        let limits = TcpLimits {
            max_out_of_order_segments: 2,
            ..TcpLimits::default()
        };
        let mut t = Tcp::new(limits);
        let m0 = msg(0);
        let mut parts: Vec<(u32, Vec<u8>)> =
            vec![(0, m0.clone()), (m0.len() as u32, m[..10].to_vec())];
        // The rest of message 1 never arrives; messages 2.. do.
        let mut seq = (m0.len() + m.len()) as u32;
        for n in 2..6 {
            let x = msg(n);
            parts.push((seq, x.clone()));
            seq += x.len() as u32;
        }
        let refs: Vec<(u32, &[u8])> = parts.iter().map(|(s, d)| (*s, d.as_slice())).collect();
        let (msgs, events) = run(&mut t, &refs);
        assert!(events.iter().any(|e| e == "Lost"), "{events:?}");
        assert_eq!(
            msgs,
            vec![msg(0), msg(2), msg(3), msg(4), msg(5)],
            "{events:?}"
        );
    }

    #[test]
    fn tls_streams_are_recognised() {
        let mut t = Tcp::new(TcpLimits::default());
        let (msgs, events) = run(&mut t, &[(1, &[22, 3, 1, 0, 5, 1, 2, 3, 4, 5])]);
        assert!(msgs.is_empty());
        assert_eq!(events, vec!["Tls".to_string()]);
    }
}
