//! Audio as RTP (RFC 3550) packets of 20 ms of G.711 (RFC 3551 section 4.5.14).
//!
//! A stream has a random SSRC, a random first sequence number and a random
//! first timestamp (RFC 3550 sections 5.1 and 8); each packet carries 160
//! samples, its sequence number one more than the last and its timestamp
//! 160 more; the first packet of a talkspurt has the marker bit (RFC 3551
//! section 4.1). The announcement is one talkspurt: silence inside it is
//! sent as encoded silence, not left out, so the caller's jitter buffer
//! plays it at the pace it was sent. Pacing is the sender's business
//! ([`super::stream`]); this module only makes the bytes.

use bytes::{Bytes, BytesMut};
use rtp::header::Header;
use rtp::packet::Packet;
use webrtc_util::marshal::{Marshal, MarshalSize};

use super::g711;

/// Samples in one 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Time each packet carries.
pub const PACKET_TIME: std::time::Duration = std::time::Duration::from_millis(20);

/// The G.711 codec a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// µ-law, static payload type 0.
    Pcmu,
    /// A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The encoding name in SDP (`a=rtpmap:0 PCMU/8000`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The static payload type RFC 3551 assigns.
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec an SDP encoding name stands for (case-insensitive).
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => g711::ulaw_encode(sample),
            Codec::Pcma => g711::alaw_encode(sample),
        }
    }

    pub fn decode(self, code: u8) -> i16 {
        match self {
            Codec::Pcmu => g711::ulaw_decode(code),
            Codec::Pcma => g711::alaw_decode(code),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The RTP header state of one outgoing stream.
#[derive(Debug, Clone)]
pub struct Packetizer {
    /// Synchronisation source: random, so streams are told apart.
    pub ssrc: u32,
    /// Sequence number of the next packet.
    pub seq: u16,
    /// RTP timestamp (8 kHz clock) of the next packet's first sample.
    pub timestamp: u32,
    /// Payload type, as the SDP answer says (0 or 8, or the offer's dynamic
    /// number for PCMU/PCMA).
    pub payload_type: u8,
    /// Whether the next packet starts a talkspurt (marker bit).
    talkspurt: bool,
}

impl Packetizer {
    /// A stream with random SSRC, first sequence number and timestamp
    /// (RFC 3550 section 5.1: "SHOULD be random").
    pub fn new(payload_type: u8) -> Packetizer {
        Packetizer::with_state(payload_type, rand::random(), rand::random(), rand::random())
    }

    /// A stream starting from given values (tests).
    pub fn with_state(payload_type: u8, ssrc: u32, seq: u16, timestamp: u32) -> Packetizer {
        Packetizer {
            ssrc,
            seq,
            timestamp,
            payload_type,
            talkspurt: true,
        }
    }

    /// The next packet's bytes, for one packet's worth of payload.
    pub fn packet(&mut self, payload: &[u8]) -> Vec<u8> {
        let pkt = Packet {
            header: Header {
                version: 2,
                marker: self.talkspurt,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        self.talkspurt = false;
        self.seq = self.seq.wrapping_add(1);
        // G.711: one byte a sample, so the clock advances by the payload.
        self.timestamp = self.timestamp.wrapping_add(payload.len() as u32);
        let mut buf = BytesMut::zeroed(pkt.marshal_size());
        match pkt.marshal_to(&mut buf) {
            Ok(_) => buf.to_vec(),
            // The buffer is sized by marshal_size, so this can't fail; an
            // empty packet would only be dropped by the receiver.
            Err(_) => Vec::new(),
        }
    }

    /// The next packet starts a new talkspurt (after a pause in sending).
    pub fn start_talkspurt(&mut self) {
        self.talkspurt = true;
    }
}

/// Encode audio into 20 ms payloads of `codec`; the last is filled up with
/// silence so every packet is whole.
pub fn payloads(samples: &[i16], codec: Codec) -> Vec<Vec<u8>> {
    samples
        .chunks(SAMPLES_PER_PACKET)
        .map(|chunk| {
            let mut p: Vec<u8> = chunk.iter().map(|&s| codec.encode(s)).collect();
            p.resize(SAMPLES_PER_PACKET, codec.encode(0));
            p
        })
        .collect()
}

/// The whole announcement as one talkspurt of RTP packets, in sending order.
pub fn packets(samples: &[i16], codec: Codec, packetizer: &mut Packetizer) -> Vec<Vec<u8>> {
    packetizer.start_talkspurt();
    payloads(samples, codec)
        .iter()
        .map(|p| packetizer.packet(p))
        .collect()
}

/// How many packets `samples` take.
pub fn packet_count(samples: usize) -> usize {
    samples.div_ceil(SAMPLES_PER_PACKET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc_util::marshal::Unmarshal;

    fn parse(b: &[u8]) -> Packet {
        let mut buf = Bytes::copy_from_slice(b);
        Packet::unmarshal(&mut buf).unwrap()
    }

    #[test]
    fn headers_follow_rfc_3550() {
        let samples: Vec<i16> = (0..400).map(|i| (i * 50) as i16).collect();
        let mut p = Packetizer::with_state(8, 0xDEADBEEF, 65534, u32::MAX - 100);
        let pkts = packets(&samples, Codec::Pcma, &mut p);
        assert_eq!(pkts.len(), 3);
        let parsed: Vec<Packet> = pkts.iter().map(|b| parse(b)).collect();
        for (i, pkt) in parsed.iter().enumerate() {
            let h = &pkt.header;
            assert_eq!(h.version, 2);
            assert_eq!(h.payload_type, 8);
            assert_eq!(h.ssrc, 0xDEADBEEF);
            assert!(!h.padding && !h.extension && h.csrc.is_empty());
            assert_eq!(h.marker, i == 0, "marker only on the first");
            assert_eq!(h.sequence_number, 65534u16.wrapping_add(i as u16));
            assert_eq!(h.timestamp, (u32::MAX - 100).wrapping_add(160 * i as u32));
            assert_eq!(pkt.payload.len(), 160);
            // 12-byte header, no extensions.
            assert_eq!(pkts[i].len(), 12 + 160);
        }
        // The payload is the audio, encoded; the tail is encoded silence.
        let decoded: Vec<i16> = parsed
            .iter()
            .flat_map(|p| {
                p.payload
                    .iter()
                    .map(|&c| Codec::Pcma.decode(c))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (i, &s) in samples.iter().enumerate() {
            assert_eq!(decoded[i], Codec::Pcma.decode(Codec::Pcma.encode(s)));
        }
        assert!(decoded[400..]
            .iter()
            .all(|&s| s == Codec::Pcma.decode(g711::ALAW_SILENCE)));
        // A second talkspurt on the same stream carries on and is marked.
        let more = packets(&samples[..10], Codec::Pcma, &mut p);
        let h = parse(&more[0]).header;
        assert!(h.marker);
        assert_eq!(h.sequence_number, 65534u16.wrapping_add(3));
    }

    #[test]
    fn random_start_differs_between_streams() {
        let a = Packetizer::new(0);
        let b = Packetizer::new(0);
        // Equal in all three by chance: one in 2^80.
        assert!(a.ssrc != b.ssrc || a.seq != b.seq || a.timestamp != b.timestamp);
    }

    #[test]
    fn counts_and_codecs() {
        assert_eq!(packet_count(0), 0);
        assert_eq!(packet_count(1), 1);
        assert_eq!(packet_count(160), 1);
        assert_eq!(packet_count(161), 2);
        assert_eq!(Codec::from_name("pcmu"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_name("PCMA"), Some(Codec::Pcma));
        assert_eq!(Codec::from_name("G729"), None);
        assert_eq!(payloads(&[], Codec::Pcmu).len(), 0);
        assert_eq!(
            payloads(&[0; 1], Codec::Pcmu)[0],
            vec![g711::ULAW_SILENCE; 160]
        );
    }
}
