//! Verdicts per second on a realistic carrier INVITE, with an organisation
//! that protects 1,000 number entries (ranges and single numbers), several
//! names and hosts, and the built-in descriptors. Also the same INVITE with
//! its SDP gzip-compressed and with an RFC 2047 display name, to show what
//! decoding costs when there is something to decode.
//!
//! Run: `cargo bench --bench verdict`
//!
//! Wall time on a machine shared with other work is noisy; for a count that
//! isn't, `CIDGUARD_VERDICT_LOOP=<kind>:<n>` runs n verdicts of one kind
//! (clean, leaking, gzip, rfc2047) and nothing else, and
//! `bash benches/verdict-instructions.sh` counts the instructions per
//! verdict of each kind with it under valgrind. `file:<n>` judges the
//! message in the file `CIDGUARD_VERDICT_FILE` names instead (to see what
//! one header or body line costs).

use std::path::Path;

use std::io::Write;

use criterion::{criterion_group, Criterion, Throughput};

use cidguard::config::Config;
use cidguard::verdict::{judge, Outcome, Policy};

fn config() -> Config {
    let mut numbers = Vec::new();
    for i in 0..1000u32 {
        // 500 ranges of 100 numbers across area codes, 500 single numbers.
        if i % 2 == 0 {
            numbers.push(format!("\"+61 {} 7{:03} 0100-0199\"", 2 + (i % 7), i));
        } else {
            numbers.push(format!(
                "\"+61 {} 8{:03} {:04}\"",
                2 + (i % 7),
                i,
                i * 7 % 10000
            ));
        }
    }
    let text = format!(
        r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = [{}]
names = ["Eastside Women's Refuge", "Eastside Refuge", "Women's Refuge Victoria", "ESWR"]
hosts = ["pbx.eastside-refuge.org.au", "eastside-refuge.org.au", "203.0.113.10", "2001:db8::10"]

[[line]]
name = "reception"
expect = "withheld"
"#,
        numbers.join(", ")
    );
    Config::from_toml(&text, Path::new("bench.toml")).expect("bench config")
}

const INVITE: &str = "INVITE sip:+61399990000@cidguard.example:5080;transport=udp SIP/2.0\r\n\
Record-Route: <sip:198.51.100.20;lr;ftag=as5f3e1b2c>\r\n\
Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK3c1a.7d1c5b8e2.0;rport\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;received=198.51.100.7;rport=5060;branch=z9hG4bK45a1b2c3\r\n\
Max-Forwards: 68\r\n\
From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=as5f3e1b2c\r\n\
To: <sip:+61399990000@cidguard.example>\r\n\
Contact: <sip:anonymous@198.51.100.7:5060>\r\n\
Call-ID: 3c26700b5e1a0e0d2b9e0c3a6f1d9e2a@198.51.100.7:5060\r\n\
CSeq: 102 INVITE\r\n\
User-Agent: Carrier-SBC 4.2.1\r\n\
Date: Sun, 29 Nov 2026 05:00:00 GMT\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
Supported: replaces, timer\r\n\
Privacy: id\r\n\
P-Asserted-Identity: <sip:anonymous@anonymous.invalid>\r\n\
Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmNhcnJpZXIuZXhhbXBsZS9jLnBlbSJ9.eyJhdHRlc3QiOiJDIiwiZGVzdCI6eyJ0biI6WyI2MTM5OTk5MDAwMCJdfSwiaWF0IjoxNzAwMDAwMDAwLCJvcmlnIjp7InRuIjoiYW5vbnltb3VzIn0sIm9yaWdpZCI6IjQ0MzdjN2ViIn0.c2lnbmF0dXJl;info=<https://cert.carrier.example/c.pem>;alg=ES256;ppt=shaken\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 229\r\n\
\r\n\
v=0\r\n\
o=- 1700000000 1700000000 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 16384 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// The messages judged: a clean carrier INVITE, the same leaking in PAI,
/// with its SDP gzip-compressed, and with an RFC 2047 display name.
struct Messages {
    clean: Vec<u8>,
    leaking: Vec<u8>,
    gzipped: Vec<u8>,
    encoded_name: Vec<u8>,
}

fn messages(policy: &Policy) -> Messages {
    let leaking = INVITE.replace(
        "P-Asserted-Identity: <sip:anonymous@anonymous.invalid>",
        "P-Asserted-Identity: \"Eastside Refuge\" <sip:+61370420150@pbx.eastside-refuge.org.au>",
    );
    let gzipped = {
        let (head, sdp) = INVITE.split_once("\r\n\r\n").expect("a body");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(sdp.as_bytes()).expect("in memory");
        let body = e.finish().expect("in memory");
        let head = head
            .replace(
                "Content-Length: 229",
                &format!("Content-Length: {}", body.len()),
            )
            .replace(
                "Content-Type: application/sdp",
                "Content-Type: application/sdp\r\nContent-Encoding: gzip",
            );
        let mut m = format!("{head}\r\n\r\n").into_bytes();
        m.extend_from_slice(&body);
        m
    };
    let encoded_name = INVITE.replace("From: \"Anonymous\"", "From: \"=?UTF-8?B?QW5vbnltb3Vz?=\"");
    let m = Messages {
        clean: INVITE.as_bytes().to_vec(),
        leaking: leaking.into_bytes(),
        gzipped,
        encoded_name: encoded_name.into_bytes(),
    };
    assert_eq!(judge(policy, &m.clean).outcome, Outcome::Pass);
    assert_eq!(judge(policy, &m.leaking).outcome, Outcome::Fail);
    assert_eq!(judge(policy, &m.gzipped).outcome, Outcome::Pass);
    assert_eq!(judge(policy, &m.encoded_name).outcome, Outcome::Pass);
    m
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let policy = cidguard::plan::line_policies(&cfg)
        .expect("policies")
        .remove(0);
    let m = messages(&policy);
    let mut g = c.benchmark_group("verdict");
    g.throughput(Throughput::Elements(1));
    g.bench_function("clean_invite_1000_numbers", |b| {
        b.iter(|| judge(&policy, &m.clean))
    });
    g.bench_function("leaking_invite_1000_numbers", |b| {
        b.iter(|| judge(&policy, &m.leaking))
    });
    g.bench_function("gzip_sdp_invite_1000_numbers", |b| {
        b.iter(|| judge(&policy, &m.gzipped))
    });
    g.bench_function("rfc2047_display_invite_1000_numbers", |b| {
        b.iter(|| judge(&policy, &m.encoded_name))
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(spec) = std::env::var("CIDGUARD_VERDICT_LOOP") {
        let (kind, n) = spec
            .split_once(':')
            .expect("CIDGUARD_VERDICT_LOOP=<kind>:<n>");
        let n: usize = n.parse().expect("a count");
        let cfg = config();
        let policy = cidguard::plan::line_policies(&cfg)
            .expect("policies")
            .remove(0);
        let m = messages(&policy);
        let file;
        let msg = match kind {
            // Any message, to see what one part of it costs.
            "file" => {
                let path =
                    std::env::var("CIDGUARD_VERDICT_FILE").expect("CIDGUARD_VERDICT_FILE=<path>");
                file = std::fs::read(path).expect("the message file");
                &file
            }
            "clean" => &m.clean,
            "leaking" => &m.leaking,
            "gzip" => &m.gzipped,
            "rfc2047" => &m.encoded_name,
            other => panic!("unknown kind {other:?}: clean, leaking, gzip, rfc2047 or file"),
        };
        for _ in 0..n {
            criterion::black_box(judge(&policy, criterion::black_box(msg)));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
