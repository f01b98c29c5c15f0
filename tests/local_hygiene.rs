//! Local files and output hygiene, as a local user or a hostile caller
//! would attack them:
//! - `cidguard check` evidence never goes through a link planted in a
//!   shared folder, and a folder that is a link, someone else's, or open
//!   to others is refused before any call is placed;
//! - control characters from the wire (ESC, BEL, CR, U+009B, U+202E) never
//!   reach the terminal or the log raw: `sip listen`, the daemon's
//!   stray-call log lines, `inspect` text, history text and CSV, alert
//!   subjects. The exact bytes stay in the evidence and the JSON.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use cidguard::check::result::Trigger;
use cidguard::plan::Plan;
use cidguard::store::{Record, Store};
use cidguard::verdict::{self, Outcome};

use crate::check_kamailio::config_text;
use crate::support::{self, org, Kamailio, KamailioOpts, Transport};

fn cidguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cidguard"))
}

/// What a hostile peer puts in a header: an OSC that retitles the terminal
/// (ended by BEL), a clear-screen, a bare CR that rewrites the line, the
/// 8-bit CSI, and a right-to-left override.
const EVIL: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}";
/// The same as the one escaper shows it.
const EVIL_SHOWN: &str = "\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\r\\u{9b}31m\\u{202e}";

/// Characters that must never reach an output raw (a line feed only ends a
/// line).
fn raw_controls(out: &str) -> Vec<char> {
    out.chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

fn assert_clean(what: &str, out: &str) {
    let raw = raw_controls(out);
    assert!(raw.is_empty(), "{what}: raw {raw:?} in:\n{out:?}");
}

/// An INVITE with hostile text in the dialled number, the Call-ID, the
/// display name, a header's name and the Server header; it names the
/// organisation (in From) and its number (in the hostile header).
fn hostile_invite(to: &str, user: &str, n: u32) -> Vec<u8> {
    // The dialled user goes on the wire percent-encoded: raw control
    // characters in a Request-URI are refused with 400 before anything is
    // logged, but an escaped one decodes to them.
    let user: String = user
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "INVITE sip:{user}@{to} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-hostile-{n}\r\n\
Max-Forwards: 70\r\n\
From: \"Eastside Refuge{EVIL}\" <sip:anonymous@anonymous.invalid>;tag=h{n}\r\n\
To: <sip:{user}@{to}>\r\n\
Call-ID: evil{n}{EVIL}@x\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:hostile@127.0.0.1:5999>\r\n\
X-Evil{EVIL}: +61 3 7010 0142\r\n\
Server: Asterisk{EVIL}\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A child process killed (by its own id) when the test ends, however it
/// ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines from `rx` until one satisfies `done`, within `timeout`; all of
/// them.
fn lines_until(
    rx: &Receiver<String>,
    timeout: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let stop = done(&l);
                seen.push(l);
                if stop {
                    return seen;
                }
            }
            Err(_) => panic!("timed out after {timeout:?}; lines so far:\n{seen:#?}"),
        }
    }
}

