//! Alert email against a real SMTP server (aiosmtpd) on loopback: the mail
//! arrives with the right content, masking holds, TLS works, an outage
//! followed by recovery (with a sender restart in between) delivers each
//! alert exactly once, and `cidguard alert test` reports what happened.
//! The outbox is the real history database in a temporary folder.
//!
//! The other channels (webhook, ntfy, Teams, Slack, Matrix) against a real
//! HTTP receiver: [`channels`]; the daemon killed at every step of a leak
//! alert: [`crash`].

mod channels;
mod crash;
pub mod receiver;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::runtime::Runtime;

use cidguard::alert::channel::{self, Channel};
use cidguard::alert::step::new_notice;
use cidguard::alert::{
    on_result, run_sender, AlertPolicy, Decision, LineAlertState, Notice, OutboxStore, RetryPolicy,
    SenderOptions, SenderStats,
};
use cidguard::check::result::{CallSummary, CheckResult, Trigger};
use cidguard::plan::Plan;
use cidguard::store::{Delivery, Store};
use cidguard::verdict;

use crate::support::net::free_port;
use crate::support::poll_until;
use crate::support::tls::TestCa;
use server::{received, skip_without_aiosmtpd, wait_for_messages, Opts, Security, SmtpServer};

const ORG: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]
names = ["Eastside Women's Refuge", "Eastside Refuge"]
hosts = ["pbx.eastside-refuge.org.au"]

[[line]]
name = "reception"
expect = "withheld"
"#;

/// A config with `[alerts]` lines and a transport table appended.
fn config(dir: &Path, alerts: &str, transport: &str) -> Result<(Plan, PathBuf)> {
    let text = format!(
        "{ORG}\n[alerts]\nrecipients = [\"noc@example.org\", \"Manager <manager@example.org>\"]\nfrom = \"cidguard <cidguard@example.org>\"\n{alerts}\n{transport}\n"
    );
    let path = dir.join("cidguard.toml");
    std::fs::write(&path, &text)?;
    let cfg = Plan::load(&path)?;
    Ok((cfg, path))
}

fn smtp_table(port: u16, security: &str, extra: &str) -> String {
    format!(
        "[alerts.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"{security}\"\ntimeout = \"10s\"\nhelo_name = \"cidguard.test\"\n{extra}\n"
    )
}

/// A leaking INVITE: the organisation's number in From, and a header with
/// hostile markup around the number (SIP values are attacker-controlled).
const LEAKING_INVITE: &str = "INVITE sip:0399990000@endpoint.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
From: \"Anonymous\" <sip:+61370100142@carrier.test>;tag=1\r\n\
To: <sip:0399990000@endpoint.test>\r\n\
Call-ID: a84b4c76e66710@carrier.test\r\n\
CSeq: 1 INVITE\r\n\
X-Note: <script>alert('x')</script> +61 3 7010 0142\r\n\
Content-Length: 0\r\n\r\n";

fn judged(cfg: &Plan, invite: &str, trigger: Trigger) -> CheckResult {
    let policy = cfg.line("reception").unwrap().policy();
    let v = verdict::judge(policy, invite.as_bytes());
    CheckResult::from_verdict(v, SystemTime::now(), CallSummary::default(), trigger)
}

/// The leak notice the state machine decides on for a fail confirmed by a
/// re-check (check ids `first` and `first + 1`).
fn leak_alert(cfg: &Plan, policy: &AlertPolicy, first: i64) -> Notice {
    let now = Utc::now();
    let fail = judged(cfg, LEAKING_INVITE, Trigger::Schedule);
    let (s, a) = on_result(&LineAlertState::default(), &fail, first, now, policy, false);
    assert_eq!(a, [Decision::RecheckNow]);
    let again = judged(cfg, LEAKING_INVITE, Trigger::Confirm);
    let (_, a) = on_result(&s, &again, first + 1, now, policy, false);
    match a.as_slice() {
        [Decision::Notify(n)] => n.clone(),
        other => panic!("expected one notice, got {other:?}"),
    }
}

/// The outbox: a real history database in a temporary folder.
pub fn temp_store() -> Result<(tempfile::TempDir, Arc<Store>)> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open_in(&dir.path().join("state"))?);
    Ok((dir, store))
}

