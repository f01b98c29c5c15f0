//! `cidguard inspect --pcap`: whole captures judged, as a user runs it.
//!
//! Hand-made captures cover each format and layer (pcap in both byte
//! orders and resolutions, pcapng with several interfaces, Ethernet with
//! VLAN tags, Linux cooked v1 and v2, BSD loopback, raw IP, IPv6 with an
//! extension header, IPv4 and IPv6 fragments, TCP split, merged, reordered
//! and retransmitted) and every kind of bad input. Real captures come from
//! tcpdump on loopback while Kamailio relays SIPp calls under several
//! caller-ID rules (see `real_*`). Every output is checked for the people
//! called: none of their numbers or names may appear.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::pcap::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");

/// 2025-06-01T10:00:00Z, when the hand-made captures start.
const T0: i64 = 1_748_772_000_000_000_000;
const SEC: i64 = 1_000_000_000;

/// The PBX's address on the carrier side, and the carrier's.
fn pbx() -> SocketAddr {
    "198.51.100.7:5060".parse().unwrap()
}
fn carrier() -> SocketAddr {
    "203.0.113.77:5060".parse().unwrap()
}

const WITHHELD: &str = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";
const LEAK: &str = "\"Eastside Women's Refuge\" <sip:+61370100142@pbx.eastside-refuge.org.au>";

/// An initial INVITE from the PBX to the carrier, calling `called`.
fn invite(call_id: &str, from: &str, called: &str, extra: &str) -> Vec<u8> {
    invite_with_body(call_id, from, called, extra, "s=-\r\n")
}

fn invite_with_body(
    call_id: &str,
    from: &str,
    called: &str,
    extra: &str,
    session: &str,
) -> Vec<u8> {
    let body = format!(
        "v=0\r\no=- 4711 1 IN IP4 198.51.100.7\r\n{session}c=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    format!(
        "INVITE sip:{called}@carrier.example;user=phone SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: {from};tag=f{call_id}\r\n\
         To: <sip:{called}@carrier.example;user=phone>\r\n\
         Call-ID: {call_id}@198.51.100.7\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:gw@198.51.100.7:5060>\r\n\
         {extra}Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn cidguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cidguard"))
}

/// What a run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The JSON lines: the calls, then the summary.
    fn json(&self) -> (Vec<Value>, Value) {
        let mut lines: Vec<Value> = self
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let summary = lines.pop().expect("a summary line");
        assert_eq!(summary["record"], "summary", "{}", self.stdout);
        assert!(lines.iter().all(|c| c["record"] == "call"));
        (lines, summary)
    }
}

fn inspect(file: &Path, args: &[&str]) -> Run {
    let out = cidguard()
        .args(["inspect", "--config", EXAMPLE, "--pcap"])
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A raw-IP pcap of these packets, one a second.
fn raw_pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), LINKTYPE_RAW, 262_144, false, false).unwrap();
    for (i, p) in packets.iter().enumerate() {
        w.packet(T0 + i as i64 * SEC, p).unwrap();
    }
    w.into_inner()
}

fn udp_invite(call_id: &str, from: &str) -> Vec<u8> {
    udp_packet(pbx(), carrier(), &invite(call_id, from, "0491570101", ""))
}

/// Counts in a JSON summary.
fn invites(s: &Value) -> (u64, u64, u64, u64) {
    let i = &s["invites"];
    let n = |k: &str| i[k].as_u64().unwrap();
    (n("judged"), n("pass"), n("fail"), n("inconclusive"))
}

#[test]
fn every_link_layer_and_file_format_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let pass = udp_invite("pass1", WITHHELD);
    let fail = udp_invite("fail1", LEAK);
    let v6_src: SocketAddr = "[2001:db8::7]:5060".parse().unwrap();
    let v6_dst: SocketAddr = "[2001:db8:1::77]:5060".parse().unwrap();
    let v6 = |id: &str, from: &str| {
        let u = udp(5060, 5060, &invite(id, from, "0491570102", ""));
        match (v6_src.ip(), v6_dst.ip()) {
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                ipv6(s.octets(), d.octets(), 17, &u, true)
            }
            _ => unreachable!(),
        }
    };
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    // Classic pcap, each link type, both byte orders and resolutions.
    for (name, link, wrap, nanos, be) in [
        ("ethernet-le-us", LINKTYPE_ETHERNET, 0, false, false),
        ("raw-be-ns", LINKTYPE_RAW, 1, true, true),
        ("sll", LINKTYPE_LINUX_SLL, 2, false, false),
        ("sll2", LINKTYPE_LINUX_SLL2, 3, true, false),
        ("null", LINKTYPE_NULL, 4, false, true),
        ("vlan", LINKTYPE_ETHERNET, 5, false, false),
    ] {
        let frame = |ip: &[u8]| match wrap {
            0 => ethernet(ip, &[]),
            1 => ip.to_vec(),
            2 => sll(ip),
            3 => sll2(ip),
            4 => null_loopback(ip),
            _ => ethernet(ip, &[100, 200]),
        };
        let mut w = PcapWriter::new(Vec::new(), link, 262_144, nanos, be).unwrap();
        w.packet(T0, &frame(&pass)).unwrap();
        w.packet(T0 + 1_500_000_000, &frame(&fail)).unwrap();
        files.push((name, w.into_inner()));
    }
    // pcapng: Ethernet with QinQ at microseconds, SLL2 at nanoseconds, a
    // block to skip between them.
    let mut w = PcapNgWriter::new(Vec::new(), false).unwrap();
    let eth = w.interface(LINKTYPE_ETHERNET, 262_144, 6).unwrap();
    w.other_block().unwrap();
    let cooked = w.interface(LINKTYPE_LINUX_SLL2, 65_535, 9).unwrap();
    w.packet(eth, T0, &ethernet(&pass, &[10, 20])).unwrap();
    w.packet(cooked, T0 + 1_500_000_000, &sll2(&fail)).unwrap();
    files.push(("pcapng-two-interfaces", w.into_inner()));
    // pcapng, big-endian, IPv6 with a destination options header.
    let mut w = PcapNgWriter::new(Vec::new(), true).unwrap();
    let raw = w.interface(LINKTYPE_RAW, 262_144, 9).unwrap();
    w.packet(raw, T0, &v6("pass6", WITHHELD)).unwrap();
    w.packet(raw, T0 + 1_500_000_000, &v6("fail6", LEAK))
        .unwrap();
    files.push(("pcapng-be-ipv6", w.into_inner()));

    for (name, bytes) in files {
        let f = write(dir.path(), &format!("{name}.cap"), &bytes);
        let run = inspect(&f, &["--format", "json"]);
        assert_eq!(run.code, Some(1), "{name}: {}{}", run.stdout, run.stderr);
        let (calls, s) = run.json();
        assert_eq!(invites(&s), (2, 1, 1, 0), "{name}: {s}");
        assert_eq!(s["first"], "2025-06-01T10:00:00.000Z", "{name}");
        assert_eq!(s["last"], "2025-06-01T10:00:01.500Z", "{name}");
        assert_eq!(calls[1]["outcome"], "fail", "{name}");
        assert_eq!(calls[1]["time"], "2025-06-01T10:00:01.500Z", "{name}");
        assert!(calls[1]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["header"] == "From" && f["kind"] == "number"));
    }
}

