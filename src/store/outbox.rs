//! The alert outbox on the history database ([`OutboxStore`]), and the
//! alerts held back during maintenance.

use rusqlite::{params, Connection, Row};

use super::{Ctx, Result, Store, StoreError};
use crate::alert::{AlertKind, OutboxStore, OutgoingAlert};

const ALERT_COLUMNS: &str = "id, kind, line, check_id, recipients_json, subject, text, html, \
     dedupe_key, attempts, created_at_ms, next_attempt_at_ms, last_error";

fn alert_of_row(r: &Row<'_>) -> rusqlite::Result<OutgoingAlert> {
    let kind: String = r.get(1)?;
    let recipients: String = r.get(4)?;
    Ok(OutgoingAlert {
        id: r.get(0)?,
        // Unknown kinds (from a newer build) still get delivered.
        kind: serde_json::from_value(serde_json::Value::String(kind)).unwrap_or(AlertKind::Test),
        line: r.get(2)?,
        check_id: r.get(3)?,
        recipients: serde_json::from_str(&recipients).unwrap_or_default(),
        subject: r.get(5)?,
        text: r.get(6)?,
        html: r.get(7)?,
        dedupe_key: r.get(8)?,
        attempts: r.get::<_, i64>(9)?.clamp(0, u32::MAX as i64) as u32,
        created_at_ms: r.get(10)?,
        next_attempt_at_ms: r.get(11)?,
        last_error: r.get(12)?,
    })
}

/// Insert an alert with a status unless its dedupe key exists.
fn insert(conn: &Connection, a: &OutgoingAlert, status: &str) -> Result<bool> {
    let what = "queueing an alert";
    let kind = match serde_json::to_value(a.kind).ctx(what)? {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let n = conn
        .execute(
            "INSERT INTO outbox (dedupe_key, kind, line, check_id, recipients_json, subject, text, html, \
             attempts, created_at_ms, next_attempt_at_ms, last_error, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
             ON CONFLICT(dedupe_key) DO NOTHING",
            params![
                a.dedupe_key,
                kind,
                a.line,
                a.check_id,
                serde_json::to_string(&a.recipients).ctx(what)?,
                a.subject,
                a.text,
                a.html,
                a.attempts as i64,
                a.created_at_ms,
                a.next_attempt_at_ms,
                a.last_error,
                status,
            ],
        )
        .ctx(what)?;
    Ok(n > 0)
}

/// What to do with alerts held during maintenance.
#[derive(Debug, Clone, Copy)]
pub enum Release<'a> {
    /// Send each one as it is.
    SendEach,
    /// Don't send them; queue this summary instead.
    Summarise(&'a OutgoingAlert),
}

impl Store {
    /// Hold an alert during maintenance instead of sending it. False if
    /// one with the same dedupe key exists (held or queued).
    pub fn hold_alert(&self, alert: &OutgoingAlert) -> Result<bool> {
        insert(&self.conn(), alert, "held")
    }

    /// Alerts held during maintenance, oldest first.
    pub fn held_alerts(&self) -> Result<Vec<OutgoingAlert>> {
        let what = "listing held alerts";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM outbox WHERE status = 'held' ORDER BY id"
            ))
            .ctx(what)?;
        let rows = st
            .query_map([], alert_of_row)
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }

    /// Release held alerts (by outbox id) when maintenance ends: either
    /// queue each, or mark them summarised and queue the summary, in one
    /// transaction. Returns how many were released.
    pub fn release_held(&self, ids: &[i64], how: Release<'_>) -> Result<usize> {
        let what = "releasing held alerts";
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        let status = match how {
            Release::SendEach => "pending",
            Release::Summarise(_) => "summarised",
        };
        let mut n = 0;
        for id in ids {
            n += tx
                .execute(
                    "UPDATE outbox SET status = ?1 WHERE id = ?2 AND status = 'held'",
                    params![status, id],
                )
                .ctx(what)?;
        }
        if let Release::Summarise(summary) = how {
            insert(&tx, summary, "pending")?;
        }
        tx.commit().ctx(what)?;
        Ok(n)
    }
}

impl OutboxStore for Store {
    type Error = StoreError;

    fn enqueue(&self, alert: &OutgoingAlert) -> Result<bool> {
        insert(&self.conn(), alert, "pending")
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutgoingAlert>> {
        let what = "listing due alerts";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_at_ms <= ?1 \
                 ORDER BY next_attempt_at_ms, id LIMIT ?2"
            ))
            .ctx(what)?;
        let rows = st
            .query_map(
                params![now_ms, limit.min(i64::MAX as usize) as i64],
                alert_of_row,
            )
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }

    fn mark_sent(&self, id: i64, at_ms: i64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE outbox SET status = 'sent', sent_at_ms = ?2, attempts = attempts + 1, last_error = NULL \
                 WHERE id = ?1",
                params![id, at_ms],
            )
            .ctx("marking an alert sent")?;
        Ok(())
    }

    fn mark_failed(&self, id: i64, error: &str, next_attempt_at_ms: i64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at_ms = ?3 \
                 WHERE id = ?1 AND status = 'pending'",
                params![id, error, next_attempt_at_ms],
            )
            .ctx("marking an alert failed")?;
        Ok(())
    }

    fn pending(&self) -> Result<usize> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM outbox WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as usize)
            .ctx("counting pending alerts")
    }
}