/// Queue a notice for every configured channel that wants it; true when
/// deliveries were added (false: already queued).
fn enqueue(store: &Store, cfg: &Plan, n: &Notice) -> Result<bool> {
    Ok(store.enqueue(&[new_notice(n, &channel::routes(cfg.config()))])? > 0)
}

/// One delivery row by id.
pub fn row(store: &Store, id: i64) -> Option<Delivery> {
    store
        .deliveries(None, 1000)
        .ok()?
        .into_iter()
        .find(|d| d.id == id)
}

/// The `email` channel of a config.
fn email_channel(cfg: &Plan, path: &Path) -> Result<Arc<dyn Channel>> {
    let all = channel::from_config(cfg.config(), path)?;
    all.into_iter()
        .find(|c| c.name() == "email")
        .context("an email channel")
}

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn fast_options() -> SenderOptions {
    SenderOptions {
        retry: RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
        },
        poll_every: Duration::from_millis(50),
        ..SenderOptions::default()
    }
}

/// A sender running on the runtime until stopped.
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<SenderStats>,
}

pub fn start_sender(rt: &Runtime, store: &Arc<Store>, channel: &Arc<dyn Channel>) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = rt.spawn(run_sender(
        store.clone(),
        channel.clone(),
        fast_options(),
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        stop: Some(tx),
        handle,
    }
}

impl Running {
    pub fn stop(mut self, rt: &Runtime) -> SenderStats {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let handle = self.handle;
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), handle).await })
            .expect("the sender stops within 30s")
            .expect("the sender task ends normally")
    }
}

#[test]
fn leak_alert_arrives_with_both_parts_and_every_finding() -> Result<()> {
    if skip_without_aiosmtpd() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mail = tempfile::tempdir()?;
    let port = free_port()?;
    let secret = dir.path().join("smtp-password");
    std::fs::write(&secret, "relay-test-secret\n")?;
    let (cfg, path) = config(
        dir.path(),
        "dashboard_url = \"https://cidguard.example\"",
        &smtp_table(
            port,
            "plain",
            &format!(
                "username = \"alice\"\npassword = {{ file = \"{}\" }}",
                secret.display()
            ),
        ),
    )?;
    let server = SmtpServer::start(
        port,
        mail.path(),
        &Opts {
            auth: Some(("alice".into(), "relay-test-secret".into())),
            ..Opts::default()
        },
    )?;
    let policy = AlertPolicy::from_plan(&cfg);
    let alert = leak_alert(&cfg, &policy, 41);
    let (_state, store) = temp_store()?;
    assert!(enqueue(&store, &cfg, &alert)?);
    // The same alert again (a replayed result) is refused by its key.
    assert!(!enqueue(&store, &cfg, &alert)?);

    let rt = runtime();
    let mailer = email_channel(&cfg, &path)?;
    let sender = start_sender(&rt, &store, &mailer);
    let got =
        wait_for_messages(mail.path(), 1, Duration::from_secs(20)).with_context(|| server.log())?;
    poll_until(
        Duration::from_secs(10),
        "the alert to be marked sent",
        || Ok(row(&store, 1).and_then(|r| r.delivered_at_ms)),
    )?;
    let stats = sender.stop(&rt);
    assert_eq!(stats.sent, 1);
    server.stop();

    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(
        m.subject
            .starts_with("[cidguard] PRIVACY LEAK on line \"reception\": number shown in From"),
        "{}",
        m.subject
    );
    assert_eq!(m.mail_from, "cidguard@example.org");
    assert_eq!(m.rcpt_tos, ["noc@example.org", "manager@example.org"]);
    assert_eq!(m.login.as_deref(), Some("alice"));
    assert_eq!(m.auto_submitted.as_deref(), Some("auto-generated"));
    assert_eq!(m.content_type, "multipart/alternative");
    let text = m.text.as_deref().context("a text part")?;
    let html = m.html.as_deref().context("an HTML part")?;
    for part in [text, html] {
        // What leaked, where, why; since when; what the line expects; how
        // to re-check; where to look.
        assert!(part.contains("From"), "{part}");
        assert!(part.contains("+61370100142"), "{part}");
        assert!(part.contains("X-Note"), "{part}");
        assert!(
            part.contains("the organisation&#39;s number")
                || part.contains("the organisation's number"),
            "{part}"
        );
        assert!(part.contains("Leaking since"), "{part}");
        assert!(part.contains("no number and no name (withheld)"), "{part}");
        assert!(
            part.contains(&format!(
                "cidguard check --config {} --line reception",
                path.display()
            )),
            "{part}"
        );
        assert!(
            part.contains("https://cidguard.example/checks/42"),
            "{part}"
        );
        assert!(part.contains("#41") && part.contains("#42"), "{part}");
    }
    // Hostile markup from the SIP message is text, never HTML.
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{html}"
    );
    assert!(text.contains("<script>alert('x')</script>"), "{text}");
    Ok(())
}

