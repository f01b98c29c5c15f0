//! The SIP user agents against a real peer (SIPp) and against each other:
//! evidence kept byte for byte, hold timing, Digest verified by the peer,
//! CANCEL and BYE, TLS, and staying up under garbage and floods.
//!
//! Everything listens on 127.0.0.1 port 0 and talks only to 127.0.0.1.
//! Without SIPp these tests skip with a notice, except under CI (CI=true),
//! where a missing SIPp fails them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cidguard::config::{self, Transport};
use cidguard::sip::endpoint::{
    CallEnd, CallHandler, Disposition, Endpoint, EndpointHandle, EndpointOptions, FinishedCall,
    IncomingCall, StrayCall, Then,
};
use cidguard::sip::transport::{Direction, TlsVerify};
use cidguard::sip::uac::{CallOptions, CallOutcome, Hangup, Line, LineOptions, UacError};
use cidguard::sip::Account;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);
const NUMBER: &str = "4000";
const USER: &str = "line100";
const PASSWORD: &str = "s3cret!";

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------
// SIPp

/// SIPp's path, or None (skip) outside CI when it isn't installed.
fn sipp() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("sipp"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("sipp is not installed, and under CI the SIPp tests must run");
        }
        eprintln!("NOTICE: sipp is not installed; skipping this SIPp test");
    }
    found
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .display()
        .to_string()
}

