//! The call-in self-test: anyone in the organisation dials a self-test
//! number from any phone (a worker's mobile, a DECT handset, a softphone)
//! and hears whether its caller ID is hidden.
//!
//! A call to a self-test number is judged like a test call (the same
//! verdict engine, every header) against [`policy`], and the verdict is
//! told to the caller ([`script_for`]) as early media: the endpoint's
//! [`crate::sip::endpoint::Disposition::Announce`] plays it and rejects the
//! call, which is never answered. This module is pure; the wiring into the
//! endpoint, history and alerts builds on it.
//!
//! What is said, and the caller's privacy. A number shown on the call is
//! read back digit by digit as the finding saw it, whether it is the
//! organisation's or not: a withheld-expected call from a worker's mobile
//! that shows the mobile's own number is exactly the leak the worker needs
//! to hear about. Reading it out discloses nothing: it is said only to
//! the phone that sent it, during that call. It is never stored, logged
//! or shown anywhere else: the clips that read it ([`Clip::Digit`]) and the
//! [`Digits`] they come from print no digits in `Debug`, and nothing here
//! keeps them.

pub mod privacy;

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{Config, Expect};
use crate::media::prompts::{self, Clip, Digits, Outcome, Prompts, ShownNumber};
use crate::verdict::numbers::NumberError;
use crate::verdict::{self, Finding, Kind, Policy, Verdict};

/// The name self-test verdicts carry as their "line" (when the call is
/// not a device's).
pub const LINE_NAME: &str = crate::plan::SELFTEST_LINE;

/// A call-in judged: what the caller hears, and the verdict made safe to
/// keep ([`privacy::scrub_verdict`]).
#[derive(Debug)]
pub struct CallIn {
    /// The device it is attributed to: the owner of the self-test number
    /// dialled, else the device whose number the call showed.
    pub device: Option<String>,
    /// The verdict, its line the device's name or [`LINE_NAME`], with a
    /// stranger's number or name replaced.
    pub verdict: Verdict,
    /// What is said to the caller (may read the number back: built before
    /// the verdict was scrubbed, and never printed).
    pub clips: Vec<Clip>,
}

/// Judge a call to a self-test number at once: with the device's policy
/// for a device's own number, else `[selftest]`'s. None when the plan has
/// no policy for it (a number without its section).
pub fn judge_call_in(
    callin: &crate::plan::CallInPlan,
    owner: &crate::plan::Owner,
    invite: &[u8],
) -> Option<CallIn> {
    use crate::plan::Owner;
    let (policy, own) = match owner {
        Owner::Organisation => (callin.policy()?, None),
        Owner::Device(i) => {
            let d = callin.devices().get(*i)?;
            (d.policy(), Some(d.name().to_string()))
        }
    };
    let mut verdict = verdict::judge(policy, invite);
    let clips = script_for(&verdict, policy);
    let device = own.or_else(|| {
        callin
            .devices()
            .iter()
            .find(|d| {
                verdict.findings.iter().any(|f| {
                    f.kind == Kind::Number && (d.has_number(&f.matched) || d.has_number(&f.seen))
                })
            })
            .map(|d| d.name().to_string())
    });
    privacy::scrub_verdict(&mut verdict, callin.keep());
    verdict.line = device.clone().unwrap_or_else(|| LINE_NAME.to_string());
    Some(CallIn {
        device,
        verdict,
        clips,
    })
}

/// The policy self-test calls are judged by: the organisation's identity,
/// with the `[selftest]` expectation (withheld, or its umbrella). None
/// without a `[selftest]` section.
pub fn policy(cfg: &Config) -> Result<Option<Policy>, NumberError> {
    let Some(st) = &cfg.selftest else {
        return Ok(None);
    };
    let org = Arc::new(verdict::OrgMatcher::new(&(&cfg.organisation).into())?);
    let line = verdict::LineSpec {
        name: LINE_NAME.into(),
        expect: st.expect,
        umbrella: st.umbrella.as_ref().map(|u| verdict::UmbrellaSpec {
            name: u.name.clone(),
            numbers: u.numbers.clone(),
        }),
    };
    Policy::new(org, &line).map(Some)
}

