//! The daemon as IT runs it: `cidguard run` with a real Kamailio as the PBX
//! and a real SMTP server. It checks on schedule; a PBX rule switched to
//! leaking gives exactly one confirmed alert email; fixing it gives one
//! resolved email even across an SMTP outage; a PBX software change
//! triggers an immediate check; SIGTERM stops it cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cidguard::store::{CheckQuery, Store};
use cidguard::verdict::Outcome;

use crate::alerts::server::{received, skip_without_aiosmtpd, wait_for_messages, Opts, SmtpServer};
use crate::support::net::free_port;
use crate::support::{self, org, poll_until, CallerIdRule, Kamailio, KamailioOpts};

struct Daemon(Child);

impl Daemon {
    /// Write `config` into `dir` and start `cidguard run` on it, logging to
    /// `dir/daemon.log`.
    fn start(dir: &Path, config: &str) -> (Daemon, std::path::PathBuf) {
        let cfg_path = dir.join("cidguard.toml");
        std::fs::write(&cfg_path, config).expect("config");
        let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_cidguard"))
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env("CIDGUARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start cidguard run");
        (Daemon(child), cfg_path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn checks(state: &Path) -> Vec<cidguard::store::StoredCheck> {
    let Ok(store) = Store::open_existing(&state.join(Store::FILE_NAME)) else {
        return Vec::new();
    };
    let mut q = CheckQuery::line("reception");
    q.limit = 500;
    store.checks(&q).map(|p| p.checks).unwrap_or_default()
}

#[test]
fn daemon_alerts_once_on_a_leak_and_once_when_fixed_across_an_smtp_outage() {
    if support::skip_without_peers() || skip_without_aiosmtpd() {
        return;
    }
    let pbx = Kamailio::start(KamailioOpts::default()).expect("pbx");
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).expect("mail dir");
    let smtp_port = free_port().expect("port");
    let sip_port = free_port().expect("port");
    let mut smtp = Some(SmtpServer::start(smtp_port, &mail, &Opts::default()).expect("smtp"));
    pbx.set_endpoint(
        org::ENDPOINT_NUMBER,
        &format!("sip:127.0.0.1:{sip_port};transport=udp"),
    )
    .expect("route");
    let line = support::Line::get("201");
    let cfg = format!(
        r#"
{org}

[endpoint]
listen = ["udp:127.0.0.1:{sip_port}"]
numbers = ["{number}"]
hold_min = "200ms"
hold_max = "700ms"

[daemon]
state_dir = "{state}"
default_schedule = "*/3 * * * * *"
jitter = "0s"
pbx_poll = "1s"

[alerts]
recipients = ["it@eastside-refuge.example"]
from = "cidguard <cidguard@eastside-refuge.example>"
reminder_every = "0"
retry_initial = "300ms"
retry_max = "1s"

[alerts.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"

[[line]]
name = "reception"
expect = "withheld"
[line.account]
registrar = "sip:{pbx}"
username = "{user}"
password = "{password}"
"#,
        org = crate::support::org::TABLE,
        number = org::ENDPOINT_NUMBER,
        state = state.display(),
        pbx = pbx.udp_addr(),
        user = line.username,
        password = line.password,
    );
    let (daemon, _cfg_path) = Daemon::start(dir.path(), &cfg);
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    // On schedule: passing checks are recorded.
    poll_until(Duration::from_secs(20), "a passing scheduled check", || {
        Ok(checks(&state)
            .iter()
            .any(|c| c.result.outcome == Outcome::Pass)
            .then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));

    // A PBX update breaks privacy: PAI leaks. One confirmed alert.
    pbx.set_rule(line.username, CallerIdRule::PaiLeak)
        .expect("rule");
    let msgs = wait_for_messages(&mail, 1, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    assert!(
        msgs[0].subject.contains("PRIVACY LEAK") && msgs[0].subject.contains("reception"),
        "{}",
        msgs[0].subject
    );
    let text = msgs[0].text.clone().unwrap_or_default();
    assert!(text.contains("P-Asserted-Identity"), "{text}");
    // Several more failing checks go by: still one email (no reminders set).
    let failing_before = checks(&state)
        .iter()
        .filter(|c| c.result.outcome == Outcome::Fail)
        .count();
    poll_until(Duration::from_secs(20), "more failing checks", || {
        let n = checks(&state)
            .iter()
            .filter(|c| c.result.outcome == Outcome::Fail)
            .count();
        Ok((n >= failing_before + 2).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    assert_eq!(
        received(&mail).expect("mailbox").len(),
        1,
        "exactly one leak alert"
    );
    // The confirming re-check was recorded as such.
    assert!(checks(&state)
        .iter()
        .any(|c| matches!(c.result.trigger, cidguard::check::result::Trigger::Confirm)));

    // The mail server goes down; the PBX is fixed meanwhile.
    if let Some(s) = smtp.take() {
        s.stop();
    }
    pbx.set_rule(line.username, CallerIdRule::Withheld)
        .expect("rule");
    let passes_before = checks(&state)
        .iter()
        .filter(|c| c.result.outcome == Outcome::Pass)
        .count();
    poll_until(Duration::from_secs(20), "a pass after the fix", || {
        let n = checks(&state)
            .iter()
            .filter(|c| c.result.outcome == Outcome::Pass)
            .count();
        Ok((n > passes_before).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    // Checks went on during the outage; the mail server comes back.
    let _smtp = SmtpServer::start(smtp_port, &mail, &Opts::default()).expect("smtp again");
    let msgs = wait_for_messages(&mail, 2, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    assert!(
        msgs.iter()
            .any(|m| m.subject.to_lowercase().contains("resolved")),
        "{:?}",
        msgs.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );

    // A PBX software update: an immediate check with that trigger.
    pbx.set_server("Eastside PBX 2.0").expect("server");
    poll_until(Duration::from_secs(20), "a check triggered by the PBX change", || {
        Ok(checks(&state)
            .iter()
            .any(|c| matches!(&c.result.trigger, cidguard::check::result::Trigger::PbxChange { to, .. } if to.contains("2.0")))
            .then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));

    // Another scheduled check goes by; still exactly one leak and one
    // resolved email.
    let recorded = checks(&state).len();
    poll_until(Duration::from_secs(20), "one more check", || {
        Ok((checks(&state).len() > recorded).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    let all = received(&mail).expect("mailbox");
    assert_eq!(
        all.len(),
        2,
        "{:?}",
        all.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );

    // SIGTERM: a clean stop.
    let mut daemon = daemon;
    let pid = daemon.0.id();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let code = poll_until(Duration::from_secs(30), "the daemon to exit", || {
        Ok(daemon.0.try_wait()?.map(|s| s.code()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    assert_eq!(code, Some(0), "{}", log());
    assert!(
        !log().contains(line.password),
        "the SIP password never reaches the log"
    );
}

/// After a PBX change IT runs `cidguard check`: with the daemon running, the
/// daemon runs the check (so it lands in the history), and the command
/// prints the same output and exit status as a standalone check.
#[test]
fn check_hands_its_run_to_the_running_daemon() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = Kamailio::start(KamailioOpts::default()).expect("pbx");
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let sip_port = free_port().expect("port");
    let web_port = free_port().expect("port");
    pbx.set_endpoint(
        org::ENDPOINT_NUMBER,
        &format!("sip:127.0.0.1:{sip_port};transport=udp"),
    )
    .expect("route");
    let line = support::Line::get("201");
    let cfg = format!(
        r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]

[endpoint]
listen = ["udp:127.0.0.1:{sip_port}"]
numbers = ["{number}"]
hold_min = "200ms"
hold_max = "500ms"

[daemon]
state_dir = "{state}"
default_schedule = "0 0 3 1 1 *"

[dashboard]
listen = "127.0.0.1:{web_port}"
token = "a-long-enough-test-token"

[[line]]
name = "reception"
expect = "withheld"
[line.account]
registrar = "sip:{pbx}"
username = "{user}"
password = "{password}"
"#,
        number = org::ENDPOINT_NUMBER,
        state = state.display(),
        pbx = pbx.udp_addr(),
        user = line.username,
        password = line.password,
    );
    let (_daemon, cfg_path) = Daemon::start(dir.path(), &cfg);
    poll_until(Duration::from_secs(20), "the daemon's dashboard", || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", web_port))
            .ok()
            .map(|_| ()))
    })
    .expect("daemon up");
    let check = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cidguard"))
            .args(["check", "--config"])
            .arg(&cfg_path)
            .args(args)
            .output()
            .expect("cidguard check")
    };
    let out = check(&[
        "--line",
        "reception",
        "--label",
        "after PBX upgrade",
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon ran the checks"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["results"][0]["outcome"], "pass", "{v}");
    assert!(
        v["results"][0]["evidence_ref"]
            .as_str()
            .unwrap_or("")
            .contains("history"),
        "{v}"
    );
    let recorded = checks(&state);
    assert!(
        recorded
            .iter()
            .any(|c| c.result.trigger.label() == Some("after PBX upgrade")),
        "the check is in the daemon's history with its label"
    );

    pbx.set_rule(line.username, CallerIdRule::PaiLeak)
        .expect("rule");
    let out = check(&["--line", "reception"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("P-Asserted-Identity"));
}
