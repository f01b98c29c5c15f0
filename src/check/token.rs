//! The media token: a random string of digits sent by the line as RFC 4733
//! telephone events over RTP, and decoded by the endpoint. Pure: packets are
//! built and read as bytes; sockets belong to the caller.
//!
//! Each digit is one event: packets every 20 ms with the same RTP timestamp
//! and a growing duration, the first with the marker bit, the last three
//! with the End bit (RFC 4733 section 2.5.1.4 sends the end packet three
//! times because RTP is lossy). A gap between events keeps repeated digits
//! apart.

use bytes::{Bytes, BytesMut};
use rtp::header::Header;
use rtp::packet::Packet;
use webrtc_util::marshal::{Marshal, MarshalSize, Unmarshal};

/// The dynamic payload type offered for telephone-event/8000 in our SDP.
pub const TELEPHONE_EVENT_PT: u8 = 101;
/// Samples per 20 ms packet at 8 kHz.
const STEP: u32 = 160;
/// Packets per event before the end packets (5 x 20 ms = 100 ms of tone).
const PACKETS_PER_EVENT: u32 = 5;
/// Silence between events, in samples (60 ms), so "44" is two events.
const GAP: u32 = 480;

/// Encode a token of decimal digits as RTP packets (raw bytes, in sending
/// order). Non-digits are skipped.
pub fn encode(token: &str, ssrc: u32, first_seq: u16, first_ts: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seq = first_seq;
    let mut ts = first_ts;
    for d in token.chars().filter_map(|c| c.to_digit(10)) {
        let total = STEP * PACKETS_PER_EVENT;
        for i in 1..=PACKETS_PER_EVENT + 2 {
            let end = i >= PACKETS_PER_EVENT;
            let duration = (STEP * i).min(total) as u16;
            // event, E|R|volume (10 = -10 dBm0), duration
            let payload = [
                d as u8,
                if end { 0x80 | 10 } else { 10 },
                (duration >> 8) as u8,
                duration as u8,
            ];
            let pkt = Packet {
                header: Header {
                    version: 2,
                    marker: i == 1,
                    payload_type: TELEPHONE_EVENT_PT,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::copy_from_slice(&payload),
            };
            let mut buf = BytesMut::zeroed(pkt.marshal_size());
            if pkt.marshal_to(&mut buf).is_ok() {
                out.push(buf.to_vec());
            }
            seq = seq.wrapping_add(1);
        }
        ts = ts.wrapping_add(total + GAP);
    }
    out
}

/// Collects telephone events from received RTP packets, in arrival order,
/// tolerating duplicates, loss of some packets and reordering within an
/// event. Bounded: at most `MAX_DIGITS` digits are kept.
#[derive(Debug, Default)]
pub struct Decoder {
    digits: String,
    /// RTP timestamps of events already completed (duplicate end packets).
    done: Vec<u32>,
    /// The event in progress: (timestamp, digit).
    current: Option<(u32, u8)>,
    /// Packets that weren't telephone events or were malformed.
    pub ignored: u32,
}

const MAX_DIGITS: usize = 64;

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Feed one received datagram.
    pub fn push(&mut self, datagram: &[u8]) {
        let mut buf = datagram;
        let Ok(pkt) = Packet::unmarshal(&mut buf) else {
            self.ignored += 1;
            return;
        };
        if pkt.header.payload_type != TELEPHONE_EVENT_PT || pkt.payload.len() < 4 {
            self.ignored += 1;
            return;
        }
        let event = pkt.payload[0];
        let end = pkt.payload[1] & 0x80 != 0;
        let ts = pkt.header.timestamp;
        if event > 9 || self.done.contains(&ts) {
            return;
        }
        if let Some((cur_ts, cur)) = self.current {
            if cur_ts != ts {
                // A new event began without our seeing the old one end
                // (its end packets were lost): the old one still counts.
                self.finish(cur_ts, cur);
            }
        }
        self.current = Some((ts, event));
        if end {
            self.finish(ts, event);
        }
    }

    fn finish(&mut self, ts: u32, digit: u8) {
        if self.done.contains(&ts) {
            return;
        }
        if self.digits.len() < MAX_DIGITS {
            self.digits.push(char::from(b'0' + digit));
        }
        self.done.push(ts);
        if self.done.len() > MAX_DIGITS * 2 {
            self.done.remove(0);
        }
        if self.current.is_some_and(|(t, _)| t == ts) {
            self.current = None;
        }
    }

    /// The digits decoded so far (an event still in progress counts).
    pub fn digits(&self) -> String {
        let mut d = self.digits.clone();
        if let Some((ts, digit)) = self.current {
            if !self.done.contains(&ts) && d.len() < MAX_DIGITS {
                d.push(char::from(b'0' + digit));
            }
        }
        d
    }
}

/// A random token of `len` decimal digits.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_repeats() {
        let pkts = encode("4400917", 0x1234, 100, 8000);
        let mut d = Decoder::new();
        for p in &pkts {
            d.push(p);
        }
        assert_eq!(d.digits(), "4400917");
    }

    #[test]
    fn survives_duplicates_and_lost_end_packets() {
        let pkts = encode("1234", 1, 0, 0);
        let mut d = Decoder::new();
        for (i, p) in pkts.iter().enumerate() {
            // Lose every end packet of the second digit, duplicate the rest.
            if (7..14).contains(&i) && i >= 11 {
                continue;
            }
            d.push(p);
            d.push(p);
        }
        assert_eq!(d.digits(), "1234");
    }

    #[test]
    fn ignores_other_traffic_and_garbage() {
        let mut d = Decoder::new();
        d.push(b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01audio");
        d.push(b"junk");
        assert_eq!(d.digits(), "");
        assert_eq!(d.ignored, 2);
    }
}
