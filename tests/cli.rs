//! The `cidguard` binary as a user runs it: exit codes and output formats.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::verdict_corpus::fixture_dir;

fn cidguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cidguard"))
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");

fn strip_comments(path: &std::path::Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let mut rest: &[u8] = &b;
    while rest.first() == Some(&b'#') {
        let end = rest
            .iter()
            .position(|c| *c == b'\n')
            .map_or(rest.len(), |e| e + 1);
        rest = &rest[end..];
    }
    rest.to_vec()
}

#[test]
fn inspect_exit_codes() {
    for (fixture, line, code) in [
        ("p01-anonymous-rfc3323", "reception", 0),
        ("f03-pai-with-privacy-id", "reception", 1),
        ("i02-response", "reception", 3),
        ("p07-umbrella-exact", "outreach", 0),
        // Decoded before judging: a leak in a compressed body fails, what
        // can't be decoded is inconclusive, never a pass.
        ("e01-gzip-sdp-number", "reception", 1),
        ("e04-gzip-bomb", "reception", 3),
        ("i09-binary-body", "reception", 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("capture.sip");
        std::fs::write(
            &cap,
            strip_comments(&fixture_dir("invites").join(format!("{fixture}.sip"))),
        )
        .unwrap();
        let out = cidguard()
            .args(["inspect", "--config", EXAMPLE, "--line", line])
            .arg(&cap)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{fixture}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn inspect_json_from_stdin() {
    let msg = strip_comments(&fixture_dir("invites").join("f03-pai-with-privacy-id.sip"));
    let mut child = cidguard()
        .args([
            "inspect",
            "--config",
            EXAMPLE,
            "--line",
            "reception",
            "--format",
            "json",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["line"], "reception");
    assert_eq!(v["outcome"], "fail");
    assert_eq!(v["expected"], "withheld");
    let f = &v["findings"][0];
    assert_eq!(f["header"], "P-Asserted-Identity");
    assert_eq!(f["kind"], "number");
    assert_eq!(f["shown"], true);
    assert!(f["value"].as_str().unwrap().contains("+61370100142"));
    assert!(f["detail"].as_str().unwrap().contains("Privacy: id"));
}

#[test]
fn usage_and_config_errors_exit_2_naming_the_problem() {
    let out = cidguard()
        .args([
            "inspect",
            "--config",
            EXAMPLE,
            "--line",
            "nosuch",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no line named \"nosuch\""));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[organisation]\nname = \"X\"\nregion = \"AU\"\nnumbers = [\"not a number\"]\n[[line]]\nname = \"a\"\nexpect = \"umbrella\"\n").unwrap();
    let out = cidguard()
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("organisation.numbers[0]")
            && err.contains("line[0] (a).umbrella"),
        "{err}"
    );

    let out = cidguard()
        .args(["inspect", "--line", "reception"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing capture argument is a usage error"
    );
}

/// `config check` prints the exact Request-URI each line's test call goes
/// to, from the same code the line dials with: the example's spaced number
/// in its dialable form, the dial prefix in front.
#[test]
fn config_check_prints_what_each_line_dials() {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replacen("# [line.account]", "[line.account]", 1)
        .replacen("# registrar = ", "registrar = ", 1)
        .replacen("# username = ", "username = ", 1)
        .replacen("# password = ", "password = ", 1)
        .replacen("# dial_prefix = ", "dial_prefix = ", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cidguard.toml");
    std::fs::write(&path, text).unwrap();
    let out = cidguard()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.contains(
            "  reception        dials sip:1831+61399990000@pbx.eastside-refuge.org.au:5060\n"
        ),
        "{s}"
    );
    assert!(
        !s.contains("outreach         dials"),
        "no account, no call: {s}"
    );
    assert!(
        s.contains("+61 3 9999 0000, dialled as +61399990000"),
        "{s}"
    );
}

#[test]
fn config_check_summarises_lines() {
    let out = cidguard()
        .args(["config", "check", "--config", EXAMPLE])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("reception") && s.contains("withheld") && s.contains("Salvation Army"),
        "{s}"
    );
    // The descriptors in force are listed.
    assert!(
        s.contains("descriptors of the kind of service (the built-in list)")
            && s.contains("\"shelter\"")
            && s.contains("\"DV\""),
        "{s}"
    );
}

/// What the text report says about a leak found only after decoding, and
/// about a bomb: the layer, the quoted text, the reason.
#[test]
fn inspect_names_the_decoding_layer() {
    let dir = tempfile::tempdir().unwrap();
    let run = |fixture: &str| {
        let cap = dir.path().join(format!("{fixture}.sip"));
        std::fs::write(
            &cap,
            strip_comments(&fixture_dir("invites").join(format!("{fixture}.sip"))),
        )
        .unwrap();
        let out = cidguard()
            .args(["inspect", "--config", EXAMPLE, "--line", "reception"])
            .arg(&cap)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let s = run("e09-rfc2047-from-display");
    assert!(
        s.contains("In the RFC 2047-decoded display name: the display name \"Eastside Women’s Refuge\" shows the organisation's name"),
        "{s}"
    );
    let s = run("e04-gzip-bomb");
    assert!(
        s.contains("INCONCLUSIVE (could not fully decode: gzip SDP body larger than 1 MiB when decoded (a compression bomb?))"),
        "{s}"
    );
    let s = run("e02-deflate-sdp-name");
    assert!(
        s.contains("In the deflate-decoded SDP body: the organisation's name \"Eastside Women's Refuge\" appears"),
        "{s}"
    );
}
