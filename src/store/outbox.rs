//! The alert outbox on the history database: notices (what to tell, as the
//! alert side's opaque JSON) and one delivery row per notice per channel,
//! each with its own attempts, backoff and delivered mark.
//!
//! Plain data on purpose: the store knows keys, channel names and JSON
//! text, not what an alert is. The alert side decides what a notice says
//! and how a channel renders it; the store only keeps it safe.

use rusqlite::{params, Connection, Row};

use super::{Ctx, Result, Store, StoreError};

/// A notice to store, with the channels it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotice {
    /// Stable and unique (`leak:reception:42`): storing the same notice
    /// again (a replayed result) changes nothing.
    pub key: String,
    /// Its kind (`leak`), for listings and metrics.
    pub kind: String,
    /// The line it is about, if one.
    pub line: Option<String>,
    /// The history id of the check that caused it, if any.
    pub check_id: Option<i64>,
    /// The notice itself, as the alert side wrote it.
    pub json: String,
    /// When it was decided (ms since the Unix epoch); deliveries are due
    /// from then.
    pub created_at_ms: i64,
    /// The channels it goes to: one delivery each, keyed
    /// `<notice key>:<channel>`.
    pub channels: Vec<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Still to be delivered (maybe after failed attempts).
    Pending,
    /// The far end took it: never sent again.
    Delivered,
    /// Never to be sent (its notice can't be read, or an old held alert).
    Dropped,
}

impl DeliveryStatus {
    fn of(s: &str) -> DeliveryStatus {
        match s {
            "delivered" => DeliveryStatus::Delivered,
            "dropped" => DeliveryStatus::Dropped,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One notice on its way to one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id, for marking it.
    pub id: i64,
    /// The notice's key (`leak:reception:42`).
    pub notice_key: String,
    /// The channel's name.
    pub channel: String,
    /// `<notice key>:<channel>`: unique, stable across restarts.
    pub key: String,
    /// The notice's kind (`leak`).
    pub kind: String,
    /// The line the notice is about, if one.
    pub line: Option<String>,
    /// The check that caused the notice, if any.
    pub check_id: Option<i64>,
    /// The notice, as the alert side stored it.
    pub notice_json: String,
    /// Pending, delivered or dropped.
    pub status: DeliveryStatus,
    /// Attempts so far (the successful one included).
    pub attempts: u32,
    /// When the notice was decided (ms).
    pub created_at_ms: i64,
    /// When it may be tried next (ms).
    pub next_attempt_at_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// What the far end answered when it took it.
    pub answer: Option<String>,
    /// When it was delivered (ms).
    pub delivered_at_ms: Option<i64>,
}

/// The outbox as the senders and the metrics see it. The store implements
/// it on its database.
///
/// The methods are synchronous (a local database); the senders call them
/// on the blocking pool, never on the async workers.
pub trait OutboxStore: Send + Sync {
    /// What a failed call says.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Store notices and a delivery per channel, in one transaction. A
    /// notice or delivery whose key is already stored (delivered or not) is
    /// left as it is. Returns how many deliveries were added.
    fn enqueue(&self, notices: &[NewNotice]) -> std::result::Result<usize, Self::Error>;
    /// A channel's pending deliveries due at `now_ms`
    /// (`next_attempt_at_ms <= now_ms`), oldest first.
    fn due(
        &self,
        channel: &str,
        now_ms: i64,
        limit: usize,
    ) -> std::result::Result<Vec<Delivery>, Self::Error>;
    /// The far end took it: never send it again. `answer` is what it said.
    fn mark_delivered(
        &self,
        id: i64,
        at_ms: i64,
        answer: &str,
    ) -> std::result::Result<(), Self::Error>;
    /// An attempt failed: add one to `attempts`, keep `error` as
    /// `last_error`, and make it due again at `next_attempt_at_ms`.
    fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at_ms: i64,
    ) -> std::result::Result<(), Self::Error>;
    /// It can never be sent (its notice can't be read): stop trying.
    fn mark_dropped(&self, id: i64, error: &str) -> std::result::Result<(), Self::Error>;
    /// Deliveries not yet made, on every channel (metrics, dashboard).
    fn pending(&self) -> std::result::Result<usize, Self::Error>;
    /// Every delivery of a notice (or of all, newest first), for tests and
    /// for looking into what happened.
    fn deliveries(
        &self,
        notice_key: Option<&str>,
        limit: usize,
    ) -> std::result::Result<Vec<Delivery>, Self::Error>;
}

const DELIVERY_COLUMNS: &str = "d.id, n.key, d.channel, d.key, n.kind, n.line, n.check_id, \
     n.notice_json, d.status, d.attempts, n.created_at_ms, d.next_attempt_at_ms, d.last_error, \
     d.answer, d.delivered_at_ms";

fn delivery_of_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        notice_key: r.get(1)?,
        channel: r.get(2)?,
        key: r.get(3)?,
        kind: r.get(4)?,
        line: r.get(5)?,
        check_id: r.get(6)?,
        notice_json: r.get(7)?,
        status: DeliveryStatus::of(&r.get::<_, String>(8)?),
        attempts: r.get::<_, i64>(9)?.clamp(0, u32::MAX as i64) as u32,
        created_at_ms: r.get(10)?,
        next_attempt_at_ms: r.get(11)?,
        last_error: r.get(12)?,
        answer: r.get(13)?,
        delivered_at_ms: r.get(14)?,
    })
}

