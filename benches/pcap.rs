//! `cidguard inspect --pcap` on a day's worth of outbound calls: 1,000,000
//! INVITEs from a PBX to its carriers.
//!
//! Run: `cargo bench --bench pcap` (release build; nothing leaves the
//! machine, the capture is generated).
//!
//! The capture is written once to `target/bench-pcap/` (about 1.4 GB; kept,
//! keyed by the generator's version and the number of calls;
//! `CIDGUARD_BENCH_CALLS=100000` for a smaller one). It is what tcpdump on
//! a PBX's outside interface would hold (Ethernet, one VLAN tag on a third
//! of the frames): INVITEs to five carriers (three over UDP, one of them
//! over IPv6, and two over long-lived TCP connections whose segments split
//! and merge messages), each answered by `100 Trying`; 1 in 100 UDP
//! INVITEs retransmitted; 1 in 50 UDP INVITEs large enough to be IP
//! fragmented; a fifth carrying a STIR/SHAKEN Identity header. Nine in ten
//! calls are withheld, the rest leak the organisation's number (in
//! P-Asserted-Identity, From, Diversion) or name (SDP), or show the
//! umbrella identity. Called numbers are random mobiles, some called again.
//!
//! It prints:
//! - the reader alone (in process): packets and SIP messages per second,
//!   MB/s, and the most it held (the reading path without the verdict);
//! - end to end, the release binary judging the whole file against the
//!   organisation (text output, then JSON lines): calls judged per second
//!   and peak RSS (the child's own maximum resident set, from wait4).

#[path = "../tests/support/pcap.rs"]
mod pcap;

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pcap::*;

/// Bump when the generated capture changes, so a cached file is rewritten.
const GEN_VERSION: u32 = 2;
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
/// 2025-06-01T08:00:00Z.
const T0: i64 = 1_748_764_800_000_000_000;
/// A call every 25 ms: a million calls in about seven hours.
const CALL_EVERY_NS: i64 = 25_000_000;

/// xorshift64*: deterministic, so every run judges the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A carrier the PBX sends calls to.
struct Carrier {
    addr: SocketAddr,
    pbx: SocketAddr,
    tcp: bool,
    /// Next sequence number of the PBX's stream to it (TCP only).
    seq: u32,
    /// Bytes written to the stream not yet sent as a segment.
    pending: Vec<u8>,
}

const IDENTITY: &str = "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0cy5leGFtcGxlLWNhcnJpZXIuaW52YWxpZC9zaGFrZW4ucGVtIn0.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyI2MTI5OTk5MDAwMCJdfSwiaWF0IjoxNzM1Njg5NjAwLCJvcmlnIjp7InRuIjoiYW5vbnltb3VzIn0sIm9yaWdpZCI6IjQ0MzdjN2ViLThmN2EtNGYwZS1hODYzLWY1M2EwZTYwMjUxYSJ9.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw;info=<https://certs.example-carrier.invalid/shaken.pem>;alg=ES256;ppt=shaken";

/// One outbound INVITE as a PBX writes it.
fn invite(rng: &mut Rng, n: u64, c: &Carrier, big: bool) -> Vec<u8> {
    let called = if rng.below(4) == 0 {
        // Someone called before.
        format!("04{:08}", rng.below(5_000))
    } else {
        format!("04{:08}", rng.below(100_000_000))
    };
    let kind = rng.below(1000);
    let anon = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";
    let leak_from = "\"Eastside Womens Refuge\" <sip:+61370100142@pbx.eastside-refuge.org.au>";
    let umbrella = "\"Salvation Army\" <sip:+61290000000@salvationarmy.org.au>";
    let (from, extra, session) = match kind {
        0..=899 => (anon, "Privacy: id\r\n".to_string(), "s=-"),
        900..=949 => (
            anon,
            "P-Asserted-Identity: <sip:+61370100142@192.0.2.10;user=phone>\r\nPrivacy: id\r\n"
                .into(),
            "s=-",
        ),
        950..=969 => (leak_from, String::new(), "s=-"),
        970..=979 => (
            anon,
            "Privacy: id\r\nDiversion: <sip:0370100142@192.0.2.10>;reason=unconditional\r\n".into(),
            "s=-",
        ),
        980..=989 => (anon, "Privacy: id\r\n".into(), "s=Eastside Womens Refuge"),
        _ => (umbrella, String::new(), "s=-"),
    };
    let mut extra = extra;
    if rng.below(5) == 0 {
        extra.push_str(&format!("Identity: {IDENTITY}\r\n"));
    }
    if big {
        for i in 0..24 {
            extra.push_str(&format!(
                "X-Route-Trace-{i}: hop-{i}.core.carrier.invalid;load={}\r\n",
                rng.below(100)
            ));
        }
    }
    let transport = if c.tcp { "TCP" } else { "UDP" };
    let ip4 = if c.pbx.is_ipv4() { "IP4" } else { "IP6" };
    let host = c.pbx.ip();
    let body = format!(
        "v=0\r\no=- {n} {n} IN {ip4} {host}\r\n{session}\r\nc=IN {ip4} {host}\r\nt=0 0\r\nm=audio {} RTP/AVP 8 0 18 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        10_000 + 2 * rng.below(10_000)
    );
    let pbx = SocketAddr::new(host, c.pbx.port());
    format!(
        "INVITE sip:{called}@{carrier};user=phone SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {pbx};rport;branch=z9hG4bK{:016x}\r\n\
         Max-Forwards: 70\r\n\
         From: {from};tag={:08x}\r\n\
         To: <sip:{called}@{carrier};user=phone>\r\n\
         Contact: <sip:trunk@{pbx};transport={}>\r\n\
         Call-ID: {:032x}@{host}\r\n\
         CSeq: 102 INVITE\r\n\
         User-Agent: FPBX-16.0.40(18.20.2)\r\n\
         Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
         Supported: replaces, timer\r\n\
         Session-Expires: 1800\r\n\
         Min-SE: 90\r\n\
         {extra}Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        rng.next(),
        rng.next() as u32,
        transport.to_lowercase(),
        u128::from(rng.next()) << 64 | u128::from(rng.next()),
        body.len(),
        carrier = c.addr.ip(),
    )
    .into_bytes()
}

