//! The organisation's PBX: Kamailio running the repository's config on
//! loopback ports picked at runtime, driven over its own control socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::net::{self, Transport, LOOPBACK};
use super::tls::TestCa;
use super::{binary, peer_dir, poll_until, run_with_timeout, tail, Group};

/// A line account on the test PBX (test-only credentials, also in the
/// Kamailio config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    pub username: &'static str,
    pub password: &'static str,
}

pub const LINES: [Line; 5] = [
    Line {
        username: "201",
        password: "line201-test-secret",
    },
    Line {
        username: "202",
        password: "line202-test-secret",
    },
    Line {
        username: "203",
        password: "line203-test-secret",
    },
    Line {
        username: "204",
        password: "line204-test-secret",
    },
    Line {
        username: "205",
        password: "line205-test-secret",
    },
];

impl Line {
    /// The line with this username; panics for an unknown one.
    pub fn get(username: &str) -> Line {
        *LINES
            .iter()
            .find(|l| l.username == username)
            .unwrap_or_else(|| panic!("no test line {username}"))
    }
}

/// How the PBX presents a line's calls to the endpoint. Each rule rewrites
/// the relayed INVITE; identity headers the line itself sent
/// (P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID, Privacy,
/// Diversion, Identity) are always dropped first. "Anonymous From" below is
/// `"Anonymous" <sip:anonymous@anonymous.invalid>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallerIdRule {
    /// Anonymous From, `Privacy: id`, nothing else. The default.
    Withheld,
    /// Anonymous From, `P-Asserted-Identity: <sip:+61370100142@pbx...>`,
    /// `Privacy: id`.
    WithheldPaiPrivacy,
    /// Anonymous From, the same P-Asserted-Identity, no Privacy header.
    PaiLeak,
    /// From `"Eastside Women's Refuge" <sip:+61370100142@pbx...>`, no
    /// P-Asserted-Identity, no Privacy.
    FromLeak,
    /// From `"Salvation Army" <sip:+61290000000@salvationarmy.org.au>`, no
    /// P-Asserted-Identity, no Privacy.
    Umbrella,
    /// Anonymous From, `Privacy: id`, and `Remote-Party-ID:
    /// <sip:+61370100142@pbx...>;party=calling;privacy=full;screen=yes`.
    Rpid,
    /// Anonymous From, `Privacy: id`, and `Diversion:
    /// <sip:0370100142@pbx...>;reason=unconditional`.
    Diversion,
    /// Anonymous From, `Privacy: id`, and an `Identity:` header carrying a
    /// fixed PASSporT (dummy signature) whose payload has
    /// `"orig":{"tn":"61370100142"}`.
    Identity,
    /// Anonymous From, `Privacy: id`, Contact user part replaced by
    /// `+61370100142` (host and port unchanged, so it still reaches the line).
    Contact,
    /// Anonymous From, `Privacy: id`, SDP `o=EastsideWomensRefuge ...` and
    /// `s=Eastside Womens Refuge`.
    Sdp,
}

impl CallerIdRule {
    pub const ALL: [CallerIdRule; 10] = [
        CallerIdRule::Withheld,
        CallerIdRule::WithheldPaiPrivacy,
        CallerIdRule::PaiLeak,
        CallerIdRule::FromLeak,
        CallerIdRule::Umbrella,
        CallerIdRule::Rpid,
        CallerIdRule::Diversion,
        CallerIdRule::Identity,
        CallerIdRule::Contact,
        CallerIdRule::Sdp,
    ];

    /// The name the PBX config knows the rule by.
    pub fn name(self) -> &'static str {
        match self {
            CallerIdRule::Withheld => "withheld",
            CallerIdRule::WithheldPaiPrivacy => "withheld-pai-privacy",
            CallerIdRule::PaiLeak => "pai-leak",
            CallerIdRule::FromLeak => "from-leak",
            CallerIdRule::Umbrella => "umbrella",
            CallerIdRule::Rpid => "rpid",
            CallerIdRule::Diversion => "diversion",
            CallerIdRule::Identity => "identity",
            CallerIdRule::Contact => "contact",
            CallerIdRule::Sdp => "sdp",
        }
    }
}

