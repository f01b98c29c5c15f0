//! The verdicts, locked: every fixture (captured INVITEs, captures, the RFC
//! 4475 set, fuzz finds), some truncations of each, a few thousand
//! generated INVITEs (numbers written every supported way in every place,
//! names and descriptors in every header encoding, encoded bodies, near
//! misses, hosts and names in many spellings) and a few thousand mutated
//! ones (fixed seed), each judged for several policies, must give exactly
//! the verdict recorded in `tests/fixtures/golden/verdicts.jsonl`: the
//! outcome, reason, every finding (header, value, kind, shown, detail,
//! matched, seen), the notes and what was presented.
//!
//! It guards changes that must not change any verdict (making the engine
//! faster, say). When a verdict changes on purpose, rewrite the file and
//! say why in the commit:
//!
//! ```sh
//! CIDGUARD_GOLDEN_WRITE=1 cargo test --test tests verdict_golden
//! ```
//!
//! The fixture corpus is recorded whole, one line per fixture and policy:
//! `{"case", "policy", "verdict"}`. Every other case is one line, `{"case",
//! "sha256"}`: the first 128 bits of the SHA-256 of its verdicts' JSON
//! under each policy, which keeps the file small; a changed case is shown
//! with its message and its verdicts now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cidguard::config::Config;
use cidguard::escape;
use cidguard::verdict::{judge, Policy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::fuzz_mutations::{mutate, seeds};
use crate::verdict_props::{
    body_encoded, header_encoded, name_place, placed, secret, written, written_nsn, BASE, STYLES,
};

/// Mutated cases judged (each under [`MUTATED_POLICIES`]).
const MUTATED: u64 = 2_500;
/// The policies mutated cases are judged for (the first ones of
/// [`policies`]): the example lines and the organisation.
const MUTATED_POLICIES: usize = 3;
/// "GOLDEN" in ASCII.
const SEED: u64 = 0x474f_4c44_454e;

fn golden_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/verdicts.jsonl")
}

/// The organisation of the verdict benchmark: 1,000 number entries (ranges
/// and single numbers), names including a short one, an IPv6 host.
fn large_org_toml() -> String {
    let mut numbers = Vec::new();
    for i in 0..1000u32 {
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
    format!(
        r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = [{}]
names = ["Eastside Women's Refuge", "Eastside Refuge", "Women's Refuge Victoria", "ESWR"]
hosts = ["pbx.eastside-refuge.org.au", "eastside-refuge.org.au", "203.0.113.10", "2001:db8::10"]

[[line]]
name = "large"
expect = "withheld"
"#,
        numbers.join(", ")
    )
}

/// An umbrella whose name holds descriptors (so they are not judged on
/// that line), and descriptors of the organisation's own.
const DESCRIPTORS_TOML: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199", "(03) 7010 0500"]
names = ["Eastside Women's Refuge", "Café Ünïcode"]
hosts = ["refuge.example", "[2001:db8::10]"]
descriptors = ["Women's Health", "Crisis Line"]

[[line]]
name = "network"
expect = "umbrella"
umbrella = { name = "Women's Refuge Network", numbers = ["+61 2 9000 0000"] }
"#;

/// The policies, by name: the example's withheld and umbrella lines and
/// its organisation alone, then the benchmark's organisation and an
/// umbrella line with descriptors.
fn policies() -> Vec<(&'static str, Policy)> {
    let example = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example.toml"
    )))
    .unwrap();
    let mut lines = cidguard::plan::line_policies(&example).unwrap();
    let outreach = lines.remove(1);
    let reception = lines.remove(0);
    let org = Policy::organisation(&(&example.organisation).into()).unwrap();
    let large = Config::from_toml(&large_org_toml(), Path::new("large.toml")).unwrap();
    let descriptors = Config::from_toml(DESCRIPTORS_TOML, Path::new("d.toml")).unwrap();
    vec![
        ("reception", reception),
        ("outreach", outreach),
        ("organisation", org),
        (
            "large",
            cidguard::plan::line_policies(&large).unwrap().remove(0),
        ),
        (
            "descriptors",
            cidguard::plan::line_policies(&descriptors)
                .unwrap()
                .remove(0),
        ),
    ]
}