/// The prompts in use: the organisation's folder over the built-in voice.
pub fn prompts(cfg: &Config) -> Result<Prompts, Vec<prompts::PromptError>> {
    match cfg.selftest.as_ref().and_then(|st| st.prompts.as_deref()) {
        Some(dir) => Prompts::load(dir),
        None => Ok(Prompts::builtin()),
    }
}

/// Headers whose identity a phone displays as the caller.
const DISPLAYED: [&str; 4] = [
    "From",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
];

/// What a finding says about a displayed number: the text it was shown
/// as, if it is one.
fn shown_number(f: &Finding) -> Option<&str> {
    if !f.shown {
        return None;
    }
    match f.kind {
        // `seen` is the number as the message wrote it; without it the
        // entry matched could be a range, which must not be read as one
        // number.
        Kind::Number => Some(f.seen.as_str()),
        // Someone else's number presented where the call must be withheld
        // (the worker's own, say): `matched` is the user part presented.
        Kind::Presentation
            if DISPLAYED.contains(&f.header.as_str()) && looks_numeric(&f.matched) =>
        {
            Some(f.matched.as_str())
        }
        _ => None,
    }
}

/// A user part that is a number (digits, with `+` and separators), however
/// long.
fn looks_numeric(s: &str) -> bool {
    let s = s.split(';').next().unwrap_or_default().trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    s.chars().any(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || "-.() ".contains(c))
}

/// What the caller is told about a verdict.
pub fn outcome_for(v: &Verdict, policy: &Policy) -> Outcome {
    match v.outcome {
        verdict::Outcome::Pass if policy.expect == Expect::Umbrella => Outcome::UmbrellaPass,
        verdict::Outcome::Pass => Outcome::Pass,
        verdict::Outcome::Inconclusive => Outcome::Inconclusive,
        verdict::Outcome::Fail => {
            // The number a phone would display: From's first, as phones
            // without a trust relationship show it; else the first other.
            let numbers: Vec<(&Finding, &str)> = v
                .findings
                .iter()
                .filter_map(|f| shown_number(f).map(|n| (f, n)))
                .collect();
            let chosen = numbers
                .iter()
                .find(|(f, _)| f.header == "From")
                .or_else(|| numbers.first());
            let number = match chosen {
                None => ShownNumber::None,
                Some((_, text)) => match Digits::parse(text) {
                    Some(d) => ShownNumber::As(d),
                    None => ShownNumber::Unreadable,
                },
            };
            let org_name = v.findings.iter().any(|f| f.shown && f.kind == Kind::Name);
            let caller_name = v.findings.iter().any(|f| {
                f.shown
                    && DISPLAYED.contains(&f.header.as_str())
                    && match f.kind {
                        Kind::Descriptor => true,
                        // A name or a text user part presented that is not
                        // the organisation's: not an anonymity marker, not
                        // a number, not empty ("no display name").
                        Kind::Presentation => {
                            !f.matched.trim().is_empty()
                                && !looks_numeric(&f.matched)
                                && !verdict::names::is_anonymous_text(&f.matched)
                        }
                        _ => false,
                    }
            });
            Outcome::Leak {
                number,
                org_name,
                caller_name,
            }
        }
    }
}

/// What is said to a caller for a verdict: the clips, in order (see
/// [`prompts::script`]).
pub fn script_for(v: &Verdict, policy: &Policy) -> Vec<Clip> {
    prompts::script(&outcome_for(v, policy))
}