#[test]
fn masked_numbers_never_reach_the_mailbox() -> Result<()> {
    if skip_without_aiosmtpd() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mail = tempfile::tempdir()?;
    let port = free_port()?;
    let (cfg, path) = config(
        dir.path(),
        "mask_numbers = true",
        &smtp_table(port, "plain", ""),
    )?;
    let server = SmtpServer::start(port, mail.path(), &Opts::default())?;
    let policy = AlertPolicy::from_plan(&cfg);
    let (_state, store) = temp_store()?;
    enqueue(&store, &cfg, &leak_alert(&cfg, &policy, 7))?;
    let rt = runtime();
    let mailer = email_channel(&cfg, &path)?;
    let sender = start_sender(&rt, &store, &mailer);
    let got =
        wait_for_messages(mail.path(), 1, Duration::from_secs(20)).with_context(|| server.log())?;
    sender.stop(&rt);
    server.stop();
    let m = &got[0];
    let all = format!(
        "{}\n{}\n{}",
        m.subject,
        m.text.as_deref().unwrap_or(""),
        m.html.as_deref().unwrap_or("")
    );
    for form in ["370100142", "7010 0142", "7010 0100", "0199"] {
        assert!(!all.contains(form), "{form} visible in:\n{all}");
    }
    assert!(all.contains("+•••••••••42"), "{all}");
    assert!(all.contains("+•• • •••• ••42"), "{all}");
    Ok(())
}

#[test]
fn outage_then_recovery_delivers_each_alert_exactly_once() -> Result<()> {
    if skip_without_aiosmtpd() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mail = tempfile::tempdir()?;
    let port = free_port()?;
    let (cfg, path) = config(dir.path(), "", &smtp_table(port, "plain", ""))?;
    let policy = AlertPolicy::from_plan(&cfg);
    let mailer = email_channel(&cfg, &path)?;
    // The store is the database: it outlives every sender.
    let (_state, store) = temp_store()?;
    let rt = runtime();

    // 1. Server up: the first alert goes out and is marked sent.
    let server = SmtpServer::start(port, mail.path(), &Opts::default())?;
    assert!(enqueue(&store, &cfg, &leak_alert(&cfg, &policy, 10))?);
    let s1 = start_sender(&rt, &store, &mailer);
    poll_until(Duration::from_secs(20), "alert 1 sent", || {
        Ok(row(&store, 1).and_then(|r| r.delivered_at_ms))
    })
    .with_context(|| server.log())?;
    s1.stop(&rt);
    server.stop();

    // 2. Nothing listens on the port. Queueing still works at once (checks
    //    never wait for mail); the sender fails, records why, backs off.
    let started = std::time::Instant::now();
    assert!(enqueue(&store, &cfg, &leak_alert(&cfg, &policy, 20))?);
    assert!(enqueue(&store, &cfg, &leak_alert(&cfg, &policy, 30))?);
    assert!(
        !enqueue(&store, &cfg, &leak_alert(&cfg, &policy, 20))?,
        "dedupe"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let s2 = start_sender(&rt, &store, &mailer);
    poll_until(Duration::from_secs(20), "both alerts to fail once", || {
        Ok((row(&store, 2).is_some_and(|r| r.attempts >= 1)
            && row(&store, 3).is_some_and(|r| r.attempts >= 1))
        .then_some(()))
    })?;
    let s2_stats = s2.stop(&rt);
    assert_eq!(s2_stats.sent, 0);
    let row2 = row(&store, 2).context("alert 2")?;
    let err = row2.last_error.clone().unwrap_or_default();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("connect"),
        "the error names the server and the step: {err}"
    );
    assert!(row2.next_attempt_at_ms > row2.created_at_ms);
    assert_eq!(received(mail.path())?.len(), 1);

    // 3. A restarted sender resumes the retries, still with no server...
    let s3 = start_sender(&rt, &store, &mailer);
    let before = row(&store, 2).map_or(0, |r| r.attempts);
    poll_until(
        Duration::from_secs(20),
        "the restarted sender to retry",
        || {
            Ok(row(&store, 2)
                .is_some_and(|r| r.attempts > before)
                .then_some(()))
        },
    )?;
    // ...and delivers once the server is back.
    let server = SmtpServer::start(port, mail.path(), &Opts::default())?;
    poll_until(Duration::from_secs(30), "the outbox to drain", || {
        Ok((store.pending()? == 0).then_some(()))
    })
    .with_context(|| server.log())?;
    let s3_stats = s3.stop(&rt);
    assert_eq!(s3_stats.sent, 2);
    server.stop();

    let got = received(mail.path())?;
    assert_eq!(got.len(), 3, "exactly one copy of each alert");
    let mut ids: Vec<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three different alerts: {ids:?}");
    for r in store.deliveries(None, 100)? {
        assert!(r.delivered_at_ms.is_some());
        assert_eq!(r.kind, "leak");
    }
    Ok(())
}

