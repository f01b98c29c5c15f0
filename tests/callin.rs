//! The call-in self-test end to end: `cidguard run` with its endpoint
//! behind a real Kamailio; a SIPp caller (a line of the PBX, its caller-ID
//! rule set per call) dials a self-test number. The daemon judges the call
//! at once, plays the result as early media, rejects it (never a 200),
//! records it with trigger `call-in` and alerts a leak at once (alert files
//! on disk).
//!
//! Cases: withheld passes; the organisation's number in From fails and
//! alerts; a device's number in From is attributed to the device; a
//! device with an umbrella expectation passes with the umbrella; a
//! stranger's number is nowhere in the history database's bytes, the
//! daemon's log or the dashboard; the per-source rate limit refuses the
//! fourth call-in at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cidguard::check::result::Trigger;
use cidguard::store::{CheckQuery, Store, StoredCheck};
use cidguard::verdict::Outcome;

use crate::support::net::free_port;
use crate::support::rtp_sink::RtpSink;
use crate::support::{self, poll_until, Kamailio, KamailioOpts, Sipp, SippOpts, Transport};

/// The organisation's self-test number (`[selftest]`).
const SELFTEST: &str = "0399990001";
/// The device "jo-mobile"'s own self-test number.
const JO_SELFTEST: &str = "0399990002";
/// The device "outreach-mobile"'s own self-test number (umbrella).
const OUTREACH_SELFTEST: &str = "0399990003";
/// Jo's mobile number, as a carrier delivers it.
const JO_NUMBER: &str = "0491570156";
/// A number that is neither the organisation's nor a device's (from the
/// range set aside for drama).
const STRANGER: &str = "0491570110";

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    pbx: Kamailio,
    web_port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn mail(&self) -> PathBuf {
        self.dir.path().join("mail")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
    /// Every recorded check of `line`, newest first.
    fn checks(&self, line: &str) -> Vec<StoredCheck> {
        let Ok(store) = Store::open_existing(&self.state().join(Store::FILE_NAME)) else {
            return Vec::new();
        };
        let mut q = CheckQuery::line(line);
        q.limit = 100;
        store.checks(&q).map(|p| p.checks).unwrap_or_default()
    }
    /// Wait until `line` has `n` checks; returns them, newest first.
    fn wait_checks(&self, line: &str, n: usize) -> Vec<StoredCheck> {
        poll_until(
            Duration::from_secs(30),
            "the call-in to be recorded",
            || {
                let c = self.checks(line);
                Ok((c.len() >= n).then_some(c))
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", support::tail(&self.log(), 40)))
    }
    /// The alert files written so far.
    fn alerts(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.mail())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Start Kamailio and `cidguard run` with the self-test numbers routed to
/// the daemon's endpoint.
fn start() -> Daemon {
    let pbx = Kamailio::start(KamailioOpts::default()).expect("pbx");
    let dir = tempfile::tempdir().expect("tmp");
    let sip_port = free_port().expect("port");
    let web_port = free_port().expect("port");
    std::fs::create_dir_all(dir.path().join("mail")).expect("mail dir");
    for n in [SELFTEST, JO_SELFTEST, OUTREACH_SELFTEST] {
        pbx.set_endpoint(n, &format!("sip:127.0.0.1:{sip_port};transport=udp"))
            .expect("route");
    }
    let cfg = format!(
        r#"
{org}

[endpoint]
listen = ["udp:127.0.0.1:{sip_port}"]
numbers = ["0399990000"]

[daemon]
state_dir = "{state}"
default_schedule = "0 0 3 1 1 *"

[dashboard]
listen = "127.0.0.1:{web_port}"

[alerts]
recipients = ["noc@eastside-refuge.org.au"]
from = "cidguard <cidguard@eastside-refuge.org.au>"
file = {{ dir = "{mail}" }}

[[line]]
name = "reception"
expect = "withheld"

[selftest]
numbers = ["{SELFTEST}"]

[[device]]
name = "jo-mobile"
owner = "jo@eastside-refuge.org.au"
numbers = ["+61 491 570 156"]
selftest_number = "{JO_SELFTEST}"

[[device]]
name = "outreach-mobile"
owner = "outreach@eastside-refuge.org.au"
numbers = ["+61 491 570 157"]
expect = "umbrella"
umbrella = {{ name = "Salvation Army", numbers = ["+61 2 9000 0000"] }}
selftest_number = "{OUTREACH_SELFTEST}"
"#,
        org = crate::support::org::TABLE,
        state = dir.path().join("state").display(),
        mail = dir.path().join("mail").display(),
    );
    let cfg_path = dir.path().join("cidguard.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_cidguard"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("CIDGUARD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start cidguard run");
    let d = Daemon {
        child,
        dir,
        pbx,
        web_port,
    };
    poll_until(Duration::from_secs(20), "the daemon's dashboard", || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", web_port))
            .ok()
            .map(|_| ()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", support::tail(&d.log(), 40)));
    d
}

/// What one call-in did, from the caller's side.
struct Heard {
    /// Final status of the authenticated INVITE.
    final_status: Option<u16>,
    /// A 183 with SDP arrived (the result was played).
    progress: bool,
    /// A 2xx for the INVITE arrived (it must never).
    answered: bool,
}

/// Line 201 dials `number` with caller-ID rule `rule` and From user
/// `from_user`, offering PCMU.
fn dial(d: &Daemon, number: &str, rule: &str, from_user: &str) -> Heard {
    d.pbx.set_rule_name("201", rule).expect("rule");
    let line = support::Line::get("201");
    let sink = RtpSink::start();
    let opts = SippOpts::uac(
        support::tests_dir().join("sipp/selftest/call.xml"),
        Transport::Udp,
        d.pbx.udp_addr(),
    )
    .service(number)
    .auth(line.username, line.password)
    .key("line", from_user)
    .key("rtp_port", &sink.port().to_string())
    .key("fmt", "0")
    .key("enc", "PCMU")
    .timeout(Duration::from_secs(60));
    let out = Sipp::run(opts).expect("run SIPp");
    drop(sink.finish());
    let invite = |m: &support::TraceMessage| m.header("CSeq").is_some_and(|c| c.contains("INVITE"));
    let responses = out.received_responses();
    Heard {
        final_status: responses
            .iter()
            .filter(|m| invite(m))
            .filter_map(|m| m.status())
            .rfind(|s| *s >= 200 && *s != 407),
        progress: responses.iter().any(|m| m.status() == Some(183)),
        answered: responses
            .iter()
            .any(|m| invite(m) && m.status().is_some_and(|s| (200..300).contains(&s))),
    }
}

fn assert_played_and_rejected(h: &Heard, what: &str) {
    assert!(!h.answered, "{what}: the call-in was answered");
    assert!(h.progress, "{what}: no 183 with the result");
    assert_eq!(h.final_status, Some(486), "{what}");
}

/// Withheld passes (recorded as "self-test", trigger call-in, no alert);
/// the organisation's number in From fails and alerts at once (no
/// re-check: nobody can re-dial for the caller); a device with an umbrella
/// expectation, called on its own self-test number, passes with the
/// umbrella.
#[test]
fn call_ins_are_judged_recorded_and_a_leak_alerts_at_once() {
    if support::skip_without_peers() {
        return;
    }
    let d = start();
    let h = dial(&d, SELFTEST, "withheld", "201");
    assert_played_and_rejected(&h, "withheld");
    let c = d.wait_checks("self-test", 1);
    assert_eq!(c[0].result.outcome, Outcome::Pass, "{:?}", c[0].result);
    assert_eq!(c[0].result.trigger, Trigger::CallIn { device: None });

    let h = dial(&d, SELFTEST, "from-leak", "201");
    assert_played_and_rejected(&h, "from-leak");
    let c = d.wait_checks("self-test", 2);
    assert_eq!(c[0].result.outcome, Outcome::Fail, "{:?}", c[0].result);
    assert!(
        c[0].result.findings.iter().any(|f| f.header == "From"
            && f.kind == cidguard::verdict::Kind::Number
            && f.matched == "+61 3 7010 0142"),
        "{:?}",
        c[0].result.findings
    );
    let alerts = poll_until(Duration::from_secs(30), "the leak alert", || {
        let a = d.alerts();
        Ok((!a.is_empty()).then_some(a))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", support::tail(&d.log(), 40)));
    assert_eq!(alerts.len(), 1, "one alert, for the leak alone");
    assert!(
        alerts[0].contains("PRIVACY LEAK") && alerts[0].contains("self-test"),
        "{}",
        alerts[0]
    );

    let h = dial(&d, OUTREACH_SELFTEST, "umbrella", "201");
    assert_played_and_rejected(&h, "umbrella");
    let c = d.wait_checks("outreach-mobile", 1);
    assert_eq!(c[0].result.outcome, Outcome::Pass, "{:?}", c[0].result);
    assert_eq!(
        c[0].result.trigger,
        Trigger::CallIn {
            device: Some("outreach-mobile".into())
        }
    );
    assert_eq!(c[0].result.expected, cidguard::config::Expect::Umbrella);
}

/// A device's number shown on a call to the organisation's self-test
/// number is that device's check (and its leak); a stranger's number is
/// judged, played back to the caller, and kept nowhere: not in the
/// history database's bytes, the daemon's log, or the dashboard.
#[test]
fn a_devices_number_is_attributed_and_a_strangers_is_kept_nowhere() {
    if support::skip_without_peers() {
        return;
    }
    let d = start();
    let h = dial(&d, SELFTEST, "mobile", JO_NUMBER);
    assert_played_and_rejected(&h, "device's number");
    let c = d.wait_checks("jo-mobile", 1);
    assert_eq!(c[0].result.outcome, Outcome::Fail, "{:?}", c[0].result);
    assert_eq!(
        c[0].result.trigger,
        Trigger::CallIn {
            device: Some("jo-mobile".into())
        }
    );
    let f = &c[0].result.findings;
    assert!(
        f.iter()
            .any(|f| f.header == "From" && f.matched == "+61 491 570 156"),
        "the device's number is quoted: {f:?}"
    );
    poll_until(Duration::from_secs(30), "the device's leak alert", || {
        Ok(d.alerts()
            .iter()
            .any(|a| a.contains("jo-mobile"))
            .then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", support::tail(&d.log(), 40)));

    let h = dial(&d, SELFTEST, "mobile", STRANGER);
    assert_played_and_rejected(&h, "stranger's number");
    let c = d.wait_checks("self-test", 1);
    let r = &c[0].result;
    assert_eq!(r.outcome, Outcome::Fail, "{r:?}");
    assert!(
        r.findings
            .iter()
            .any(|f| f.header == "From" && f.value.contains("not the organisation's")),
        "{:?}",
        r.findings
    );
    // The evidence is kept, every header, with the number masked.
    let store = Store::open_existing(&d.state().join(Store::FILE_NAME)).expect("history");
    let full = store.check(c[0].id).expect("read").expect("the check");
    let invite = full
        .result
        .evidence
        .iter()
        .find(|e| e.text.starts_with("INVITE "))
        .expect("the INVITE is kept");
    assert!(
        invite
            .text
            .contains("From: <sip:••••••••••@mobile.carrier.invalid>"),
        "{}",
        invite.text
    );
    // What the dashboard's call-in view reads: the latest call-ins of
    // every phone, and a device's last.
    let all = store.call_ins(10).expect("call-ins");
    let lines: Vec<&str> = all.iter().map(|c| c.result.line.as_str()).collect();
    assert_eq!(lines, ["self-test", "jo-mobile"]);
    let last = store.last_call_in("jo-mobile").expect("read");
    assert_eq!(last.map(|c| c.result.outcome), Some(Outcome::Fail));
    assert!(store.last_call_in("reception").expect("read").is_none());
    drop(store);
    // The dashboard: the overview, the check page and the API.
    let id = c[0].id;
    let mut pages = String::new();
    for path in [
        "/".to_string(),
        format!("/checks/{id}"),
        format!("/api/v1/checks/{id}"),
        "/api/v1/lines".to_string(),
        "/lines/self-test".to_string(),
        "/api/v1/lines/self-test/checks".to_string(),
    ] {
        pages.push_str(&get(d.web_port, &path));
    }
    assert!(pages.contains("self-test"), "{pages}");
    let db = db_bytes(&d.state());
    let log = d.log();
    for (what, text) in [
        ("the dashboard", pages.as_bytes()),
        ("the history", &db),
        ("the log", log.as_bytes()),
    ] {
        for form in [STRANGER, "491570110", "61491570110"] {
            assert!(
                !contains(text, form.as_bytes()),
                "the stranger's number ({form}) is in {what}"
            );
        }
    }
    // The device's own number may be kept (it is the organisation's to
    // protect), and it is what the device's leak is about.
    assert!(contains(&db, b"491 570 156") || contains(&db, JO_NUMBER.as_bytes()));
}

/// Four call-ins at once from one source (the PBX): the limit lets three
/// through (burst 3, then 6 a minute), and the fourth is refused 486 at
/// once, without the result played, and is not recorded.
#[test]
fn call_ins_over_the_rate_limit_are_refused_unjudged() {
    if support::skip_without_peers() {
        return;
    }
    let d = start();
    let heard: Vec<Heard> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| s.spawn(|| dial(&d, SELFTEST, "withheld", "201")))
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().expect("caller"))
            .collect()
    });
    assert!(heard
        .iter()
        .all(|h| !h.answered && h.final_status == Some(486)));
    let played = heard.iter().filter(|h| h.progress).count();
    assert_eq!(played, 3, "three played, one refused at once");
    d.wait_checks("self-test", 3);
    poll_until(Duration::from_secs(10), "the refusal logged", || {
        Ok(d.log().contains("over the rate limit").then_some(()))
    })
    .expect("logged");
    assert_eq!(
        d.checks("self-test").len(),
        3,
        "the refused call-in is not recorded"
    );
}

/// One HTTP GET over a real socket; the whole response.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("dashboard");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The database file and its write-ahead log, as bytes.
fn db_bytes(state: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(state).expect("state dir").flatten() {
        if e.path().is_file() {
            out.extend(std::fs::read(e.path()).unwrap_or_default());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const REMINDER_CONFIG: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]

[endpoint]
listen = ["udp:127.0.0.1:0"]
numbers = ["0399990000"]

[daemon]
state_dir = "STATE"
default_schedule = "0 0 3 1 1 *"

[alerts]
recipients = ["noc@eastside-refuge.org.au"]
from = "cidguard <cidguard@eastside-refuge.org.au>"
file = { dir = "MAIL" }

[[line]]
name = "reception"
expect = "withheld"

[[device]]
name = "jo-mobile"
owner = "jo@eastside-refuge.org.au"
numbers = ["+61 491 570 156"]
selftest_number = "0399990002"
remind_every = "EVERY"
"#;

/// A device never tested is reminded once per `remind_every`, counting
/// from when it was first seen: not before, not twice for one period, and
/// not again after a restart (the state is in the history).
#[test]
fn a_device_reminder_comes_once_per_period_across_restarts() {
    use chrono::{TimeZone, Utc};
    use cidguard::alert::step::device_reminders;
    let dir = tempfile::tempdir().expect("tmp");
    let text = REMINDER_CONFIG
        .replace("STATE", &dir.path().join("state").display().to_string())
        .replace("MAIL", &dir.path().join("mail").display().to_string())
        .replace("EVERY", "30d");
    let plan = cidguard::plan::Plan::from_toml(&text, Path::new("t.toml")).expect("plan");
    let routes = cidguard::alert::channel::routes(plan.config());
    let devices = plan.callin().devices();
    let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
    let day = chrono::Duration::days(1);
    let db = dir.path().join("history.db");
    let count = |at| {
        let store = Store::open(&db).expect("history");
        device_reminders(&store, &routes, devices, at)
            .expect("step")
            .len()
    };
    assert_eq!(count(t0), 0, "first seen: counting starts");
    assert_eq!(count(t0 + day * 29), 0);
    assert_eq!(count(t0 + day * 30), 1, "due after 30 days");
    assert_eq!(count(t0 + day * 30 + chrono::Duration::hours(1)), 0, "once");
    assert_eq!(count(t0 + day * 59), 0, "a reopened history remembers");
    assert_eq!(count(t0 + day * 60), 1, "and the next period's");
}

/// The running daemon sends the reminder through the alert channels,
/// addressed to the device's owner, naming the device and the number to
/// dial.
#[test]
fn the_daemon_reminds_a_devices_owner() {
    let dir = tempfile::tempdir().expect("tmp");
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).expect("mail");
    let text = REMINDER_CONFIG
        .replace("STATE", &dir.path().join("state").display().to_string())
        .replace("MAIL", &mail.display().to_string())
        .replace("EVERY", "1s");
    let cfg = dir.path().join("cidguard.toml");
    std::fs::write(&cfg, text).expect("config");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cidguard"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start cidguard run");
    let found = poll_until(Duration::from_secs(30), "a reminder email", || {
        Ok(std::fs::read_dir(&mail)?
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .find(|m| m.contains("X-Cidguard-Alert: device-reminder")))
    });
    let _ = child.kill();
    let _ = child.wait();
    let m = found.unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        )
    });
    let to = m
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("a To header");
    assert!(to.contains("jo@eastside-refuge.org.au"), "{to}");
    assert!(m.contains("jo-mobile") && m.contains("0399990002"), "{m}");
}