impl std::fmt::Display for CallerIdRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options for [`Kamailio::start`].
#[derive(Clone, Debug)]
pub struct KamailioOpts {
    /// Also listen on TLS, with a certificate from a CA generated for this
    /// instance ([`Kamailio::tls_ca`]).
    pub tls: bool,
    /// Endpoint for every dialled number without its own, set before
    /// `start` returns (see [`Kamailio::set_default_endpoint`]).
    pub default_endpoint: Option<String>,
    /// Initial `Server` header of OPTIONS replies; the config's default
    /// ("Eastside PBX 1.0") when `None`.
    pub server: Option<String>,
    /// Initial caller-ID rules per line username.
    pub rules: Vec<(String, CallerIdRule)>,
    /// Bound on waiting for the PBX to answer after start.
    pub startup_timeout: Duration,
}

impl Default for KamailioOpts {
    fn default() -> Self {
        KamailioOpts {
            tls: false,
            default_endpoint: None,
            server: None,
            rules: Vec::new(),
            startup_timeout: Duration::from_secs(15),
        }
    }
}

/// Where Kamailio loads its modules from: the default it was built with,
/// as its help text states it (`-L path ... (default: DIR)`).
pub fn modules_dir() -> Option<PathBuf> {
    let out = Command::new(binary("kamailio").ok()?)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().find(|l| l.trim_start().starts_with("-L "))?;
    let dir = line
        .split("(default: ")
        .nth(1)?
        .trim_end()
        .trim_end_matches(')');
    Some(PathBuf::from(dir))
}

/// A running test PBX. Dropping it kills Kamailio and all its workers.
pub struct Kamailio {
    // Field order matters: the process goes before its directory.
    group: Group,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    ctl: String,
    kamcmd: PathBuf,
    tls: Option<TestCa>,
}

/// The default `Server` header of OPTIONS replies (set in the config).
pub const DEFAULT_SERVER: &str = "Eastside PBX 1.0";

impl Kamailio {
    /// Path of the PBX config kept in the repository.
    pub fn config_path() -> PathBuf {
        super::tests_dir().join("kamailio").join("kamailio.cfg")
    }

