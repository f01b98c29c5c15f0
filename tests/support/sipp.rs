//! SIPp running one scenario, as a line (UAC) or as the monitored endpoint
//! (UAS), with its message log captured for the test to judge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::net::{self, Transport, LOOPBACK};
use super::sip::{parse_trace, TraceMessage};
use super::{binary, peer_dir, poll_until, tail, Group};

/// A scenario from the repository's PBX-proving set.
pub fn pbx_scenario(name: &str) -> PathBuf {
    super::tests_dir().join("sipp").join("pbx").join(name)
}

/// How to run one SIPp instance. Build with [`SippOpts::uac`] or
/// [`SippOpts::uas`] and the chained setters.
#[derive(Clone, Debug)]
pub struct SippOpts {
    pub scenario: PathBuf,
    pub transport: Transport,
    /// Where a UAC sends; `None` for a UAS.
    pub remote: Option<SocketAddr>,
    /// `-s`: the user part a UAC calls (`[service]`).
    pub service: Option<String>,
    /// `-key name value`: scenario keywords (`[name]`).
    pub keys: Vec<(String, String)>,
    /// `-au`/`-ap`: digest credentials for `[authentication]`.
    pub auth: Option<(String, String)>,
    /// `-m`: calls to run before exiting.
    pub calls: u32,
    /// SIPp's own global timeout; the harness waits a little longer, then
    /// kills it.
    pub timeout: Duration,
    /// Anything else, passed as is.
    pub args: Vec<String>,
}

impl SippOpts {
    pub fn uac(scenario: impl Into<PathBuf>, transport: Transport, remote: SocketAddr) -> Self {
        SippOpts {
            remote: Some(remote),
            ..Self::uas(scenario, transport)
        }
    }

    pub fn uas(scenario: impl Into<PathBuf>, transport: Transport) -> Self {
        SippOpts {
            scenario: scenario.into(),
            transport,
            remote: None,
            service: None,
            keys: Vec::new(),
            auth: None,
            calls: 1,
            timeout: Duration::from_secs(10),
            args: Vec::new(),
        }
    }

    pub fn service(mut self, service: &str) -> Self {
        self.service = Some(service.to_string());
        self
    }

    pub fn key(mut self, name: &str, value: &str) -> Self {
        self.keys.push((name.to_string(), value.to_string()));
        self
    }

    pub fn auth(mut self, username: &str, password: &str) -> Self {
        self.auth = Some((username.to_string(), password.to_string()));
        self
    }

    pub fn calls(mut self, calls: u32) -> Self {
        self.calls = calls;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }
}

/// A running SIPp. Killed on drop if still running.
pub struct Sipp {
    group: Group,
    dir: tempfile::TempDir,
    port: u16,
    opts: SippOpts,
}

/// What a finished SIPp run left behind.
#[derive(Debug)]
pub struct SippOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The `-trace_msg` log: every message sent and received.
    pub message_log: String,
    /// The `-trace_err` log: unexpected messages and errors.
    pub error_log: String,
}

/// SIPp's exit code for "fatal error binding a socket".
const EXIT_BIND_FAILED: i32 = 254;