#[test]
fn tcp_split_merged_reordered_and_retransmitted() {
    let dir = tempfile::tempdir().unwrap();
    let a = invite("tcp-a", LEAK, "0491570103", "");
    let b = invite("tcp-b", WITHHELD, "0491570104", "");
    let c = invite("tcp-c", WITHHELD, "0491570105", "");
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    stream.extend_from_slice(&c);
    let isn = 4_000_000_000u32; // wraps past 2^32 inside the stream
    let seq = |off: usize| isn.wrapping_add(1).wrapping_add(off as u32);
    let (src, dst) = (pbx(), carrier());
    let cut1 = 100; // a is split in three: [0,100) [100,400) [400,..)
    let cut2 = 400;
    let bc = a.len(); // b and c together in one segment
    let seg = |from: usize, to: usize| {
        tcp_packet(src, dst, seq(from), TCP_ACK | TCP_PSH, &stream[from..to])
    };
    let packets = vec![
        tcp_packet(src, dst, isn, TCP_SYN, &[]),
        seg(0, cut1),
        seg(cut2, bc),   // out of order
        seg(cut1, cut2), // fills the gap
        seg(cut1, cut2), // retransmitted
        seg(bc, stream.len()),
        tcp_packet(src, dst, seq(stream.len()), TCP_FIN | TCP_ACK, &[]),
    ];
    let f = write(dir.path(), "tcp.pcap", &raw_pcap(&packets));
    let run = inspect(&f, &["--format", "json"]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let (calls, s) = run.json();
    assert_eq!(invites(&s), (3, 2, 1, 0), "{s}");
    assert_eq!(s["not_readable"]["total"], 0, "{s}");
    assert!(calls.iter().all(|c| c["transport"] == "tcp"));
    assert_eq!(calls[0]["outcome"], "fail");

    // A stream picked up in the middle of a message: the rest of that
    // message is half-read (not readable), the next is judged.
    let tail = &stream[cut1..];
    let packets = vec![tcp_packet(src, dst, 77, TCP_ACK, tail)];
    let f = write(dir.path(), "mid.pcap", &raw_pcap(&packets));
    let run = inspect(&f, &["--format", "json"]);
    let (_, s) = run.json();
    assert_eq!(invites(&s), (2, 2, 0, 0), "{s}");
    assert_eq!(run.code, Some(0), "{s}");
}

#[test]
fn parallel_judging_keeps_capture_order() {
    let dir = tempfile::tempdir().unwrap();
    let packets: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            udp_invite(
                &format!("order{i}"),
                if i % 7 == 0 { LEAK } else { WITHHELD },
            )
        })
        .collect();
    let f = write(dir.path(), "order.pcap", &raw_pcap(&packets));
    let seq = |jobs: &str| -> Vec<(String, String)> {
        let run = inspect(&f, &["--jobs", jobs, "--format", "json"]);
        assert_eq!(run.code, Some(1));
        let (calls, s) = run.json();
        assert_eq!(invites(&s), (300, 257, 43, 0), "{s}");
        calls
            .iter()
            .map(|c| (c["call_id"].to_string(), c["outcome"].to_string()))
            .collect()
    };
    let one = seq("1");
    assert_eq!(one[0].0, "\"order0@198.51.100.7\"");
    assert_eq!(seq("3"), one);
}