/// The `[selftest]` lines of `config check`.
pub fn summary(cfg: &Config) -> String {
    let mut s = String::new();
    s.push_str(&devices_summary(cfg));
    let Some(st) = &cfg.selftest else {
        return s;
    };
    let region = &cfg.organisation.region;
    let numbers: Vec<String> = st
        .numbers
        .iter()
        .map(|n| match crate::plan::dial::dial_user(n, Some(region)) {
            Ok(d) if d != *n => format!("{n}, dialled as {d}"),
            _ => n.clone(),
        })
        .collect();
    let expect = match (&st.expect, &st.umbrella) {
        (Expect::Umbrella, Some(u)) => format!("the umbrella name {:?}", u.name),
        _ => "withheld".into(),
    };
    let _ = writeln!(
        s,
        "Self-test: {} number{} ({}), judged as {expect}; the result is played as early media, then {} (never answered); recorded as \"{LINE_NAME}\" (or as the device whose number it showed)",
        st.numbers.len(),
        if st.numbers.len() == 1 { "" } else { "s" },
        numbers.join("; "),
        st.reject_code,
    );
    let voice = match prompts(cfg) {
        Ok(p) => {
            let own = p.from_files();
            let names: Vec<&str> = [Clip::OrgName, Clip::UmbrellaName]
                .into_iter()
                .filter(|c| p.clip(*c).is_some())
                .map(|c| c.stem())
                .collect();
            format!(
                "{}; names spoken: {}",
                if own.is_empty() {
                    "the built-in voice".to_string()
                } else {
                    format!(
                        "your recordings {}, the built-in voice for the rest",
                        own.join(", ")
                    )
                },
                if names.is_empty() {
                    "none (record org-name.wav / umbrella-name.wav to have them said)".to_string()
                } else {
                    names.join(", ")
                }
            )
        }
        // Reported as problems already; config check stops before this.
        Err(_) => "unreadable (see the problems above)".into(),
    };
    let _ = writeln!(s, "  Prompts: {voice}");
    s
}

