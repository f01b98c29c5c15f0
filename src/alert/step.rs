//! The alert step: taking a recorded check in. The line's state is read,
//! the pure state machine decides, and the new state, the mark "taken in
//! through this check" and one outbox delivery per (notice, channel that
//! wants it) are written in ONE store transaction
//! ([`AlertStateStore::apply_alert_step`]).
//!
//! Crash points, and what happens after a restart:
//!
//! - after the check is recorded, before its step: the check is newer than
//!   the line's mark, so [`take_in_line`] (run at start and before every
//!   step) takes it in then;
//! - inside the step's transaction: nothing of it was written; as above;
//! - after the step committed: the notices are in the outbox; the senders
//!   deliver them after the restart;
//! - after a channel delivered, before the outbox recorded it: delivered
//!   again after the restart, with the same delivery id (at least once at
//!   this one edge; see [`super::sender`]).
//!
//! A step is never applied twice: the store refuses a step for a check the
//! line has already taken in, and notices and deliveries are keyed.

use chrono::{DateTime, Utc};

use crate::store::{AlertStateStore, AlertStep, NewNotice, StateWrite, StepOutcome};

use super::channel::Route;
use super::notice::Notice;
use super::state::{maintenance_summary, on_result, AlertPolicy, Decision, LineAlertState};

/// At most this many of a line's checks are taken in at once (after a long
/// outage of the alert side only the newest matter).
pub const MAX_TAKE_IN: usize = 50;

/// A step could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StepError<E: std::error::Error + 'static> {
    #[error("{0}")]
    Store(#[source] E),
    #[error("alert state can't be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}

/// A notice queued, with the channels it went to.
pub type Queued = (Notice, Vec<String>);

/// What taking a line's checks in did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakenIn {
    /// Checks taken in.
    pub checks: usize,
    /// The newest check's decision asks for a confirming re-check now.
    pub recheck: bool,
    /// Notices queued, with the channels they went to.
    pub queued: Vec<Queued>,
    /// Notices held for a maintenance window.
    pub held: Vec<Notice>,
}

/// A line's state as stored, or a fresh one.
fn state_of<S: AlertStateStore>(
    store: &S,
    line: &str,
) -> Result<(LineAlertState, Option<i64>), StepError<S::Error>> {
    let Some(row) = store.line_state(line).map_err(StepError::Store)? else {
        return Ok((LineAlertState::default(), None));
    };
    let state = serde_json::from_str(&row.state_json).unwrap_or_else(|e| {
        tracing::warn!(%line, error = %e, "unreadable alert state; starting afresh");
        LineAlertState::default()
    });
    Ok((state, row.through_check_id))
}

/// The outbox entry of a notice: a delivery for every channel that wants it.
pub fn new_notice(n: &Notice, channels: &[Route]) -> NewNotice {
    NewNotice {
        key: n.key.clone(),
        kind: n.kind.as_str().to_string(),
        line: n.line.clone(),
        check_id: n.check_id,
        // A notice is plain data; it always encodes.
        json: serde_json::to_string(n).unwrap_or_default(),
        created_at_ms: n.at.timestamp_millis(),
        channels: channels
            .iter()
            .filter(|c| c.subscription.wants(n))
            .map(|c| c.name.clone())
            .collect(),
    }
}

