//! tcpdump capturing loopback traffic to a pcap file, for the capture tests.
//!
//! Started with `--immediate-mode -U`, so every packet is in the file as
//! soon as the kernel hands it over: a test waits for what it needs to see
//! in the file (never a fixed sleep), then stops tcpdump with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{poll_until, Group};

/// The tcpdump binary, or None (skip) outside CI when it is missing; under
/// CI a missing tcpdump fails the test.
pub fn binary() -> Option<PathBuf> {
    super::require_tool("tcpdump", "tcpdump", ".ci/install-peers.sh")
}

/// A running capture on `lo`.
pub struct Tcpdump {
    group: Group,
    file: PathBuf,
    stderr: PathBuf,
}

impl Tcpdump {
    /// Capture loopback packets matching `filter` (a pcap filter such as
    /// `port 5060 or port 5080`) into `dir/name`; returns once tcpdump
    /// listens.
    pub fn start(bin: &Path, dir: &Path, name: &str, filter: &str) -> Result<Tcpdump> {
        let file = dir.join(name);
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(bin);
        cmd.args(["-i", "lo", "-n", "-s", "0", "-U", "--immediate-mode", "-w"])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?);
        let mut group = Group::spawn(&mut cmd)?;
        let err = stderr.clone();
        poll_until(Duration::from_secs(10), "tcpdump to listen on lo", || {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            if let Some(status) = group.try_wait()? {
                bail!("tcpdump exited ({status}): {text}");
            }
            Ok(text.contains("listening on").then_some(()))
        })?;
        Ok(Tcpdump {
            group,
            file,
            stderr,
        })
    }

    /// The capture file (complete up to the last packet seen).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Wait until the capture file holds `needle` at least `times` times.
    pub fn wait_for(&self, needle: &[u8], times: usize, timeout: Duration) -> Result<()> {
        poll_until(timeout, "the capture to hold every message", || {
            let b = std::fs::read(&self.file).unwrap_or_default();
            let n = b.windows(needle.len()).filter(|w| *w == needle).count();
            Ok((n >= times).then_some(()))
        })
    }

    /// Stop with SIGTERM (tcpdump flushes and closes the file) and return
    /// the file.
    pub fn stop(mut self) -> Result<PathBuf> {
        let pid = self.group.pid().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("kill -TERM tcpdump")?;
        let status = self.group.wait_timeout(Duration::from_secs(10))?;
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        if !text.contains("packets captured") {
            bail!("tcpdump did not finish cleanly ({status}): {text}");
        }
        Ok(self.file.clone())
    }
}
