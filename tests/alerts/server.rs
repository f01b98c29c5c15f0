//! A real SMTP server (aiosmtpd, from Debian's python3-aiosmtpd) on a
//! loopback port, run by `smtp_server.py` beside this file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::support::{peer_dir, poll_until, run_with_timeout, tail, tests_dir, Group};

/// A Python interpreter that can import aiosmtpd: Debian's package installs
/// it for the system Python, which need not be the first `python3` on PATH.
/// `CIDGUARD_PYTHON` overrides the search.
pub fn python() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(p) = std::env::var_os("CIDGUARD_PYTHON") {
                candidates.push(p.into());
            }
            candidates.push("/usr/bin/python3".into());
            candidates.push("python3".into());
            candidates.into_iter().find(|py| {
                run_with_timeout(
                    Command::new(py).args(["-c", "import aiosmtpd.controller"]),
                    Duration::from_secs(20),
                )
                .is_ok_and(|c| c.status.success())
            })
        })
        .clone()
}

/// True when the test should return early because aiosmtpd is missing
/// (outside CI only; under CI that is a failure).
pub fn skip_without_aiosmtpd() -> bool {
    if python().is_some() {
        return false;
    }
    let what = "no Python with aiosmtpd (Debian package python3-aiosmtpd)";
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} under CI; run .ci/install-alerts.sh");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what}; run .ci/install-alerts.sh to install it"
    );
    true
}

#[derive(Debug, Clone, Default)]
pub enum Security {
    #[default]
    Plain,
    /// STARTTLS offered and required before MAIL and AUTH.
    StartTls { cert: PathBuf, key: PathBuf },
    /// TLS from the first byte.
    Implicit { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// Require AUTH with this user and password.
    pub auth: Option<(String, String)>,
    pub tls: Security,
}

/// One message as the server received it, decoded by Python's email package.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub subject: String,
    pub message_id: String,
    pub auto_submitted: Option<String>,
    pub content_type: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub login: Option<String>,
    pub tls: bool,
}

pub struct SmtpServer {
    group: Group,
    work: tempfile::TempDir,
}

impl SmtpServer {
    /// Start on `port`, storing messages in `out` (which outlives the
    /// server, so a restarted server adds to the same folder).
    pub fn start(port: u16, out: &Path, opts: &Opts) -> Result<SmtpServer> {
        let Some(py) = python() else {
            bail!("no Python with aiosmtpd");
        };
        let work = peer_dir("smtp")?;
        let ready = work.path().join("ready");
        let log = std::fs::File::create(work.path().join("server.log"))?;
        let mut cmd = Command::new(py);
        cmd.arg(tests_dir().join("alerts").join("smtp_server.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--out")
            .arg(out)
            .arg("--ready")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((u, p)) = &opts.auth {
            cmd.args(["--user", u, "--password", p]);
        }
        match &opts.tls {
            Security::Plain => {}
            Security::StartTls { cert, key } => {
                cmd.arg("--starttls").arg(cert).arg(key);
            }
            Security::Implicit { cert, key } => {
                cmd.arg("--smtps").arg(cert).arg(key);
            }
        }
        let mut group = Group::spawn(&mut cmd)?;
        let log_path = work.path().join("server.log");
        poll_until(Duration::from_secs(20), "the SMTP server to listen", || {
            if ready.exists() {
                return Ok(Some(()));
            }
            if let Some(status) = group.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("SMTP server exited ({status}): {}", tail(&log, 20));
            }
            Ok(None)
        })?;
        Ok(SmtpServer { group, work })
    }

    /// The server's own log (aiosmtpd errors), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("server.log")).unwrap_or_default()
    }

    pub fn stop(mut self) {
        self.group.kill();
    }
}

/// Every complete message in `dir`, oldest first.
pub fn received(dir: &Path) -> Result<Vec<Received>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))
        })
        .collect()
}

/// Waits until `dir` holds at least `n` messages, and returns them.
pub fn wait_for_messages(dir: &Path, n: usize, timeout: Duration) -> Result<Vec<Received>> {
    poll_until(timeout, &format!("{n} message(s) to arrive"), || {
        let got = received(dir)?;
        Ok((got.len() >= n).then_some(got))
    })
}