/// One message to judge.
struct Case {
    name: String,
    bytes: Vec<u8>,
    /// Record a hash of the verdicts rather than the verdicts.
    hashed: bool,
    /// Judged under the first this many policies.
    policies: usize,
}

fn case(name: String, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        hashed: true,
        policies: usize::MAX,
    }
}

/// An INVITE with these extra header lines and an optional SDP body.
fn invite(extra: &str, sdp: Option<&str>) -> Vec<u8> {
    match sdp {
        None => format!("{BASE}{extra}Content-Length: 0\r\n\r\n").into_bytes(),
        Some(b) => format!(
            "{BASE}{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
        .into_bytes(),
    }
}

/// Texts that are, or nearly are, names, descriptors, hosts, anonymity
/// markers and numbers of the policies above.
const TEXTS: &[&str] = &[
    "Eastside Women's Refuge",
    "EASTSIDE WOMENS",
    "EASTSIDE WOMEN'",
    "Eastside Women",
    "eastsidewomensrefuge",
    "Eastside  Womens-Refuge",
    "Westeastside Women's Refuges",
    "Eastside Refuge",
    "EASTSIDE REFUGE INTAKE",
    "Women's Refuge Victoria",
    "ESWR",
    "eswr-pbx",
    "Ab1eswrXyZ9876543210",
    "Salvation Army",
    "SALVATION ARMY",
    "Salvation Army Aus",
    "Women's Refuge Network",
    "Women's Health",
    "WOMENS HEALTH CLINIC",
    "Crisis Line",
    "shelter",
    "Northern Shelte",
    "EASTSIDE DOMEST",
    "DV",
    "dv-shelter-pbx.local",
    "DFV unit",
    "Refuge",
    "Café Ünïcode",
    "Cafe Unicode",
    "Ｅastside Ｒefuge",
    "Eastside Womenâ€™s Refuge",
    "pbx.eastside-refuge.org.au",
    "PBX.Eastside-Refuge.org.au",
    "xeastside-refuge.org.au",
    "eastside-refuge.org.au.",
    "refuge.example",
    "203.0.113.10",
    "203.0.113.100",
    "[2001:db8::10]",
    "2001:0db8:0:0::10",
    "2001:db8::100",
    "Anonymous",
    "Number Withheld",
    "No Caller ID",
    "restricted",
    "Anonymous Refuge",
    "Dr Smith",
    "",
    "+61370100142",
    "+61 3 7010 0199",
    "0370100200",
    "(03) 7010 0500",
    "70100500",
    "+61 2 7000 0150",
    "0280010007",
    "+61290000000",
    "1800 737 732",
];

/// Places a text can go: (header lines, SDP body).
fn text_places(t: &str) -> Vec<(String, Option<String>)> {
    let user: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    vec![
        (
            format!("P-Asserted-Identity: \"{t}\" <sip:{user}@carrier.example>\r\n"),
            None,
        ),
        (
            format!("P-Preferred-Identity: {t} <sip:anonymous@anonymous.invalid>\r\n"),
            None,
        ),
        (
            format!("Remote-Party-ID: \"{t}\" <sip:{user}@carrier.example>;party=calling;screen=yes;privacy=off\r\n"),
            None,
        ),
        (
            format!("Remote-Party-ID: \"{t}\" <sip:{user}@carrier.example>;party=called\r\n"),
            None,
        ),
        (format!("Subject: call from {t} today\r\n"), None),
        (format!("X-{user}: 1\r\n"), None),
        (format!("Contact: <sip:{user}@198.51.100.7:5060>\r\n"), None),
        (format!("Call-Info: <https://{user}/logo.png>;purpose=icon\r\n"), None),
        (format!("P-Charge-Info: <sip:{user}@carrier.example>;display={user}\r\n"), None),
        (format!("User-Agent: {t} SBC 4.2\r\n"), None),
        (
            String::new(),
            Some(format!(
                "v=0\r\no={user} 1 1 IN IP4 198.51.100.7\r\ns={t}\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 {user}/8000\r\ni={t}\r\n"
            )),
        ),
    ]
}

/// A From header in place of the base INVITE's, for display and user tests.
fn with_from(from: &str) -> Vec<u8> {
    let base = BASE.replace(
        "From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\n",
        &format!("From: {from};tag=1\r\n"),
    );
    format!("{base}Content-Length: 0\r\n\r\n").into_bytes()
}

/// Every case, in a fixed order with unique names.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    // The fixture corpus, and truncations of it.
    for s in seeds() {
        let n = s.bytes.len();
        let mut cuts: Vec<usize> = (1..8).map(|k| n * k / 8).collect();
        cuts.dedup();
        for at in cuts {
            let mut c = case(format!("{} cut at {at}", s.name), s.bytes[..at].to_vec());
            c.policies = MUTATED_POLICIES;
            out.push(c);
        }
        out.push(Case {
            hashed: false,
            ..case(s.name, s.bytes)
        });
    }
    // A configured number, written every supported way, in every place.
    for style in 0..STYLES {
        for place in 0..8 {
            for sub in [0, 42, 99] {
                let n = written(sub, style);
                let (line, _) = placed(&n, place);
                out.push(case(
                    format!("number style {style} place {place} sub {sub}"),
                    invite(&line, None),
                ));
            }
        }
    }
    // Near misses: a digit or the area code changed, and the organisation's
    // digits inside Call-ID, tags and branches.
    for pos in 0..5usize {
        for style in 0..STYLES {
            let mut rest: Vec<u8> = format!("7010{:04}", 142 + pos * 1111).into_bytes();
            let area = if pos == 4 {
                '7'
            } else {
                rest[pos] = b'0' + (rest[pos] - b'0' + 3) % 10;
                '3'
            };
            let rest = String::from_utf8(rest).unwrap();
            let n = written_nsn(area, &rest, style);
            let (line, _) = placed(&n, style);
            let digits = format!("61{area}{rest}");
            let msg = format!(
                "INVITE sip:+61399990000@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKa9{digits}\r\nFrom: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=0{digits}f\r\nTo: <sip:+61399990000@cidguard.test>\r\nCall-ID: 12300{digits}-0{area}{rest}@carrier.example\r\nCSeq: 1 INVITE\r\n{line}Content-Length: 0\r\n\r\n"
            );
            out.push(case(format!("near miss pos {pos} style {style}"), msg));
        }
    }
    // The organisation's number buried in longer digit runs.
    for run in [
        "callid-0370100142169",
        "99961370100142",
        "12361370100142999",
        "0061370100142000",
        "3701001420",
    ] {
        out.push(case(
            format!("buried {run}"),
            invite(&format!("X-Ref: {run}\r\n"), None),
        ));
    }
    // Numbers, names and descriptors in every name-carrying header, in
    // every header encoding; the CNAM form.
    for what in 0..3 {
        for style in 0..6 {
            for place in 0..9 {
                let (text, _) = secret(what);
                let (line, _) = name_place(&header_encoded(text, style), place);
                out.push(case(
                    format!("secret {what} style {style} place {place}"),
                    invite(&line, None),
                ));
            }
        }
    }
    for style in 0..6 {
        for place in 0..9 {
            let (line, _) = name_place(&header_encoded("EASTSIDE WOMENS", style), place);
            out.push(case(
                format!("cnam style {style} place {place}"),
                invite(&line, None),
            ));
        }
    }
    // Bodies in every encoding, with a secret or clean.
    for what in 0..4u8 {
        for style in 0..9 {
            let text = if what == 3 { "-" } else { secret(what).0 };
            let (headers, body, _) = body_encoded(text, style);
            let mut msg =
                format!("{BASE}{headers}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
            msg.extend_from_slice(&body);
            out.push(case(format!("body {what} style {style}"), msg));
        }
    }
    // Hosts, names, descriptors, anonymity words and numbers in many places.
    for (i, t) in TEXTS.iter().enumerate() {
        for (j, (extra, sdp)) in text_places(t).into_iter().enumerate() {
            out.push(case(
                format!("text {i} {t:?} place {j}"),
                invite(&extra, sdp.as_deref()),
            ));
        }
        let user: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        for (k, from) in [
            format!("\"{t}\" <sip:anonymous@anonymous.invalid>"),
            format!("{t} <sip:anonymous@anonymous.invalid>"),
            format!("\"Salvation Army\" <sip:{user}@carrier.example>"),
            format!("<tel:{user}>"),
            format!("\"{t}\" <sip:+61290000000@carrier.example>"),
        ]
        .iter()
        .enumerate()
        {
            out.push(case(format!("text {i} {t:?} from {k}"), with_from(from)));
        }
    }
    // A short descriptor by chance inside blobs.
    for (i, sep) in ["+dv/", "-dv_", "/DV+", "_dV-", " DV "].iter().enumerate() {
        let token = format!("Ab1xYz09{sep}Qw3rTy78");
        out.push(case(
            format!("blob {i}"),
            invite(
                &format!("X-Token: {token}\r\nP-Charging-Vector: icid-value={token};orig-ioi=carrier.example\r\n"),
                None,
            ),
        ));
    }
    // Mutations of the corpus, as the fuzzer makes them.
    let corpus = seeds();
    for i in 0..MUTATED {
        let mut rng = StdRng::seed_from_u64(SEED ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let s = &corpus[rng.gen_range(0..corpus.len())];
        let mut m = s.bytes.clone();
        for _ in 0..rng.gen_range(1..=3) {
            mutate(&mut rng, &mut m);
        }
        out.push(Case {
            name: format!("mutated {i} from {}", s.name),
            bytes: m,
            hashed: true,
            policies: MUTATED_POLICIES,
        });
    }
    out
}

/// The recorded lines for one case: its verdict under each policy, or
/// the hash of them all.
fn record(case: &Case, verdicts: &[(&str, serde_json::Value)]) -> Vec<(String, String)> {
    if case.hashed {
        let mut h = Sha256::new();
        for (policy, v) in verdicts {
            h.update(format!("{policy}\t{v}\n").as_bytes());
        }
        let hex: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let line = serde_json::json!({"case": case.name, "sha256": hex});
        vec![(case.name.clone(), line.to_string())]
    } else {
        verdicts
            .iter()
            .map(|(policy, v)| {
                let line = serde_json::json!({"case": case.name, "policy": policy, "verdict": v});
                (format!("{} under {policy}", case.name), line.to_string())
            })
            .collect()
    }
}

#[test]
fn verdict_golden_every_case_keeps_its_verdict() {
    let policies = policies();
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name.as_str()), "two cases named {}", c.name);
    }
    // (key, recorded line, the case, its verdicts now).
    let mut now = Vec::new();
    for c in &cases {
        let verdicts: Vec<(&str, serde_json::Value)> = policies
            .iter()
            .take(c.policies)
            .map(|(name, p)| (*name, serde_json::to_value(judge(p, &c.bytes)).unwrap()))
            .collect();
        for (key, line) in record(c, &verdicts) {
            now.push((key, line, c, verdicts.clone()));
        }
    }
    let path = golden_file();
    if std::env::var_os("CIDGUARD_GOLDEN_WRITE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = String::new();
        for (_, line, _, _) in &now {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        eprintln!("wrote {} lines to {}", now.len(), path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with CIDGUARD_GOLDEN_WRITE=1",
            path.display()
        )
    });
    let mut golden: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let case = v["case"].as_str().unwrap();
        let key = match v["policy"].as_str() {
            Some(p) => format!("{case} under {p}"),
            None => case.to_string(),
        };
        golden.insert(key, line.to_string());
    }
    let mut wrong = Vec::new();
    for (key, line, case, verdicts) in &now {
        match golden.remove(key) {
            Some(g) if g == *line => {}
            Some(g) => {
                let verdicts: Vec<String> = verdicts
                    .iter()
                    .map(|(p, v)| format!("  now under {p}: {v}"))
                    .collect();
                wrong.push(format!(
                    "{key}: the verdict changed\n  message: {}\n  was: {g}\n  now: {line}\n{}",
                    escape::bytes(&case.bytes, 3000),
                    verdicts.join("\n")
                ))
            }
            None => wrong.push(format!("{key}: not in the golden file")),
        }
    }
    for key in golden.keys() {
        wrong.push(format!("{key}: recorded but not judged"));
    }
    assert!(
        wrong.is_empty(),
        "{} of {} recorded lines differ from {} (first 5):\n{}",
        wrong.len(),
        now.len(),
        path.display(),
        wrong
            .iter()
            .take(5)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}
