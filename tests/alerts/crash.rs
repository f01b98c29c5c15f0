//! The lost-alert regression: the real daemon (`cidguard run`, the debug
//! build) with a real Kamailio whose rule leaks the line's number, six real
//! channels (aiosmtpd for email; webhook, ntfy, Teams, Slack and Matrix on
//! an HTTP receiver), killed (`abort`, as abrupt as `kill -9`) at every
//! step of a leak alert through `CIDGUARD_CRASH_AT`, then restarted without
//! it. After every crash exactly one leak notice reaches each channel.
//!
//! The steps of a leak alert, and the crash points between them:
//!
//! 1. the failing check is recorded        `after-check-recorded`
//! 2. its alert step (decides: re-check)   `after-alert-step`
//! 3. the confirming check is recorded     `after-check-recorded#2`
//! 4. its alert step, in one transaction   `inside-alert-step#2` (before commit)
//!    (state + mark + one delivery per
//!    channel)                             `after-alert-step#2`
//! 5. a channel delivers                   `after-deliver:<channel>`
//! 6. the outbox marks it delivered        `after-mark:<channel>`
//!
//! The one case that is at least once, not exactly once: a crash after a
//! channel delivered and before the outbox recorded it (5 to 6). The copy
//! sent after the restart carries the same delivery id (webhook
//! `X-Cidguard-Delivery`/`Idempotency-Key`, email Message-ID, Matrix
//! transaction id), so there is still exactly one distinct notice per
//! channel; the test counts both, and expects exactly two copies on the
//! channel the crash hit there. Every other channel may be caught at that
//! same edge by the same abort, so it is held to one distinct notice and at
//! most two copies of it.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use cidguard::store::{OutboxStore, Store};

use super::receiver::Receiver;
use super::server::{received, skip_without_aiosmtpd, Opts, SmtpServer};
use crate::support::net::free_port;
use crate::support::{self, org, poll_until, tail, CallerIdRule, Kamailio, KamailioOpts};

/// The HTTP channels: (name, kind, path under the scenario's prefix).
const HTTP_CHANNELS: [(&str, &str); 5] = [
    ("hook", "webhook"),
    ("phones", "ntfy"),
    ("teams", "teams"),
    ("slack", "slack"),
    ("matrix", "matrix"),
];

