//! The fixture corpus through the verdict engine: every captured INVITE under
//! `tests/fixtures/invites` names its line, the outcome it must get and the
//! headers that must (and must not) be flagged.

use std::path::{Path, PathBuf};

use cidguard::plan::Plan;
use cidguard::verdict::{judge, Kind, Outcome, Policy};

pub fn example_policies() -> Vec<Policy> {
    let plan = Plan::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example.toml"
    )))
    .unwrap();
    plan.lines().iter().map(|l| l.policy().clone()).collect()
}

pub fn fixture_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

/// A fixture: leading `# key: value` lines, then the message bytes.
struct Fixture {
    name: String,
    line: String,
    expect: Outcome,
    flags: Vec<(String, Kind)>,
    nots: Vec<String>,
    message: Vec<u8>,
}

fn load(path: &Path) -> Fixture {
    let bytes = std::fs::read(path).unwrap();
    let mut rest: &[u8] = &bytes;
    let mut f = Fixture {
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        line: String::new(),
        expect: Outcome::Pass,
        flags: Vec::new(),
        nots: Vec::new(),
        message: Vec::new(),
    };
    while rest.first() == Some(&b'#') {
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[1..end]).trim().to_string();
        rest = &rest[(end + 1).min(rest.len())..];
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "line" => f.line = v.to_string(),
            "expect" => {
                f.expect = serde_json::from_value(serde_json::Value::String(v.into())).unwrap()
            }
            "flags" => {
                for item in v.split(',') {
                    let (h, kind) = item.trim().rsplit_once(':').unwrap();
                    let kind: Kind =
                        serde_json::from_value(serde_json::Value::String(kind.into())).unwrap();
                    f.flags.push((h.to_string(), kind));
                }
            }
            "not" => f.nots = v.split(',').map(|s| s.trim().to_string()).collect(),
            _ => {}
        }
    }
    f.message = rest.to_vec();
    f
}