struct Sipp {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

struct SippRun {
    status: ExitStatus,
    output: String,
    /// Every message SIPp sent, exactly.
    sent: Vec<Vec<u8>>,
}

impl Sipp {
    /// Start SIPp with message tracing into a private directory.
    fn start(bin: &Path, args: &[String]) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new(bin)
            .args(args)
            .args(["-nostdin", "-trace_msg", "-message_file"])
            .arg(dir.path().join("messages.log"))
            .args(["-trace_err", "-error_file"])
            .arg(dir.path().join("errors.log"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Sipp { child, dir }
    }

    async fn finish(self) -> SippRun {
        let out = within("SIPp to finish", self.child.wait_with_output())
            .await
            .unwrap();
        let log = std::fs::read(self.dir.path().join("messages.log")).unwrap_or_default();
        let errors =
            std::fs::read_to_string(self.dir.path().join("errors.log")).unwrap_or_default();
        SippRun {
            status: out.status,
            output: format!(
                "{}{}\nerrors:\n{errors}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            sent: sent_messages(&log),
        }
    }
}

/// The messages in a SIPp `-trace_msg` log that SIPp sent: each is logged
/// as "... message sent (N bytes):" and a blank line, then exactly N bytes.
fn sent_messages(log: &[u8]) -> Vec<Vec<u8>> {
    let marker = b"message sent (";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&log[i..], marker) {
        let start = i + pos + marker.len();
        let Some(close) = find(&log[start..], b" bytes):\n\n") else {
            break;
        };
        let n: usize = std::str::from_utf8(&log[start..start + close])
            .unwrap()
            .parse()
            .unwrap();
        let body = start + close + b" bytes):\n\n".len();
        out.push(log[body..body + n].to_vec());
        i = body + n;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A port free for both UDP and TCP on 127.0.0.1, for SIPp to bind.
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Wait until something listens on the port (read from the kernel's socket
/// tables, so the check can't steal the port from SIPp), failing at once if
/// SIPp exits instead.
async fn wait_listening(sipp: &mut Sipp, port: u16, transport: Transport) {
    let (file, state) = match transport {
        Transport::Udp => ("/proc/net/udp", None),
        _ => ("/proc/net/tcp", Some("0A")),
    };
    if !Path::new(file).exists() {
        return; // Not Linux: UDP retransmission covers a slow start.
    }
    let want = format!(":{port:04X}");
    within("SIPp to listen", async {
        loop {
            let table = std::fs::read_to_string(file).unwrap_or_default();
            let up = table.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1).is_some_and(|a| a.ends_with(&want))
                    && state.is_none_or(|s| cols.get(3) == Some(&s))
            });
            if up {
                return;
            }
            if let Ok(Some(status)) = sipp.child.try_wait() {
                let mut err = String::new();
                if let Some(e) = sipp.child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err).await;
                }
                panic!("SIPp exited ({status}) before listening:\n{err}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Endpoint and line helpers

/// A handler that answers every call the same way and hands over what it saw.
struct Recorder {
    disposition: Mutex<Disposition>,
    invites: mpsc::UnboundedSender<IncomingCall>,
    finished: mpsc::UnboundedSender<FinishedCall>,
    strays: Mutex<u64>,
}

impl CallHandler for Recorder {
    fn on_invite(&self, call: &IncomingCall) -> Disposition {
        let _ = self.invites.send(call.clone());
        self.disposition.lock().unwrap().clone()
    }
    fn on_finished(&self, call: FinishedCall) {
        let _ = self.finished.send(call);
    }
    fn on_stray(&self, _call: &StrayCall) {
        *self.strays.lock().unwrap() += 1;
    }
}

struct TestEndpoint {
    handle: EndpointHandle,
    recorder: Arc<Recorder>,
    invites: mpsc::UnboundedReceiver<IncomingCall>,
    finished: mpsc::UnboundedReceiver<FinishedCall>,
}

impl TestEndpoint {
    async fn start(listen: &[&str], disposition: Disposition) -> TestEndpoint {
        TestEndpoint::start_with(listen, disposition, "", EndpointOptions::default()).await
    }

    async fn start_with(
        listen: &[&str],
        disposition: Disposition,
        extra_toml: &str,
        opts: EndpointOptions,
    ) -> TestEndpoint {
        let listen: Vec<String> = listen.iter().map(|l| format!("{l}:127.0.0.1:0")).collect();
        let cfg: config::Endpoint = toml::from_str(&format!(
            "listen = {listen:?}\nnumbers = [\"+1 (555) 0100\", \"{NUMBER}\"]\n{extra_toml}"
        ))
        .unwrap();
        let (itx, invites) = mpsc::unbounded_channel();
        let (ftx, finished) = mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder {
            disposition: Mutex::new(disposition),
            invites: itx,
            finished: ftx,
            strays: Mutex::new(0),
        });
        let spec = cidguard::plan::endpoint_spec(&cfg, None).unwrap();
        let handle = Endpoint::start_with(&spec, recorder.clone(), opts)
            .await
            .unwrap();
        TestEndpoint {
            handle,
            recorder,
            invites,
            finished,
        }
    }

    fn addr(&self, t: Transport) -> SocketAddr {
        self.handle.addr(t).unwrap()
    }

    async fn next_finished(&mut self) -> FinishedCall {
        within("the endpoint to finish a call", self.finished.recv())
            .await
            .unwrap()
    }

    /// The finished call with this Call-ID, skipping others: calls end
    /// in their own tasks, so on a busy machine an earlier call (waiting
    /// for its ACK to be handed over) may be reported after a later one.
    async fn finished_call(&mut self, call_id: &str) -> FinishedCall {
        loop {
            let call = self.next_finished().await;
            if call.call_id == call_id {
                return call;
            }
        }
    }
}

fn account(registrar: SocketAddr, transport: Transport, password: &str, ring: &str) -> Account {
    let written: config::Account = toml::from_str(&format!(
        "registrar = \"{registrar}\"\ntransport = \"{transport}\"\nusername = \"{USER}\"\n\
         password = \"{password}\"\nregister = false\nring_timeout = \"{ring}\"\n"
    ))
    .unwrap();
    cidguard::plan::sip_account(&written)
}

fn line_options() -> LineOptions {
    LineOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..LineOptions::default()
    }
}

async fn line(registrar: SocketAddr, transport: Transport, ring: &str) -> Line {
    Line::new(
        &account(registrar, transport, PASSWORD, ring),
        line_options(),
    )
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn starts_with(b: &[u8], prefix: &str) -> bool {
    b.starts_with(prefix.as_bytes())
}

/// Send OPTIONS over UDP from a fresh socket and return the status code.
async fn options_udp(to: SocketAddr) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = s.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:{NUMBER}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bK-opt-{}\r\n\
         From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:{NUMBER}@{to}>\r\nCall-ID: opt-{}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        rand_id(),
        rand_id()
    );
    s.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = within("the OPTIONS response", s.recv_from(&mut buf))
        .await
        .unwrap();
    cidguard::sip::parse(&buf[..n]).unwrap().status().unwrap()
}

fn rand_id() -> u64 {
    rand::random()
}

// ---------------------------------------------------------------------------
// SIPp calls the endpoint

async fn sipp_calls_endpoint(transport: Transport) {
    let Some(bin) = sipp() else { return };
    let hold = Duration::from_millis(300);
    let mut ep = TestEndpoint::start(
        &[&transport.to_string()],
        Disposition::Hold {
            hold,
            then: Then::Reject(486),
        },
    )
    .await;
    let target = ep.addr(transport);
    let t = if transport == Transport::Udp {
        "u1"
    } else {
        "t1"
    };
    let port = free_port();
    let run = Sipp::start(
        &bin,
        &[
            "-sf".into(),
            scenario("uac_reject.xml"),
            "-s".into(),
            NUMBER.into(),
            "-t".into(),
            t.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            "1".into(),
            "-cid_str".into(),
            format!("cidguard-{transport}-%u@test"),
            "-timeout".into(),
            "15s".into(),
            "-timeout_error".into(),
            target.to_string(),
        ],
    )
    .finish()
    .await;
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);

    let call = ep.next_finished().await;
    assert_eq!(call.call_id, format!("cidguard-{transport}-1@test"));
    assert_eq!(call.number, NUMBER);
    assert_eq!(call.transport, transport);
    assert_eq!(call.ended, CallEnd::Rejected(486));
    assert!(call.ack_received);

    // The evidence is what SIPp sent, byte for byte.
    let sipp_invite = run.sent.iter().find(|m| starts_with(m, "INVITE ")).unwrap();
    let sipp_ack = run.sent.iter().find(|m| starts_with(m, "ACK ")).unwrap();
    let received: Vec<&Vec<u8>> = call
        .messages
        .iter()
        .filter(|m| m.direction == Direction::Received)
        .map(|m| &m.bytes)
        .collect();
    assert_eq!(text(received[0]), text(sipp_invite));
    assert_eq!(received[0], sipp_invite);
    assert!(received.contains(&sipp_ack), "ACK not kept as sent");
    let sent: Vec<String> = call
        .messages
        .iter()
        .filter(|m| m.direction == Direction::Sent)
        .map(|m| {
            text(&m.bytes)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        sent,
        [
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 486 Busy Here"
        ]
    );
    assert!(call.messages[0].flow.remote.port() == port);

    // The hold is exact to the millisecond or so.
    let held = call.final_after.unwrap();
    eprintln!("{transport}: hold chosen {hold:?}, final response after {held:?}");
    assert!(
        held >= hold && held < hold + Duration::from_millis(25),
        "held {held:?}"
    );

    let invite = within("the IncomingCall", ep.invites.recv()).await.unwrap();
    let names: Vec<&str> = invite.identity.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["From", "Contact", "P-Asserted-Identity", "Privacy"]);
    assert_eq!(invite.invite, *sipp_invite);
    ep.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_endpoint_udp_held_then_486() {
    sipp_calls_endpoint(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_endpoint_tcp_held_then_486() {
    sipp_calls_endpoint(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_call_answered_then_caller_hangs_up() {
    let Some(bin) = sipp() else { return };
    let mut ep = TestEndpoint::start(
        &["udp"],
        Disposition::Hold {
            hold: Duration::from_millis(100),
            then: Then::Answer {
                hangup_after: Duration::from_secs(10),
            },
        },
    )
    .await;
    let run = Sipp::start(
        &bin,
        &[
            "-sf".into(),
            scenario("uac_answer_bye.xml"),
            "-s".into(),
            NUMBER.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "15s".into(),
            "-timeout_error".into(),
            ep.addr(Transport::Udp).to_string(),
        ],
    )
    .finish()
    .await;
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
    let call = ep.next_finished().await;
    assert_eq!(call.ended, CallEnd::AnsweredCallerHungUp);
    assert_eq!(call.final_status, Some(200));
    assert!(call.ack_received);
    let received: Vec<&Vec<u8>> = call
        .messages
        .iter()
        .filter(|m| m.direction == Direction::Received)
        .map(|m| &m.bytes)
        .collect();
    for method in ["INVITE ", "ACK ", "BYE "] {
        let sipp_sent = run.sent.iter().find(|m| starts_with(m, method)).unwrap();
        assert!(received.contains(&sipp_sent), "{method} not kept exactly");
    }
    // Our 200 offered PCMU and telephone-event on the real RTP port.
    let ok = call
        .messages
        .iter()
        .find(|m| m.direction == Direction::Sent && starts_with(&m.bytes, "SIP/2.0 200"))
        .unwrap();
    let invite = ep.invites.recv().await.unwrap();
    let sdp = text(&ok.bytes);
    assert!(sdp.contains(&format!("m=audio {} RTP/AVP 0 101", invite.rtp_addr.port())));
    assert!(sdp.contains("a=rtpmap:101 telephone-event/8000"));
    ep.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// Our line calls a SIPp PBX

struct SippPbx {
    sipp: Sipp,
    addr: SocketAddr,
}

async fn sipp_pbx(bin: &Path, scenario_file: &str, transport: Transport) -> SippPbx {
    let port = free_port();
    let t = if transport == Transport::Udp {
        "u1"
    } else {
        "t1"
    };
    let mut sipp = Sipp::start(
        bin,
        &[
            "-sf".into(),
            scenario(scenario_file),
            "-t".into(),
            t.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "15s".into(),
            "-timeout_error".into(),
        ],
    );
    wait_listening(&mut sipp, port, transport).await;
    SippPbx {
        sipp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn header_values(b: &[u8], name: &str) -> Vec<String> {
    let m = cidguard::sip::parse(b).unwrap();
    m.headers_named(name).map(|h| h.value.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_answers_401_and_gets_486() {
    let Some(bin) = sipp() else { return };
    let pbx = sipp_pbx(&bin, "uas_401_486.xml", Transport::Udp).await;
    let line = line(pbx.addr, Transport::Udp, "10s").await;
    let report = within("the call", line.call(NUMBER, CallOptions::default()))
        .await
        .unwrap();
    let run = pbx.sipp.finish().await;
    // SIPp checked the Digest response itself (verifyauth) before the 486.
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
    assert_eq!((report.status, report.reason.as_str()), (486, "Busy Here"));
    assert_eq!(report.outcome, CallOutcome::Rejected);
    assert_eq!(report.attempts, 2);
    assert_eq!(report.server.as_deref(), Some("TestPBX/486"));
    assert!(report.first_provisional.is_some());
    assert!(report.final_response_since_first >= report.final_response);
    assert_eq!(report.target, format!("sip:{NUMBER}@{}", pbx.addr));

    let invites: Vec<_> = report
        .messages
        .iter()
        .filter(|m| m.direction == Direction::Sent && starts_with(&m.bytes, "INVITE "))
        .collect();
    assert_eq!(invites.len(), 2);
    let auth = header_values(&invites[1].bytes, "Authorization");
    assert_eq!(auth.len(), 1);
    assert!(auth[0].contains("qop=auth, nc=00000001"), "{}", auth[0]);
    assert!(auth[0].contains("opaque=\"opaque-1\""));
    let (c1, c2) = (
        header_values(&invites[0].bytes, "CSeq"),
        header_values(&invites[1].bytes, "CSeq"),
    );
    assert_eq!((c1[0].as_str(), c2[0].as_str()), ("1 INVITE", "2 INVITE"));
    assert_eq!(
        header_values(&invites[0].bytes, "Call-ID"),
        header_values(&invites[1].bytes, "Call-ID")
    );
    // Both non-2xx finals were ACKed inside their transactions.
    let acks = report
        .messages
        .iter()
        .filter(|m| m.direction == Direction::Sent && starts_with(&m.bytes, "ACK "))
        .count();
    assert_eq!(acks, 2);
    line.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_rejects_a_wrong_password() {
    // The other half of the proof that SIPp really verifies: a wrong
    // password must fail its check.
    let Some(bin) = sipp() else { return };
    let pbx = sipp_pbx(&bin, "uas_401_486.xml", Transport::Udp).await;
    let line = Line::new(
        &account(pbx.addr, Transport::Udp, "wrong", "10s"),
        line_options(),
    )
    .await
    .unwrap();
    let report = within("the call", line.call(NUMBER, CallOptions::default()))
        .await
        .unwrap();
    assert_eq!(report.status, 403);
    let run = pbx.sipp.finish().await;
    assert!(!run.status.success(), "SIPp accepted a wrong password");
    line.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_answers_407_then_acks_200_and_hangs_up() {
    let Some(bin) = sipp() else { return };
    let pbx = sipp_pbx(&bin, "uas_407_200.xml", Transport::Udp).await;
    let line = line(pbx.addr, Transport::Udp, "10s").await;
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    let report = within(
        "the call",
        line.call_with(NUMBER, CallOptions::default(), |answered| async move {
            *seen2.lock().unwrap() = Some(answered.remote_rtp);
        }),
    )
    .await
    .unwrap();
    let run = pbx.sipp.finish().await;
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
    assert_eq!(report.status, 200);
    assert_eq!(report.outcome, CallOutcome::Answered);
    assert_eq!(report.hangup, Some(Hangup::Local));
    assert_eq!(report.bye_status, Some(200));
    assert!(report.remote_sdp.is_some());
    assert!(
        seen.lock().unwrap().unwrap().is_some(),
        "remote RTP address"
    );
    let sent: Vec<&[u8]> = report
        .messages
        .iter()
        .filter(|m| m.direction == Direction::Sent)
        .map(|m| m.bytes.as_slice())
        .collect();
    let second = sent
        .iter()
        .filter(|m| starts_with(m, "INVITE "))
        .nth(1)
        .unwrap();
    assert_eq!(header_values(second, "Proxy-Authorization").len(), 1);
    assert!(header_values(second, "Authorization").is_empty());
    let ack_2xx = sent
        .iter()
        .filter(|m| starts_with(m, "ACK "))
        .find(|m| header_values(m, "To")[0].contains("cidguard-pbx-200"))
        .unwrap();
    // The 2xx ACK is its own transaction: a new branch, the INVITE's CSeq.
    assert_ne!(header_values(ack_2xx, "Via"), header_values(second, "Via"));
    assert_eq!(header_values(ack_2xx, "CSeq")[0], "2 ACK");
    assert!(sent
        .iter()
        .any(|m| starts_with(m, "BYE sip:callee@127.0.0.1")));
    line.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_cancels_after_ring_timeout() {
    let Some(bin) = sipp() else { return };
    let pbx = sipp_pbx(&bin, "uas_ring_cancel.xml", Transport::Udp).await;
    let line = line(pbx.addr, Transport::Udp, "400ms").await;
    let report = within("the call", line.call(NUMBER, CallOptions::default()))
        .await
        .unwrap();
    let run = pbx.sipp.finish().await;
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
    assert_eq!(report.outcome, CallOutcome::Cancelled);
    assert_eq!(report.status, 487);
    assert_eq!(report.cancel_status, Some(200));
    assert!(report.final_response >= Duration::from_millis(400));
    let cancel = report
        .messages
        .iter()
        .find(|m| m.direction == Direction::Sent && starts_with(&m.bytes, "CANCEL "))
        .unwrap();
    let invite = report
        .messages
        .iter()
        .find(|m| m.direction == Direction::Sent && starts_with(&m.bytes, "INVITE "))
        .unwrap();
    assert_eq!(
        header_values(&cancel.bytes, "Via"),
        header_values(&invite.bytes, "Via")
    );
    assert_eq!(header_values(&cancel.bytes, "CSeq")[0], "1 CANCEL");
    line.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_registers_with_digest_verified_by_sipp() {
    let Some(bin) = sipp() else { return };
    let pbx = sipp_pbx(&bin, "uas_register.xml", Transport::Udp).await;
    let line = line(pbx.addr, Transport::Udp, "10s").await;
    let reg = within("REGISTER", line.register()).await.unwrap();
    assert!(reg.registered(), "{reg:?}");
    assert_eq!(reg.status, 200);
    assert_eq!(reg.expires, Some(Duration::from_secs(120)));
    assert_eq!(reg.server.as_deref(), Some("TestRegistrar/3.6"));
    assert_eq!(reg.attempts, 2);
    eprintln!("register: {reg}");
    let unreg = within("un-REGISTER", line.unregister()).await.unwrap();
    assert_eq!(unreg.status, 200);
    let run = pbx.sipp.finish().await;
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
    // The same nonce answered twice: the nonce count went up.
    let last = unreg
        .messages
        .iter()
        .rfind(|m| m.direction == Direction::Sent)
        .unwrap();
    assert!(header_values(&last.bytes, "Authorization")[0].contains("nc=00000002"));
    assert_eq!(header_values(&last.bytes, "Expires")[0], "0");
    // One Call-ID for the registration, CSeq rising.
    let cseqs: Vec<String> = reg
        .messages
        .iter()
        .chain(unreg.messages.iter())
        .filter(|m| m.direction == Direction::Sent)
        .map(|m| header_values(&m.bytes, "CSeq")[0].clone())
        .collect();
    assert_eq!(
        cseqs,
        ["1 REGISTER", "2 REGISTER", "3 REGISTER", "4 REGISTER"]
    );
    // Credentials never show in the report's Debug output except in the
    // raw wire bytes; the password itself is nowhere.
    let dbg = format!("{line:?} {reg:?}");
    assert!(!dbg.contains(PASSWORD));
    line.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_retries_a_stale_nonce_and_stops_at_a_refusal() {
    let Some(bin) = sipp() else { return };
    let pbx = sipp_pbx(&bin, "uas_stale_then_refuse.xml", Transport::Udp).await;
    let line = line(pbx.addr, Transport::Udp, "10s").await;
    let err = within("the call", line.call(NUMBER, CallOptions::default()))
        .await
        .unwrap_err();
    let run = pbx.sipp.finish().await;
    // SIPp verified both authenticated INVITEs, and saw no fourth.
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
    match &err {
        UacError::AuthRejected {
            method,
            status,
            server,
            ..
        } => {
            assert_eq!((method.as_str(), *status), ("INVITE", 401));
            assert_eq!(server.as_deref(), Some("TestPBX/refuses"));
        }
        other => panic!("expected AuthRejected, got {other}"),
    }
    assert!(!err.to_string().contains(PASSWORD));
    line.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_refreshes_its_registration_then_unregisters() {
    let Some(bin) = sipp() else { return };
    let pbx = sipp_pbx(&bin, "uas_register_refresh.xml", Transport::Udp).await;
    let line = line(pbx.addr, Transport::Udp, "10s").await;
    let reg = within("REGISTER", line.register()).await.unwrap();
    assert_eq!(reg.expires, Some(Duration::from_secs(2)));
    let refresher = line.spawn_refresher(reg.expires.unwrap());
    let mut refreshes = refresher.refreshes();
    within("the refresh", refreshes.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    drop(refresher);
    let unreg = within("un-REGISTER", line.unregister()).await.unwrap();
    assert_eq!(unreg.status, 200);
    assert!(!unreg.registered());
    let run = pbx.sipp.finish().await;
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
    line.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_registers_itself_at_a_provider() {
    let Some(bin) = sipp() else { return };
    let provider = sipp_pbx(&bin, "uas_register_refresh.xml", Transport::Udp).await;
    let ep = TestEndpoint::start_with(
        &["udp"],
        Disposition::Reject(486),
        &format!(
            "[register]\nregistrar = \"{}\"\nusername = \"did4000\"\npassword = \"x\"\nexpiry = \"60s\"\n",
            provider.addr
        ),
        EndpointOptions::default(),
    )
    .await;
    let reg = ep.handle.registration().unwrap().as_ref().unwrap();
    assert!(reg.registered());
    // The binding names the endpoint's listener, so calls come there.
    let udp = ep.addr(Transport::Udp);
    assert_eq!(reg.contact, format!("<sip:did4000@{udp}>"));
    let mut refreshes = ep.handle.registration_refreshes().unwrap();
    within("the refresh", refreshes.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    // Shutting down removes the binding (the scenario's last REGISTER).
    ep.handle.shutdown().await;
    let run = provider.sipp.finish().await;
    assert!(run.status.success(), "SIPp failed:\n{}", run.output);
}

// ---------------------------------------------------------------------------
// Our line calls our endpoint

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_to_endpoint_udp_and_tcp() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut ep = TestEndpoint::start(&["udp", "tcp"], Disposition::Reject(486)).await;
        let mut opts = line_options();
        // Ping often, to see the CRLF keep-alives answered on TCP.
        opts.stack.transport.keepalive = Some(Duration::from_millis(20));
        let line = Line::new(
            &account(ep.addr(transport), transport, PASSWORD, "5s"),
            opts,
        )
        .await
        .unwrap();
        // Warm up (connection, sockets), then measure one INVITE -> 486.
        let _ = within("warm-up call", line.call(NUMBER, CallOptions::default()))
            .await
            .unwrap();
        let report = within("the call", line.call(NUMBER, CallOptions::default()))
            .await
            .unwrap();
        assert_eq!(report.status, 486);
        eprintln!(
            "{transport}: INVITE -> 486 on loopback in {:?} (first 1xx after {:?})",
            report.final_response,
            report.first_provisional.unwrap()
        );
        let call = ep.finished_call(&report.call_id).await;
        assert_eq!(call.ended, CallEnd::Rejected(486));
        assert!(call.ack_received);
        assert_eq!(call.transport, transport);
        // What the line sent is what the endpoint kept.
        let sent_invite = &report.messages[0];
        assert_eq!(sent_invite.direction, Direction::Sent);
        assert_eq!(call.messages[0].bytes, sent_invite.bytes);

        // Ringing longer than the ring timeout: the line cancels.
        *ep.recorder.disposition.lock().unwrap() = Disposition::Hold {
            hold: Duration::from_secs(5),
            then: Then::Reject(486),
        };
        let report = within(
            "the cancelled call",
            line.call(
                NUMBER,
                CallOptions {
                    ring_timeout: Some(Duration::from_millis(200)),
                    ..CallOptions::default()
                },
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            (report.outcome, report.status),
            (CallOutcome::Cancelled, 487)
        );
        assert_eq!(report.cancel_status, Some(200));
        let call = ep.finished_call(&report.call_id).await;
        assert_eq!(call.ended, CallEnd::Cancelled);
        assert!(call.ack_received);
        assert!(call
            .messages
            .iter()
            .any(|m| m.direction == Direction::Received && starts_with(&m.bytes, "CANCEL ")));

        // Answered: the action sees the endpoint's RTP address, and what it
        // sends there reaches the RTP socket the handler was given.
        *ep.recorder.disposition.lock().unwrap() = Disposition::Hold {
            hold: Duration::from_millis(50),
            then: Then::Answer {
                hangup_after: Duration::from_secs(10),
            },
        };
        while ep.invites.try_recv().is_ok() {}
        let report = within(
            "the answered call",
            line.call_with(NUMBER, CallOptions::default(), |a| async move {
                let to = a.remote_rtp.unwrap();
                a.rtp.send_to(b"\x80\x65token", to).await.unwrap();
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            (report.outcome, report.bye_status),
            (CallOutcome::Answered, Some(200))
        );
        let incoming = within("the IncomingCall", ep.invites.recv()).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = within("RTP at the endpoint", incoming.rtp.recv_from(&mut buf))
            .await
            .unwrap();
        assert_eq!(&buf[..n], b"\x80\x65token");
        assert_eq!(from, report.local_rtp);
        let call = ep.finished_call(&report.call_id).await;
        assert_eq!(call.ended, CallEnd::AnsweredCallerHungUp);

        // Stray: not one of our numbers.
        let report = within("the stray call", line.call("9999", CallOptions::default()))
            .await
            .unwrap();
        assert_eq!(report.status, 404);
        assert_eq!(*ep.recorder.strays.lock().unwrap(), 1);
        // Dialled with separators and +, it is still ours.
        *ep.recorder.disposition.lock().unwrap() = Disposition::Reject(480);
        let report = within(
            "the call to a formatted number",
            line.call(
                "sip:+1-555-0100@127.0.0.1;user=phone",
                CallOptions::default(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(report.status, 480);
        assert_eq!(
            ep.finished_call(&report.call_id).await.number,
            "+1 (555) 0100"
        );
        if transport == Transport::Tcp {
            within("a keep-alive to be answered", async {
                while ep.handle.stats().transport.keepalive_pings_answered == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
        line.close();
        ep.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_hangs_up_after_deadline() {
    let mut ep = TestEndpoint::start(
        &["udp"],
        Disposition::Hold {
            hold: Duration::ZERO,
            then: Then::Answer {
                hangup_after: Duration::from_millis(200),
            },
        },
    )
    .await;
    let line = line(ep.addr(Transport::Udp), Transport::Udp, "5s").await;
    let report = within(
        "the call",
        line.call_with(NUMBER, CallOptions::default(), |_| std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(report.hangup, Some(Hangup::Remote));
    let call = ep.next_finished().await;
    assert_eq!(
        call.ended,
        CallEnd::AnsweredEndpointHungUp {
            bye_status: Some(200)
        }
    );
    line.close();
    ep.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_honours_record_route() {
    // A proxy on the path record-routes: the 180 and 200 must carry the
    // set back, and the endpoint's own BYE must follow it.
    let mut ep = TestEndpoint::start(
        &["udp"],
        Disposition::Hold {
            hold: Duration::ZERO,
            then: Then::Answer {
                hangup_after: Duration::from_millis(50),
            },
        },
    )
    .await;
    let to = ep.addr(Transport::Udp);
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = s.local_addr().unwrap();
    let rr = "<sip:127.0.0.1:9;lr;ftag=x>, <sip:proxy2.invalid;lr>";
    let invite = format!(
        "INVITE sip:{NUMBER}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-rr\r\n\
         Record-Route: {rr}\r\nFrom: <sip:a@b>;tag=rr1\r\nTo: <sip:{NUMBER}@{to}>\r\n\
         Call-ID: rr-test\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{me}>\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.send_to(invite.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let mut got_200 = None;
    while got_200.is_none() {
        let (n, _) = within("responses", s.recv_from(&mut buf)).await.unwrap();
        let m = cidguard::sip::parse(&buf[..n]).unwrap();
        match m.status() {
            Some(180) => assert_eq!(m.header("Record-Route"), Some(rr)),
            Some(200) => got_200 = Some(m),
            _ => {}
        }
    }
    let ok = got_200.unwrap();
    assert_eq!(ok.header("Record-Route"), Some(rr));
    let ack = format!(
        "ACK sip:{NUMBER}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-rr-ack\r\n\
         From: <sip:a@b>;tag=rr1\r\nTo: {}\r\nCall-ID: rr-test\r\nCSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ok.header("To").unwrap()
    );
    s.send_to(ack.as_bytes(), to).await.unwrap();
    // The endpoint hangs up: its BYE routes through the set, in order.
    let bye = loop {
        let (n, _) = within("the BYE", s.recv_from(&mut buf)).await.unwrap();
        let m = cidguard::sip::parse(&buf[..n]).unwrap();
        if m.is_request("BYE") {
            break m;
        }
    };
    let routes: Vec<&str> = bye
        .headers_named("Route")
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(
        routes,
        ["<sip:127.0.0.1:9;lr;ftag=x>", "<sip:proxy2.invalid;lr>"]
    );
    assert_eq!(bye.request_uri(), Some(format!("sip:a@{me}").as_str()));
    let ok = cidguard::sip::build::response_to(&bye, 200, None);
    s.send_to(&ok.to_bytes(), to).await.unwrap();
    let call = ep.next_finished().await;
    assert_eq!(
        call.ended,
        CallEnd::AnsweredEndpointHungUp {
            bye_status: Some(200)
        }
    );
    ep.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// TLS

fn write_cert(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().to_vec())
}

async fn tls_endpoint(dir: &Path, disposition: Disposition) -> TestEndpoint {
    let (cert, key, _) = write_cert(dir);
    TestEndpoint::start_with(
        &["tls"],
        disposition,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        EndpointOptions::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_to_endpoint_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut ep = tls_endpoint(
        dir.path(),
        Disposition::Hold {
            hold: Duration::from_millis(100),
            then: Then::Reject(486),
        },
    )
    .await;
    let addr = ep.addr(Transport::Tls);
    let acct = account(addr, Transport::Tls, PASSWORD, "5s");

    // Verified against the endpoint's own certificate as the root.
    let opts = LineOptions {
        tls: Some(TlsVerify::from_pem_file(&dir.path().join("cert.pem")).unwrap()),
        ..line_options()
    };
    let line = Line::new(&acct, opts).await.unwrap();
    let report = within("the TLS call", line.call(NUMBER, CallOptions::default()))
        .await
        .unwrap();
    assert_eq!(report.status, 486);
    let call = ep.next_finished().await;
    assert_eq!(call.transport, Transport::Tls);
    assert_eq!(call.messages[0].bytes, report.messages[0].bytes);
    assert!(text(&report.messages[0].bytes).contains("Via: SIP/2.0/TLS 127.0.0.1:"));
    line.close();

    // The explicit insecure mode accepts the self-signed certificate.
    let opts = LineOptions {
        tls: Some(TlsVerify::DangerAcceptInvalidCerts),
        ..line_options()
    };
    let line = Line::new(&acct, opts).await.unwrap();
    let report = within(
        "the insecure TLS call",
        line.call(NUMBER, CallOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(report.status, 486);
    line.close();

    // Trusting another certificate, the handshake fails with context.
    let other = tempfile::tempdir().unwrap();
    write_cert(other.path());
    let opts = LineOptions {
        tls: Some(TlsVerify::from_pem_file(&other.path().join("cert.pem")).unwrap()),
        ..line_options()
    };
    let line = Line::new(&acct, opts).await.unwrap();
    let err = within(
        "the untrusted TLS call",
        line.call(NUMBER, CallOptions::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, UacError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    line.close();
    ep.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_endpoint_over_tls() {
    let Some(bin) = sipp() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut ep = tls_endpoint(
        dir.path(),
        Disposition::Hold {
            hold: Duration::from_millis(100),
            then: Then::Reject(486),
        },
    )
    .await;
    let run = Sipp::start(
        &bin,
        &[
            "-sf".into(),
            scenario("uac_reject.xml"),
            "-s".into(),
            NUMBER.into(),
            "-t".into(),
            "l1".into(),
            "-tls_cert".into(),
            dir.path().join("cert.pem").display().to_string(),
            "-tls_key".into(),
            dir.path().join("key.pem").display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "15s".into(),
            "-timeout_error".into(),
            ep.addr(Transport::Tls).to_string(),
        ],
    )
    .finish()
    .await;
    if run.output.contains("compile SIPp with OpenSSL") {
        // This SIPp build has no TLS; the line-to-endpoint TLS test covers
        // our side.
        eprintln!("NOTICE: this SIPp has no TLS support; skipping SIPp over TLS");
        ep.handle.shutdown().await;
        return;
    }
    assert!(
        run.status.success(),
        "SIPp over TLS failed:\n{}",
        run.output
    );
    let call = ep.next_finished().await;
    assert_eq!(call.transport, Transport::Tls);
    assert_eq!(call.ended, CallEnd::Rejected(486));
    let sipp_invite = run.sent.iter().find(|m| starts_with(m, "INVITE ")).unwrap();
    assert_eq!(&call.messages[0].bytes, sipp_invite);
    ep.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// Robustness

/// Read SIP responses on a UDP socket until a final one; None if nothing
/// final comes within a short time (a dropped request).
async fn final_status_udp(s: &UdpSocket) -> Option<u16> {
    let mut buf = vec![0u8; 65535];
    loop {
        let r = tokio::time::timeout(Duration::from_millis(700), s.recv_from(&mut buf)).await;
        let (n, _) = r.ok()?.ok()?;
        let code = cidguard::sip::parse(&buf[..n]).ok()?.status()?;
        if code >= 200 {
            return Some(code);
        }
    }
}

/// Torture messages in the style of RFC 4475, with the final status each
/// must get over UDP and over TCP (None: no answer at all, as for a message
/// without a Via, or one a stream can't frame).
const TORTURE: &[(&str, Option<u16>, Option<u16>)] = &[
    // Valid but tortuous whitespace, folding and escapes; To has a tag.
    ("wsinv.sip", Some(481), Some(481)),
    ("esc01.sip", Some(200), Some(200)),
    ("unksm2.sip", Some(200), Some(200)),
    // RFC 2543 style: no branch, no From tag, no Content-Length.
    ("inv2543.sip", Some(486), None),
    ("unksm.sip", Some(416), Some(416)),
    ("bext01.sip", Some(420), Some(420)),
    ("badvers.sip", Some(505), Some(505)),
    ("mcl01.sip", Some(400), Some(400)),
    ("multi01.sip", Some(400), Some(400)),
    ("ncl.sip", Some(400), None),
    ("scalar02.sip", Some(400), Some(400)),
    ("clerr.sip", Some(400), None),
    ("novia.sip", None, None),
];

fn torture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp/torture")
        .join(name);
    // Stored with LF line ends; the wire wants CRLF (Content-Lengths in
    // the fixtures count CRLF).
    std::fs::read_to_string(path)
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_survives_garbage_and_torture() {
    let ep = TestEndpoint::start(&["udp", "tcp"], Disposition::Reject(486)).await;
    let udp = ep.addr(Transport::Udp);
    let tcp = ep.addr(Transport::Tcp);

    // Torture messages over UDP, each from its own socket.
    for (name, want, _) in TORTURE {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&torture(name), udp).await.unwrap();
        assert_eq!(final_status_udp(&s).await, *want, "{name} over UDP");
    }

    // Random bytes and truncated messages over UDP, from an address of
    // their own (600 messages at once are over one source's share: the
    // rest of the test, from 127.0.0.1, must not pay for them), then a
    // 64 KiB header.
    let s = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let valid = torture("esc01.sip");
    for i in 0..300usize {
        let len = 1 + (rand_id() as usize % 1400);
        let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        s.send_to(&junk, udp).await.unwrap();
        let cut = i % valid.len();
        s.send_to(&valid[..cut.max(1)], udp).await.unwrap();
    }
    let big = format!(
        "OPTIONS sip:{NUMBER}@{udp} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bK-big\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:{NUMBER}@c>\r\nCall-ID: big\r\nCSeq: 1 OPTIONS\r\n\
         X-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "x".repeat(64 * 1024 - 400)
    );
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    b.send_to(big.as_bytes(), udp).await.unwrap();
    assert_eq!(
        final_status_udp(&b).await,
        Some(200),
        "64 KiB header over UDP"
    );
    assert_eq!(options_udp(udp).await, 200);

    // The same over TCP: torture messages that can be framed get answers.
    for (name, _, want) in TORTURE {
        let mut c = TcpStream::connect(tcp).await.unwrap();
        c.write_all(&torture(name)).await.unwrap();
        let got = read_final_tcp(&mut c).await;
        assert_eq!(got, *want, "{name} over TCP");
    }
    // 64 KiB header on TCP: answered. 200 KiB: the connection is closed.
    let mut c = TcpStream::connect(tcp).await.unwrap();
    c.write_all(big.as_bytes()).await.unwrap();
    assert_eq!(read_final_tcp(&mut c).await, Some(200));
    let huge = big.replace(
        "X-Big: ",
        &format!("X-Huge: {}\r\nX-Big: ", "y".repeat(200 * 1024)),
    );
    let mut c = TcpStream::connect(tcp).await.unwrap();
    let _ = c.write_all(huge.as_bytes()).await;
    let mut sink = Vec::new();
    // Closed (end of stream or reset) rather than left hanging.
    let _ = within(
        "the oversized connection to close",
        c.read_to_end(&mut sink),
    )
    .await;
    // Garbage on TCP closes that connection only.
    let mut c = TcpStream::connect(tcp).await.unwrap();
    let junk: Vec<u8> = (0..5000).map(|_| rand::random::<u8>()).collect();
    let _ = c.write_all(&junk).await;
    let _ = within("the garbage connection to close", c.read_to_end(&mut sink)).await;

    assert_eq!(options_udp(udp).await, 200);
    let st = ep.handle.stats();
    eprintln!("after garbage: {st:?}");
    assert!(st.transport.garbage > 0);
    assert!(st.transport.connections_closed_bad_framing >= 2);
    assert!(
        st.transport.peak_stream_buffer <= 128 * 1024 + 16 * 1024,
        "{st:?}"
    );
    assert_eq!((st.handler_panics, st.task_panics), (0, 0));
    ep.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_caps_tcp_connections() {
    let opts = EndpointOptions {
        stack: cidguard::sip::transaction::StackOptions {
            transport: cidguard::sip::transport::TransportOptions {
                max_connections: 8,
                ..Default::default()
            },
            ..Default::default()
        },
        ..EndpointOptions::default()
    };
    let ep = TestEndpoint::start_with(&["udp", "tcp"], Disposition::Reject(486), "", opts).await;
    let tcp = ep.addr(Transport::Tcp);
    let mut conns = Vec::new();
    for _ in 0..20 {
        conns.push(TcpStream::connect(tcp).await.unwrap());
    }
    within("refused connections to be counted", async {
        while ep.handle.stats().transport.connections_refused < 12 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let st = ep.handle.stats();
    assert!(
        st.transport.connections <= 8 && st.transport.peak_connections <= 8,
        "{st:?}"
    );
    // The connections we hold still work; the endpoint still answers.
    let mut first = conns.remove(0);
    first.write_all(&torture("esc01.sip")).await.unwrap();
    assert_eq!(read_final_tcp(&mut first).await, Some(200));
    assert_eq!(options_udp(ep.addr(Transport::Udp)).await, 200);
    drop(conns);
    drop(first);
    within("connections to close", async {
        while ep.handle.stats().transport.connections > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    ep.handle.shutdown().await;
}

async fn read_final_tcp(c: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Parse whatever whole responses arrived.
        while let cidguard::sip::message::Frame::Complete(n) =
            cidguard::sip::message::frame_stream(&buf)
        {
            let code = cidguard::sip::parse(&buf[..n]).ok()?.status()?;
            buf.drain(..n);
            if code >= 200 {
                return Some(code);
            }
        }
        let r = tokio::time::timeout(Duration::from_millis(700), c.read(&mut chunk)).await;
        match r {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_stays_correct_under_an_invite_flood() {
    let Some(bin) = sipp() else { return };
    let mut ep = TestEndpoint::start(
        &["udp"],
        Disposition::Hold {
            hold: Duration::from_millis(200),
            then: Then::Reject(486),
        },
    )
    .await;
    let udp = ep.addr(Transport::Udp);
    // SIPp's built-in caller, 500 calls a second, to a user that isn't ours,
    // from an address of its own (a source is an address, not a port).
    let flood = Sipp::start(
        &bin,
        &[
            "-sn".into(),
            "uac".into(),
            "-r".into(),
            "500".into(),
            "-m".into(),
            "1500".into(),
            "-i".into(),
            "127.0.0.2".into(),
            "-p".into(),
            free_port().to_string(),
            "-recv_timeout".into(),
            "2s".into(),
            "-timeout".into(),
            "15s".into(),
            udp.to_string(),
        ],
    );
    // Meanwhile a real test call from another source gets its treatment.
    let line = line(udp, Transport::Udp, "5s").await;
    let report = within(
        "the call during the flood",
        line.call(NUMBER, CallOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(report.status, 486);
    let call = ep.next_finished().await;
    assert_eq!(call.call_id, report.call_id);
    let held = call.final_after.unwrap();
    assert!(
        held >= Duration::from_millis(200) && held < Duration::from_millis(300),
        "{held:?}"
    );
    let _ = flood.finish().await;

    assert_eq!(options_udp(udp).await, 200);
    let st = ep.handle.stats();
    eprintln!("after the flood: {st:?}");
    assert!(st.stray > 0 && st.rate_limited > 0, "{st:?}");
    assert!(st.stack.peak_server_transactions <= 4096);
    assert!(st.rate_limiter_sources <= 2 * 4096);
    assert_eq!((st.handler_panics, st.task_panics), (0, 0));
    within("calls to drain", async {
        while ep.handle.stats().active_calls > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    line.close();
    ep.handle.shutdown().await;
}