fn tls_files(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let ca = TestCa::generate()?;
    let (ca_pem, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_pem, ca.ca_pem())?;
    std::fs::write(&cert, &ca.server_cert_pem)?;
    std::fs::write(&key, &ca.server_key_pem)?;
    Ok((ca_pem, cert, key))
}

/// `send_test_email` (what `cidguard alert test` runs) against a server.
fn test_email(cfg: &Plan, path: &Path) -> Result<cidguard::alert::TestReport> {
    Ok(runtime().block_on(cidguard::alert::send_test_email(cfg, path, Utc::now()))?)
}

#[test]
fn starttls_and_implicit_tls_with_auth() -> Result<()> {
    if skip_without_aiosmtpd() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = tls_files(dir.path())?;
    let secret = dir.path().join("smtp-password");
    std::fs::write(&secret, "tls-test-secret")?;
    for (security, tls) in [
        (
            "starttls",
            Security::StartTls {
                cert: cert.clone(),
                key: key.clone(),
            },
        ),
        (
            "tls",
            Security::Implicit {
                cert: cert.clone(),
                key: key.clone(),
            },
        ),
    ] {
        let mail = tempfile::tempdir()?;
        let port = free_port()?;
        let (cfg, path) = config(
            dir.path(),
            "",
            &smtp_table(
                port,
                security,
                &format!(
                    "username = \"alice\"\npassword = {{ file = \"{}\" }}\nca_file = \"{}\"",
                    secret.display(),
                    ca.display()
                ),
            ),
        )?;
        let server = SmtpServer::start(
            port,
            mail.path(),
            &Opts {
                auth: Some(("alice".into(), "tls-test-secret".into())),
                tls,
            },
        )?;
        let report = test_email(&cfg, &path)?;
        let human = report.human();
        assert!(report.accepted(), "{security}: {human}\n{}", server.log());
        if security == "starttls" {
            assert!(human.contains("STARTTLS"), "{human}");
        }
        assert!(human.contains("AUTH") && human.contains("235"), "{human}");
        assert!(human.contains("Accepted: 250"), "{human}");
        let got = wait_for_messages(mail.path(), 1, Duration::from_secs(10))?;
        server.stop();
        assert!(got[0].tls, "{security}: the session was encrypted");
        assert_eq!(got[0].login.as_deref(), Some("alice"));
        assert_eq!(got[0].subject, "[cidguard] Test email");
        assert!(!human.contains("tls-test-secret"));
    }
    Ok(())
}