/// Take in every recorded check of `line` the alert state has not yet
/// seen (normally the one just recorded), oldest first, one transaction
/// each. `policy` None (alerts off) only moves the mark, so turning alerts
/// on later does not replay old results.
pub fn take_in_line<S: AlertStateStore>(
    store: &S,
    policy: Option<&AlertPolicy>,
    channels: &[Route],
    line: &str,
    now: DateTime<Utc>,
    in_maintenance: bool,
) -> Result<TakenIn, StepError<S::Error>> {
    let mut out = TakenIn::default();
    let (mut state, through) = state_of(store, line)?;
    let checks = store
        .checks_to_take_in(line, through, MAX_TAKE_IN)
        .map_err(StepError::Store)?;
    for c in checks {
        let (next, decisions) = match policy {
            Some(p) => on_result(&state, &c.result, c.id, now, p, in_maintenance),
            None => (state.clone(), Vec::new()),
        };
        let mut notices = Vec::new();
        let mut queued = Vec::new();
        let mut held = Vec::new();
        for d in &decisions {
            match d {
                Decision::Notify(n) => {
                    let nn = new_notice(n, channels);
                    queued.push((n.clone(), nn.channels.clone()));
                    notices.push(nn);
                }
                Decision::Hold(n) => held.push(n.clone()),
                Decision::RecheckNow => {}
            }
        }
        let step = AlertStep {
            states: vec![StateWrite {
                line: line.to_string(),
                state_json: serde_json::to_string(&next).map_err(StepError::Encode)?,
                through_check_id: Some(c.id),
            }],
            notices,
            at_ms: now.timestamp_millis(),
        };
        match store.apply_alert_step(&step).map_err(StepError::Store)? {
            StepOutcome::Applied { .. } => {
                state = next;
                out.checks += 1;
                out.recheck = decisions.contains(&Decision::RecheckNow);
                out.queued.extend(queued);
                out.held.extend(held);
            }
            // Taken in meanwhile (another process on the same history):
            // carry on from what is stored.
            StepOutcome::AlreadyTakenIn => {
                state = state_of(store, line)?.0;
            }
        }
        crate::crash::crash_point("after-alert-step");
    }
    Ok(out)
}

/// Reminders due at `now` for devices not tested for their
/// `remind_every`: each queued with the device's new state in one
/// transaction (so a restart neither repeats nor loses one).
pub fn device_reminders<S: AlertStateStore>(
    store: &S,
    channels: &[Route],
    devices: &[crate::plan::DevicePlan],
    now: DateTime<Utc>,
) -> Result<Vec<Queued>, StepError<S::Error>> {
    let mut out = Vec::new();
    for d in devices {
        let state = state_of(store, d.name())?.0;
        let (next, notice) = super::state::device_reminder(&state, d, now);
        let Some(next) = next else { continue };
        let nn = notice.as_ref().map(|n| new_notice(n, channels));
        let step = AlertStep {
            states: vec![StateWrite {
                line: d.name().to_string(),
                state_json: serde_json::to_string(&next).map_err(StepError::Encode)?,
                through_check_id: None,
            }],
            notices: nn.iter().cloned().collect(),
            at_ms: now.timestamp_millis(),
        };
        store.apply_alert_step(&step).map_err(StepError::Store)?;
        if let (Some(n), Some(nn)) = (notice, nn) {
            out.push((n, nn.channels));
        }
    }
    Ok(out)
}

/// When a maintenance window has ended: one summary of what every line
/// held, queued together with the lines' cleared states in one
/// transaction. None when nothing was held.
pub fn summarise_maintenance<S: AlertStateStore>(
    store: &S,
    policy: &AlertPolicy,
    channels: &[Route],
    lines: &[String],
    now: DateTime<Utc>,
) -> Result<Option<Queued>, StepError<S::Error>> {
    // Only the lines that held something change.
    let mut states: Vec<(String, LineAlertState)> = Vec::new();
    for l in lines {
        let s = state_of(store, l)?.0;
        if !s.held.is_empty() {
            states.push((l.clone(), s));
        }
    }
    let Some(summary) =
        maintenance_summary(states.iter_mut().map(|(k, v)| (k.as_str(), v)), now, policy)
    else {
        return Ok(None);
    };
    let nn = new_notice(&summary, channels);
    let to = nn.channels.clone();
    let step = AlertStep {
        states: states
            .iter()
            .map(|(line, s)| {
                Ok(StateWrite {
                    line: line.clone(),
                    state_json: serde_json::to_string(s).map_err(StepError::Encode)?,
                    through_check_id: None,
                })
            })
            .collect::<Result<_, StepError<S::Error>>>()?,
        notices: vec![nn],
        at_ms: now.timestamp_millis(),
    };
    store.apply_alert_step(&step).map_err(StepError::Store)?;
    Ok(Some((summary, to)))
}
