//! Mutation fuzzing of the wire-facing code: real messages (the captured
//! INVITEs, the RFC 4475 set, and every case found so far under
//! tests/fixtures/fuzz) are mutated and fed to stream framing (whole and in
//! random chunks, as a TCP reader sees them), the parser, the request
//! checks, the header readers and the verdict engine for a withheld and an
//! umbrella line.
//!
//! Properties: nothing panics; no case uses more than the case limit of CPU
//! time (measured on the fuzzing thread, so a loaded machine doesn't fail
//! it), and a watchdog names any case still running after the hang limit
//! of wall time; framing always consumes a length within the
//! buffer or asks for more, and chunked framing delivers exactly the
//! messages whole framing does; and a mutated message in which one of the
//! organisation's numbers is still intact never passes.
//!
//! Deterministic: a fixed seed, and each case has its own generator derived
//! from the seed and its index, so one case can be replayed alone. A
//! failure prints the seed, the case, the mutations and the bytes (escaped),
//! to be saved as a fixture under tests/fixtures/fuzz.
//!
//! Environment: `CIDGUARD_FUZZ_CASES` (how many random cases, default sized
//! for about a minute in a debug build on a busy 2-core machine),
//! `CIDGUARD_FUZZ_SEED` (another seed), `CIDGUARD_FUZZ_CASE` (replay one
//! case), `CIDGUARD_FUZZ_LIMIT_MS` (the per-case CPU limit, default 1000),
//! `CIDGUARD_FUZZ_HANG_MS` (the wall-time hang limit, default 20000).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cidguard::escape;
use cidguard::sip::build::parse_via;
use cidguard::sip::header::{parse_auth_params, parse_name_addr, parse_uri, split_list};
use cidguard::sip::message::{check_request, frame_stream, Frame, FramingError, MAX_MESSAGE};
use cidguard::sip::parse;
use cidguard::verdict::{judge, Outcome, Policy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::verdict_corpus::{example_policies, fixture_dir};

/// "CIDGUARD" in ASCII.
const DEFAULT_SEED: u64 = 0x4349_4447_5541_5244;
/// Random cases per run by default: about a minute in a debug build on a
/// busy 2-core machine, with the truncation sweep (about 20 s) before them.
const DEFAULT_CASES: u64 = 8_000;

/// The organisation's number (config/example.toml) as the seeds write it.
/// When one of these is still intact in a mutated message, bounded by
/// non-digits, the message must not pass.
const ORG_NUMBER_FORMS: &[&str] = &["+61370100142", "0370100142", "61370100142"];

/// Values for numeric headers: zero, negative, the 31/32/63/64-bit edges,
/// just under 2^64, and far beyond it.
const BOUNDARY: &[&str] = &[
    "0",
    "-1",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551614",
    "18446744073709551600",
    "18446744073709551616",
    "99999999999999999999999",
    "+1",
    "",
    "0000000000000000000000000000000000001",
];

/// Numeric headers whose values are replaced by boundary values.
const NUMERIC: &[&str] = &[
    "Content-Length",
    "l",
    "Max-Forwards",
    "CSeq",
    "Expires",
    "Min-Expires",
    "Retry-After",
    "Session-Expires",
];

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A message to start from.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The corpus: fixture INVITEs (without their `#` comment lines), captures,
/// the RFC 4475 messages, and the fuzz regressions.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for dir in ["invites", "captures", "rfc4475", "fuzz"] {
        let Ok(entries) = std::fs::read_dir(fixture_dir(dir)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sip" || e == "dat"))
            .collect();
        paths.sort();
        for p in paths {
            out.push(Seed {
                name: format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()),
                bytes: strip_comments(&std::fs::read(&p).unwrap()),
            });
        }
    }
    out
}

/// Fixture files start with `# key: value` lines; the message follows.
pub fn strip_comments(bytes: &[u8]) -> Vec<u8> {
    let mut rest = bytes;
    while rest.first() == Some(&b'#') {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        rest = &rest[end..];
    }
    rest.to_vec()
}

/// The header section's lines (each with its line end) and the rest.
fn split_head(m: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let end = cidguard::sip::message::header_end(m).unwrap_or(m.len());
    let mut lines: Vec<Vec<u8>> = m[..end]
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    // Keep the blank line ending the header section out of the shuffling.
    let blank = lines.last().is_some_and(|l| l == b"\r\n" || l == b"\n");
    let tail_blank = if blank { lines.pop() } else { None };
    let mut body = tail_blank.unwrap_or_default();
    body.extend_from_slice(&m[end..]);
    (lines, body)
}

