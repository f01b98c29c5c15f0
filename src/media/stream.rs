//! Sending an announcement's packets to the caller in real time: packet
//! `n` leaves at `start + n × 20 ms` (absolute times, so a late wake-up
//! doesn't push every later packet back); a packet that is already late is
//! sent at once. The caller's jitter buffer expects that pace: sent faster,
//! its buffer overflows and audio is dropped; slower, it runs dry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::UdpSocket;
use tokio::time::{sleep_until, Instant};

use super::rtp::PACKET_TIME;

/// Send `packets` to `dest` from `socket`, paced from `start`. `sent`
/// counts the packets handed to the socket as it goes, so whoever stops the
/// stream early (the caller hung up) knows how far it got. Returns how many
/// sends failed (a UDP send fails only locally: no route, buffer full).
pub async fn send_paced(
    socket: &UdpSocket,
    dest: SocketAddr,
    packets: &[Vec<u8>],
    start: Instant,
    sent: &AtomicUsize,
) -> usize {
    let mut failures = 0;
    for (i, p) in packets.iter().enumerate() {
        // i × 20 ms fits easily: an announcement is seconds long.
        let at = start + PACKET_TIME * i as u32;
        sleep_until(at).await;
        match socket.send_to(p, dest).await {
            Ok(_) => {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => failures += 1,
        }
    }
    failures
}

/// When the last of `count` packets is due to leave, from `start`.
pub fn end_of(start: Instant, count: usize) -> Instant {
    start + PACKET_TIME * count.saturating_sub(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Packets leave 20 ms apart, measured at a real receiver on loopback
    /// (bounds loose enough for a busy machine; the order is exact).
    #[tokio::test]
    async fn paced_at_twenty_ms() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let packets: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 172]).collect();
        let sent = AtomicUsize::new(0);
        let start = Instant::now();
        let dest = rx.local_addr().unwrap();
        let sender = send_paced(&tx, dest, &packets, start, &sent);
        let receiver = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 2000];
            for _ in 0..10 {
                let (n, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv_from(&mut buf))
                    .await
                    .expect("a packet within 5 s")
                    .unwrap();
                got.push((buf[0], n, Instant::now()));
            }
            got
        };
        let (failures, got) = tokio::join!(sender, receiver);
        assert_eq!(failures, 0);
        assert_eq!(sent.load(Ordering::Relaxed), 10);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (0..10).collect::<Vec<u8>>()
        );
        let span = got[9].2 - start;
        assert!(
            span >= Duration::from_millis(180),
            "all sent in {span:?}: not paced"
        );
        assert!(span < Duration::from_secs(3), "took {span:?}");
        assert_eq!(end_of(start, 10), start + Duration::from_millis(180));
    }
}
