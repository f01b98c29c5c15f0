//! Receiving the RTP a caller would hear: a UDP socket on loopback that a
//! SIP peer's SDP offer points at, read on a thread, and the RFC 3550
//! checks the self-test's stream must pass.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cidguard::media::rtp::{Codec, SAMPLES_PER_PACKET};
use rtp::packet::Packet;
use webrtc_util::marshal::Unmarshal;

/// One datagram as it arrived.
pub struct Received {
    pub bytes: Vec<u8>,
    pub at: Instant,
}

/// A loopback UDP socket collecting every datagram until told to stop.
pub struct RtpSink {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Told when the first datagram arrives.
    first: std::sync::mpsc::Receiver<()>,
    thread: JoinHandle<Vec<Received>>,
}

/// However long the test, the reader gives up after this.
const MAX_LISTEN: Duration = Duration::from_secs(120);
/// After `finish`, the reader stops at the first quiet spell this long:
/// everything sent before was already in the socket's buffer.
const QUIET: Duration = Duration::from_millis(150);

impl RtpSink {
    pub fn start() -> RtpSink {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the RTP sink");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let port = socket.local_addr().expect("sink address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tell_first, first) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut got = Vec::new();
            let mut last = Instant::now();
            let mut buf = vec![0u8; 4096];
            while started.elapsed() < MAX_LISTEN {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        if got.is_empty() {
                            let _ = tell_first.send(());
                        }
                        last = Instant::now();
                        got.push(Received {
                            bytes: buf[..n].to_vec(),
                            at: last,
                        });
                    }
                    Err(_) => {
                        if flag.load(Ordering::Relaxed) && last.elapsed() >= QUIET {
                            break;
                        }
                    }
                }
            }
            got
        });
        RtpSink {
            port,
            stop,
            first,
            thread,
        }
    }

    /// Wait (bounded) for the first datagram; false if none came in time.
    pub fn wait_for_audio(&self, timeout: Duration) -> bool {
        self.first.recv_timeout(timeout).is_ok()
    }

    /// The port to put in an SDP offer.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything received, once the stream has been quiet for a moment.
    pub fn finish(self) -> Vec<Received> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("RTP sink thread")
    }
}

/// Parse datagrams as RTP packets; fails on anything that isn't.
pub fn parse(received: &[Received]) -> Vec<Packet> {
    received
        .iter()
        .map(|r| {
            let mut b = Bytes::copy_from_slice(&r.bytes);
            Packet::unmarshal(&mut b).expect("an RTP packet")
        })
        .collect()
}

/// The RFC 3550 properties of one talkspurt of 20 ms G.711 packets:
/// version 2, the payload type, one SSRC, sequence numbers +1 and
/// timestamps +160 (both wrapping), the marker on the first packet only,
/// 160-byte payloads, no padding, extension or CSRCs.
pub fn check_stream(packets: &[Packet], payload_type: u8) {
    assert!(!packets.is_empty(), "no RTP received");
    let first = &packets[0].header;
    for (i, p) in packets.iter().enumerate() {
        let h = &p.header;
        assert_eq!(h.version, 2, "packet {i}: version");
        assert_eq!(h.payload_type, payload_type, "packet {i}: payload type");
        assert_eq!(h.ssrc, first.ssrc, "packet {i}: SSRC changed");
        assert_eq!(h.marker, i == 0, "packet {i}: marker");
        assert!(
            !h.padding && !h.extension && h.csrc.is_empty(),
            "packet {i}: header extras"
        );
        assert_eq!(
            h.sequence_number,
            first.sequence_number.wrapping_add(i as u16),
            "packet {i}: sequence number"
        );
        assert_eq!(
            h.timestamp,
            first
                .timestamp
                .wrapping_add((i * SAMPLES_PER_PACKET) as u32),
            "packet {i}: timestamp"
        );
        assert_eq!(
            p.payload.len(),
            SAMPLES_PER_PACKET,
            "packet {i}: payload size"
        );
    }
}

/// The audio the packets carry, decoded.
pub fn decode(packets: &[Packet], codec: Codec) -> Vec<i16> {
    packets
        .iter()
        .flat_map(|p| p.payload.iter().map(move |&c| codec.decode(c)))
        .collect()
}

/// What a receiver decodes from `samples` sent in `codec`: each sample
/// through the codec, the last packet filled up with silence.
pub fn through_codec(samples: &[i16], codec: Codec) -> Vec<i16> {
    let mut out: Vec<i16> = samples
        .iter()
        .map(|&s| codec.decode(codec.encode(s)))
        .collect();
    let whole = out.len().div_ceil(SAMPLES_PER_PACKET) * SAMPLES_PER_PACKET;
    out.resize(whole, codec.decode(codec.encode(0)));
    out
}

/// Where two sample sequences first differ, for a readable failure.
pub fn first_difference(a: &[i16], b: &[i16]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}