    /// Starts the PBX on fresh loopback ports and returns once it answers
    /// OPTIONS on every transport and its control socket takes commands.
    pub fn start(opts: KamailioOpts) -> Result<Kamailio> {
        let mut last_err = None;
        // Ports are picked free but another parallel test may grab one
        // before Kamailio binds it; a fresh set then works.
        for _ in 0..3 {
            match Self::try_start(&opts)? {
                Ok(k) => return Ok(k),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Outer error: give up. Inner error: the ports were taken, retry.
    fn try_start(opts: &KamailioOpts) -> Result<Result<Kamailio>> {
        let kamailio = binary("kamailio")?;
        let kamcmd = binary("kamcmd")?;
        let dir = peer_dir("cidguard-pbx-")?;
        let port = net::free_port()?;
        let ctl = format!("unix:{}", dir.path().join("ctl").display());

        let mut cmd = Command::new(kamailio);
        cmd.arg("-f")
            .arg(Self::config_path())
            // Foreground, logging to stderr (captured in the directory).
            .args(["-DD", "-E"])
            .arg("-Y")
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            // Small memory pools: a handful of calls, many instances.
            .args(["-m", "32", "-M", "4"])
            .args(["-A", &format!("CTL_SOCKET=\"{ctl}\"")])
            .args(["-l", &format!("udp:{LOOPBACK}:{port}")])
            .args(["-l", &format!("tcp:{LOOPBACK}:{port}")]);

        let mut tls = None;
        let mut tls_port = None;
        if opts.tls {
            let ca = TestCa::generate()?;
            let cert = dir.path().join("server-cert.pem");
            let key = dir.path().join("server-key.pem");
            std::fs::write(&cert, &ca.server_cert_pem)?;
            std::fs::write(&key, &ca.server_key_pem)?;
            let tls_cfg = dir.path().join("tls.cfg");
            std::fs::write(
                &tls_cfg,
                format!(
                    "[server:default]\n\
                     method = TLSv1.2+\n\
                     verify_certificate = no\n\
                     require_certificate = no\n\
                     certificate = {}\n\
                     private_key = {}\n\
                     \n\
                     [client:default]\n\
                     method = TLSv1.2+\n\
                     verify_certificate = no\n\
                     require_certificate = no\n",
                    cert.display(),
                    key.display()
                ),
            )?;
            let p = net::free_port()?;
            cmd.args(["-A", "WITH_TLS"])
                .args(["-A", &format!("TLS_CFG=\"{}\"", tls_cfg.display())])
                .args(["-l", &format!("tls:{LOOPBACK}:{p}")]);
            tls = Some(ca);
            tls_port = Some(p);
        }

        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("kamailio.log"))?)
            .stderr(std::fs::File::create(dir.path().join("kamailio.err"))?);
        let group = Group::spawn(&mut cmd)?;
        let mut k = Kamailio {
            group,
            dir,
            port,
            tls_port,
            ctl,
            kamcmd,
            tls,
        };

        match k.wait_ready(opts.startup_timeout) {
            Ok(()) => {}
            Err(e) => {
                let log = k.log();
                let exited = k.group.try_wait()?.is_some();
                let err = e.context(format!("Kamailio did not start:\n{}", tail(&log, 40)));
                if exited && log.contains("Address already in use") {
                    return Ok(Err(err));
                }
                return Err(err);
            }
        }

        if let Some(uri) = &opts.default_endpoint {
            k.set_default_endpoint(uri)?;
        }
        if let Some(server) = &opts.server {
            k.set_server(server)?;
        }
        for (line, rule) in &opts.rules {
            k.set_rule(line, *rule)?;
        }
        Ok(Ok(k))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        poll_until(left(), "Kamailio to answer OPTIONS over UDP", || {
            self.check_alive()?;
            Ok(net::options(
                Transport::Udp,
                self.udp_addr(),
                None,
                Duration::from_millis(200),
            )
            .ok())
        })?;
        self.check_alive()?;
        net::wait_for_options(Transport::Tcp, self.tcp_addr(), None, left())
            .context("Kamailio answering OPTIONS over TCP")?;
        if let Some(addr) = self.tls_addr() {
            net::wait_for_options(Transport::Tls, addr, self.tls.as_ref(), left())
                .context("Kamailio answering OPTIONS over TLS")?;
        }
        poll_until(left(), "Kamailio's control socket", || {
            self.check_alive()?;
            Ok(self.rpc(&["core.version"]).ok())
        })?;
        Ok(())
    }

    /// Checked between readiness probes so a config error fails at once
    /// instead of at the deadline.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.group.try_wait()? {
            bail!("Kamailio exited ({status})");
        }
        Ok(())
    }

    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.port))
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.port))
    }

    /// Only when started with `tls: true`.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port.map(|p| SocketAddr::from((LOOPBACK, p)))
    }

    /// The PBX's address for a transport; panics for TLS when not enabled.
    pub fn addr(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.udp_addr(),
            Transport::Tcp => self.tcp_addr(),
            Transport::Tls => self.tls_addr().expect("PBX started without TLS"),
        }
    }

    /// The CA that signed the PBX's TLS certificate (when TLS is on).
    pub fn tls_ca(&self) -> Option<&TestCa> {
        self.tls.as_ref()
    }

    /// The runtime directory (logs, control socket, TLS files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The control socket, as the control tool's `-s` argument.
    pub fn ctl_socket(&self) -> &str {
        &self.ctl
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for name in ["kamailio.err", "kamailio.log"] {
            if let Ok(b) = std::fs::read(self.dir.path().join(name)) {
                s.push_str(&String::from_utf8_lossy(&b));
            }
        }
        s
    }

    /// Runs one RPC command over the control socket and returns its output.
    /// Arguments are passed as given: prefix strings that look like numbers
    /// with `s:` (the control tool converts bare numbers to integers).
    pub fn rpc(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.kamcmd);
        cmd.args(["-s", &self.ctl]).args(args);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(5))?;
        // The tool exits 0 on RPC errors and reports them on stdout.
        if !out.status.success() || out.stdout.starts_with("error:") {
            bail!(
                "rpc {args:?} failed ({}): {}{}",
                out.status,
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }

    fn htable_set(&self, table: &str, key: &str, value: &str) -> Result<()> {
        self.rpc(&[
            "htable.sets",
            table,
            &format!("s:{key}"),
            &format!("s:{value}"),
        ])
        .map(drop)
    }

    fn htable_delete(&self, table: &str, key: &str) -> Result<()> {
        match self.rpc(&["htable.delete", table, &format!("s:{key}")]) {
            Err(e) if e.to_string().contains("404") => Ok(()),
            r => r.map(drop),
        }
    }

    /// Switches a line's caller-ID rule; applies to calls placed afterwards.
    pub fn set_rule(&self, line: &str, rule: CallerIdRule) -> Result<()> {
        self.set_rule_name(line, rule.name())
    }

    /// Sets a rule by name, unchecked (an unknown name makes the PBX refuse
    /// the line's calls with 500).
    pub fn set_rule_name(&self, line: &str, rule: &str) -> Result<()> {
        self.htable_set("callerid", line, rule)
    }

    /// Back to the default rule (withheld).
    pub fn clear_rule(&self, line: &str) -> Result<()> {
        self.htable_delete("callerid", line)
    }

    /// The `Server` header value of OPTIONS replies from now on.
    pub fn set_server(&self, server: &str) -> Result<()> {
        self.htable_set("pbxinfo", "server", server)
    }

    /// Where calls to this dialled number (user part) go, as a SIP URI like
    /// `sip:127.0.0.1:5062;transport=tcp`.
    pub fn set_endpoint(&self, number: &str, uri: &str) -> Result<()> {
        self.htable_set("endpoint", number, uri)
    }

    /// The user part the endpoint receives for calls to this dialled
    /// number, instead of the number as dialled (`0399990000` for a call
    /// dialled as `+61399990000`: a PBX delivering it in national form).
    pub fn set_delivered(&self, dialled: &str, user: &str) -> Result<()> {
        self.htable_set("deliver", dialled, user)
    }

    /// Where calls to numbers without their own endpoint go.
    pub fn set_default_endpoint(&self, uri: &str) -> Result<()> {
        self.htable_set("endpoint", "default", uri)
    }

    /// Contact URIs currently registered for a line.
    pub fn registered_contacts(&self, line: &str) -> Result<Vec<String>> {
        match self.rpc(&["ul.lookup", "location", &format!("s:{line}")]) {
            Ok(out) => Ok(out
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address: "))
                .map(str::to_string)
                .collect()),
            Err(e) if e.to_string().contains("not found") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Sends OPTIONS to the PBX and returns its final reply (raw).
    pub fn options(&self, transport: Transport) -> Result<String> {
        net::options(
            transport,
            self.addr(transport),
            self.tls.as_ref(),
            Duration::from_secs(5),
        )
    }

    /// Process group id of Kamailio and its workers.
    pub fn pgid(&self) -> u32 {
        self.group.pid()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PBX log (tail) of a failed test:\n{}",
                tail(&self.log(), 60)
            );
        }
        self.group.kill();
    }
}