/// A config with an endpoint on `port` (number 5000) and one line.
fn endpoint_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("cidguard.toml");
    std::fs::write(
        &path,
        format!(
            "[organisation]\nname = \"Eastside Refuge\"\nregion = \"AU\"\nnumbers = [\"+61 3 7010 0142\"]\n\
[daemon]\nstate_dir = \"{}\"\n\
[endpoint]\nlisten = [\"udp:127.0.0.1:{port}\"]\nnumbers = [\"5000\"]\nhold_min = \"100ms\"\nhold_max = \"200ms\"\n\
[[line]]\nname = \"reception\"\nexpect = \"withheld\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// Send each INVITE until the endpoint has answered (UDP, so it is
/// resent the way SIP resends, until the listener is up).
fn send_invites(port: u16, invites: &[Vec<u8>]) {
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    support::net::wait_for_options(Transport::Udp, target, None, Duration::from_secs(10))
        .expect("the endpoint answers OPTIONS");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for inv in invites {
        sock.send_to(inv, target).unwrap();
    }
}

/// Regression: `sip listen` printed the Call-ID, the dialled number and
/// every identity header raw, so an INVITE could drive the operator's
/// terminal.
#[test]
fn sip_listen_prints_hostile_calls_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::net::free_port().unwrap();
    let cfg = endpoint_config(dir.path(), port);
    let mut child = cidguard()
        .args(["sip", "listen", "--config"])
        .arg(&cfg)
        .env("CIDGUARD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = support::lines_of(child.stdout.take().unwrap());
    let err = support::lines_of(child.stderr.take().unwrap());
    let _child = Running(child);
    send_invites(
        port,
        &[
            hostile_invite("127.0.0.1", "5000", 1),
            hostile_invite("127.0.0.1", &format!("5001{EVIL}"), 2),
        ],
    );
    // The stray call is reported as it is screened, so it may come first.
    let (mut stray, mut contact) = (false, false);
    let printed = lines_until(&out, Duration::from_secs(10), |l| {
        stray |= l.contains("(stray, answered 404)");
        // Contact is the last identity header listen prints.
        contact |= l.starts_with("  Contact:");
        stray && contact
    });
    let text = printed.join("\n");
    assert_clean("sip listen output", &text);
    assert!(
        text.contains(&format!("call evil1{EVIL_SHOWN}@x"))
            && text.contains(&format!("From: \"Eastside Refuge{EVIL_SHOWN}\""))
            && text.contains(&format!("call evil2{EVIL_SHOWN}@x")),
        "{text}"
    );
    // A stray call may be anyone's: its number is masked, its caller not shown.
    assert!(!text.contains("5001"), "{text}");
    // The endpoint's own log line about the stray call: counted, without
    // the number dialled (it may be a stranger's).
    let logged = lines_until(&err, Duration::from_secs(10), |l| l.contains("stray call"));
    assert_clean("sip listen log", &logged.join("\n"));
    assert!(!logged.join("\n").contains("5001"), "{logged:#?}");
}

/// Regression: the daemon's stray-call warnings logged the Call-ID and the
/// dialled number raw: a CR forged a journal line, an override reversed it;
/// and the dialled number, which may be a stranger's, in full.
#[test]
fn stray_call_log_lines_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::net::free_port().unwrap();
    let cfg = endpoint_config(dir.path(), port);
    let mut child = cidguard()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("CIDGUARD_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = support::lines_of(child.stderr.take().unwrap());
    let _child = Running(child);
    send_invites(
        port,
        &[
            // To the endpoint's number, with no check waiting for it.
            hostile_invite("127.0.0.1", "5000", 3),
            // To a number that is not the endpoint's.
            hostile_invite("127.0.0.1", &format!("5001{EVIL}"), 4),
        ],
    );
    let (mut waiting, mut foreign) = (false, false);
    let logged = lines_until(&err, Duration::from_secs(10), |l| {
        waiting |= l.contains("no check is waiting");
        foreign |= l.contains("not the endpoint's");
        waiting && foreign
    });
    let text = logged.join("\n");
    assert_clean("daemon log", &text);
    assert!(text.contains(&format!("evil3{EVIL_SHOWN}@x")), "{text}");
    // The number dialled on a stray call may be anyone's (a misrouted real
    // call): it is not logged (stray calls are counted, and logged at most
    // every few seconds without the number).
    assert!(!text.contains("5001"), "{text}");
}

/// Regression: `inspect`'s text report printed header names, values and
/// display names raw. The JSON keeps the exact text (serde escapes it).
#[test]
fn inspect_text_escapes_and_json_keeps_the_exact_text() {
    let run = |format: &str| {
        let mut child = cidguard()
            .args(["inspect", "--line", "reception", "--format", format, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&hostile_invite("127.0.0.1", "5000", 5))
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("text");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_clean("inspect text", &text);
    assert!(
        text.contains(&format!("number leaked in X-Evil{EVIL_SHOWN}"))
            && text.contains(&format!("\"Eastside Refuge{EVIL_SHOWN}\"")),
        "{text}"
    );
    let out = run("json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let headers: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["header"].as_str())
        .collect();
    assert!(headers.contains(&format!("X-Evil{EVIL}").as_str()), "{v}");
}

/// Regression: `history --format csv` wrote a PBX's Server header and
/// reasons with their raw CR, LF and ESC into the cells.
#[test]
fn history_text_and_csv_escape_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = endpoint_config(dir.path(), 9);
    let store = Store::open_in(&dir.path().join("state")).unwrap();
    let mut r = crate::store::result_at(
        "reception",
        Outcome::Inconclusive,
        chrono::Utc::now().timestamp_millis(),
    );
    r.reason = Some(format!(
        "registration refused: 403 Forbidden{EVIL}\nsecond line"
    ));
    r.pbx_software = Some(format!("Asterisk{EVIL}"));
    r.trigger = Trigger::Manual {
        label: Some(format!("after{EVIL}")),
        run: None,
    };
    store.record_check(&r, &Record::default()).unwrap();
    drop(store);
    let history = |format: &str| {
        let out = cidguard()
            .args([
                "history",
                "--line",
                "reception",
                "--format",
                format,
                "--config",
            ])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = history("csv");
    // CSV records end in CRLF; nothing else may be a control character.
    let records: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(
        records.len(),
        2,
        "a header and one record, one line each: {csv:?}"
    );
    for rec in &records {
        assert_clean("history csv", rec);
    }
    assert!(
        records[1].contains(&format!("Asterisk{EVIL_SHOWN}"))
            && records[1].contains(&format!("403 Forbidden{EVIL_SHOWN}\\nsecond line")),
        "{csv}"
    );
    let text = history("text");
    assert_clean("history text", &text);
}

/// Regression guard: an alert's subject quotes what leaked, and a header
/// name off the wire must not put a raw control or line break into the
/// subject (or anywhere in the message the mailer builds).
#[test]
fn alert_subjects_are_one_line_with_controls_escaped() {
    use cidguard::alert::{on_result, AlertPolicy, Decision, LineAlertState, Mailer};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cidguard.toml");
    std::fs::write(
        &path,
        format!(
            "[organisation]\nname = \"Eastside Refuge\"\nregion = \"AU\"\nnumbers = [\"+61 3 7010 0142\"]\n\
[[line]]\nname = \"reception\"\nexpect = \"withheld\"\n\
[alerts]\nrecipients = [\"noc@example.org\"]\nfrom = \"cidguard <cidguard@example.org>\"\n\
[alerts.file]\ndir = \"{}\"\n",
            dir.path().join("mail").display()
        ),
    )
    .unwrap();
    let plan = Plan::load(&path).unwrap();
    let policy = AlertPolicy::from_plan(&plan);
    let line = plan.line("reception").unwrap().policy().clone();
    let judged = |trigger: Trigger| {
        let v = verdict::judge(&line, &hostile_invite("127.0.0.1", "5000", 6));
        cidguard::check::result::CheckResult::from_verdict(
            v,
            std::time::SystemTime::now(),
            Default::default(),
            trigger,
        )
    };
    let now = chrono::Utc::now();
    let (s, _) = on_result(
        &LineAlertState::default(),
        &judged(Trigger::Schedule),
        1,
        now,
        &policy,
        false,
    );
    let (_, actions) = on_result(&s, &judged(Trigger::Confirm), 2, now, &policy, false);
    let [Decision::Notify(notice)] = actions.as_slice() else {
        panic!("expected one alert, got {actions:?}");
    };
    let email = cidguard::alert::channel::email::EmailChannel::implicit(
        plan.config().alerts.as_ref().unwrap(),
        &cidguard::alert::Renderer::from_config(plan.config(), &path).unwrap(),
    )
    .unwrap();
    let alert = &email.outgoing(notice);
    assert_clean("subject", &alert.subject);
    assert!(
        alert.subject.contains(&format!("X-Evil{EVIL_SHOWN}")),
        "{}",
        alert.subject
    );
    for l in alert.text.lines() {
        assert_clean("text part", l);
    }
    let mailer = Mailer::from_config(plan.config().alerts.as_ref().unwrap()).unwrap();
    let message = String::from_utf8(mailer.build_message(alert).unwrap().formatted()).unwrap();
    for l in message.split_terminator("\r\n") {
        assert_clean("built message", l);
    }
    // The same on chat channels: one-line titles, clean facts.
    let chat = cidguard::alert::chat::chat(
        &cidguard::alert::Renderer::from_config(plan.config(), &path)
            .unwrap()
            .for_channel(vec![], true),
        notice,
    );
    assert_clean("chat title", &chat.title);
    for (k, v) in &chat.facts {
        assert_clean("chat fact", &format!("{k}: {v}"));
    }
    for f in &chat.findings {
        assert_clean("chat finding", &format!("{}: {}", f.title, f.value));
    }
}

/// Plain config for `cidguard check` with nothing answering: enough to get
/// to the evidence folder, which is decided before any call is placed.
fn unreachable_check_config(dir: &Path) -> PathBuf {
    let dead = support::net::free_port().unwrap();
    let path = dir.join("check.toml");
    std::fs::write(
        &path,
        format!(
            "[organisation]\nname = \"Eastside Refuge\"\nregion = \"AU\"\nnumbers = [\"+61 3 7010 0142\"]\n\
[daemon]\nstate_dir = \"{}\"\n\
[endpoint]\nlisten = [\"udp:127.0.0.1:0\"]\nnumbers = [\"5000\"]\n\
[[line]]\nname = \"reception\"\nexpect = \"withheld\"\n\
[line.account]\nregistrar = \"sip:127.0.0.1:{dead}\"\nusername = \"201\"\npassword = \"x\"\nring_timeout = \"1s\"\n",
            dir.join("no-state").display()
        ),
    )
    .unwrap();
    path
}

/// Everything under a folder, for "nothing was written here".
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Give a path to the `nobody` user; false when this test can't (not root).
fn give_to_nobody(path: &Path) -> bool {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).is_ok()
}

/// Regression: `--evidence-dir` (and the old shared default) followed a
/// link and wrote into any folder, however open. A link, someone else's
/// folder and a folder others can write to are refused, with the reason,
/// before any call; nothing is written anywhere.
#[test]
fn check_refuses_an_evidence_folder_that_is_a_link_or_not_private() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = unreachable_check_config(dir.path());
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep"), "keep").unwrap();
    let check = |evidence: Option<&Path>, xdg: &Path| {
        let mut c = cidguard();
        c.args(["check", "--standalone", "--config"])
            .arg(&cfg)
            .env("XDG_STATE_HOME", xdg)
            .env("HOME", dir.path().join("home"));
        if let Some(e) = evidence {
            c.arg("--evidence-dir").arg(e);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let xdg = dir.path().join("xdg");

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (code, err) = check(Some(&link), &xdg);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");

    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = check(Some(&open), &xdg);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("others can write"), "{err}");
    let mut refused = vec![open.clone()];

    // Someone else's folder, open to all (as root: given to nobody).
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
    if give_to_nobody(&theirs) {
        let (code, err) = check(Some(&theirs), &xdg);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("belongs to uid 65534"), "{err}");
        refused.push(theirs.clone());
        // The default per-user folder, prepared by someone else.
        std::fs::create_dir_all(xdg.join("cidguard")).unwrap();
        assert!(give_to_nobody(&xdg.join("cidguard")));
        let (code, err) = check(None, &xdg);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("belongs to uid 65534"), "{err}");
        refused.push(xdg.join("cidguard"));
    }
    for d in &refused {
        assert!(listing(d).is_empty(), "{} was written to", d.display());
    }
    assert_eq!(listing(&victim), vec![victim.join("keep")]);
}

/// Regression: evidence went to a fixed, shared `/tmp/cidguard-evidence`,
/// created if missing and followed if a link, so a local user who planted
/// a link there had a `sudo cidguard check` write wherever it pointed. Now
/// it goes to the private per-user folder (or the state directory), under
/// a new random name, mode 0600, and the planted link is never used.
#[test]
fn check_evidence_goes_to_a_private_folder_never_a_planted_link() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = Kamailio::start(KamailioOpts::default()).expect("pbx");
    let port = support::net::free_port().expect("free port");
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let text = config_text(
        &pbx,
        "udp",
        "timing",
        &[("reception", "withheld", "201")],
        &[org::ENDPOINT_NUMBER],
    )
    .replace(
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]",
        &format!("listen = [\"udp:127.0.0.1:{port}\"]"),
    ) + &format!("\n[daemon]\nstate_dir = \"{}\"\n", state.display());
    pbx.set_endpoint(
        org::ENDPOINT_NUMBER,
        &format!("sip:127.0.0.1:{port};transport=udp"),
    )
    .expect("route");
    let cfg = dir.path().join("cidguard.toml");
    std::fs::write(&cfg, text).expect("write config");
    // The attacker's preparation in the shared temporary folder.
    let tmp = dir.path().join("tmp");
    let victim = dir.path().join("victim");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, tmp.join("cidguard-evidence")).unwrap();
    let xdg = dir.path().join("xdg");
    let check = || {
        let out = cidguard()
            .args(["check", "--standalone", "--line", "reception", "--config"])
            .arg(&cfg)
            .env("TMPDIR", &tmp)
            .env("XDG_STATE_HOME", &xdg)
            .env("HOME", dir.path().join("home"))
            .output()
            .expect("run cidguard");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Evidence: "))
            .unwrap_or_else(|| panic!("no evidence line: {stdout}"));
        PathBuf::from(file)
    };
    let private = |file: &Path, folder: &Path| {
        assert_eq!(file.parent(), Some(folder), "{}", file.display());
        let meta = std::fs::symlink_metadata(file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dmeta = std::fs::symlink_metadata(folder).unwrap();
        assert!(dmeta.is_dir());
        assert_eq!(dmeta.permissions().mode() & 0o777, 0o700);
        assert_eq!(dmeta.uid(), meta.uid());
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("INVITE sip:") && !text.contains("response=\""));
    };

    // No state directory yet: the private per-user folder.
    let one = check();
    private(&one, &xdg.join("cidguard/evidence"));
    assert!(
        listing(&victim).is_empty(),
        "written through the planted link"
    );
    let again = check();
    assert_ne!(one, again, "each result gets a new file");
    private(&again, &xdg.join("cidguard/evidence"));
    // A writable state directory: its evidence folder.
    std::fs::create_dir(&state).unwrap();
    let kept = check();
    private(&kept, &state.join("evidence"));
    assert!(
        listing(&victim).is_empty(),
        "written through the planted link"
    );
    assert!(
        std::fs::symlink_metadata(tmp.join("cidguard-evidence"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link is left alone"
    );
}