#[test]
fn tls_failures_say_which_step_and_send_nothing() -> Result<()> {
    if skip_without_aiosmtpd() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (_ca, cert, key) = tls_files(dir.path())?;

    // A certificate from a CA we don't trust: refused at STARTTLS.
    let mail = tempfile::tempdir()?;
    let port = free_port()?;
    let (cfg, path) = config(dir.path(), "", &smtp_table(port, "starttls", ""))?;
    let server = SmtpServer::start(
        port,
        mail.path(),
        &Opts {
            tls: Security::StartTls { cert, key },
            ..Opts::default()
        },
    )?;
    let report = test_email(&cfg, &path)?;
    server.stop();
    let err = report.result.as_ref().expect_err("untrusted certificate");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    assert!(err.is_server_level());
    assert_eq!(received(mail.path())?.len(), 0);

    // A server that doesn't offer STARTTLS: never falls back to clear text.
    let mail = tempfile::tempdir()?;
    let port = free_port()?;
    let (cfg, path) = config(dir.path(), "", &smtp_table(port, "starttls", ""))?;
    let server = SmtpServer::start(port, mail.path(), &Opts::default())?;
    let report = test_email(&cfg, &path)?;
    server.stop();
    let err = report.result.as_ref().expect_err("no STARTTLS offered");
    assert!(err.to_string().contains("does not offer STARTTLS"), "{err}");
    assert_eq!(received(mail.path())?.len(), 0);
    Ok(())
}

fn cidguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cidguard"))
        .args(args)
        .output()
        .expect("run cidguard")
}