fn join(lines: &[Vec<u8>], body: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = lines.concat();
    out.extend_from_slice(body);
    out
}

/// Apply one random mutation; returns a description of it.
pub(crate) fn mutate(rng: &mut StdRng, m: &mut Vec<u8>) -> String {
    let len = m.len();
    match rng.gen_range(0..13) {
        0 if len > 0 => {
            let at = rng.gen_range(0..len);
            let v: u8 = rng.gen();
            m[at] = v;
            format!("byte {at} = {v:#04x}")
        }
        1 if len > 0 => {
            let at = rng.gen_range(0..len);
            let bit = rng.gen_range(0..8);
            m[at] ^= 1 << bit;
            format!("bit {bit} of byte {at} flipped")
        }
        2 => {
            let at = rng.gen_range(0..=len);
            m.truncate(at);
            format!("cut at {at}")
        }
        3..=5 => {
            let (mut lines, body) = split_head(m);
            if lines.len() < 2 {
                return "no headers to move".into();
            }
            let i = rng.gen_range(1..lines.len());
            let what = match rng.gen_range(0..3) {
                0 => {
                    let l = lines[i].clone();
                    let j = rng.gen_range(1..=lines.len());
                    lines.insert(j, l);
                    format!("header line {i} repeated at {j}")
                }
                1 => {
                    let j = rng.gen_range(1..lines.len());
                    lines.swap(i, j);
                    format!("header lines {i} and {j} swapped")
                }
                _ => {
                    lines.remove(i);
                    format!("header line {i} deleted")
                }
            };
            *m = join(&lines, &body);
            what
        }
        6 => {
            if rng.gen_bool(0.5) {
                let out: Vec<u8> = m
                    .windows(2)
                    .filter(|w| w != b"\r\n")
                    .map(|w| w[0])
                    .chain(m.last().copied())
                    .collect();
                *m = out;
                "every CRLF to LF".into()
            } else {
                let at = m.windows(2).position(|w| w == b"\r\n");
                match at {
                    Some(at) => {
                        m.remove(at);
                        format!("CR at {at} removed")
                    }
                    None => "no CRLF".into(),
                }
            }
        }
        7 => {
            let at = rng.gen_range(0..=len);
            let byte = *[
                b'a', b' ', b'\t', b'"', b'<', b';', b',', b'%', b'\\', b'\n', b'\0', 0xff,
            ]
            .get(rng.gen_range(0..12))
            .unwrap_or(&b'a');
            let run = *[16, 300, 5000, 70_000, MAX_MESSAGE + 1]
                .get(rng.gen_range(0..5))
                .unwrap_or(&16);
            m.splice(at..at, std::iter::repeat_n(byte, run));
            format!("{run} bytes {byte:#04x} inserted at {at}")
        }
        8 | 9 => {
            let name = NUMERIC[rng.gen_range(0..NUMERIC.len())];
            let value = BOUNDARY[rng.gen_range(0..BOUNDARY.len())];
            set_header(m, name, value);
            format!("{name} set to {value:?}")
        }
        10 => {
            let value = BOUNDARY[rng.gen_range(0..BOUNDARY.len())];
            let (mut lines, body) = split_head(m);
            let at = rng.gen_range(1..=lines.len().max(1)).min(lines.len());
            lines.insert(at, format!("Content-Length: {value}\r\n").into_bytes());
            *m = join(&lines, &body);
            format!("a second Content-Length {value:?} at line {at}")
        }
        11 => {
            let junk: &[&[u8]] = &[
                b"\r\n ",
                b"\r\n\r\n",
                b"\"",
                b"<",
                b">",
                b";;",
                b",,",
                b"%",
                b"%00",
                b"\\",
                b":",
                b" SIP/2.0",
                b"\xc3",
                b"\xe2\x80\xae",
                b"sip:",
                b"z9hG4bK",
            ];
            let j = junk[rng.gen_range(0..junk.len())];
            let at = rng.gen_range(0..=len);
            m.splice(at..at, j.iter().copied());
            format!("{} inserted at {at}", escape::bytes(j, 20))
        }
        _ => {
            // A folded continuation or a very long header.
            let (mut lines, body) = split_head(m);
            let at = rng.gen_range(1..=lines.len().max(1)).min(lines.len());
            let n = rng.gen_range(1..2000);
            let line = if rng.gen_bool(0.5) {
                format!(" {}\r\n", "x".repeat(n))
            } else {
                format!("X-Long: {}\r\n", "y,".repeat(n))
            };
            lines.insert(at, line.into_bytes());
            *m = join(&lines, &body);
            format!("a {n}-unit line inserted at {at}")
        }
    }
}

