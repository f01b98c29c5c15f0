//! Alerts: deciding when a line's results deserve telling, and delivering
//! that on every channel people use, through a durable outbox.
//!
//! ```text
//! recorded check ─▶ state machine (pure) ─▶ Decision::{RecheckNow, Notify(Notice), Hold(Notice)}
//!                                                 │
//!          one store transaction: state + mark + one delivery per (notice, channel)
//!                                                 │
//!                  one sender per channel ─▶ Channel::deliver ─▶ email / webhook / ntfy / Teams / Slack / Matrix
//! ```
//!
//! Decide, then deliver: the state machine returns notices (kind, line,
//! check, facts) and renders nothing; each channel renders a notice its own
//! way when it delivers it, so an email looks as it always did and a chat
//! message is short, masked, and links to the dashboard.
//!
//! - [`state`]: when to alert ([`on_result`], [`maintenance_summary`]), pure.
//! - [`notice`]: what a notice knows, as plain data.
//! - [`step`]: taking a recorded check in, in one transaction, and catching
//!   up on checks recorded just before a crash.
//! - [`shape`]: the "shape" of what a passing call presented, for drift.
//! - [`render`]: what the email says (subject, text, HTML), pure.
//! - [`chat`]: what a chat message says, masked.
//! - [`channel`]: the channels, and the [`Channel`] trait.
//! - [`mailer`]: delivering one email (SMTP dialogue or `.eml` file).
//! - [`sender`]: the background loop per channel, with backoff.
//!
//! Where this sits against the store: the store keeps notices and
//! deliveries as plain data (keys, channel names, the notice's JSON) behind
//! its [`OutboxStore`] and [`crate::store::AlertStateStore`] traits and
//! imports nothing from here; this side defines what a notice is and uses
//! those traits. One direction only: `alert` → `store`.

pub mod channel;
pub mod chat;
pub mod mailer;
pub mod notice;
pub mod render;
pub mod sender;
pub mod shape;
pub mod state;
pub mod step;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::store::OutboxStore;
pub use channel::{Channel, ChannelSetupError, Delivered, DeliveryError, Subscription};
pub use mailer::{Delivery, DialogueStep, Mailer, MailerError, OutgoingEmail, SendError};
pub use notice::{delivery_id, CheckFacts, Facts, LastKnown, LeakBasis, Notice, SummaryLine};
pub use render::{Email, Renderer};
pub use sender::{run_sender, RetryPolicy, SenderOptions, SenderStats};
pub use shape::IdentityShape;
pub use state::{
    maintenance_summary, on_result, AlertPolicy, Decision, HeldAlert, LineAlertState, LineStatus,
};

use crate::config::ChannelKind;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// A confirmed leak or wrong presentation.
    Leak,
    /// Still failing (reminder).
    Reminder,
    /// A failing line passes again.
    Resolved,
    /// cidguard can't test the line (N consecutive inconclusive results).
    CantTest,
    /// A passing line's identity headers changed shape; still private.
    Drift,
    /// Alerts held during a maintenance window, summarised when it ends.
    MaintenanceSummary,
    /// `cidguard alert test`.
    Test,
    /// A device has had no call-in for its `remind_every`: its owner is
    /// asked to dial its self-test number.
    DeviceReminder,
}

impl AlertKind {
    /// The kebab-case name, as serialised (`maintenance-summary`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Leak => "leak",
            AlertKind::Reminder => "reminder",
            AlertKind::Resolved => "resolved",
            AlertKind::CantTest => "cant-test",
            AlertKind::Drift => "drift",
            AlertKind::MaintenanceSummary => "maintenance-summary",
            AlertKind::Test => "test",
            AlertKind::DeviceReminder => "device-reminder",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem setting alerting up from the config: exit status 2 for the
/// command line, a refusal to start alerts for the daemon.
#[derive(Debug, thiserror::Error)]
pub enum AlertSetupError {
    #[error("{}: no [alerts] section: add one with recipients, from and [alerts.smtp] or [alerts.file]", path.display())]
    NotConfigured { path: std::path::PathBuf },
    #[error("{}: alerts: {source}", path.display())]
    Render {
        path: std::path::PathBuf,
        source: render::RenderSetupError,
    },
    #[error("{}: {source}", path.display())]
    Mailer {
        path: std::path::PathBuf,
        source: MailerError,
    },
    #[error("{}: {source}", path.display())]
    Channel {
        path: std::path::PathBuf,
        source: ChannelSetupError,
    },
    #[error("{}: no alert channel named {name:?} (the channels: {known})", path.display())]
    NoSuchChannel {
        path: std::path::PathBuf,
        name: String,
        known: String,
    },
}

/// What `cidguard alert test` did on one channel: where it sent, each step
/// (the SMTP dialogue, or the HTTP request and answer), and whether the far
/// end took it.
#[derive(Debug)]
pub struct TestReport {
    /// The channel's name.
    pub channel: String,
    /// Its kind.
    pub kind: ChannelKind,
    /// `smtp 127.0.0.1:587 (STARTTLS, as alice)`, the folder, or the URL's
    /// origin.
    pub via: String,
    /// An email channel's recipients.
    pub recipients: Vec<String>,
    /// Each step and what the far end said.
    pub steps: Vec<DialogueStep>,
    /// Delivered, or why not.
    pub result: Result<Delivered, DeliveryError>,
}

impl TestReport {
    pub fn accepted(&self) -> bool {
        self.result.is_ok()
    }

