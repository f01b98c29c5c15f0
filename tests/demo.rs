//! `cidguard demo` as a newcomer runs it: no PBX, provider or mail server,
//! just the binary. And `cidguard init`, the next step after it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn cidguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cidguard"))
}

/// Every stdout line of `child`, as it comes.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    crate::support::lines_of(child.stdout.take().unwrap())
}

/// Read lines until one satisfies `want`, failing at `deadline`.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    deadline: Instant,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if want(&l) {
                    return l;
                }
            }
            Err(_) => panic!("no {what} in time; output so far:\n{}", seen.join("\n")),
        }
    }
}

/// A check result line: time, line name, outcome, summary.
fn result_of<'a>(l: &'a str, line: &str) -> Option<&'a str> {
    let mut w = l.split_whitespace();
    w.next()?;
    (w.next()? == line).then_some(())?;
    w.next()
}

fn wait_exit(child: &mut Child, deadline: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cidguard demo did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mail_folder(seen: &[String]) -> PathBuf {
    let l = seen
        .iter()
        .find(|l| l.trim_start().starts_with("mail folder"))
        .expect("the mail folder is printed");
    PathBuf::from(l.trim_start().trim_start_matches("mail folder").trim())
}

fn emails(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn demo_shows_pass_umbrella_leak_and_the_alert_email() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = cidguard()
        .args(["demo", "--every", "2s", "--for", "20s", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .env("CIDGUARD_LOG", "warn")
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let status = wait_exit(&mut child, Instant::now() + Duration::from_secs(40));
    let seen: Vec<String> = rx.try_iter().collect();
    let out = seen.join("\n");
    assert!(status.success(), "exit {status:?}:\n{out}");
    let outcome =
        |line: &str| -> Vec<&str> { seen.iter().filter_map(|l| result_of(l, line)).collect() };
    for (line, want) in [
        ("reception", "PASS"),
        ("outreach", "PASS"),
        ("intake", "FAIL"),
    ] {
        let got = outcome(line);
        assert!(!got.is_empty(), "no result for {line}:\n{out}");
        assert!(got.iter().all(|o| *o == want), "{line}: {got:?}\n{out}");
    }
    assert!(
        seen.iter()
            .any(|l| result_of(l, "intake").is_some() && l.contains("P-Asserted-Identity")),
        "the leak names P-Asserted-Identity:\n{out}"
    );
    assert!(out.contains("ALERT EMAIL"), "{out}");
    let mail = mail_folder(&seen);
    assert!(mail.starts_with(dir.path()), "{}", mail.display());
    let emails = emails(&mail);
    assert!(
        emails
            .iter()
            .any(|e| e.contains("intake") && e.to_ascii_uppercase().contains("LEAK")),
        "a leak alert for intake in {}: {emails:?}",
        mail.display()
    );
    // Only the leaking line is alerted.
    assert!(
        emails.iter().all(|e| !e.contains("\"reception\"")),
        "{emails:?}"
    );
    // The demo mobile called its self-test number twice: withheld passed,
    // showing its number failed and alerted at once; what it heard is in
    // two WAV files, the warning longer than "Your number is hidden".
    let mobile = outcome("jo-mobile");
    assert!(
        mobile.contains(&"PASS") && mobile.contains(&"FAIL"),
        "{mobile:?}\n{out}"
    );
    assert!(
        emails
            .iter()
            .any(|e| e.contains("jo-mobile") && e.contains("Test again")),
        "a call-in leak alert for jo-mobile: {emails:?}"
    );
    let wav = |name: &str| {
        let p = dir.path().join("self-test").join(name);
        assert!(
            out.contains(&p.display().to_string()),
            "{name} printed:\n{out}"
        );
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(&bytes[..4], b"RIFF", "{name}");
        assert_eq!(&bytes[8..12], b"WAVE", "{name}");
        bytes.len()
    };
    let (withheld, showing) = (wav("withheld.wav"), wav("showing.wav"));
    // 8 kHz 16-bit mono: at least two seconds each.
    assert!(
        withheld > 32_000 && showing > withheld,
        "{withheld} {showing}"
    );
    assert!(
        !out.contains("ANSWERED"),
        "a self-test call was answered:\n{out}"
    );
}

#[test]
fn demo_flips_a_rule_from_the_keyboard_and_quits() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = cidguard()
        .args(["demo", "--every", "2s", "--for", "40s", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("CIDGUARD_LOG", "warn")
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    wait_for(&rx, &mut seen, deadline, "reception pass", |l| {
        result_of(l, "reception") == Some("PASS")
    });
    writeln!(stdin, "f").unwrap();
    wait_for(&rx, &mut seen, deadline, "the flip", |l| {
        l.contains("now \"leak\"")
    });
    let failed = wait_for(&rx, &mut seen, deadline, "reception fail", |l| {
        result_of(l, "reception") == Some("FAIL")
    });
    assert!(failed.contains("P-Asserted-Identity"), "{failed}");
    writeln!(stdin, "q").unwrap();
    let status = wait_exit(&mut child, Instant::now() + Duration::from_secs(20));
    seen.extend(rx.try_iter());
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
    assert!(
        seen.iter().any(|l| l.contains("stopping (q)")),
        "{}",
        seen.join("\n")
    );
}

#[test]
fn init_writes_a_starter_config_that_checks_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cidguard.toml");
    let out = cidguard()
        .args(["init", "--output"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("[organisation]") && written.contains("[[line]]"));
    assert!(written.contains("[endpoint]") && written.contains("[alerts]"));
    let check = cidguard()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A second run must leave the file alone.
    std::fs::write(&path, "# mine\n").unwrap();
    let again = cidguard()
        .args(["init", "--output"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
}