/// Replace (or add) a header's value; for CSeq, its number only.
fn set_header(m: &mut Vec<u8>, name: &str, value: &str) {
    let (mut lines, body) = split_head(m);
    let found = lines.iter().enumerate().skip(1).find_map(|(i, l)| {
        let text = String::from_utf8_lossy(l);
        let (n, v) = text.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| (i, v.to_string()))
    });
    let new_value = |old: &str| {
        if name == "CSeq" {
            let method = old
                .split_whitespace()
                .nth(1)
                .unwrap_or("INVITE")
                .to_string();
            format!("{value} {method}")
        } else {
            value.to_string()
        }
    };
    match found {
        Some((i, old)) => lines[i] = format!("{name}: {}\r\n", new_value(&old)).into_bytes(),
        None => lines.push(format!("{name}: {}\r\n", new_value("")).into_bytes()),
    }
    *m = join(&lines, &body);
}

/// Where the case is, for the watchdog and for failure messages.
#[derive(Default)]
struct Current {
    what: String,
    bytes: Vec<u8>,
}

/// Runs the targets on one input (`chunk_seed` draws the chunk sizes for
/// the chunked framing). Err describes a broken property.
fn check(input: &[u8], chunk_seed: u64, policies: &[Policy]) -> Result<(), String> {
    framing(input, chunk_seed)?;
    // The verdict reads messages in place: exactly as the parser does.
    if let Some(in_place) = cidguard::sip::message::parse_borrowed(input) {
        if in_place.map(|m| m.to_message()) != parse(input) {
            return Err("read in place, the message is not what parse reads".into());
        }
    }
    if let Ok(m) = parse(input) {
        let _ = check_request(&m);
        let _ = m.cseq();
        for h in &m.headers {
            for item in split_list(&h.value) {
                if let Ok(na) = parse_name_addr(item) {
                    let _ = parse_uri(&na.uri);
                }
            }
            if h.canonical == "Via" {
                let _ = parse_via(&h.value);
            }
            if h.canonical.ends_with("Authenticate") || h.canonical.ends_with("Authorization") {
                let _ = parse_auth_params(&h.value);
            }
        }
        if let Some(u) = m.request_uri() {
            let _ = parse_uri(u);
        }
    }
    let org_number = intact_org_number(input);
    for p in policies {
        let v = judge(p, input);
        if v.outcome == Outcome::Pass {
            if !v.findings.is_empty() {
                return Err(format!("{}: a pass with findings", p.line));
            }
            if let Some(n) = org_number {
                return Err(format!(
                    "{}: passed although the organisation's number {n} is intact in the message",
                    p.line
                ));
            }
        }
        if v.outcome == Outcome::Inconclusive && v.reason.as_deref().is_none_or(str::is_empty) {
            return Err(format!("{}: inconclusive without a reason", p.line));
        }
    }
    Ok(())
}

/// One of [`ORG_NUMBER_FORMS`] in the message with no digit either side.
fn intact_org_number(m: &[u8]) -> Option<&'static str> {
    ORG_NUMBER_FORMS.iter().copied().find(|form| {
        let f = form.as_bytes();
        m.windows(f.len()).enumerate().any(|(i, w)| {
            w == f
                && (i == 0 || !m[i - 1].is_ascii_digit())
                && m.get(i + f.len()).is_none_or(|b| !b.is_ascii_digit())
        })
    })
}

