//! Asking for checks now: what the dashboard (or anything else) sends the
//! daemon, which queues them and answers which lines it took.

use super::result::Trigger;

/// Ask the daemon to check lines now.
#[derive(Debug)]
pub struct RunRequest {
    /// Lines to check; empty means every scheduled line.
    pub lines: Vec<String>,
    /// `Trigger::Api` or `Trigger::Manual`, with the label.
    pub trigger: Trigger,
    /// The lines queued, or why none were.
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<String>, String>>,
}
