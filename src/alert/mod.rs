//! Alerts: deciding when a line's results deserve an email, composing it,
//! and delivering it through a durable outbox.
//!
//! ```text
//! CheckResult ─▶ state machine (pure) ─▶ Action::{RecheckNow, Queue(Alert), Hold(Alert)}
//!                                             │
//!                      store (outbox table) ◀─┘ ─▶ sender loop ─▶ SMTP / file
//! ```
//!
//! The contract between the alert side and the store is [`OutboxStore`]:
//! alerts are written to the database first and sent in the background, so
//! an SMTP outage never blocks a check and never loses an alert.
//!
//! - [`state`]: when to alert ([`on_result`], [`maintenance_summary`]), pure.
//! - [`shape`]: the "shape" of what a passing call presented, for drift.
//! - [`render`]: what the email says (subject, text, HTML), pure.
//! - [`mailer`]: delivering one email (SMTP dialogue or `.eml` file).
//! - [`sender`]: the background loop draining the outbox, with backoff.
//!
//! How the daemon uses it, per check result:
//!
//! 1. `let (next, actions) = on_result(&state, &result, check_id, now, &policy, in_window)`;
//! 2. in one database transaction: store `next` (opaque JSON) and
//!    [`OutboxStore::enqueue`] every `Action::Queue`; `Action::Hold` needs
//!    nothing (the held alert is inside `next`), `Action::RecheckNow` asks
//!    for an immediate check of the line with `Trigger::Confirm`;
//! 3. wake the sender (`SenderOptions::wake`).
//!
//! When no maintenance window is open and any line's state holds alerts,
//! call [`maintenance_summary`] over all lines once, enqueue its alert and
//! store the states (a re-run after a crash yields the same dedupe key).

pub mod mailer;
pub mod render;
pub mod sender;
pub mod shape;
pub mod state;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use mailer::{Delivery, DialogueStep, Mailer, MailerError, SendError};
pub use render::{Email, Renderer};
pub use sender::{run_sender, RetryPolicy, SenderOptions, SenderStats};
pub use shape::IdentityShape;
pub use state::{
    maintenance_summary, on_result, Action, AlertPolicy, HeldAlert, LineAlertState, LineStatus,
};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert ready to send (rendered), as stored in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingAlert {
    /// Outbox row id (0 before it is stored).
    pub id: i64,
    pub kind: AlertKind,
    /// The line it is about (None for summaries and tests).
    pub line: Option<String>,
    /// The history id of the check that caused it, if any.
    pub check_id: Option<i64>,
    pub recipients: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A stable key so the same alert is never queued twice (e.g.
    /// `leak:reception:<check id>`).
    pub dedupe_key: String,
    /// Send attempts so far.
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
}

impl OutgoingAlert {
    /// A new alert, not yet stored: due at once, no attempts.
    pub fn new(
        kind: AlertKind,
        line: Option<&str>,
        check_id: Option<i64>,
        recipients: Vec<String>,
        email: Email,
        dedupe_key: String,
        created_at_ms: i64,
    ) -> OutgoingAlert {
        OutgoingAlert {
            id: 0,
            kind,
            line: line.map(str::to_string),
            check_id,
            recipients,
            subject: email.subject,
            text: email.text,
            html: email.html,
            dedupe_key,
            attempts: 0,
            created_at_ms,
            next_attempt_at_ms: created_at_ms,
            last_error: None,
        }
    }
}

/// The outbox as the sender sees it. The store implements it on its
/// database; tests may implement it in memory.
///
/// The methods are synchronous (a local database); the sender calls them on
/// the blocking pool, never on the async workers.
pub trait OutboxStore: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Queue an alert. Returns false (and stores nothing) when an alert with
    /// the same `dedupe_key` already exists, sent or not.
    fn enqueue(&self, alert: &OutgoingAlert) -> Result<bool, Self::Error>;
    /// Alerts not yet sent whose next attempt is due at `now_ms`
    /// (`next_attempt_at_ms <= now_ms`), oldest first.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutgoingAlert>, Self::Error>;
    /// The server accepted the alert: never send it again.
    fn mark_sent(&self, id: i64, at_ms: i64) -> Result<(), Self::Error>;
    /// A send attempt failed: add one to `attempts`, keep `error` as
    /// `last_error`, and make it due again at `next_attempt_at_ms`.
    fn mark_failed(&self, id: i64, error: &str, next_attempt_at_ms: i64)
        -> Result<(), Self::Error>;
    /// Unsent alerts (for metrics and the dashboard).
    fn pending(&self) -> Result<usize, Self::Error>;
}

/// A problem setting alerting up from the config: exit status 2 for the
/// command line, a refusal to start for the daemon.
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
}

/// What `cidguard alert test` did: where it sent, each step of the SMTP
/// dialogue, and whether the server accepted the message.
#[derive(Debug)]
pub struct TestReport {
    /// `smtp 127.0.0.1:587 (STARTTLS, as alice)`, or the folder.
    pub via: String,
    pub recipients: Vec<String>,
    pub steps: Vec<DialogueStep>,
    pub result: Result<Delivery, SendError>,
}

impl TestReport {
    pub fn accepted(&self) -> bool {
        self.result.is_ok()
    }

    /// The human report the command prints. The server's replies are its
    /// text, not ours: control characters are escaped.
    pub fn human(&self) -> String {
        use crate::escape::control as esc;
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Sending a test email to {} via {}",
            self.recipients.join(", "),
            self.via
        );
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
                let _ = writeln!(out, "Accepted: {}", esc(&d.reply));
            }
            Err(e) => {
                let _ = writeln!(out, "FAILED: {}", esc(&e.to_string()));
            }
        }
        out
    }
}

/// Send a test email through the configured transport, recording the
/// dialogue. Setup problems (no `[alerts]`, an unreadable password or CA
/// file) are errors; a failed send is a report with `result` set to the
/// error.
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
    let renderer =
        Renderer::from_plan(plan, config_path).map_err(|source| AlertSetupError::Render {
            path: config_path.to_path_buf(),
            source,
        })?;
    let mailer = Mailer::from_config(alerts).map_err(|source| AlertSetupError::Mailer {
        path: config_path.to_path_buf(),
        source,
    })?;
    let email = renderer.test_email(now);
    let now_ms = now.timestamp_millis();
    let alert = OutgoingAlert::new(
        AlertKind::Test,
        None,
        None,
        renderer.recipients().to_vec(),
        email,
        format!("test:{now_ms}"),
        now_ms,
    );
    let mut steps = Vec::new();
    let result = mailer.send_logged(&alert, &mut steps).await;
    Ok(TestReport {
        via: mailer.describe(),
        recipients: alert.recipients.clone(),
        steps,
        result,
    })
}