/// What stream framing makes of a buffer: the messages it delivers, and
/// whether it gave up. Checks every answer against the buffer.
fn frame_all(chunks: &[&[u8]]) -> Result<(Vec<Vec<u8>>, bool), String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut calls = 0usize;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            calls += 1;
            // Each call consumes bytes or asks for more: never more calls
            // than bytes plus one per chunk.
            if calls > total + chunks.len() + 1 {
                return Err("framing makes no progress".into());
            }
            match frame_stream(&buf) {
                Frame::Complete(n) => {
                    if n == 0 || n > buf.len() {
                        return Err(format!("Complete({n}) with {} bytes buffered", buf.len()));
                    }
                    out.push(buf.drain(..n).collect());
                }
                Frame::KeepAlive(n) => {
                    if n == 0 || n > buf.len() {
                        return Err(format!("KeepAlive({n}) with {} bytes buffered", buf.len()));
                    }
                    buf.drain(..n);
                }
                Frame::Incomplete => {
                    if buf.len() > MAX_MESSAGE {
                        return Err(format!(
                            "still asking for more with {} bytes buffered (limit {MAX_MESSAGE})",
                            buf.len()
                        ));
                    }
                    break;
                }
                Frame::Invalid(_) => return Ok((out, true)),
            }
        }
    }
    Ok((out, false))
}

/// Whole framing and framing in random chunks (sizes drawn from
/// `chunk_seed`) must agree.
fn framing(input: &[u8], chunk_seed: u64) -> Result<(), String> {
    let whole = frame_all(&[input])?;
    // Up to 97 bytes a chunk, 4096 for long inputs: framing rescans the
    // buffer on every call, so tiny chunks of a 128 KiB message cost
    // seconds in a debug build.
    let max = if input.len() > 16 * 1024 { 4096 } else { 97 };
    let mut rng = StdRng::seed_from_u64(chunk_seed);
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let end = (at + rng.gen_range(1..=max)).min(input.len());
        chunks.push(&input[at..end]);
        at = end;
    }
    let chunked = frame_all(&chunks)?;
    if whole != chunked {
        return Err(format!(
            "framing whole gives {} messages (gave up: {}), in {} chunks {} (gave up: {})",
            whole.0.len(),
            whole.1,
            chunks.len(),
            chunked.0.len(),
            chunked.1
        ));
    }
    Ok(())
}

fn report(seed: u64, case: Option<u64>, what: &str, bytes: &[u8], why: &str) -> String {
    let replay = match case {
        Some(i) => format!(
            "CIDGUARD_FUZZ_SEED={seed:#x} CIDGUARD_FUZZ_CASE={i} cargo test --test tests fuzz_mutations"
        ),
        None => "cargo test --test tests fuzz_mutations (the truncation sweep)".into(),
    };
    format!(
        "fuzz failure: {why}\n  seed {seed:#x}, {what}\n  replay: {replay}\n  \
         bytes ({} total, save as a fixture under tests/fixtures/fuzz):\n{}",
        bytes.len(),
        escape::bytes(bytes, 4000)
    )
}