impl Sipp {
    /// Starts SIPp; returns once its sockets are bound (a UAC has then
    /// started sending by itself).
    pub fn start(opts: SippOpts) -> Result<Sipp> {
        if opts.transport == Transport::Tls {
            // The packaged SIPp is built without TLS support.
            bail!("SIPp scenarios run over UDP or TCP only");
        }
        let mut last_err = None;
        // A port picked as free may be taken before SIPp binds it (tests run
        // in parallel): try again with fresh ports.
        for _ in 0..3 {
            match Self::try_start(opts.clone())? {
                Ok(sipp) => return Ok(sipp),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Outer error: give up. Inner error: a bind failure worth a retry.
    fn try_start(opts: SippOpts) -> Result<Result<Sipp>> {
        let dir = peer_dir("cidguard-sipp-")?;
        let port = net::free_port()?;
        let control_port = net::free_port()?;
        let media_port = net::free_media_port()?;
        let mut cmd = Command::new(binary("sipp")?);
        cmd.arg("-sf").arg(&opts.scenario);
        if let Some(remote) = opts.remote {
            cmd.arg(remote.to_string());
        }
        let mode = match opts.transport {
            Transport::Udp => "u1",
            _ => "t1",
        };
        cmd.args(["-t", mode, "-i", &LOOPBACK.to_string()])
            .args(["-p", &port.to_string()])
            .args(["-cp", &control_port.to_string()])
            .args(["-mp", &media_port.to_string()])
            .args(["-m", &opts.calls.to_string()])
            .arg("-nostdin")
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.path().join("messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.path().join("errors.log"))
            .args(["-timeout", &format!("{}ms", opts.timeout.as_millis())])
            .arg("-timeout_error");
        if let Some(service) = &opts.service {
            cmd.args(["-s", service]);
        }
        for (name, value) in &opts.keys {
            cmd.args(["-key", name, value]);
        }
        if let Some((user, password)) = &opts.auth {
            cmd.args(["-au", user, "-ap", password]);
        }
        cmd.args(&opts.args)
            // SIPp drops other files (screens, stats) in its working dir.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?);
        let group = Group::spawn(&mut cmd)?;
        let mut sipp = Sipp {
            group,
            dir,
            port,
            opts,
        };
        let transport = sipp.opts.transport;
        // Ready once its SIP, control and media sockets are all bound: any
        // of them can hit a port another test took meanwhile, and SIPp then
        // exits with a bind error, which is retried with fresh ports.
        let ready = poll_until(Duration::from_secs(5), "SIPp to bind its sockets", || {
            if let Some(status) = sipp.group.try_wait()? {
                return Ok(Some(Err(status)));
            }
            let bound = net::port_is_bound(transport, port)
                && net::port_is_bound(Transport::Udp, control_port)
                && net::port_is_bound(Transport::Udp, media_port);
            Ok(bound.then_some(Ok(())))
        })?;
        match ready {
            Ok(()) => Ok(Ok(sipp)),
            Err(status) if status.code() == Some(EXIT_BIND_FAILED) => Ok(Err(anyhow::anyhow!(
                "SIPp could not bind its sockets:\n{}",
                tail(&sipp.read_outputs(), 30)
            ))),
            // A caller may be done before its sockets were seen; `wait`
            // reports how it went.
            Err(_) if sipp.opts.remote.is_some() => Ok(Ok(sipp)),
            Err(status) => bail!(
                "SIPp exited before listening ({status}):\n{}",
                tail(&sipp.read_outputs(), 30)
            ),
        }
    }

    /// Starts SIPp and waits for it to finish.
    pub fn run(opts: SippOpts) -> Result<SippOutcome> {
        Self::start(opts)?.wait()
    }

    /// The address SIPp listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.port))
    }

    /// SIP URI reaching this SIPp over its transport, e.g. as the PBX's
    /// endpoint for a number.
    pub fn uri(&self) -> String {
        format!(
            "sip:{}:{};transport={}",
            LOOPBACK,
            self.port,
            self.opts.transport.param()
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read(self.dir.path().join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn read_outputs(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.read("stdout.log"),
            self.read("stderr.log"),
            self.read("errors.log")
        )
    }

    /// Waits for SIPp to exit (bounded by its timeout plus a margin).
    pub fn wait(mut self) -> Result<SippOutcome> {
        let limit = self.opts.timeout + Duration::from_secs(5);
        let status = match self.group.wait_timeout(limit) {
            Ok(status) => status,
            Err(e) => {
                let out = self.read_outputs();
                return Err(e).with_context(|| {
                    format!(
                        "SIPp {} did not finish:\n{}",
                        self.opts.scenario.display(),
                        tail(&out, 40)
                    )
                });
            }
        };
        Ok(SippOutcome {
            status,
            stdout: self.read("stdout.log"),
            stderr: self.read("stderr.log"),
            message_log: self.read("messages.log"),
            error_log: self.read("errors.log"),
        })
    }
}

impl SippOutcome {
    /// Every call of the scenario succeeded.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Every message sent and received, in order.
    pub fn messages(&self) -> Vec<TraceMessage> {
        parse_trace(&self.message_log)
    }

    /// Received requests with this method, in order.
    pub fn received_requests(&self, method: &str) -> Vec<TraceMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.received && m.is_request(method))
            .collect()
    }

    /// Received responses, in order.
    pub fn received_responses(&self) -> Vec<TraceMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.received && m.status().is_some())
            .collect()
    }

    /// A summary for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit {}\n--- stdout (tail)\n{}\n--- stderr\n{}\n--- errors\n{}\n--- messages\n{}",
            self.status,
            tail(&self.stdout, 25),
            tail(&self.stderr, 20),
            tail(&self.error_log, 40),
            tail(&self.message_log, 120)
        )
    }

    /// Fails with the whole story unless every call succeeded.
    pub fn expect_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: SIPp failed\n{}", self.describe());
        self
    }
}