#[test]
fn a_capture_streams_in_on_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let bytes = raw_pcap(&[udp_invite("stdin1", LEAK), udp_invite("stdin2", WITHHELD)]);
    let mut child = cidguard()
        .args([
            "inspect", "--config", EXAMPLE, "--pcap", "-", "--format", "json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let (_, s) = run.json();
    assert_eq!(invites(&s), (2, 1, 1, 0));
    assert_eq!(s["file"], "standard input");
}

#[test]
fn retransmissions_and_re_invites_are_not_judged_twice() {
    let dir = tempfile::tempdir().unwrap();
    let inv = udp_invite("rtx", WITHHELD);
    let mut reinvite = invite("rtx", WITHHELD, "0491570101", "");
    let text = String::from_utf8(reinvite.clone())
        .unwrap()
        .replace("user=phone>\r\n", "user=phone>;tag=callee1\r\n");
    reinvite = text
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .into_bytes();
    let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-rtx\r\nCall-ID: rtx@198.51.100.7\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let packets = vec![
        inv.clone(),
        inv.clone(),
        inv,
        udp_packet(carrier(), pbx(), ok),
        udp_packet(pbx(), carrier(), &reinvite),
    ];
    let f = write(dir.path(), "rtx.pcap", &raw_pcap(&packets));
    let run = inspect(&f, &["--format", "json"]);
    let (calls, s) = run.json();
    assert_eq!(calls.len(), 1);
    assert_eq!(invites(&s), (1, 1, 0, 0), "{s}");
    assert_eq!(s["invites"]["retransmissions"], 2);
    assert_eq!(s["invites"]["in_dialog"], 1);
    assert_eq!(s["sip_messages"], 5);
    assert_eq!(run.code, Some(0));
}

#[test]
fn fragmented_datagrams_are_reassembled_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    // A large INVITE whose only leak is in the SDP, in the last fragment.
    let padding: String = (0..30)
        .map(|i| format!("X-Padding-{i}: {}\r\n", "p".repeat(40)))
        .collect();
    let big = invite_with_body(
        "frag",
        WITHHELD,
        "0491570106",
        &padding,
        "s=Eastside Womens Refuge\r\n",
    );
    assert!(big.len() > 1500);
    let v4 = udp_packet(pbx(), carrier(), &big);
    let mut frags = fragment_ipv4(&v4, 576);
    assert!(frags.len() >= 3);
    frags.reverse();
    let [s6, d6] = ["2001:db8::7", "2001:db8:1::77"]
        .map(|a| a.parse::<std::net::Ipv6Addr>().unwrap().octets());
    let big6 = String::from_utf8(big.clone())
        .unwrap()
        .replace("frag", "frag6");
    let mut frags6 = fragment_ipv6(s6, d6, 17, 0xabcd, &udp(5060, 5060, big6.as_bytes()), 1232);
    frags6.swap(0, 1);
    let mut all = frags;
    all.extend(frags6);
    let f = write(dir.path(), "frag.pcap", &raw_pcap(&all));
    let run = inspect(&f, &["--format", "json"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let (calls, s) = run.json();
    assert_eq!(invites(&s), (2, 0, 2, 0), "{s}");
    assert_eq!(s["counters"]["fragments_reassembled"], 2);
    for c in &calls {
        assert!(
            c["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["header"] == "SDP"),
            "{c}"
        );
    }

    // A datagram whose middle fragment never arrived: not readable, and
    // with nothing else judged, nothing is proven.
    let mut frags = fragment_ipv4(&udp_packet(pbx(), carrier(), &big), 576);
    frags.remove(1);
    let f = write(dir.path(), "lost.pcap", &raw_pcap(&frags));
    let run = inspect(&f, &[]);
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(
        run.stdout.contains("fragments never all arrived"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_files_get_a_clear_message_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let sip = invite("x", WITHHELD, "0491570107", "");
    for (name, bytes, says) in [
        ("empty.pcap", Vec::new(), "empty"),
        (
            "magic.pcap",
            b"\x01\x02\x03\x04 something else entirely".to_vec(),
            "01 02 03 04",
        ),
        (
            "short.pcap",
            vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0],
            "24-byte pcap header",
        ),
        (
            "zipped.pcap.gz",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0],
            "gunzip",
        ),
        ("message.sip", sip, "without --pcap"),
        (
            "badng.pcapng",
            vec![0x0a, 0x0d, 0x0d, 0x0a, 12, 0, 0, 0, 1, 2, 3, 4],
            "byte-order",
        ),
    ] {
        let f = write(dir.path(), name, &bytes);
        let run = inspect(&f, &[]);
        assert_eq!(run.code, Some(2), "{name}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(says), "{name}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{name}: {}", run.stderr);
    }
    let run = inspect(&dir.path().join("missing.pcap"), &[]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("can't read capture file"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_truncated_or_damaged_file_is_read_up_to_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let full = raw_pcap(&[
        udp_invite("t1", WITHHELD),
        udp_invite("t2", WITHHELD),
        udp_invite("t3", LEAK),
    ]);
    // Cut inside the last record: the leaking call is lost with it.
    let cut = &full[..full.len() - 100];
    let f = write(dir.path(), "cut.pcap", cut);
    let run = inspect(&f, &[]);
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(
        run.stdout.contains("INVITEs: 2 seen, 2 judged: 2 pass"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("cut short"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Outcome: INCONCLUSIVE"),
        "{}",
        run.stdout
    );

    // pcapng with a block whose length can't be.
    let mut w = PcapNgWriter::new(Vec::new(), false).unwrap();
    let i = w.interface(LINKTYPE_RAW, 262_144, 6).unwrap();
    w.packet(i, T0, &udp_invite("d1", LEAK)).unwrap();
    let mut bytes = w.into_inner();
    bytes.extend_from_slice(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
    let f = write(dir.path(), "damaged.pcapng", &bytes);
    let run = inspect(&f, &["--format", "json"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let (_, s) = run.json();
    assert_eq!(s["file_end"]["state"], "damaged", "{s}");
    assert_eq!(invites(&s), (1, 0, 1, 0));
}

#[test]
fn messages_cut_by_the_snap_length_are_never_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    // The leak is in From, well inside the first 300 bytes; the withheld
    // call's end was never captured.
    let leak = udp_invite("snap-leak", LEAK);
    let held = udp_invite("snap-held", WITHHELD);
    let mut w = PcapWriter::new(Vec::new(), LINKTYPE_RAW, 360, false, false).unwrap();
    w.packet(T0, &leak).unwrap();
    w.packet(T0 + SEC, &held).unwrap();
    let f = write(dir.path(), "snap.pcap", &w.into_inner());
    let run = inspect(&f, &["--format", "json"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let (calls, s) = run.json();
    assert_eq!(invites(&s), (2, 0, 1, 1), "{s}");
    assert_eq!(s["not_readable"]["cut_by_snaplen"], 2);
    assert_eq!(calls[1]["outcome"], "inconclusive");
    assert!(
        calls[1]["reason"].as_str().unwrap().contains("snap length"),
        "{}",
        calls[1]
    );
    assert!(calls.iter().all(|c| c["cut"] == true));

    // Only the cut withheld call: nothing proven.
    let mut w = PcapWriter::new(Vec::new(), LINKTYPE_RAW, 360, false, false).unwrap();
    w.packet(T0, &held).unwrap();
    let f = write(dir.path(), "snap2.pcap", &w.into_inner());
    let run = inspect(&f, &[]);
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(run.stdout.contains("tcpdump -s 0"), "{}", run.stdout);
}

#[test]
fn a_capture_without_sip_or_with_only_tls_proves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dns = udp_packet(
        "10.0.0.5:40000".parse().unwrap(),
        "10.0.0.53:53".parse().unwrap(),
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
    );
    let f = write(dir.path(), "dns.pcap", &raw_pcap(&[dns]));
    let run = inspect(&f, &[]);
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(
        run.stdout.contains("no SIP found in 1 packet"),
        "{}",
        run.stdout
    );

    let hello = [22u8, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0];
    let tls = tcp_packet(
        pbx(),
        "203.0.113.77:5061".parse().unwrap(),
        1,
        TCP_ACK | TCP_PSH,
        &hello,
    );
    let f = write(dir.path(), "tls.pcap", &raw_pcap(&[tls]));
    let run = inspect(&f, &["--format", "json"]);
    assert_eq!(run.code, Some(3));
    let (_, s) = run.json();
    assert_eq!(s["not_readable"]["tls"], 1, "{s}");
}

#[test]
fn from_host_and_to_host_pick_the_leg_that_matters() {
    let dir = tempfile::tempdir().unwrap();
    let phone: SocketAddr = "10.0.0.5:5060".parse().unwrap();
    let pbx_inside: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    // The desk phone sends its own identity to the PBX (that's fine); the
    // PBX withholds it towards the carrier.
    let packets = vec![
        udp_packet(phone, pbx_inside, &invite("leg1", LEAK, "0491570108", "")),
        udp_packet(
            pbx(),
            carrier(),
            &invite("leg2", WITHHELD, "0491570108", ""),
        ),
    ];
    let f = write(dir.path(), "legs.pcap", &raw_pcap(&packets));
    let run = inspect(&f, &["--to-host", "203.0.113.0/24"]);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 in other directions not judged"),
        "{}",
        run.stdout
    );
    let run = inspect(
        &f,
        &[
            "--from-host",
            "198.51.100.7:5060",
            "--to-host",
            "192.0.2.1,203.0.113.77",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let run = inspect(&f, &["--from-host", "10.0.0.0/8"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let run = inspect(&f, &[]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let run = inspect(&f, &["--to-host", "192.0.2.9"]);
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(
        run.stdout.contains("check --from-host/--to-host"),
        "{}",
        run.stdout
    );
    let run = inspect(&f, &["--to-host", "carrier.example"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--to-host"), "{}", run.stderr);
}

#[test]
fn organisation_mode_ignores_presentation_a_line_mode_applies_it() {
    let dir = tempfile::tempdir().unwrap();
    let umbrella = "\"Salvation Army\" <sip:+61290000000@salvationarmy.org.au>";
    let other = "\"Dr Smith\" <sip:+61299999999@carrier.example>";
    let packets = vec![
        udp_packet(pbx(), carrier(), &invite("m1", umbrella, "0491570109", "")),
        udp_packet(pbx(), carrier(), &invite("m2", other, "0491570109", "")),
    ];
    let f = write(dir.path(), "modes.pcap", &raw_pcap(&packets));
    for (args, code, outcomes) in [
        (vec![], 0, ["pass", "pass"]),
        (vec!["--org"], 0, ["pass", "pass"]),
        (vec!["--line", "reception"], 1, ["fail", "fail"]),
        (vec!["--line", "outreach"], 1, ["pass", "fail"]),
    ] {
        let mut a = args.clone();
        a.extend(["--format", "json"]);
        let run = inspect(&f, &a);
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.stdout);
        let (calls, s) = run.json();
        let got: Vec<&str> = calls
            .iter()
            .map(|c| c["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(got, outcomes, "{args:?}");
        let mode = if args.is_empty() || args[0] == "--org" {
            "organisation"
        } else {
            "line"
        };
        assert_eq!(s["judged_against"]["mode"], mode);
    }
    // The "Dr Smith" number is not the organisation's: it never shows.
    let run = inspect(&f, &["--line", "reception", "--format", "json"]);
    assert!(!run.stdout.contains("99999999"), "{}", run.stdout);
    let run = inspect(&f, &["--line", "reception"]);
    assert!(!run.stdout.contains("99999999"), "{}", run.stdout);
}

/// A PBX that writes its header section in Windows-1252 (`Women’s` with
/// the quote as byte 0x92): each call in a capture is read as `inspect`
/// reads the message alone, and the organisation's name is found (a
/// replacement character for the quote once hid it, leaving only the
/// word "refuge" to find).
#[test]
fn a_windows_1252_header_is_read_as_inspect_reads_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut msg = invite(
        "latin1",
        "\"Eastside WomenXs Refuge\" <sip:anonymous@anonymous.invalid>",
        "0491570101",
        "",
    );
    let at = msg.windows(7).position(|w| w == b"WomenXs").unwrap() + 5;
    msg[at] = 0x92;
    let one = write(dir.path(), "latin1.sip", &msg);
    let alone = cidguard()
        .args(["inspect", "--config", EXAMPLE, "--line", "reception"])
        .args(["--format", "json"])
        .arg(&one)
        .output()
        .unwrap();
    let alone: Value = serde_json::from_slice(&alone.stdout).unwrap();
    let f = write(
        dir.path(),
        "latin1.pcap",
        &raw_pcap(&[udp_packet(pbx(), carrier(), &msg)]),
    );
    for mode in [&["--line", "reception"][..], &["--org"]] {
        let mut args = mode.to_vec();
        args.extend(["--format", "json"]);
        let run = inspect(&f, &args);
        assert_eq!(run.code, Some(1), "{mode:?}: {}", run.stdout);
        let (calls, _) = run.json();
        let call = &calls[0];
        assert_eq!(call["outcome"], "fail", "{mode:?}: {}", run.stdout);
        assert_eq!(call["notes"], alone["notes"], "{mode:?}: {alone}");
        // The organisation's name, found in From as the message alone
        // shows it.
        let name = |f: &Value| (f["header"].clone(), f["kind"].clone(), f["matched"].clone());
        let want = alone["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "name")
            .map(name)
            .collect::<Vec<_>>();
        assert!(!want.is_empty(), "{alone}");
        let got = call["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(name)
            .collect::<Vec<_>>();
        assert!(
            want.iter().all(|w| got.contains(w)),
            "{mode:?}: {got:?} {want:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "x.pcap",
        &raw_pcap(&[udp_invite("u", WITHHELD)]),
    );
    for args in [
        vec!["inspect", "--org", "x.sip"],
        vec![
            "inspect",
            "--line",
            "reception",
            "--to-host",
            "10.0.0.1",
            "x.sip",
        ],
        vec![
            "inspect",
            "--pcap",
            f.to_str().unwrap(),
            "--org",
            "--line",
            "reception",
        ],
        vec!["inspect", "--pcap", f.to_str().unwrap(), "x.sip"],
        vec!["inspect", "--pcap", f.to_str().unwrap(), "--line", "nosuch"],
    ] {
        let out = cidguard().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cidguard().args(["inspect", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("The people called stay private"), "{help}");
    assert!(help.contains("salted afresh"), "{help}");
}

/// A called person's number in the forms it may be written in, and name.
const CALLED_NUMBER: &str = "0491570156";
const CALLED_FORMS: &[&str] = &[
    "0491570156",
    "491570156",
    "0491 570 156",
    "491 570 156",
    "0491-570-156",
    "+61 491 570 156",
];
const CALLED_NAMES: &[&str] = &["jane", "citizen"];

/// Asserts that no form of the called party appears in `text`.
pub fn assert_called_party_absent(text: &str, numbers: &[&str], names: &[&str], what: &str) {
    let lower = text.to_lowercase();
    for n in numbers {
        assert!(
            !lower.contains(n),
            "{what}: the called number {n:?} appears:\n{text}"
        );
    }
    for n in names {
        assert!(
            !lower.contains(n),
            "{what}: the called name {n:?} appears:\n{text}"
        );
    }
}

#[test]
fn the_called_party_never_appears_in_the_output() {
    let dir = tempfile::tempdir().unwrap();
    // The organisation leaks in every place that also names the person
    // called, so those places are quoted in findings.
    let planted = |id: &str, from: &str| {
        let body = "s=Eastside Womens Refuge calling Jane Citizen 0491 570 156\r\n";
        let extra = "History-Info: <sip:+61491570156@pbx.eastside-refuge.org.au?Reason=SIP%3Bcause%3D302>;index=1\r\n\
             P-Called-Party-ID: \"Jane Citizen\" <sip:0491570156@pbx.eastside-refuge.org.au>\r\n\
             X-Dialled: Eastside Refuge for Jane Citizen on 0491-570-156\r\n\
             Diversion: <sip:0370100142@pbx.eastside-refuge.org.au>;reason=unconditional;x-target=61491570156\r\n";
        let text =
            String::from_utf8(invite_with_body(id, from, CALLED_NUMBER, extra, body)).unwrap();
        let text = text
            .replace(
                "To: <sip:0491570156@carrier.example;user=phone>",
                "To: \"Jane Citizen\" <sip:0491570156@carrier.example;user=phone>",
            )
            .replace(
                &format!("Call-ID: {id}@"),
                &format!("Call-ID: {id}-0491570156@"),
            );
        text.into_bytes()
    };
    let named = {
        // A SIP URI with a name as its user part, on a passing call.
        let t = String::from_utf8(invite("named", WITHHELD, "jane.citizen", "")).unwrap();
        t.into_bytes()
    };
    let packets = vec![
        udp_packet(pbx(), carrier(), &planted("p1", LEAK)),
        udp_packet(pbx(), carrier(), &planted("p2", WITHHELD)),
        udp_packet(pbx(), carrier(), &named),
        tcp_packet(
            pbx(),
            "203.0.113.78:5060".parse().unwrap(),
            1,
            TCP_ACK,
            &planted("p3", LEAK),
        ),
    ];
    let f = write(dir.path(), "planted.pcap", &raw_pcap(&packets));
    for args in [
        vec![],
        vec!["--format", "json"],
        vec!["--line", "reception"],
        vec!["--line", "reception", "--format", "json"],
        vec!["--line", "outreach", "--format", "json"],
    ] {
        let run = inspect(&f, &args);
        assert_eq!(run.code, Some(1), "{args:?}: {}{}", run.stdout, run.stderr);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert_called_party_absent(&all, CALLED_FORMS, CALLED_NAMES, &format!("{args:?}"));
        // The leaks were found and quoted (redacted), not hidden.
        assert!(
            all.contains("History-Info") && all.contains("X-Dialled") && all.contains("SDP"),
            "{args:?}: {all}"
        );
        // The organisation's own number, the leak, is shown.
        assert!(
            all.contains("+61370100142") || all.contains("+61 3 7010 0142"),
            "{all}"
        );
        if args.contains(&"json") {
            let (calls, _) = run.json();
            assert_eq!(calls.len(), 4);
            // Calls to the same person share a token.
            assert_eq!(calls[0]["called"], calls[1]["called"]);
            assert_ne!(calls[0]["called"], calls[2]["called"]);
            assert!(calls[0]["called"].as_str().unwrap().starts_with("#h:"));
        }
    }
    // Tokens are salted per run: two runs don't share them.
    let a = inspect(&f, &["--format", "json"]).json().0[0]["called"].clone();
    let b = inspect(&f, &["--format", "json"]).json().0[0]["called"].clone();
    assert_ne!(a, b);
}

/// A capture generated on the fly, never held whole: `Read` writes
/// packets as it is read.
struct Generated {
    next: usize,
    total: usize,
    buf: Vec<u8>,
    at: usize,
}

impl Generated {
    fn new(total: usize) -> Generated {
        let w = PcapWriter::new(Vec::new(), LINKTYPE_RAW, 262_144, false, false).unwrap();
        Generated {
            next: 0,
            total,
            buf: w.into_inner(),
            at: 0,
        }
    }

    /// The i-th packet: mostly in-dialog and media traffic, TCP streams
    /// that never finish their message, fragments that never complete,
    /// out-of-order segments, and every 100th an INVITE.
    fn packet(i: usize) -> Vec<u8> {
        let host = |n: usize| -> SocketAddr {
            format!(
                "10.{}.{}.{}:{}",
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255,
                5060 + n % 7
            )
            .parse()
            .unwrap()
        };
        match i % 10 {
            0 if i % 100 == 0 => udp_packet(
                pbx(),
                carrier(),
                &invite(
                    &format!("g{i}"),
                    if i % 300 == 0 { LEAK } else { WITHHELD },
                    "0491570110",
                    "",
                ),
            ),
            1 | 2 => {
                // A new TCP stream per packet, its message never finished:
                // streams must be evicted, not kept.
                let half = b"INVITE sip:x@y SIP/2.0\r\nContent-Length: 100\r\n\r\npartial";
                tcp_packet(host(i), carrier(), 1, TCP_ACK, half)
            }
            3 => {
                // A segment far ahead of any other: held out of order, bounded.
                tcp_packet(
                    host(i % 50),
                    carrier(),
                    (i as u32).wrapping_mul(7919),
                    TCP_ACK,
                    &[b'x'; 600],
                )
            }
            4 => {
                // The first fragment of a datagram that never completes.
                let mut p = ipv4(
                    [10, 9, 9, 9],
                    [203, 0, 113, 77],
                    17,
                    i as u16,
                    0,
                    true,
                    &[0u8; 1480],
                );
                p.truncate(20 + 1480);
                p
            }
            5 => udp_packet(
                carrier(),
                pbx(),
                b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n",
            ),
            _ => udp_packet(
                "198.51.100.7:40000".parse().unwrap(),
                "203.0.113.77:40002".parse().unwrap(),
                &[
                    0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xd5, 0xd5, 0xd5, 0xd5,
                ],
            ),
        }
    }
}

impl std::io::Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            if self.next == self.total {
                return Ok(0);
            }
            self.buf.clear();
            self.at = 0;
            let p = Generated::packet(self.next);
            let t = T0 + self.next as i64 * 1_000_000;
            let mut w = PcapWriter::new(Vec::new(), LINKTYPE_RAW, 262_144, false, false).unwrap();
            w.packet(t, &p).unwrap();
            self.buf = w.into_inner()[24..].to_vec();
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_large_capture_streams_in_bounded_memory() {
    use cidguard::capture::inspect::inspect_capture;
    use cidguard::capture::redact::Redactor;
    use cidguard::capture::tcp::TcpLimits;
    use cidguard::capture::{ip::DefragLimits, Limits};
    let plan = cidguard::plan::Plan::load(Path::new(EXAMPLE)).unwrap();
    let policy = plan.organisation_policy().clone();
    let redactor = Redactor::new(plan.config()).unwrap();
    let limits = Limits {
        tcp: TcpLimits {
            max_streams: 2_000,
            max_total_bytes: 2 * 1024 * 1024,
            ..TcpLimits::default()
        },
        defrag: DefragLimits {
            max_datagrams: 256,
            ..DefragLimits::default()
        },
    };
    let packets = 200_000;
    let mut calls = 0u64;
    let rep = inspect_capture(
        Generated::new(packets),
        &policy,
        &redactor,
        Default::default(),
        limits,
        &mut |_| calls += 1,
    )
    .unwrap();
    let c = &rep.counters;
    assert_eq!(c.packets, packets as u64);
    assert_eq!(rep.invites.judged, (packets / 100) as u64);
    assert_eq!(rep.invites.fail, (packets / 300) as u64 + 1);
    assert_eq!(calls, rep.invites.judged);
    // Held within the limits, by the reader's own counters.
    assert!(c.peak_tcp_streams <= 2_000, "{c:?}");
    assert!(c.peak_tcp_bytes <= 2 * 1024 * 1024 + 64 * 1024, "{c:?}");
    assert!(c.peak_fragment_datagrams <= 256, "{c:?}");
    assert!(c.peak_fragment_bytes <= 256 * 1500, "{c:?}");
    assert!(c.record_buffer <= 4096, "{c:?}");
    assert!(rep.peak_remembered <= 262_144);
    assert!(c.tcp_evicted > 0 && c.fragments_incomplete > 0, "{c:?}");
    // Half-read messages of evicted streams are counted, so the capture
    // can't pass.
    assert!(c.tcp_incomplete > 0);
}

/// One real test call: how the line reaches the PBX, the PBX's caller-ID
/// rule for it, and the number it dials.
struct Call {
    transport: crate::support::Transport,
    rule: crate::support::CallerIdRule,
    dialled: &'static str,
}

/// A real capture: tcpdump on loopback while Kamailio relays SIPp calls.
struct Recorded {
    /// Holds the capture file.
    dir: tempfile::TempDir,
    pcap: PathBuf,
    /// Where the UDP and TCP endpoints listened (the PBX's outbound leg).
    endpoints: Vec<SocketAddr>,
}

/// Place the calls, one after another, through a fresh PBX, capturing
/// everything to and from the PBX and the endpoints. None when a peer is
/// missing outside CI.
fn record_calls(calls: &[Call]) -> Option<Recorded> {
    use crate::support::sipp::pbx_scenario;
    use crate::support::tcpdump::{self, Tcpdump};
    use crate::support::{self, Kamailio, KamailioOpts, Line, Sipp, SippOpts, Transport};
    use std::time::Duration;

    if support::skip_without_peers() {
        return None;
    }
    let bin = tcpdump::binary()?;
    let dir = tempfile::tempdir().unwrap();
    let pbx = Kamailio::start(KamailioOpts::default()).expect("start the PBX");
    let line = Line::get("202");
    let n = |t: Transport| calls.iter().filter(|c| c.transport == t).count() as u32;
    let mut endpoints = Vec::new();
    for t in [Transport::Udp, Transport::Tcp] {
        if n(t) > 0 {
            let ep = Sipp::start(
                SippOpts::uas(pbx_scenario("endpoint.xml"), t)
                    .calls(n(t))
                    .timeout(Duration::from_secs(60)),
            )
            .expect("endpoint");
            endpoints.push((t, ep));
        }
    }
    let mut filter = format!("port {}", pbx.udp_addr().port());
    for (_, ep) in &endpoints {
        filter.push_str(&format!(" or port {}", ep.addr().port()));
    }
    let cap = Tcpdump::start(&bin, dir.path(), "real.pcap", &filter).expect("tcpdump");
    for c in calls {
        pbx.set_rule(line.username, c.rule).expect("set rule");
        let ep = &endpoints.iter().find(|(t, _)| *t == c.transport).unwrap().1;
        pbx.set_default_endpoint(&ep.uri()).expect("route");
        Sipp::run(
            SippOpts::uac(pbx_scenario("call.xml"), c.transport, pbx.addr(c.transport))
                .service(c.dialled)
                .key("line", line.username)
                .auth(line.username, line.password)
                .timeout(Duration::from_secs(8)),
        )
        .expect("line")
        .expect_success(&format!("call with rule {}", c.rule));
    }
    // Each call's BYE and its 200 cross the capture twice (line side and
    // endpoint side).
    cap.wait_for(b"CSeq: 3 BYE", 4 * calls.len(), Duration::from_secs(10))
        .expect("capture complete");
    let pcap = cap.stop().expect("tcpdump stops");
    let addrs = endpoints.iter().map(|(_, ep)| ep.addr()).collect();
    for (_, ep) in endpoints {
        ep.wait().expect("endpoint").expect_success("endpoint");
    }
    Some(Recorded {
        dir,
        pcap,
        endpoints: addrs,
    })
}

fn outcomes(calls: &[Value]) -> Vec<&str> {
    calls
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect()
}

#[test]
fn real_kamailio_calls_over_udp_and_tcp_judged_in_both_modes() {
    use crate::support::{CallerIdRule::*, Transport::*};
    let plan = [
        Call {
            transport: Udp,
            rule: Withheld,
            dialled: "0491570201",
        },
        Call {
            transport: Udp,
            rule: PaiLeak,
            dialled: "0491570202",
        },
        Call {
            transport: Udp,
            rule: FromLeak,
            dialled: "0491570203",
        },
        Call {
            transport: Udp,
            rule: Umbrella,
            dialled: "0491570204",
        },
        Call {
            transport: Udp,
            rule: Sdp,
            dialled: "0491570205",
        },
        Call {
            transport: Tcp,
            rule: Withheld,
            dialled: "0491570206",
        },
        Call {
            transport: Tcp,
            rule: Rpid,
            dialled: "0491570207",
        },
    ];
    let Some(rec) = record_calls(&plan) else {
        return;
    };
    let to: Vec<String> = rec.endpoints.iter().map(ToString::to_string).collect();
    let to = to.join(",");
    let leg = ["--to-host", to.as_str()];
    let mut outputs = Vec::new();
    for (mode, want, code) in [
        (
            vec![],
            ["pass", "fail", "fail", "pass", "fail", "pass", "fail"],
            1,
        ),
        (
            vec!["--line", "reception"],
            ["pass", "fail", "fail", "fail", "fail", "pass", "fail"],
            1,
        ),
        (
            vec!["--line", "outreach"],
            ["fail", "fail", "fail", "pass", "fail", "fail", "fail"],
            1,
        ),
    ] {
        let mut args = leg.to_vec();
        args.extend(mode.iter().copied());
        args.extend(["--format", "json"]);
        let run = inspect(&rec.pcap, &args);
        assert_eq!(
            run.code,
            Some(code),
            "{mode:?}: {}{}",
            run.stdout,
            run.stderr
        );
        let (calls, s) = run.json();
        assert_eq!(outcomes(&calls), want, "{mode:?}: {}", run.stdout);
        let transports: Vec<&str> = calls
            .iter()
            .map(|c| c["transport"].as_str().unwrap())
            .collect();
        assert_eq!(
            transports,
            ["udp", "udp", "udp", "udp", "udp", "tcp", "tcp"]
        );
        // The line's own leg (its INVITE before and after the 407) is in the
        // capture but not in the chosen direction.
        assert_eq!(s["invites"]["other_direction"], 14, "{s}");
        assert_eq!(s["not_readable"]["total"], 0, "{s}");
        outputs.push(run.stdout);
    }
    // What leaked, where, for the organisation.
    let run = inspect(&rec.pcap, &["--to-host", &to, "--format", "json"]);
    let (calls, _) = run.json();
    let has = |i: usize, h: &str, k: &str| {
        calls[i]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["header"] == h && f["kind"] == k)
    };
    assert!(has(1, "P-Asserted-Identity", "number"));
    assert!(has(2, "From", "name") && has(2, "From", "number"));
    assert!(has(4, "SDP", "name"));
    assert!(has(6, "Remote-Party-ID", "number"));
    // Calls to different people get different tokens.
    let tokens: std::collections::HashSet<&str> = calls
        .iter()
        .map(|c| c["called"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 7);

    // Every direction: the desk phone's own INVITEs to the PBX show the
    // organisation (as the line announces itself), so they fail too.
    let run = inspect(&rec.pcap, &["--format", "json"]);
    assert_eq!(run.code, Some(1));
    let (_, s) = run.json();
    assert_eq!(s["invites"]["judged"], 21, "{s}");
    assert_eq!(s["invites"]["fail"], 14 + 4, "{s}");
    outputs.push(run.stdout);

    // Text: one line per failing call and the summary.
    let run = inspect(&rec.pcap, &["--to-host", &to]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .contains("INVITEs: 21 seen, 7 judged: 3 pass, 4 fail, 0 inconclusive"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains("  FAIL  "))
            .count(),
        4,
        "{}",
        run.stdout
    );
    outputs.push(run.stdout);

    // Nobody the line called shows up anywhere.
    for out in &outputs {
        assert_called_party_absent(out, &["491570"], &[], "real capture");
    }
    drop(rec.dir);
}

#[test]
fn real_udp_invite_fragmented_is_reassembled() {
    use crate::support::{CallerIdRule::*, Transport::*};
    let plan = [Call {
        transport: Udp,
        rule: Sdp,
        dialled: "0491570301",
    }];
    let Some(rec) = record_calls(&plan) else {
        return;
    };
    let ep = rec.endpoints[0];
    let to = ep.to_string();
    let before = inspect(&rec.pcap, &["--to-host", &to, "--format", "json"]);
    let (calls, _) = before.json();
    assert_eq!(outcomes(&calls), ["fail"]);

    // The PBX's INVITE to the endpoint, as captured, split into fragments
    // for a 300-byte path (lo's MTU is 64 KiB, so the kernel never does it
    // there), last fragment first; every other packet as captured.
    let bytes = std::fs::read(&rec.pcap).unwrap();
    let records = read_pcap(&bytes);
    let link = records[0].1;
    let mut w = PcapWriter::new(Vec::new(), link, 262_144, false, false).unwrap();
    let mut split = 0;
    for (t, l, frame) in &records {
        let ipp = ip_of(*l, frame);
        let is_invite = ipp[0] == 0x45
            && ipp[9] == 17
            && u16::from_be_bytes([ipp[22], ipp[23]]) == ep.port()
            && ipp[28..].starts_with(b"INVITE ");
        if !is_invite {
            w.packet(*t, frame).unwrap();
            continue;
        }
        let head = &frame[..frame.len() - ipp.len()];
        let mut frags = fragment_ipv4(ipp, 300);
        assert!(frags.len() >= 3, "a real INVITE spans several fragments");
        frags.reverse();
        for f in frags {
            let mut fr = head.to_vec();
            fr.extend_from_slice(&f);
            w.packet(*t, &fr).unwrap();
        }
        split += 1;
    }
    assert_eq!(split, 1);
    let f = write(rec.dir.path(), "fragmented.pcap", &w.into_inner());
    let after = inspect(&f, &["--to-host", &to, "--format", "json"]);
    assert_eq!(after.code, Some(1), "{}", after.stdout);
    let (fcalls, s) = after.json();
    assert_eq!(s["counters"]["fragments_reassembled"], 1, "{s}");
    assert_eq!(outcomes(&fcalls), ["fail"]);
    // The same verdict as the unfragmented capture.
    let kinds = |c: &Value| -> Vec<(String, String)> {
        c["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["header"].to_string(), f["kind"].to_string()))
            .collect()
    };
    assert_eq!(kinds(&fcalls[0]), kinds(&calls[0]));
    assert!(kinds(&fcalls[0]).contains(&("\"SDP\"".into(), "\"name\"".into())));
    assert_called_party_absent(&after.stdout, &["491570"], &[], "fragmented");
}
