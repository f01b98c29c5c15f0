//! Alerts: deciding when a line's results deserve an email, composing it,
//! and delivering it through a durable outbox.
//!
//! ```text
//! CheckResult ─▶ state machine (pure) ─▶ Action::{Recheck, Queue(Alert)}
//!                                             │
//!                      store (outbox table) ◀─┘ ─▶ sender loop ─▶ SMTP / file
//! ```
//!
//! The contract between the alert side and the store is [`OutboxStore`]:
//! alerts are written to the database first and sent in the background, so
//! an SMTP outage never blocks a check and never loses an alert.

use serde::{Deserialize, Serialize};

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

/// The outbox as the sender sees it. The store implements it on its
/// database; tests may implement it in memory.
pub trait OutboxStore: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Queue an alert. Returns false (and stores nothing) when an alert with
    /// the same `dedupe_key` already exists.
    fn enqueue(&self, alert: &OutgoingAlert) -> Result<bool, Self::Error>;
    /// Alerts not yet sent whose next attempt is due at `now_ms`.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutgoingAlert>, Self::Error>;
    fn mark_sent(&self, id: i64, at_ms: i64) -> Result<(), Self::Error>;
    fn mark_failed(&self, id: i64, error: &str, next_attempt_at_ms: i64)
        -> Result<(), Self::Error>;
    /// Unsent alerts (for metrics and the dashboard).
    fn pending(&self) -> Result<usize, Self::Error>;
}