/// Insert notices and their deliveries inside the caller's transaction;
/// existing keys are left alone. Returns the deliveries added.
pub(super) fn insert_notices_in(conn: &Connection, notices: &[NewNotice]) -> Result<usize> {
    let what = "queueing a notice";
    let mut added = 0;
    for n in notices {
        conn.prepare_cached(
            "INSERT INTO notices (key, kind, line, check_id, notice_json, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(key) DO NOTHING",
        )
        .ctx(what)?
        .execute(params![
            n.key,
            n.kind,
            n.line,
            n.check_id,
            n.json,
            n.created_at_ms
        ])
        .ctx(what)?;
        let notice_id: i64 = conn
            .prepare_cached("SELECT id FROM notices WHERE key = ?1")
            .ctx(what)?
            .query_row([&n.key], |r| r.get(0))
            .ctx(what)?;
        for channel in &n.channels {
            added += conn
                .prepare_cached(
                    "INSERT INTO deliveries (notice_id, channel, key, next_attempt_at_ms) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(key) DO NOTHING",
                )
                .ctx(what)?
                .execute(params![
                    notice_id,
                    channel,
                    format!("{}:{channel}", n.key),
                    n.created_at_ms
                ])
                .ctx(what)?;
        }
    }
    Ok(added)
}

impl OutboxStore for Store {
    type Error = StoreError;

    fn enqueue(&self, notices: &[NewNotice]) -> Result<usize> {
        let what = "queueing notices";
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        let n = insert_notices_in(&tx, notices)?;
        tx.commit().ctx(what)?;
        Ok(n)
    }

    fn due(&self, channel: &str, now_ms: i64, limit: usize) -> Result<Vec<Delivery>> {
        let what = "listing due deliveries";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN notices n ON n.id = d.notice_id \
                 WHERE d.channel = ?1 AND d.status = 'pending' AND d.next_attempt_at_ms <= ?2 \
                 ORDER BY d.next_attempt_at_ms, d.id LIMIT ?3"
            ))
            .ctx(what)?;
        let rows = st
            .query_map(
                params![channel, now_ms, limit.min(i64::MAX as usize) as i64],
                delivery_of_row,
            )
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }

    fn mark_delivered(&self, id: i64, at_ms: i64, answer: &str) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE deliveries SET status = 'delivered', delivered_at_ms = ?2, answer = ?3, \
                 attempts = attempts + 1, last_error = NULL WHERE id = ?1 AND status = 'pending'",
                params![id, at_ms, answer],
            )
            .ctx("marking a notice delivered")?;
        Ok(())
    }

    fn mark_failed(&self, id: i64, error: &str, next_attempt_at_ms: i64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2, \
                 next_attempt_at_ms = ?3 WHERE id = ?1 AND status = 'pending'",
                params![id, error, next_attempt_at_ms],
            )
            .ctx("recording a failed delivery")?;
        Ok(())
    }

    fn mark_dropped(&self, id: i64, error: &str) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE deliveries SET status = 'dropped', last_error = ?2 \
                 WHERE id = ?1 AND status = 'pending'",
                params![id, error],
            )
            .ctx("dropping a delivery")?;
        Ok(())
    }

    fn pending(&self) -> Result<usize> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as usize)
            .ctx("counting pending deliveries")
    }

    fn deliveries(&self, notice_key: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
        let what = "listing deliveries";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN notices n ON n.id = d.notice_id \
                 WHERE ?1 IS NULL OR n.key = ?1 ORDER BY d.id DESC LIMIT ?2"
            ))
            .ctx(what)?;
        let rows = st
            .query_map(
                params![notice_key, limit.min(i64::MAX as usize) as i64],
                delivery_of_row,
            )
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }
}
