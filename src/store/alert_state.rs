//! Each line's alert state (the alert side's opaque JSON) and the last
//! check it has taken in, written together with the notices a check caused
//! in one transaction: the "alert step".
//!
//! A check is recorded first (history), then taken in by the alert side.
//! A crash between the two leaves the check recorded and the line's
//! `through_check_id` behind it; [`AlertStateStore::checks_to_take_in`]
//! finds it after the restart and the step runs then. A step is applied at
//! most once: a step for a check the line has already taken in is refused.

use rusqlite::{params, OptionalExtension};

use super::outbox::{insert_notices_in, NewNotice};
use super::{check_of_row, Ctx, Result, Store, StoreError, StoredCheck, CHECK_COLUMNS};

/// A line's alert state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineAlertRow {
    /// The alert side's state, as its JSON.
    pub state_json: String,
    /// The newest check of the line the state has taken in; None for a
    /// line whose state was never stepped by a check.
    pub through_check_id: Option<i64>,
}

/// A line's new state, as part of an [`AlertStep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// The line.
    pub line: String,
    /// Its new state, as the alert side's JSON.
    pub state_json: String,
    /// The check this step takes in: the step is refused if the line has
    /// already taken it (or a newer one) in. None for steps not caused by
    /// a check (a maintenance summary), which leave the mark as it is.
    pub through_check_id: Option<i64>,
}

/// Everything one alert step writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertStep {
    /// New states, one per line touched.
    pub states: Vec<StateWrite>,
    /// Notices to queue, each with its channels.
    pub notices: Vec<NewNotice>,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
}

/// What became of an [`AlertStep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Written; this many deliveries were queued.
    Applied { deliveries: usize },
    /// A line had already taken its check in: nothing was written.
    AlreadyTakenIn,
}

/// The alert side's state, as the alert step sees it. The store implements
/// it on its database. Synchronous (a local database, short transactions).
pub trait AlertStateStore: Send + Sync {
    /// What a failed call says.
    type Error: std::error::Error + Send + Sync + 'static;
    /// A line's state, if it has one.
    fn line_state(&self, line: &str) -> std::result::Result<Option<LineAlertRow>, Self::Error>;
    /// A line's recorded checks newer than `after` (every one when None),
    /// interrupted ones left out, oldest first: at most the newest `limit`.
    fn checks_to_take_in(
        &self,
        line: &str,
        after: Option<i64>,
        limit: usize,
    ) -> std::result::Result<Vec<StoredCheck>, Self::Error>;
    /// Write the states and queue the notices in one transaction, unless a
    /// line has already taken the step's check in.
    fn apply_alert_step(&self, step: &AlertStep) -> std::result::Result<StepOutcome, Self::Error>;
}

impl AlertStateStore for Store {
    type Error = StoreError;

    fn line_state(&self, line: &str) -> Result<Option<LineAlertRow>> {
        self.conn()
            .query_row(
                "SELECT state_json, through_check_id FROM alert_state WHERE line = ?1",
                [line],
                |r| {
                    Ok(LineAlertRow {
                        state_json: r.get(0)?,
                        through_check_id: r.get(1)?,
                    })
                },
            )
            .optional()
            .ctx("reading alert state")
    }

    fn checks_to_take_in(
        &self,
        line: &str,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredCheck>> {
        let what = "finding checks the alerts have not taken in";
        let conn = self.conn();
        let limit = limit.clamp(1, 10_000) as i64;
        let mut rows = match after {
            // Walk the ids after the mark (usually one or two rows), not
            // the line's whole history: `+line` keeps the line's index out.
            Some(after) => conn
                .prepare_cached(&format!(
                    "SELECT {CHECK_COLUMNS} FROM checks WHERE id > ?2 AND +line = ?1 \
                     AND NOT interrupted ORDER BY id DESC LIMIT ?3"
                ))
                .ctx(what)?
                .query_map(params![line, after, limit], check_of_row)
                .ctx(what)?
                .map(|r| r.map(|(c, _)| c))
                .collect::<rusqlite::Result<Vec<_>>>()
                .ctx(what)?,
            // A line never stepped: through its own index (a new line has
            // few checks).
            None => conn
                .prepare_cached(&format!(
                    "SELECT {CHECK_COLUMNS} FROM checks WHERE line = ?1 \
                     AND NOT interrupted ORDER BY id DESC LIMIT ?2"
                ))
                .ctx(what)?
                .query_map(params![line, limit], check_of_row)
                .ctx(what)?
                .map(|r| r.map(|(c, _)| c))
                .collect::<rusqlite::Result<Vec<_>>>()
                .ctx(what)?,
        };
        rows.reverse();
        Ok(rows)
    }

    fn apply_alert_step(&self, step: &AlertStep) -> Result<StepOutcome> {
        let what = "applying an alert step";
        let mut conn = self.conn();
        // IMMEDIATE: the write lock first, so the check below and the
        // writes after it can't interleave with another writer's.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(what)?;
        for s in &step.states {
            let Some(id) = s.through_check_id else {
                continue;
            };
            let through: Option<i64> = tx
                .query_row(
                    "SELECT through_check_id FROM alert_state WHERE line = ?1",
                    [&s.line],
                    |r| r.get(0),
                )
                .optional()
                .ctx(what)?
                .flatten();
            if through.is_some_and(|t| t >= id) {
                return Ok(StepOutcome::AlreadyTakenIn);
            }
        }
        for s in &step.states {
            tx.prepare_cached(
                "INSERT INTO alert_state (line, state_json, updated_at_ms, through_check_id) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(line) DO UPDATE SET \
                 state_json = excluded.state_json, updated_at_ms = excluded.updated_at_ms, \
                 through_check_id = coalesce(excluded.through_check_id, through_check_id)",
            )
            .ctx(what)?
            .execute(params![
                s.line,
                s.state_json,
                step.at_ms,
                s.through_check_id
            ])
            .ctx(what)?;
        }
        // A test can end the process here: the transaction is open, so
        // nothing above may survive it.
        crate::crash::crash_point("inside-alert-step");
        let deliveries = insert_notices_in(&tx, &step.notices)?;
        tx.commit().ctx(what)?;
        Ok(StepOutcome::Applied { deliveries })
    }
}

impl Store {
    /// The alert side's state for a line (its own JSON).
    pub fn alert_state(&self, line: &str) -> Result<Option<serde_json::Value>> {
        let what = "reading alert state";
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT state_json FROM alert_state WHERE line = ?1",
                [line],
                |r| r.get(0),
            )
            .optional()
            .ctx(what)?;
        text.map(|t| serde_json::from_str(&t).ctx(what)).transpose()
    }

    /// Replace a line's alert state, leaving the checks it has taken in as
    /// they are (the alert step writes both: [`AlertStateStore::apply_alert_step`]).
    pub fn set_alert_state(&self, line: &str, state: &serde_json::Value, at_ms: i64) -> Result<()> {
        let what = "writing alert state";
        self.conn()
            .execute(
                "INSERT INTO alert_state (line, state_json, updated_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(line) DO UPDATE SET state_json = excluded.state_json, updated_at_ms = excluded.updated_at_ms",
                params![line, serde_json::to_string(state).ctx(what)?, at_ms],
            )
            .ctx(what)?;
        Ok(())
    }
}
