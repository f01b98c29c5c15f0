//! `cidguard run` and `cidguard history` as a user (and systemd) runs them.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cidguard::check::result::Trigger;
use cidguard::store::{Record, Store};
use cidguard::verdict::Outcome;

use crate::store::result_at;

fn cidguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cidguard"))
}

fn config(state: &Path, extra_daemon: &str) -> String {
    let mut s = format!(
        r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]

[daemon]
state_dir = "{}"
time_zone = "Australia/Sydney"
{extra_daemon}
"#,
        state.display()
    );
    for name in ["reception", "outreach"] {
        s.push_str(&format!(
            "[[line]]\nname = \"{name}\"\nexpect = \"withheld\"\n[line.account]\nregistrar = \"sip:127.0.0.1:5999\"\nusername = \"201\"\npassword = \"s3cret-{name}\"\n"
        ));
    }
    s
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill(1) (Debian package procps)");
    assert!(st.success());
}

#[test]
fn run_speaks_to_systemd_reloads_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("cidguard.toml");
    std::fs::write(&cfg, config(&state, "")).unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut child = cidguard()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("STATE_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut buf = [0u8; 4096];
    let mut next = |want: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < deadline, "no {want:?} in time");
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}"));
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if m.starts_with(want) {
                return m;
            }
        }
    };
    let ready = next("READY=1");
    assert!(ready.contains("STATUS=ready: 2 lines scheduled"), "{ready}");
    next("WATCHDOG=1");
    assert!(state.join(Store::FILE_NAME).exists());

    // A valid reload.
    signal(pid, "HUP");
    next("RELOADING=1");
    assert!(next("READY=1").contains("configuration reloaded"));
    // An invalid one: refused, still running.
    std::fs::write(&cfg, config(&state, "jitter = \"soon\"")).unwrap();
    signal(pid, "HUP");
    let refused = next("READY=1");
    assert!(
        refused.contains("reload refused") && refused.contains("soon"),
        "{refused}"
    );
    next("WATCHDOG=1");
    assert!(child.try_wait().unwrap().is_none(), "still running");

    signal(pid, "TERM");
    next("STOPPING=1");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("reload refused"), "{log}");
    assert!(!log.contains("s3cret"), "a secret was logged: {log}");
}

#[test]
fn run_refuses_a_bad_config_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        config(dir.path(), "default_schedule = \"every hour\""),
    )
    .unwrap();
    let out = cidguard()
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon.default_schedule"));
}

#[test]
fn history_prints_text_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("cidguard.toml");
    std::fs::write(&cfg, config(&state, "")).unwrap();
    let store = Store::open_in(&state).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    // One old check (outside --since 30d) and three recent ones.
    for (age, outcome) in [
        (60 * day, Outcome::Pass),
        (3 * day, Outcome::Pass),
        (2 * day, Outcome::Fail),
        (day, Outcome::Inconclusive),
    ] {
        let mut r = result_at("reception", outcome, now - age);
        if outcome == Outcome::Fail {
            r.trigger = Trigger::PbxChange {
                from: Some("FreePBX 16".into()),
                to: "=cmd|' /C calc'!A0".into(),
            };
        }
        store
            .record_check(
                &r,
                &Record {
                    recorded_at_ms: now - age,
                    ..Record::default()
                },
            )
            .unwrap();
    }
    store
        .record_check(
            &result_at("outreach", Outcome::Pass, now),
            &Record::default(),
        )
        .unwrap();
    let run = |args: &[&str]| {
        let out = cidguard()
            .args(["history", "--config"])
            .arg(&cfg)
            .args(args)
            .env_remove("STATE_DIRECTORY")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (code, text, err) = run(&["--line", "reception", "--since", "30d"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("ID") && rows[0].contains("OUTCOME") && rows[0].contains("SUMMARY"),
        "{text}"
    );
    assert_eq!(rows.len(), 1 + 3 + 1, "{text}");
    assert!(
        rows[1].contains("pass") && rows[2].contains("FAIL") && rows[3].contains("inconclusive"),
        "{text}"
    );
    assert!(
        rows[2].contains("number shown in P-Asserted-Identity"),
        "{text}"
    );
    assert!(
        text.contains("AEST") || text.contains("AEDT"),
        "times in the configured zone: {text}"
    );
    assert!(rows[4].contains("3 checks, 1 failed"), "{text}");

    let (code, json, _) = run(&["--line", "reception", "--format", "json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 4, "no --since: everything");
    assert_eq!(arr[2]["outcome"], "fail");
    assert_eq!(arr[2]["trigger"]["kind"], "pbx-change");
    assert_eq!(arr[2]["summary"], "number shown in P-Asserted-Identity");
    assert!(arr[2]["id"].is_i64() && arr[2]["findings"].is_array());

    let (code, csv, _) = run(&["--line", "reception", "--since", "30d", "--format", "csv"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,started_at,line,trigger,trigger_label,outcome,interrupted,reason,duration_ms,pbx_software,summary"
    );
    assert_eq!(lines.len(), 4);
    assert!(
        lines[2].contains(",pbx-change,'=cmd|' /C calc'!A0,fail,false,"),
        "{csv}"
    );
    assert!(
        lines[3].contains(",inconclusive,false,no call arrived,"),
        "{csv}"
    );

    let (code, _, err) = run(&["--line", "nosuch"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no line named \"nosuch\""), "{err}");
    let (code, _, err) = run(&["--line", "reception", "--since", "a while"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--since"), "{err}");
    let (code, text, _) = run(&["--line", "outreach", "--since", "1h"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("1 check, 0 failed"), "{text}");

    // No history yet: a clear message, status 1.
    std::fs::write(&cfg, config(&dir.path().join("elsewhere"), "")).unwrap();
    let (code, _, err) = run(&["--line", "reception"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no history database"), "{err}");
}
