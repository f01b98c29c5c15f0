//! Starting real SIP peers for the integration tests.
//!
//! - [`Kamailio`]: the organisation's PBX (registrar with digest auth, stateful
//!   relay to the monitored endpoint, per-line caller-ID rules switchable at
//!   runtime, configurable `Server` header).
//! - [`Sipp`]: SIPp running one scenario, with its message log captured.
//! - [`tcpdump::Tcpdump`]: tcpdump capturing loopback traffic to a pcap file,
//!   and [`pcap`], a writer for hand-made captures.
//! - [`baresip`]: baresip, an independent softphone, calling through the PBX
//!   and recording the audio it hears; [`rtp_sink`], a loopback socket
//!   collecting RTP, with the RFC 3550 checks.
//!
//! Every peer gets its own free loopback ports and its own temporary
//! directory, so tests run in parallel; every wait is bounded; processes are
//! killed (whole process group) when their handle is dropped, also when a test
//! panics.
//!
//! Tests needing the peers start with `if support::skip_without_peers() {
//! return; }`: outside CI a missing binary skips the test with a notice, under
//! CI (`CI=true`) it is a hard failure naming the package to install.

// Not every test module uses every helper.
#![allow(dead_code)]

pub mod attack;
pub mod baresip;
pub mod kamailio;
pub mod net;
pub mod pcap;
pub mod rtp_sink;
pub mod sip;
pub mod sipp;
pub mod tcpdump;
pub mod tls;
pub mod webdriver;

#[allow(unused_imports)] // The API for other test modules.
pub use kamailio::{CallerIdRule, Kamailio, KamailioOpts, Line, LINES};
pub use net::Transport;
pub use sip::TraceMessage;
pub use sipp::{Sipp, SippOpts, SippOutcome};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The organisation the test PBX serves (fixed test data, also in the
/// Kamailio config).
pub mod org {
    /// The number the organisation's lines must never disclose.
    pub const NUMBER: &str = "+61370100142";
    /// The same number in national format, as a Diversion header carries it.
    pub const NATIONAL_NUMBER: &str = "0370100142";
    pub const NAME: &str = "Eastside Women's Refuge";
    /// The PBX's SIP domain, also its digest realm.
    pub const PBX_HOST: &str = "pbx.eastside-refuge.org.au";
    /// The umbrella organisation whose identity may be shown instead.
    pub const UMBRELLA_NAME: &str = "Salvation Army";
    pub const UMBRELLA_NUMBER: &str = "+61290000000";
    pub const UMBRELLA_HOST: &str = "salvationarmy.org.au";
    /// Number the tests dial; any number works, this one only names a route.
    pub const ENDPOINT_NUMBER: &str = "0399990000";
    /// Its `[organisation]` table, for the configs tests write (the numbers
    /// as people type them, a range, names and the PBX's host).
    pub const TABLE: &str = r#"[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]
names = ["Eastside Women's Refuge", "Eastside Refuge"]
hosts = ["pbx.eastside-refuge.org.au"]
"#;
}

/// Debian package providing each binary, for the messages that ask to
/// install it.
const BINARIES: &[(&str, &str)] = &[
    ("kamailio", "kamailio"),
    ("kamcmd", "kamailio"),
    ("sipp", "sip-tester"),
];

/// True when the test should return early because a peer binary is missing
/// (outside CI only; under CI this panics instead).
pub fn skip_without_peers() -> bool {
    let missing: Vec<_> = BINARIES
        .iter()
        .filter(|(name, _)| find_binary(name).is_none())
        .collect();
    if missing.is_empty() {
        return false;
    }
    let names = missing
        .iter()
        .map(|(name, package)| format!("{name} (Debian package {package})"))
        .collect::<Vec<_>>()
        .join(", ");
    if in_ci() {
        panic!("peer binaries missing under CI: {names}; run .ci/install-peers.sh");
    }
    // Written to the process's stderr directly: the test harness captures
    // (and hides for a passing test) what `eprintln!` prints.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: peer binaries not found: {names}; run .ci/install-peers.sh to install them"
    );
    true
}

/// Like [`skip_without_peers`], for tests that also need the PBX's TLS
/// module (a separate Debian package).
pub fn skip_without_tls_peers() -> bool {
    if skip_without_peers() {
        return true;
    }
    if kamailio::modules_dir().is_some_and(|d| d.join("tls.so").exists()) {
        return false;
    }
    let what = "the PBX's TLS module (Debian package kamailio-tls-modules)";
    if in_ci() {
        panic!("missing under CI: {what}; run .ci/install-peers.sh");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what} not found; run .ci/install-peers.sh to install it"
    );
    true
}