/// A running `cidguard run`; killed on drop.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: &Path, crash_at: Option<&str>, n: usize) -> Result<Daemon> {
        let log = dir.join(format!("daemon-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cidguard"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("CIDGUARD_LOG", "info")
            .env_remove("CIDGUARD_CRASH_AT")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?));
        if let Some(at) = crash_at {
            cmd.env("CIDGUARD_CRASH_AT", at);
        }
        Ok(Daemon {
            child: cmd.spawn().context("start cidguard run")?,
            log,
        })
    }

    /// What the alert side said, then the end of the log.
    fn log(&self) -> String {
        let all = std::fs::read_to_string(&self.log).unwrap_or_default();
        let alerts: Vec<&str> = all
            .lines()
            .filter(|l| l.contains("alert") || l.contains("WARN") || l.contains("ERROR"))
            .collect();
        format!("{}\n...\n{}", tail(&alerts.join("\n"), 30), tail(&all, 15))
    }

    /// Wait for the crash point to end the process.
    fn wait_for_abort(&mut self, point: &str) -> Result<()> {
        let status = poll_until(
            Duration::from_secs(60),
            &format!("the crash at {point}"),
            || Ok(self.child.try_wait()?),
        )
        .with_context(|| self.log())?;
        if status.signal() != Some(6) {
            bail!("expected an abort at {point}, got {status}\n{}", self.log());
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !log.contains(&format!(
            "crash point {:?}",
            point.split('#').next().unwrap_or(point)
        )) {
            bail!("the process ended, but not at {point}:\n{}", self.log());
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scenario's config: line `r{n}` through the PBX's line 201, every
/// channel under the receiver's `/s{n}/` prefix.
#[allow(clippy::too_many_arguments)]
fn config(
    n: usize,
    dir: &Path,
    pbx: &Kamailio,
    sip_port: u16,
    smtp_port: u16,
    rx: &Receiver,
) -> String {
    let line = support::Line::get("201");
    let mut channels = String::new();
    for (name, kind) in HTTP_CHANNELS {
        let url = rx.url(&format!("/s{n}/{name}"));
        channels.push_str(&format!(
            "\n[[alerts.channel]]\nname = \"{name}\"\nkind = \"{kind}\"\n"
        ));
        match kind {
            "matrix" => channels.push_str(&format!(
                "homeserver = \"{url}\"\nroom_id = \"!ops:example.org\"\naccess_token = \"syt_crash\"\n"
            )),
            "webhook" => channels.push_str(&format!("url = \"{url}\"\nsecret = \"crash-secret\"\n")),
            _ => channels.push_str(&format!("url = \"{url}\"\n")),
        }
    }
    format!(
        r#"
{org}

[endpoint]
listen = ["udp:127.0.0.1:{sip_port}"]
numbers = ["{number}"]
hold_min = "200ms"
hold_max = "500ms"

[daemon]
state_dir = "{state}"
default_schedule = "*/2 * * * * *"
jitter = "0s"
pbx_poll = "1h"
grace = "1s"

[alerts]
recipients = ["it@eastside-refuge.example"]
from = "cidguard <cidguard@eastside-refuge.example>"
dashboard_url = "https://cidguard.example"
reminder_every = "0"
retry_initial = "200ms"
retry_max = "1s"

[alerts.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
{channels}
[[line]]
name = "r{n}"
expect = "withheld"
[line.account]
registrar = "sip:{pbx}"
username = "{user}"
password = "{password}"
"#,
        org = crate::support::org::TABLE,
        number = org::ENDPOINT_NUMBER,
        state = dir.join("state").display(),
        pbx = pbx.udp_addr(),
        user = line.username,
        password = line.password,
    )
}

/// Copies received per channel: (channel, distinct delivery ids, copies).
fn tally(n: usize, mail: &Path, rx: &Receiver) -> Result<Vec<(String, usize, usize)>> {
    let mut out = Vec::new();
    let subject = format!("PRIVACY LEAK on line \"r{n}\"");
    let mails: Vec<_> = received(mail)?
        .into_iter()
        .filter(|m| m.subject.contains(&subject))
        .collect();
    let mut ids: Vec<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    out.push(("email".to_string(), ids.len(), mails.len()));
    for (name, _) in HTTP_CHANNELS {
        let got: Vec<_> = rx
            .accepted(&format!("/s{n}/{name}"))
            .into_iter()
            .filter(|r| {
                // The title is in the body, or (ntfy) in a header.
                r.text().contains("PRIVACY LEAK")
                    || r.headers.iter().any(|(_, v)| v.contains("PRIVACY LEAK"))
            })
            .collect();
        let mut ids: Vec<String> = got
            .iter()
            .map(|r| {
                r.header("x-cidguard-delivery")
                    .map(str::to_string)
                    // Matrix: the transaction id is the path's last segment.
                    .unwrap_or_else(|| r.path.rsplit('/').next().unwrap_or("").to_string())
            })
            .collect();
        ids.sort();
        ids.dedup();
        out.push((name.to_string(), ids.len(), got.len()));
    }
    Ok(out)
}

#[test]
fn a_leak_alert_survives_a_crash_between_any_two_steps_once_per_channel() -> Result<()> {
    if support::skip_without_peers() || skip_without_aiosmtpd() {
        return Ok(());
    }
    let pbx = Kamailio::start(KamailioOpts::default())?;
    pbx.set_rule("201", CallerIdRule::PaiLeak)?;
    let top = tempfile::tempdir()?;
    let mail = top.path().join("mail");
    std::fs::create_dir_all(&mail)?;
    let smtp_port = free_port()?;
    let _smtp = SmtpServer::start(smtp_port, &mail, &Opts::default())?;
    let rx = Receiver::start(0)?;
    let scenarios = [
        "after-check-recorded",
        "after-alert-step",
        "after-check-recorded#2",
        "inside-alert-step#2",
        "after-alert-step#2",
        "after-deliver:email",
        "after-deliver:hook",
        "after-deliver:matrix",
        "after-mark:hook",
    ];
    for (n, point) in scenarios.iter().enumerate() {
        let dir = top.path().join(format!("s{n}"));
        std::fs::create_dir_all(&dir)?;
        let sip_port = free_port()?;
        pbx.set_endpoint(
            org::ENDPOINT_NUMBER,
            &format!("sip:127.0.0.1:{sip_port};transport=udp"),
        )?;
        let cfg_path = dir.join("cidguard.toml");
        std::fs::write(&cfg_path, config(n, &dir, &pbx, sip_port, smtp_port, &rx))?;

        let mut first = Daemon::start(&dir, &cfg_path, Some(point), 1)?;
        first
            .wait_for_abort(point)
            .with_context(|| format!("scenario {point}"))?;
        drop(first);

        let second = Daemon::start(&dir, &cfg_path, None, 2)?;
        let state = dir.join("state").join(Store::FILE_NAME);
        // Every channel has the leak, and nothing is left to deliver.
        let seen = std::cell::RefCell::new(String::new());
        poll_until(
            Duration::from_secs(60),
            "every channel to get the leak",
            || {
                let t = tally(n, &mail, &rx)?;
                *seen.borrow_mut() = format!("{t:?}");
                if t.iter().any(|(_, ids, _)| *ids == 0) {
                    return Ok(None);
                }
                let Ok(store) = Store::open_existing(&state) else {
                    return Ok(None);
                };
                let rows = store.deliveries(None, 100)?;
                *seen.borrow_mut() = format!("{t:?}\n{rows:#?}");
                let delivered = rows
                    .iter()
                    .filter(|d| d.kind == "leak" && d.delivered_at_ms.is_some())
                    .count();
                Ok((store.pending()? == 0 && delivered == 6).then_some(()))
            },
        )
        .with_context(|| format!("scenario {point}:\n{}\n{}", seen.borrow(), second.log()))?;
        drop(second);

        let t = tally(n, &mail, &rx)?;
        let hit = point.split_once(':').map(|(_, ch)| ch);
        let before_any_delivery = !point.starts_with("after-deliver")
            && !point.starts_with("after-mark")
            && *point != "after-alert-step#2";
        for (channel, ids, copies) in &t {
            assert_eq!(
                *ids, 1,
                "{point}: one distinct leak notice on {channel}: {t:?}"
            );
            if point.starts_with("after-deliver") && hit == Some(channel.as_str()) {
                // The documented at-least-once edge: sent, not yet marked.
                assert_eq!(
                    *copies, 2,
                    "{point}: the copy sent again on {channel}: {t:?}"
                );
            } else if before_any_delivery
                || point.starts_with("after-mark") && hit == Some(channel.as_str())
            {
                assert_eq!(*copies, 1, "{point}: exactly once on {channel}: {t:?}");
            } else {
                assert!(*copies <= 2, "{point}: {channel}: {t:?}");
            }
        }
    }
    Ok(())
}