/// CPU time used by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Runs `work` on a thread, failing if one case runs past the limit.
fn with_watchdog(
    t0: Instant,
    limit: Duration,
    current: Arc<Mutex<Current>>,
    started: Arc<AtomicU64>,
    work: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let d = done.clone();
    std::thread::spawn(move || {
        let r = work();
        d.store(true, Ordering::SeqCst);
        let _ = tx.send(r);
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => return r,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the fuzz thread died".into())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        // 0: not inside a case (setup, or between cases); else the case's
        // start in milliseconds after t0, plus one.
        let at = started.load(Ordering::SeqCst);
        let running = t0
            .elapsed()
            .saturating_sub(Duration::from_millis(at.saturating_sub(1)));
        if at != 0 && !done.load(Ordering::SeqCst) && running > limit {
            let c = current.lock().unwrap_or_else(|e| e.into_inner());
            // The stuck thread is left behind; the test process ends with
            // the failure.
            return Err(format!(
                "a case ran for more than {limit:?} of wall time (a hang):\n  {}\n  bytes ({}): {}",
                c.what,
                c.bytes.len(),
                escape::bytes(&c.bytes, 4000)
            ));
        }
    }
}

/// The random cases and the truncation sweep, under the watchdog.
#[test]
fn fuzz_mutations() {
    let seed = env_u64("CIDGUARD_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("CIDGUARD_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let only = env_u64("CIDGUARD_FUZZ_CASE");
    let cpu_limit = Duration::from_millis(env_u64("CIDGUARD_FUZZ_LIMIT_MS").unwrap_or(1000));
    let limit = Duration::from_millis(env_u64("CIDGUARD_FUZZ_HANG_MS").unwrap_or(20_000));
    let current = Arc::new(Mutex::new(Current::default()));
    let started = Arc::new(AtomicU64::new(0));
    let (cur, st) = (current.clone(), started.clone());
    let w0 = Instant::now();
    let result = with_watchdog(w0, limit, current, started, move || {
        let policies = example_policies();
        let corpus = seeds();
        assert!(
            corpus.len() >= 100,
            "the corpus went missing: {}",
            corpus.len()
        );
        let t0 = Instant::now();
        let run = |case: Option<u64>,
                   chunk_seed: u64,
                   what: String,
                   bytes: Vec<u8>|
         -> Result<(), String> {
            {
                let mut c = cur.lock().unwrap_or_else(|e| e.into_inner());
                c.what.clone_from(&what);
                c.bytes.clone_from(&bytes);
            }
            let ms = u64::try_from(w0.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            st.store(ms + 1, Ordering::SeqCst);
            let cpu0 = thread_cpu_time();
            let r = catch_unwind(AssertUnwindSafe(|| check(&bytes, chunk_seed, &policies)));
            let cpu = thread_cpu_time().saturating_sub(cpu0);
            st.store(0, Ordering::SeqCst);
            match r {
                Ok(Ok(())) if cpu > cpu_limit => Err(report(
                    seed,
                    case,
                    &what,
                    &bytes,
                    &format!(
                        "the case used {cpu:?} of CPU time (limit {cpu_limit:?}): a slow path"
                    ),
                )),
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(report(seed, case, &what, &bytes, &why)),
                Err(_) => Err(report(seed, case, &what, &bytes, "panic (message above)")),
            }
        };
        // Truncation at every offset of every seed (once per run, not in a
        // single-case replay).
        if only.is_none() {
            for s in &corpus {
                for at in 0..=s.bytes.len() {
                    let chunk_seed = seed ^ u64::try_from(at).unwrap_or(u64::MAX);
                    run(
                        None,
                        chunk_seed,
                        format!("{} cut at {at}", s.name),
                        s.bytes[..at].to_vec(),
                    )?;
                }
            }
        }
        let sweep = t0.elapsed();
        let range = match only {
            Some(i) => i..i + 1,
            None => 0..cases,
        };
        for i in range {
            // Each case's own generator, so it can be replayed alone.
            let mut rng = StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let s = &corpus[rng.gen_range(0..corpus.len())];
            let mut m = s.bytes.clone();
            let mut done = Vec::new();
            for _ in 0..rng.gen_range(1..=3) {
                done.push(mutate(&mut rng, &mut m));
            }
            let what = format!("case {i} from {}: {}", s.name, done.join("; "));
            let chunk_seed = rng.gen();
            run(Some(i), chunk_seed, what, m)?;
        }
        eprintln!(
            "fuzz_mutations: seed {seed:#x}, {} seeds truncated at every offset in {:.1?}, {} random cases in {:.1?}",
            corpus.len(),
            sweep,
            if only.is_some() { 1 } else { cases },
            t0.elapsed() - sweep
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every fixture found by fuzzing: each is named for what it found, and
/// must now go through every target without a panic or a broken property.
#[test]
fn fuzz_regressions_stay_fixed() {
    let policies = example_policies();
    let dir = fixture_dir("fuzz");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "sip") {
            continue;
        }
        let bytes = strip_comments(&std::fs::read(&p).unwrap());
        if let Err(why) = check(&bytes, 0, &policies) {
            panic!("{}: {why}", Path::new(&p).display());
        }
    }
}

/// tests/fixtures/fuzz/content-length-near-2-64.sip: a Content-Length of
/// 2^64-2 made stream framing overflow; it is refused as too large.
#[test]
fn fuzz_content_length_near_2_64_is_refused_by_framing() {
    let bytes = strip_comments(
        &std::fs::read(fixture_dir("fuzz").join("content-length-near-2-64.sip")).unwrap(),
    );
    assert!(
        matches!(
            frame_stream(&bytes),
            Frame::Invalid(FramingError::ContentLengthTooLarge | FramingError::BadContentLength)
        ),
        "{:?}",
        frame_stream(&bytes)
    );
    let m = parse(&bytes).unwrap();
    assert!(check_request(&m).is_err());
}