#[test]
fn cli_alert_test_exit_codes() -> Result<()> {
    if skip_without_aiosmtpd() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mail = tempfile::tempdir()?;
    let port = free_port()?;
    let secret = dir.path().join("smtp-password");
    std::fs::write(&secret, "cli-test-secret")?;
    let auth = |password: &Path| {
        format!(
            "username = \"alice\"\npassword = {{ file = \"{}\" }}",
            password.display()
        )
    };
    let (_, path) = config(dir.path(), "", &smtp_table(port, "plain", &auth(&secret)))?;
    let cfg_arg = path.to_str().context("utf-8 path")?;

    // Nothing listening: 1, and the output says where and what step.
    let out = cidguard(&["alert", "test", "--config", cfg_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("127.0.0.1:{port}")) && stdout.contains("connect"),
        "{stdout}"
    );

    let server = SmtpServer::start(
        port,
        mail.path(),
        &Opts {
            auth: Some(("alice".into(), "cli-test-secret".into())),
            ..Opts::default()
        },
    )?;
    // Accepted: 0, with the dialogue.
    let out = cidguard(&["alert", "test", "--config", cfg_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", server.log());
    for step in [
        "connect",
        "AUTH",
        "MAIL FROM",
        "RCPT TO <noc@example.org>",
        "DATA",
        "Accepted: 250",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}");
    }
    wait_for_messages(mail.path(), 1, Duration::from_secs(10))?;

    // A wrong password: 1, the server's refusal shown, no password printed.
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-secret")?;
    let (_, path2) = config(dir.path(), "", &smtp_table(port, "plain", &auth(&wrong)))?;
    let out = cidguard(&["alert", "test", "--config", path2.to_str().unwrap()]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("AUTH") && all.contains("535"), "{all}");
    assert!(
        !all.contains("not-the-secret") && !all.contains("cli-test-secret"),
        "{all}"
    );

    // No [alerts] section, or a bad one: 2.
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, ORG)?;
    let out = cidguard(&["alert", "test", "--config", bare.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [alerts] section"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{ORG}\n[alerts]\nrecipients = [\"not an address\"]\nfrom = \"x@example.org\"\n[alerts.smtp]\nhost = \"127.0.0.1\"\n"),
    )?;
    let out = cidguard(&["alert", "test", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("alerts.recipients[0]"));
    Ok(())
}

#[test]
fn file_transport_writes_eml_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("mail");
    let (cfg, path) = config(
        dir.path(),
        "",
        &format!("[alerts.file]\ndir = \"{}\"", out_dir.display()),
    )?;
    let policy = AlertPolicy::from_plan(&cfg);
    let (_state, store) = temp_store()?;
    enqueue(&store, &cfg, &leak_alert(&cfg, &policy, 5))?;
    let rt = runtime();
    let mailer = email_channel(&cfg, &path)?;
    let sender = start_sender(&rt, &store, &mailer);
    poll_until(Duration::from_secs(10), "the alert to be written", || {
        Ok((store.pending()? == 0).then_some(()))
    })?;
    sender.stop(&rt);
    let files: Vec<PathBuf> = std::fs::read_dir(&out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let eml = std::fs::read_to_string(&files[0])?;
    assert!(
        eml.contains("Subject: [cidguard] PRIVACY LEAK on line \"reception\""),
        "{eml}"
    );
    assert!(eml.contains("multipart/alternative"), "{eml}");
    assert!(
        eml.contains("text/plain") && eml.contains("text/html"),
        "{eml}"
    );
    assert!(eml.contains("Auto-Submitted: auto-generated"), "{eml}");

    // `cidguard alert test` works with the file transport too.
    let out = cidguard(&["alert", "test", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("written to"));
    Ok(())
}

/// Regression: a leak alert could be lost when the daemon died between
/// saving the line's alert state and queueing the email (two writes).
/// Checks recorded but never taken in by the alert side are taken in
/// later, the leak is queued once, and taking in again changes nothing.
#[test]
fn checks_recorded_before_a_crash_are_taken_in_once() -> Result<()> {
    use cidguard::alert::step::take_in_line;
    use cidguard::store::{AlertStateStore, Record};
    let dir = tempfile::tempdir()?;
    let (cfg, _path) = config(
        dir.path(),
        "",
        &format!(
            "[alerts.file]\ndir = \"{}\"",
            dir.path().join("mail").display()
        ),
    )?;
    let policy = AlertPolicy::from_plan(&cfg);
    let routes = channel::routes(cfg.config());
    let (_state, store) = temp_store()?;
    let rec = |ms: i64| Record {
        recorded_at_ms: ms,
        ..Record::default()
    };
    // A fail and its confirming re-check, recorded; the daemon died before
    // the alert side saw either.
    store.record_check(&judged(&cfg, LEAKING_INVITE, Trigger::Schedule), &rec(1))?;
    store.record_check(&judged(&cfg, LEAKING_INVITE, Trigger::Confirm), &rec(2))?;
    let now = Utc::now();
    let t = take_in_line(&*store, Some(&policy), &routes, "reception", now, false)?;
    assert_eq!(t.checks, 2);
    assert_eq!(t.queued.len(), 1, "{t:?}");
    assert_eq!(t.queued[0].0.key, "leak:reception:2");
    assert_eq!(t.queued[0].1, ["email"]);
    assert!(!t.recheck, "the fail is already confirmed");
    assert_eq!(store.pending()?, 1);
    assert_eq!(
        store
            .line_state("reception")?
            .and_then(|r| r.through_check_id),
        Some(2)
    );
    // Again (a second start, a late on_result): nothing new.
    let again = take_in_line(&*store, Some(&policy), &routes, "reception", now, false)?;
    assert_eq!((again.checks, again.queued.len()), (0, 0));
    assert_eq!(store.deliveries(None, 10)?.len(), 1);
    Ok(())
}

/// Results recorded while alerts are off only move the mark: turning
/// alerts on later does not replay them as alerts.
#[test]
fn results_while_alerts_are_off_are_not_replayed_later() -> Result<()> {
    use cidguard::alert::step::take_in_line;
    use cidguard::store::Record;
    let dir = tempfile::tempdir()?;
    let (cfg, _path) = config(
        dir.path(),
        "",
        &format!(
            "[alerts.file]\ndir = \"{}\"",
            dir.path().join("mail").display()
        ),
    )?;
    let (_state, store) = temp_store()?;
    let now = Utc::now();
    for t in [Trigger::Schedule, Trigger::Confirm] {
        store.record_check(&judged(&cfg, LEAKING_INVITE, t), &Record::default())?;
        let off = take_in_line(&*store, None, &[], "reception", now, false)?;
        assert_eq!((off.checks, off.queued.len()), (1, 0));
    }
    let policy = AlertPolicy::from_plan(&cfg);
    let on = take_in_line(
        &*store,
        Some(&policy),
        &channel::routes(cfg.config()),
        "reception",
        now,
        false,
    )?;
    assert_eq!((on.checks, on.queued.len()), (0, 0));
    assert_eq!(store.pending()?, 0);
    Ok(())
}