/// The carrier's `100 Trying` for an INVITE.
fn trying(inv: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(inv);
    let mut out = String::from("SIP/2.0 100 Trying\r\n");
    for l in text.lines().skip(1) {
        if l.is_empty() {
            break;
        }
        if ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Server: carrier-sbc\r\nContent-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// Write the capture; returns the number of INVITEs (first transmissions).
fn generate(path: &Path, calls: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("part");
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    let mut w = PcapWriter::new(file, LINKTYPE_ETHERNET, 262_144, false, false)?;
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let v4: SocketAddr = "192.0.2.10:5060".parse().unwrap_or_else(|_| unreachable!());
    let v6: SocketAddr = "[2001:db8:1::10]:5060"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let carrier = |a: &str, pbx: SocketAddr, tcp: bool| Carrier {
        addr: a.parse().unwrap_or_else(|_| unreachable!()),
        pbx: if tcp {
            SocketAddr::new(pbx.ip(), 40_000)
        } else {
            pbx
        },
        tcp,
        seq: 1_000,
        pending: Vec::new(),
    };
    let mut carriers = [
        carrier("203.0.113.20:5060", v4, false),
        carrier("198.51.100.40:5060", v4, false),
        carrier("[2001:db8:100::5]:5060", v6, false),
        carrier("203.0.113.21:5060", v4, true),
        carrier("198.51.100.41:5060", v4, true),
    ];
    let mut ip_id: u16 = 1;
    let frame = |ip: &[u8], rng: &mut Rng| {
        if rng.below(3) == 0 {
            ethernet(ip, &[42])
        } else {
            ethernet(ip, &[])
        }
    };
    for n in 0..calls {
        let t = T0 + n as i64 * CALL_EVERY_NS;
        let ci = rng.below(carriers.len() as u64) as usize;
        let big = !carriers[ci].tcp && rng.below(50) == 0;
        let inv = invite(&mut rng, n, &carriers[ci], big);
        let c = &mut carriers[ci];
        if c.tcp {
            c.pending.extend_from_slice(&inv);
            // Segments of any size: messages split across them and merged.
            while c.pending.len() > 1_400 || (!c.pending.is_empty() && rng.below(3) == 0) {
                let take = c.pending.len().min(200 + rng.below(1_300) as usize);
                let seg: Vec<u8> = c.pending.drain(..take).collect();
                let p = tcp_packet(c.pbx, c.addr, c.seq, TCP_ACK | TCP_PSH, &seg);
                c.seq = c.seq.wrapping_add(seg.len() as u32);
                let f = frame(&p, &mut rng);
                w.packet(t, &f)?;
            }
        } else {
            let p = udp_packet(c.pbx, c.addr, &inv);
            let mut packets = Vec::new();
            if p.len() > 1_500 && p[0] == 0x45 {
                // The PBX's stack fragments it for a 1500-byte path.
                let mut p = p;
                p[4..6].copy_from_slice(&ip_id.to_be_bytes());
                ip_id = ip_id.wrapping_add(1);
                packets.extend(fragment_ipv4(&p, 1_500));
            } else {
                packets.push(p);
            }
            let again = rng.below(100) == 0;
            for p in &packets {
                w.packet(t, &frame(p, &mut rng))?;
            }
            if again {
                for p in &packets {
                    w.packet(t + 500_000_000, &frame(p, &mut rng))?;
                }
            }
            let back = udp_packet(c.addr, c.pbx, &trying(&inv));
            w.packet(t + 20_000_000, &frame(&back, &mut rng))?;
        }
    }
    // What the TCP streams still hold goes out at the end.
    let t = T0 + calls as i64 * CALL_EVERY_NS;
    for c in &mut carriers {
        if !c.pending.is_empty() {
            let p = tcp_packet(c.pbx, c.addr, c.seq, TCP_ACK | TCP_PSH, &c.pending);
            c.seq = c.seq.wrapping_add(c.pending.len() as u32);
            w.packet(t, &frame(&p, &mut rng))?;
        }
    }
    w.into_inner().flush()?;
    std::fs::rename(&tmp, path)
}

/// User + system time in a rusage.
fn cpu(ru: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// This process's CPU time so far.
fn self_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    cpu(&ru)
}

/// Run a command to the end, its output to `out`; (wall time, CPU time,
/// peak RSS in KiB, exit code).
// The child is reaped by wait4 (for its own rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command, out: &Path) -> (Duration, Duration, i64, i32) {
    let start = Instant::now();
    let file = std::fs::File::create(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let child = cmd
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes only the status and the rusage struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let wall = start.elapsed();
    (wall, cpu(&ru), ru.ru_maxrss, libc::WEXITSTATUS(status))
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not used here.
    let calls: u64 = std::env::var("CIDGUARD_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-pcap");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(format!("outbound-{calls}-v{GEN_VERSION}.pcap"));
    if !path.exists() {
        eprintln!("writing {} ({calls} calls)...", path.display());
        let t = Instant::now();
        generate(&path, calls).unwrap_or_else(|e| panic!("writing the capture: {e}"));
        eprintln!("written in {:.1} s", t.elapsed().as_secs_f64());
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "capture: {} ({:.0} MB, {calls} INVITEs)",
        path.display(),
        size as f64 / 1e6
    );

    // The reader alone, in this process.
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let cpu0 = self_cpu();
    let mut cap = cidguard::capture::Capture::open(file, Default::default(), Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut invites = 0u64;
    cap.run(&mut |m| {
        if m.bytes.starts_with(b"INVITE ") {
            invites += 1;
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    let reader_cpu = (self_cpu() - cpu0).as_secs_f64();
    let c = cap.counters();
    println!(
        "reader only: {:.2} s ({:.2} s CPU, {:.2} µs CPU per packet), {:.0} packets/s, {:.0} SIP messages/s, {:.0} MB/s ({} packets, {} SIP messages, {} INVITEs incl. retransmissions, {} reassembled from fragments; held at most {} TCP bytes, {} fragment bytes)",
        secs,
        reader_cpu,
        reader_cpu * 1e6 / c.packets.max(1) as f64,
        c.packets as f64 / secs,
        c.sip_messages as f64 / secs,
        size as f64 / 1e6 / secs,
        c.packets,
        c.sip_messages,
        invites,
        c.fragments_reassembled,
        c.peak_tcp_bytes,
        c.peak_fragment_bytes,
    );

    // End to end, the release binary.
    let bin = env!("CARGO_BIN_EXE_cidguard");
    for (name, extra) in [("text", &[][..]), ("json", &["--format", "json"][..])] {
        let out = dir.join(format!("last-output.{name}"));
        let (wall, cpu_time, rss_kib, code) = measure(
            Command::new(bin)
                .args(["inspect", "--config", EXAMPLE, "--pcap"])
                .arg(&path)
                .args(extra),
            &out,
        );
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let judged = if name == "json" {
            let last = text.lines().last().unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(last).unwrap_or_default();
            println!("  summary: {}", v["invites"]);
            // A line per call is hundreds of MB: only the summary is kept.
            let _ = std::fs::remove_file(&out);
            v["invites"]["judged"].as_u64().unwrap_or(0)
        } else {
            if let Some(l) = text.lines().find(|l| l.starts_with("INVITEs:")) {
                println!("  {l}");
            }
            calls
        };
        let s = wall.as_secs_f64();
        println!(
            "inspect --pcap ({name} output): {s:.1} s, {:.0} calls judged/s; {:.1} s CPU, {:.0} µs CPU per call; peak RSS {:.1} MB; exit {code}",
            judged as f64 / s,
            cpu_time.as_secs_f64(),
            cpu_time.as_secs_f64() * 1e6 / judged.max(1) as f64,
            rss_kib as f64 / 1024.0
        );
    }
}