    /// The human report the command prints. The far end's replies are its
    /// text, not ours: control characters are escaped.
    pub fn human(&self) -> String {
        use crate::escape::control as esc;
        use std::fmt::Write as _;
        let mut out = String::new();
        if self.kind == ChannelKind::Email {
            let _ = writeln!(
                out,
                "Sending a test email to {} via {}",
                self.recipients.join(", "),
                self.via
            );
        } else {
            let _ = writeln!(
                out,
                "Sending a test notice to channel {:?} via {}",
                self.channel, self.via
            );
        }
        let width = self
            .steps
            .iter()
            .map(|s| s.step.chars().count())
            .max()
            .unwrap_or(0);
        for s in &self.steps {
            let _ = writeln!(out, "  {:width$}  {}", s.step, esc(&s.reply));
        }
        match &self.result {
            Ok(d) => {
                for r in &d.refused {
                    let _ = writeln!(out, "Refused recipient {}: {}", r.recipient, esc(&r.reply));
                }
                let _ = writeln!(out, "Accepted: {}", esc(&d.answer));
            }
            Err(e) => {
                let _ = writeln!(out, "FAILED: {}", esc(&e.to_string()));
            }
        }
        out
    }
}

/// The test notice.
fn test_notice(now: chrono::DateTime<chrono::Utc>) -> Notice {
    Notice {
        key: format!("test:{}", now.timestamp_millis()),
        kind: AlertKind::Test,
        line: None,
        check_id: None,
        at: now,
        expected: None,
        link: None,
        facts: Facts::Test {},
    }
}

/// Send a test notice to every channel (or the one named), recording each
/// exchange. Setup problems (no `[alerts]`, an unreadable secret or CA
/// file, an unknown channel) are errors; a failed delivery is a report with
/// `result` set to the error.
pub async fn send_test_notices(
    plan: &crate::plan::Plan,
    config_path: &Path,
    only: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<TestReport>, AlertSetupError> {
    let cfg = plan.config();
    let path = || config_path.to_path_buf();
    if cfg.alerts.is_none() {
        return Err(AlertSetupError::NotConfigured { path: path() });
    }
    let channels =
        channel::from_config(cfg, config_path).map_err(|source| AlertSetupError::Channel {
            path: path(),
            source,
        })?;
    let chosen: Vec<Arc<dyn Channel>> = match only {
        None => channels,
        Some(name) => {
            let known = channels
                .iter()
                .map(|c| c.name().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let c: Vec<_> = channels.into_iter().filter(|c| c.name() == name).collect();
            if c.is_empty() {
                return Err(AlertSetupError::NoSuchChannel {
                    path: path(),
                    name: name.to_string(),
                    known,
                });
            }
            c
        }
    };
    let notice = test_notice(now);
    let mut reports = Vec::new();
    for c in chosen {
        let recipients = match c.kind() {
            ChannelKind::Email => email_recipients(cfg, c.name()),
            _ => Vec::new(),
        };
        let mut steps = Vec::new();
        let result = c.deliver_logged(&notice, &mut steps).await;
        reports.push(TestReport {
            channel: c.name().to_string(),
            kind: c.kind(),
            via: c.describe(),
            recipients,
            steps,
            result,
        });
    }
    Ok(reports)
}

/// An email channel's recipients, from the config.
fn email_recipients(cfg: &crate::config::Config, name: &str) -> Vec<String> {
    let Some(a) = &cfg.alerts else {
        return Vec::new();
    };
    if name == crate::config::Alerts::EMAIL && a.has_implicit_email() {
        return a.recipients.clone();
    }
    a.channels
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.recipients.clone())
        .unwrap_or_default()
}

/// Send a test email through the `email` channel (`[alerts]`'s own
/// settings), recording the dialogue: what `cidguard alert test` did
/// before there were other channels.
pub async fn send_test_email(
    plan: &crate::plan::Plan,
    config_path: &Path,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<TestReport, AlertSetupError> {
    let alerts = plan
        .config()
        .alerts
        .as_ref()
        .ok_or_else(|| AlertSetupError::NotConfigured {
            path: config_path.to_path_buf(),
        })?;
    let base = Renderer::from_config(plan.config(), config_path).map_err(|source| {
        AlertSetupError::Render {
            path: config_path.to_path_buf(),
            source,
        }
    })?;
    let email = channel::email::EmailChannel::implicit(alerts, &base).map_err(|source| {
        AlertSetupError::Channel {
            path: config_path.to_path_buf(),
            source,
        }
    })?;
    let notice = test_notice(now);
    let mut steps = Vec::new();
    let result = email.deliver_logged(&notice, &mut steps).await;
    Ok(TestReport {
        channel: email.name().to_string(),
        kind: ChannelKind::Email,
        via: email.describe(),
        recipients: email.recipients().to_vec(),
        steps,
        result,
    })
}
