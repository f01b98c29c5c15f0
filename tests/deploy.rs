//! The systemd unit and sysusers file in deploy/: systemd's own tools must
//! accept them, and the unit must rate "OK" or better for exposure.
//!
//! Under CI (`CI=true`) a missing tool is a failure; elsewhere the test is
//! skipped with a notice (`.ci/install-daemon.sh` installs the tools).

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// The tool's path, or None (skip) outside CI when it is missing.
fn tool(name: &str) -> Option<PathBuf> {
    crate::support::require_tool(name, "systemd", ".ci/install-daemon.sh")
}

/// The unit with ExecStart pointing at the binary just built, since
/// `verify` checks that the executable exists.
fn unit_for_verify(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(deploy("cidguard.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/cidguard run"));
    let text = text.replace("/usr/bin/cidguard", env!("CARGO_BIN_EXE_cidguard"));
    let path = dir.join("cidguard.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_verify(dir.path());
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Warnings about the host's own units are not ours to fix.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("cidguard")).collect();
    assert!(out.status.success() && ours.is_empty(), "verify: {text}");
}

#[test]
fn unit_is_rated_ok_or_better_for_exposure() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(deploy("cidguard.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let verdict = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating: {text}{}", String::from_utf8_lossy(&out.stderr)));
    // "→ Overall exposure level for cidguard.service: 1.1 OK 🙂"
    let mut words = verdict.rsplit(':').next().unwrap_or("").split_whitespace();
    let score: f64 = words.next().and_then(|s| s.parse().ok()).unwrap_or(99.0);
    let level = words.next().unwrap_or("");
    assert!(
        matches!(level, "SAFE" | "OK") && score <= 3.0,
        "{verdict}\n{text}"
    );
    // The promises the unit makes, each checked by systemd itself.
    for must in [
        "✓ NoNewPrivileges=",
        "✓ ProtectSystem=",
        "✓ ProtectHome=",
        "✓ PrivateTmp=",
        "✓ MemoryDenyWriteExecute=",
        "✓ SystemCallArchitectures=",
        "✓ RestrictNamespaces=",
        "✓ ProtectProc=",
        "✓ UMask=",
    ] {
        assert!(text.contains(must), "{must} not satisfied:\n{text}");
    }
}

#[test]
fn sysusers_file_creates_the_service_user() {
    let Some(sysusers) = tool("systemd-sysusers") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new(sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg("-")
        .stdin(std::fs::File::open(deploy("cidguard.sysusers")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("cidguard:"))
        .unwrap_or_else(|| panic!("no cidguard user: {passwd}"));
    assert!(
        entry.ends_with(":/var/lib/cidguard:/usr/sbin/nologin"),
        "{entry}"
    );
    let unit = std::fs::read_to_string(deploy("cidguard.service")).unwrap();
    assert!(unit.contains("User=cidguard") && unit.contains("StateDirectory=cidguard"));
}