/// The `[[device]]` lines of `config check`: each device, its numbers
/// count, its self-test number and reminders.
fn devices_summary(cfg: &Config) -> String {
    let mut s = String::new();
    for d in &cfg.devices {
        let expect = match (&d.expect, &d.umbrella) {
            (Expect::Umbrella, Some(u)) => format!("the umbrella name {:?}", u.name),
            _ => "withheld".into(),
        };
        let selftest = match &d.selftest_number {
            Some(n) => format!("; its self-test number {n}"),
            None => "; no self-test number of its own".into(),
        };
        let remind = match d.remind_every {
            Some(r) if d.selftest_number.is_some() && !r.is_zero() => {
                let secs = r.as_secs();
                let every = if secs >= 86400 && secs % 86400 == 0 {
                    format!("{} days", secs / 86400)
                } else {
                    format!("{secs} s")
                };
                format!("; {} reminded after {every} without a call-in", d.owner)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "Device {}: {} number{} protected, judged as {expect}{selftest}{remind}",
            d.name,
            d.numbers.len(),
            if d.numbers.len() == 1 { "" } else { "s" },
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]
names = ["Eastside Refuge"]
hosts = ["pbx.eastside-refuge.org.au"]

[endpoint]
listen = ["udp:127.0.0.1:0"]
numbers = ["0399990000"]

[[line]]
name = "reception"
expect = "withheld"
"#;

    fn cfg(selftest: &str) -> Config {
        Config::from_toml(
            &format!("{BASE}\n[selftest]\n{selftest}\n"),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    fn problems(selftest: &str) -> Vec<(String, String)> {
        let c: Config = toml::from_str(&format!("{BASE}\n[selftest]\n{selftest}\n")).unwrap();
        crate::plan::problems(&c)
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect()
    }

    fn invite(from: &str, extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:0399990001@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: {from};tag=1\r\nTo: <sip:0399990001@cidguard.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn said(c: &Config, from: &str, extra: &str) -> Vec<Clip> {
        let p = policy(c).unwrap().unwrap();
        let v = verdict::judge(&p, &invite(from, extra));
        script_for(&v, &p)
    }

    fn digits(s: &str) -> Vec<Clip> {
        Digits::parse(s).unwrap().clips()
    }

    #[test]
    fn config_defaults() {
        let c = cfg("numbers = [\"0399990001\"]");
        let st = c.selftest.as_ref().unwrap();
        assert_eq!(st.expect, Expect::Withheld);
        assert_eq!(st.reject_code, 486);
        assert!(st.prompts.is_none());
        assert_eq!(policy(&c).unwrap().unwrap().line, LINE_NAME);
        let text = summary(&c);
        assert!(text.contains("1 number (0399990001)"), "{text}");
        assert!(text.contains("judged as withheld"), "{text}");
        assert!(text.contains("486 (never answered)"), "{text}");
        assert!(text.contains("the built-in voice"), "{text}");
        let none = Config::from_toml(BASE, Path::new("t.toml")).unwrap();
        assert!(policy(&none).unwrap().is_none());
        assert_eq!(summary(&none), "");
    }

    #[test]
    fn config_problems_name_the_field() {
        let fields = |s: &str| -> Vec<String> { problems(s).into_iter().map(|p| p.0).collect() };
        assert_eq!(fields("numbers = []"), ["selftest.numbers"]);
        assert_eq!(
            fields("numbers = [\"03 9999 0000\"]"),
            ["selftest.numbers[0]"]
        );
        let p = problems("numbers = [\"+61 3 9999 0000\"]");
        assert!(p[0].1.contains("endpoint.numbers[0]"), "{p:?}");
        assert_eq!(
            fields("numbers = [\"0399990001\", \"+61399990001\"]"),
            ["selftest.numbers[1]"]
        );
        assert_eq!(
            fields("numbers = [\"not a number!\"]"),
            ["selftest.numbers[0]"]
        );
        assert_eq!(
            fields("numbers = [\"0399990001\"]\nexpect = \"umbrella\""),
            ["selftest.umbrella"]
        );
        assert_eq!(
            fields("numbers = [\"0399990001\"]\numbrella = { name = \"Salvation Army\" }"),
            ["selftest.umbrella"]
        );
        assert_eq!(
            fields("numbers = [\"0399990001\"]\nreject_code = 200"),
            ["selftest.reject_code"]
        );
        assert_eq!(
            fields("numbers = [\"0399990001\"]\nprompts = \"/nonexistent/prompts\""),
            ["selftest.prompts"]
        );
        assert!(fields("numbers = [\"0399990001\"]\nexpect = \"umbrella\"\numbrella = { name = \"Salvation Army\", numbers = [\"+61 2 9000 0000\"] }").is_empty());
        // Without an endpoint nothing would receive the calls.
        let no_ep = BASE.replace(
            "[endpoint]\nlisten = [\"udp:127.0.0.1:0\"]\nnumbers = [\"0399990000\"]\n",
            "",
        );
        let c: Config = toml::from_str(&format!(
            "{no_ep}\n[selftest]\nnumbers = [\"0399990001\"]\n"
        ))
        .unwrap();
        assert!(crate::plan::problems(&c)
            .iter()
            .any(|p| p.field == "selftest"));
        // Unknown fields are refused.
        assert!(toml::from_str::<Config>(&format!(
            "{BASE}\n[selftest]\nnumbers = []\nvoice = \"x\"\n"
        ))
        .is_err());
    }

    #[test]
    fn prompt_folder_problems_are_each_listed() {
        let dir = tempfile::tempdir().unwrap();
        crate::media::wav::write(&dir.path().join("orgname.wav"), &[1; 100]).unwrap();
        std::fs::write(dir.path().join("pass.wav"), b"RIFF....WAVEjunk").unwrap();
        let p = problems(&format!(
            "numbers = [\"0399990001\"]\nprompts = {:?}",
            dir.path().display().to_string()
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|(f, _)| f == "selftest.prompts"));
        assert!(
            p[0].1.contains("orgname.wav") && p[0].1.contains("org-name.wav"),
            "{p:?}"
        );
        assert!(p[1].1.contains("pass.wav"), "{p:?}");
        // A good folder: the summary names the recordings and the names.
        let good = tempfile::tempdir().unwrap();
        crate::media::wav::write(&good.path().join("org-name.wav"), &[1; 100]).unwrap();
        let c = cfg(&format!(
            "numbers = [\"0399990001\"]\nprompts = {:?}",
            good.path().display().to_string()
        ));
        let text = summary(&c);
        assert!(text.contains("your recordings org-name.wav"), "{text}");
        assert!(text.contains("names spoken: org-name"), "{text}");
    }

    /// The cases a caller hears, from real verdicts.
    #[test]
    fn what_callers_hear() {
        use Clip::*;
        let c = cfg("numbers = [\"0399990001\"]");
        // Withheld.
        assert_eq!(
            said(
                &c,
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
                "Privacy: id\r\n"
            ),
            [Pass, Closing]
        );
        // The organisation's number in P-Asserted-Identity: read as seen.
        let mut want = vec![LeakNumber, ShowsAs];
        want.extend(digits("+61370100142"));
        want.push(Closing);
        assert_eq!(
            said(
                &c,
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
                "P-Asserted-Identity: <sip:+61370100142@pbx.eastside-refuge.org.au>\r\n"
            ),
            want
        );
        // A number in the organisation's range, shown nationally in From,
        // with the name: the number as the message wrote it, then the name.
        let mut want = vec![LeakNumber, ShowsAs];
        want.extend(digits("0370100155"));
        want.extend([LeakOrgName, OrgName, Closing]);
        assert_eq!(
            said(
                &c,
                "\"Eastside Refuge\" <sip:0370100155@pbx.eastside-refuge.org.au>",
                ""
            ),
            want
        );
        // A worker's own mobile number on a withheld-expected call: not the
        // organisation's, still read to the caller (and only to them).
        let mut want = vec![LeakNumber, ShowsAs];
        want.extend(digits("0412345678"));
        want.push(Closing);
        assert_eq!(said(&c, "<sip:0412345678@carrier.example>", ""), want);
        // Another name (the worker's, say).
        assert_eq!(
            said(
                &c,
                "\"Jo Citizen\" <sip:anonymous@anonymous.invalid>",
                "Privacy: id\r\n"
            ),
            [LeakCallerName, Closing]
        );
        // The organisation's number only where phones don't display it.
        assert_eq!(
            said(
                &c,
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
                "Privacy: id\r\nX-Billing: 0370100142\r\n"
            ),
            [LeakOther, Closing]
        );
        // A number too long to be a phone number is not read.
        assert_eq!(
            said(&c, &format!("<sip:{}@carrier.example>", "1".repeat(30)), ""),
            [LeakNumber, Closing]
        );
        // An INVITE that can't be read can't be judged.
        let p = policy(&c).unwrap().unwrap();
        let v = verdict::judge(&p, b"INVITE\r\n\r\n");
        assert_eq!(script_for(&v, &p), [Inconclusive, Closing]);
    }

    #[test]
    fn umbrella_callers_hear_the_umbrella() {
        use Clip::*;
        let c = cfg("numbers = [\"0399990001\"]\nexpect = \"umbrella\"\numbrella = { name = \"Salvation Army\", numbers = [\"+61 2 9000 0000\"] }");
        assert_eq!(
            said(
                &c,
                "\"Salvation Army\" <sip:+61290000000@salvationarmy.org.au>",
                ""
            ),
            [UmbrellaPass, UmbrellaName, Closing]
        );
        // Anonymous where the umbrella name should be: a fail, but no name
        // or number shown.
        assert_eq!(
            said(
                &c,
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
                "Privacy: id\r\n"
            ),
            [LeakOther, Closing]
        );
    }

    /// Nothing about a script prints the number it reads.
    #[test]
    fn scripts_print_no_digits() {
        let c = cfg("numbers = [\"0399990001\"]");
        let clips = said(&c, "<sip:0412345678@carrier.example>", "");
        let printed = format!("{clips:?}");
        assert!(
            !printed.contains('4') && !printed.contains('8'),
            "{printed}"
        );
        let p = policy(&c).unwrap().unwrap();
        let v = verdict::judge(&p, &invite("<sip:0412345678@carrier.example>", ""));
        let printed = format!("{:?}", outcome_for(&v, &p));
        assert!(!printed.contains("0412345678"), "{printed}");
    }
}

#[cfg(test)]
mod callin_tests {
    use super::privacy::{mask_numbers, scrub_message, NUMBER_NOT_KEPT};
    use super::*;
    use crate::plan::{Owner, Plan};
    use std::path::Path;

    const CFG: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]
names = ["Eastside Refuge"]

[endpoint]
listen = ["udp:127.0.0.1:0"]
numbers = ["0399990000"]

[[line]]
name = "reception"
expect = "withheld"

[selftest]
numbers = ["0399990001"]

[[device]]
name = "jo-mobile"
owner = "jo@example.org"
numbers = ["0491 570 156"]
selftest_number = "0399990002"
"#;

    fn plan() -> Plan {
        Plan::from_toml(CFG, Path::new("t.toml")).unwrap()
    }

    fn invite(from: &str) -> Vec<u8> {
        format!("INVITE sip:0399990001@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nFrom: {from};tag=1\r\nTo: <sip:0399990001@cidguard.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").into_bytes()
    }

    /// The self-test numbers reach the endpoint, never a line's targets.
    #[test]
    fn selftest_numbers_are_the_endpoints_but_no_lines_target() {
        let p = plan();
        let ep = p.endpoint().unwrap();
        assert_eq!(ep.numbers(), ["0399990000"]);
        assert_eq!(ep.selftest_numbers(), ["0399990001", "0399990002"]);
        let nums: Vec<&str> = ep.sip().numbers.iter().map(|n| n.number.as_str()).collect();
        assert_eq!(nums, ["0399990000", "0399990001", "0399990002"]);
        assert_eq!(p.callin().owner_of("0399990002"), Some(&Owner::Device(0)));
        assert_eq!(p.callin().owner_of("0399990000"), None);
    }

    /// A device's number is protected on every line, quoted as seen.
    #[test]
    fn a_devices_number_is_a_leak_on_a_line() {
        let p = plan();
        let v = verdict::judge(
            p.line("reception").unwrap().policy(),
            &invite("<sip:+61491570156@carrier.example>"),
        );
        assert_eq!(v.outcome, verdict::Outcome::Fail);
        assert!(v.findings.iter().any(|f| f.kind == Kind::Number
            && f.matched == "0491 570 156"
            && f.seen.contains("491570156")));
    }

    /// A stranger's number is read to the caller but kept nowhere in the
    /// verdict; a device's number attributes the call.
    #[test]
    fn a_strangers_number_is_not_kept_and_a_devices_attributes() {
        let p = plan();
        let stranger = judge_call_in(
            p.callin(),
            &Owner::Organisation,
            &invite("\"Jo Citizen\" <sip:0412345678@carrier.example>"),
        )
        .unwrap();
        assert_eq!(stranger.device, None);
        assert_eq!(stranger.verdict.line, LINE_NAME);
        assert_eq!(stranger.verdict.outcome, verdict::Outcome::Fail);
        let json = serde_json::to_string(&stranger.verdict).unwrap();
        assert!(
            !json.contains("412345678") && !json.contains("Jo Citizen"),
            "{json}"
        );
        assert!(json.contains(NUMBER_NOT_KEPT), "{json}");
        // The caller still hears it.
        assert!(stranger.clips.contains(&Clip::ShowsAs));
        let device = judge_call_in(
            p.callin(),
            &Owner::Organisation,
            &invite("<sip:0491570156@carrier.example>"),
        )
        .unwrap();
        assert_eq!(device.device.as_deref(), Some("jo-mobile"));
        assert_eq!(device.verdict.line, "jo-mobile");
        // Its own self-test number: the device's, however it presents.
        let own = judge_call_in(
            p.callin(),
            &Owner::Device(0),
            &invite("\"Anonymous\" <sip:anonymous@anonymous.invalid>"),
        )
        .unwrap();
        assert_eq!(own.device.as_deref(), Some("jo-mobile"));
    }

    /// Evidence keeps its headers, the organisation's and devices'
    /// numbers and addresses; a stranger's digits and name go.
    #[test]
    fn evidence_masks_a_strangers_number_and_name() {
        let p = plan();
        let keep = p.callin().keep();
        let msg = String::from_utf8(invite("\"Jo Citizen\" <sip:0412 345 678@carrier.example>"))
            .unwrap()
            + "P-Asserted-Identity: <sip:+61370100142@pbx.example>, <tel:0491570156>\r\n";
        let out = scrub_message(&msg, keep);
        assert!(!out.contains("Jo Citizen") && !out.contains("345"), "{out}");
        assert!(
            out.contains("From: \"(not kept)\" <sip:•••• ••• •••@carrier.example>;tag=1"),
            "{out}"
        );
        assert!(
            out.contains("+61370100142") && out.contains("0491570156"),
            "{out}"
        );
        assert!(out.contains("Via: SIP/2.0/UDP 192.0.2.1:5060"), "{out}");
        assert_eq!(mask_numbers("CSeq: 1 INVITE", keep), "CSeq: 1 INVITE");
    }

    /// Names and numbers a self-test can't share.
    #[test]
    fn device_problems_name_their_field() {
        let fields = |extra: &str, line_name: &str| -> Vec<String> {
            let text =
                CFG.replace("name = \"reception\"", &format!("name = \"{line_name}\"")) + extra;
            let c: Config = toml::from_str(&text).unwrap();
            crate::plan::problems(&c)
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        assert!(fields("", "reception").is_empty());
        assert_eq!(fields("", "self-test"), ["line[0] (self-test).name"]);
        assert_eq!(fields("", "jo-mobile"), ["line[0] (jo-mobile).name"]);
        let dev = |body: &str| format!("\n[[device]]\n{body}\n");
        assert_eq!(
            fields(
                &dev("name = \"b\"\nowner = \"not an address\""),
                "reception"
            ),
            ["device[1] (b).owner"]
        );
        assert_eq!(
            fields(
                &dev("name = \"b\"\nowner = \"b@example.org\"\nselftest_number = \"0399990001\""),
                "reception"
            ),
            ["device[1] (b).selftest_number"]
        );
        assert_eq!(
            fields(
                &dev("name = \"b\"\nowner = \"b@example.org\"\nremind_every = \"30d\""),
                "reception"
            ),
            ["device[1] (b).remind_every"]
        );
        assert_eq!(
            fields(
                &dev("name = \"b\"\nowner = \"b@example.org\"\nnumbers = [\"12\"]"),
                "reception"
            ),
            ["device[1] (b).numbers[0]"]
        );
        assert_eq!(
            fields(
                &dev("name = \"jo-mobile\"\nowner = \"b@example.org\""),
                "reception"
            ),
            ["device[1] (jo-mobile).name"]
        );
        assert_eq!(
            fields(
                &dev("name = \"b\"\nowner = \"b@example.org\"\nexpect = \"umbrella\""),
                "reception"
            ),
            ["device[1] (b).umbrella"]
        );
    }
}