/// The path of a peer binary, or an error naming the package to install.
pub fn binary(name: &str) -> Result<PathBuf> {
    find_binary(name).ok_or_else(|| {
        let package = BINARIES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(name, |(_, p)| p);
        anyhow!("{name} not found: install the Debian package {package} (.ci/install-peers.sh)")
    })
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A tool a test needs that is not a SIP peer: its path, or None (skip,
/// with a notice) outside CI when it is missing. Under CI a missing tool
/// fails the test, naming the Debian package and the install script.
pub fn require_tool(name: &str, package: &str, script: &str) -> Option<PathBuf> {
    if let Some(p) = find_binary(name) {
        return Some(p);
    }
    missing_tool(&format!("{name} (Debian package {package})"), script)
}

/// Something a test needs is missing: under CI a failure naming the
/// install script, elsewhere None and a notice that the test is skipped.
pub fn missing_tool<T>(what: &str, script: &str) -> Option<T> {
    if in_ci() {
        panic!("missing under CI: {what}; run {script}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what} not found; run {script}");
    None
}

/// Looks in PATH and, because the PBX daemon and its control tool are
/// installed as system binaries, in the sbin directories a non-root PATH may
/// lack. `CIDGUARD_<NAME>` (upper case) overrides the lookup.
fn find_binary(name: &str) -> Option<PathBuf> {
    type Cache = std::sync::Mutex<std::collections::HashMap<String, Option<PathBuf>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(name.to_string())
        .or_insert_with(|| lookup_binary(name))
        .clone()
}

fn lookup_binary(name: &str) -> Option<PathBuf> {
    let var = format!("CIDGUARD_{}", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        let p = PathBuf::from(p);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Directory of the repository's test data.
pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// A child process started in its own process group, killed with the whole
/// group on drop (the PBX forks workers; killing only the main process would
/// leave them running and holding the ports).
pub(crate) struct Group {
    child: Child,
    done: Option<ExitStatus>,
}

impl Group {
    pub(crate) fn spawn(cmd: &mut Command) -> Result<Group> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(Group { child, done: None })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's piped standard output, once.
    pub(crate) fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Exit status if the main process has ended (reaps it).
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.done.is_none() {
            self.done = self.child.try_wait()?;
        }
        Ok(self.done)
    }

    /// Waits for the main process to end, killing the group at the deadline.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                // Helpers it may have left behind go too.
                self.kill_group();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("still running after {timeout:?}, killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_group(&self) {
        // The group id is the main process's pid; it cannot be reused while
        // that process is not reaped, and after reaping only stragglers of
        // the same group can hold it, so signalling it is safe either way.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Kills the whole group and reaps the main process.
    pub(crate) fn kill(&mut self) {
        if self.done.is_some() {
            self.kill_group();
            return;
        }
        self.kill_group();
        // In case the group kill could not run at all.
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.done = Some(status);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output of a short helper command run with a deadline.
pub(crate) struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a short-lived command (the PBX's control tool) with a deadline,
/// reading its output on threads so a full pipe cannot stall it.
pub(crate) fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut group = Group::spawn(cmd)?;
    let mut out = group.child.stdout.take().expect("piped stdout");
    let mut err = group.child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = group
        .wait_timeout(timeout)
        .with_context(|| format!("{:?}", cmd.get_program()))?;
    Ok(Captured {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Every line a child process writes, as it comes, read on a thread.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls `check` until it yields a value or the deadline passes.
pub fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Last `n` lines of a text, for failure messages.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether tests asked to keep peer directories for inspection
/// (`CIDGUARD_KEEP_PEER_DIRS=1`).
pub(crate) fn keep_dirs() -> bool {
    std::env::var_os("CIDGUARD_KEEP_PEER_DIRS").is_some_and(|v| v != "0")
}

/// A fresh temporary directory for one peer instance.
pub(crate) fn peer_dir(prefix: &str) -> Result<tempfile::TempDir> {
    // Short names: the PBX's control socket is a unix socket, whose path is
    // limited to about a hundred bytes.
    let mut dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    if keep_dirs() {
        dir.disable_cleanup(true);
        eprintln!("keeping peer directory {}", dir.path().display());
    }
    Ok(dir)
}