#[test]
fn every_fixture_gets_its_verdict() {
    let policies = example_policies();
    let mut files: Vec<_> = std::fs::read_dir(fixture_dir("invites"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "the corpus went missing: {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let fx = load(path);
        let policy = policies
            .iter()
            .find(|p| p.line == fx.line)
            .unwrap_or_else(|| panic!("{}: no line {:?}", fx.name, fx.line));
        let v = judge(policy, &fx.message);
        if v.outcome != fx.expect {
            failures.push(format!(
                "{}: expected {}, got {} ({})\n{:#?}",
                fx.name,
                fx.expect,
                v.outcome,
                v.summary(),
                v.findings
            ));
            continue;
        }
        for (h, k) in &fx.flags {
            if !v.findings.iter().any(|f| &f.header == h && f.kind == *k) {
                failures.push(format!(
                    "{}: expected a {k} finding in {h}; got {:#?}",
                    fx.name, v.findings
                ));
            }
        }
        for h in &fx.nots {
            if v.findings.iter().any(|f| &f.header == h) {
                failures.push(format!(
                    "{}: {h} must not be flagged; got {:#?}",
                    fx.name, v.findings
                ));
            }
        }
        if v.outcome == Outcome::Pass {
            assert!(v.findings.is_empty(), "{}: a pass has no findings", fx.name);
        }
        if v.outcome == Outcome::Inconclusive {
            assert!(
                v.reason.as_deref().is_some_and(|r| !r.is_empty()),
                "{}: inconclusive needs a reason",
                fx.name
            );
        }
        // `shown` follows the header: displayed places only (a
        // Remote-Party-ID for the called party is not the caller's).
        for f in &v.findings {
            let displayed = matches!(
                f.header.as_str(),
                "From"
                    | "P-Asserted-Identity"
                    | "P-Preferred-Identity"
                    | "Remote-Party-ID"
                    | "Identity"
            ) && !f.value.contains("party=called");
            assert_eq!(
                f.shown, displayed,
                "{}: shown flag of {}",
                fx.name, f.header
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) wrong:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// RFC 4475 torture messages: never a panic; each either judged or
/// inconclusive with a reason; and none of them is a pass for a withheld line
/// (they all present someone).
#[test]
fn rfc4475_messages_are_judged_or_refused_clearly() {
    let policies = example_policies();
    let reception = &policies[0];
    let mut seen = 0;
    for entry in std::fs::read_dir(fixture_dir("rfc4475")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "dat") {
            continue;
        }
        seen += 1;
        let raw = std::fs::read(&path).unwrap();
        let v = judge(reception, &raw);
        let name = path.file_stem().unwrap().to_string_lossy();
        match v.outcome {
            Outcome::Inconclusive => assert!(v.reason.is_some(), "{name}: no reason"),
            Outcome::Fail => assert!(!v.findings.is_empty(), "{name}: fail without findings"),
            Outcome::Pass => panic!("{name}: a torture message passed as withheld: {v:#?}"),
        }
        // The message parser alone must not panic either, and non-INVITEs
        // are refused with a reason naming what they are.
        let _ = cidguard::sip::parse(&raw);
    }
    assert!(seen >= 15);
}

#[test]
fn rfc4475_specific_outcomes() {
    let policies = example_policies();
    let reception = &policies[0];
    let read = |n: &str| std::fs::read(fixture_dir("rfc4475").join(format!("{n}.dat"))).unwrap();
    // wsinv: folded, odd-case, odd-spacing headers; the From display name
    // "J Rosenberg \"" is a name presented on a withheld line.
    let v = judge(reception, &read("wsinv"));
    assert_eq!(v.outcome, Outcome::Fail, "{v:#?}");
    assert!(v
        .findings
        .iter()
        .any(|f| f.header == "From" && f.kind == Kind::Presentation));
    assert_eq!(
        v.presented.identities[0].display.as_deref(),
        Some(r#"J Rosenberg \""#)
    );
    // insuf: no From at all.
    let v = judge(reception, &read("insuf"));
    assert!(
        v.reason.as_deref().unwrap_or("").contains("no From"),
        "{v:#?}"
    );
    // unreason, bigcode: responses.
    for n in ["unreason", "bigcode", "lwsdisp", "escnull"] {
        assert_eq!(
            judge(reception, &read(n)).outcome,
            Outcome::Inconclusive,
            "{n}"
        );
    }
}

/// A number inside a configured range: the finding names the number seen
/// and the range it fell in, not the range's first number.
#[test]
fn a_range_hit_names_the_number_seen_and_the_range() {
    let policies = example_policies();
    let msg = "INVITE sip:+61399990000@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\nFrom: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:+61399990000@cidguard.test>\r\nCall-ID: 1@carrier.example\r\nCSeq: 1 INVITE\r\nP-Asserted-Identity: <sip:0370100150@carrier.example>\r\nX-Callback: +61 (0)3 7010 0177\r\nContent-Length: 0\r\n\r\n";
    let v = judge(&policies[0], msg.as_bytes());
    let detail = |h: &str| {
        v.findings
            .iter()
            .find(|f| f.header == h && f.kind == Kind::Number)
            .map(|f| (f.detail.clone(), f.matched.clone()))
            .unwrap_or_else(|| panic!("no number finding in {h}: {v:#?}"))
    };
    let (pai, matched) = detail("P-Asserted-Identity");
    assert!(
        pai.contains("\"0370100150\" is the organisation's number +61370100150 (in the range configured as \"+61 3 7010 0100-0199\", read in national form with trunk prefix)"),
        "{pai}"
    );
    assert_eq!(matched, "+61 3 7010 0100-0199");
    let (x, _) = detail("X-Callback");
    assert!(
        x.contains("+61370100177 (in the range configured as \"+61 3 7010 0100-0199\", read in international form with the trunk prefix kept after the country code) appears as \"+61 (0)3 7010 0177\""),
        "{x}"
    );
}
