//! The history: every check, its evidence, PBX software changes, the alert
//! outbox (notices and their deliveries per channel), maintenance windows, per-line alert state and last run times, in
//! one SQLite file under the state directory.
//!
//! Durability: WAL with `synchronous = FULL`, and every write is one
//! transaction, so a crash or `kill -9` at any point leaves the file intact
//! and every result that `record_check` returned an id for is on disk.
//! Schema changes are forward-only migrations numbered by `PRAGMA
//! user_version` ([`schema`]).
//!
//! Calls are synchronous and short (one indexed statement or one small
//! transaction); the connection sits behind a mutex so the daemon, the alert
//! sender and the dashboard can share one `Arc<Store>`. Each of them uses
//! it through the trait of its own needs ([`HistoryWrite`], [`HistoryRead`],
//! [`MaintenanceStore`], and the alert side's outbox), which [`Store`] is
//! the SQLite implementation of.

mod alert_state;
mod outbox;
pub mod schema;
mod traits;
pub use traits::{HistoryRead, HistoryWrite, MaintenanceStore};

pub use alert_state::{AlertStateStore, AlertStep, LineAlertRow, StateWrite, StepOutcome};
pub use outbox::{Delivery, DeliveryStatus, NewNotice, OutboxStore};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::Serialize;

use crate::check::result::{redact, CheckResult, EvidenceMessage, Trigger};
use crate::config::Expect;
use crate::verdict::Outcome;

/// What went wrong with the history database, and while doing what.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("can't create the state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("can't open the history database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("can't create the history database {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no history database at {} (has `cidguard run` been started with this state directory?)", path.display())]
    Missing { path: PathBuf },
    #[error("the history database {} has schema version {found}, newer than this cidguard ({supported}); upgrade cidguard", path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("migrating the history database to version {version}: {source}")]
    Migrate {
        version: i64,
        source: rusqlite::Error,
    },
    #[error("history database, {what}: {source}")]
    Sql {
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("history database, {what}: stored data can't be read or written as JSON: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

/// Attach what was being done to a SQLite error.
trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, what: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sql { what, source })
    }
}

impl<T> Ctx<T> for serde_json::Result<T> {
    fn ctx(self, what: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Json { what, source })
    }
}

/// The history database.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

/// How a stored check was recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    /// When it was written (ms since the Unix epoch).
    pub recorded_at_ms: i64,
    /// The daemon stopped before the check finished.
    pub interrupted: bool,
    /// The scheduled time this check ran for; stored as the line's last run
    /// in the same transaction, so catch-up after a crash is exact.
    pub slot_ms: Option<i64>,
}

/// A check as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCheck {
    pub id: i64,
    pub recorded_at_ms: i64,
    pub interrupted: bool,
    /// Its evidence was deleted by the retention policy.
    pub evidence_pruned: bool,
    #[serde(flatten)]
    pub result: CheckResult,
}

/// A position in a line's checks, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cursor {
    pub started_at_ms: i64,
    pub id: i64,
}

/// A line's checks, filtered, newest first.
#[derive(Debug, Clone)]
pub struct CheckQuery {
    pub line: String,
    /// Started at or after (ms).
    pub since_ms: Option<i64>,
    /// Started before (ms).
    pub until_ms: Option<i64>,
    pub outcome: Option<Outcome>,
    pub limit: usize,
    /// Continue after this cursor (from the previous page's `next`).
    pub after: Option<Cursor>,
}

impl CheckQuery {
    pub fn line(line: &str) -> CheckQuery {
        CheckQuery {
            line: line.to_string(),
            since_ms: None,
            until_ms: None,
            outcome: None,
            limit: 100,
            after: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckPage {
    pub checks: Vec<StoredCheck>,
    /// Where the next page starts; None on the last page.
    pub next: Option<Cursor>,
}

/// Outcome counts over a period. Interrupted checks are not counted: they
/// say nothing about the line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ratio {
    pub pass: u64,
    pub fail: u64,
    pub inconclusive: u64,
}

impl Ratio {
    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.inconclusive
    }
    /// Passes among all counted checks; None when there were none.
    pub fn pass_ratio(&self) -> Option<f64> {
        let t = self.total();
        (t > 0).then(|| self.pass as f64 / t as f64)
    }
}

/// A check reduced to what a history bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckMark {
    pub id: i64,
    pub started_at_ms: i64,
    pub outcome: Outcome,
    pub interrupted: bool,
}

/// One line on the dashboard's overview.
#[derive(Debug, Clone, Serialize)]
pub struct LineOverview {
    pub line: String,
    pub latest: Option<StoredCheck>,
    pub day: Ratio,
    pub week: Ratio,
    pub quarter: Ratio,
}

/// A change of a PBX's software (Server / User-Agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PbxChange {
    pub id: i64,
    pub registrar: String,
    pub from: Option<String>,
    pub to: String,
    pub at_ms: i64,
}

/// What a PBX software observation meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbxObservation {
    /// Never seen before: remembered, not a change.
    First,
    Unchanged,
    /// Recorded as a change (its id).
    Changed {
        id: i64,
        from: String,
    },
}

/// A maintenance window set through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredWindow {
    pub id: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub reason: Option<String>,
}

pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch of an RFC 3339 time.
pub fn ms_of_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// RFC 3339 UTC with milliseconds of a time in ms.
pub fn rfc3339_of_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn outcome_text(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Inconclusive => "inconclusive",
    }
}

fn outcome_of(s: &str) -> Outcome {
    match s {
        "pass" => Outcome::Pass,
        "fail" => Outcome::Fail,
        // Never read an unknown value as a pass.
        _ => Outcome::Inconclusive,
    }
}

/// The columns read back into a [`StoredCheck`], in [`check_of_row`]'s order.
const CHECK_COLUMNS: &str = "id, line, trigger_json, started_at_ms, duration_ms, outcome, reason, \
     expected, presented_json, findings_json, notes_json, call_json, pbx_software, \
     recorded_at_ms, interrupted, evidence_count";

fn check_of_row(row: &Row<'_>) -> rusqlite::Result<(StoredCheck, i64)> {
    fn json<T: serde::de::DeserializeOwned + Default>(
        row: &Row<'_>,
        i: usize,
    ) -> rusqlite::Result<T> {
        let s: String = row.get(i)?;
        // A row written by this code always parses; an unreadable field
        // must not hide the rest of the history.
        Ok(serde_json::from_str(&s).unwrap_or_default())
    }
    let id: i64 = row.get(0)?;
    let trigger: Trigger =
        serde_json::from_str(&row.get::<_, String>(2)?).unwrap_or(Trigger::Manual {
            label: None,
            run: None,
        });
    let expected: Expect = match row.get::<_, String>(7)?.as_str() {
        "umbrella" => Expect::Umbrella,
        _ => Expect::Withheld,
    };
    let evidence_count: i64 = row.get(15)?;
    let result = CheckResult {
        line: row.get(1)?,
        outcome: outcome_of(&row.get::<_, String>(5)?),
        expected,
        findings: json(row, 9)?,
        reason: row.get(6)?,
        notes: json(row, 10)?,
        presented: json(row, 8)?,
        started_at: rfc3339_of_ms(row.get(3)?),
        duration_ms: row.get::<_, i64>(4)?.max(0) as u64,
        call: json(row, 11)?,
        trigger,
        pbx_software: row.get(12)?,
        evidence_ref: Some(id.to_string()),
        evidence: Vec::new(),
    };
    Ok((
        StoredCheck {
            id,
            recorded_at_ms: row.get(13)?,
            interrupted: row.get(14)?,
            evidence_pruned: false,
            result,
        },
        evidence_count,
    ))
}

impl Store {
    /// The database file's name in the state directory.
    pub const FILE_NAME: &'static str = "history.sqlite3";

    /// Open (creating if needed) the history in a state directory.
    pub fn open_in(state_dir: &Path) -> Result<Store> {
        create_private_dir(state_dir)?;
        Store::open(&state_dir.join(Store::FILE_NAME))
    }

    /// Open (creating if needed) a history database file and bring its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// Open an existing history database (for `cidguard history` and other
    /// readers), never creating one.
    pub fn open_existing(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Store::open_with(path, OpenFlags::empty())
    }

    fn open_with(path: &Path, extra: OpenFlags) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
            | extra;
        // The history names the organisation's lines and what leaked: only
        // its owner may read it, whatever the umask. SQLite gives the -wal
        // and -shm files the database file's mode.
        if extra.contains(OpenFlags::SQLITE_OPEN_CREATE) && !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Create {
                    path: path.to_path_buf(),
                    source: e,
                })?;
        }
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL: readers (dashboard, `cidguard history`) never block the
        // daemon's writes. FULL: a committed check survives power loss too,
        // not only a crash; checks are rare enough that the fsync is free.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // 16 MB of page cache (the default is 2 MB): the dashboard's
        // overview touches every line's index and newest rows.
        conn.pragma_update(None, "cache_size", -16_000)
            .map_err(open_err)?;
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock can't leave SQLite mid-transaction
        // (an open transaction rolls back when dropped), so the connection
        // is still good.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64> {
        self.conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx("reading the schema version")
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String> {
        self.conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .ctx("integrity check")
    }

    // ----- checks -------------------------------------------------------

    /// Store a check and its evidence in one transaction; returns its id.
    /// Evidence text is redacted again here, whatever the producer did.
    pub fn record_check(&self, r: &CheckResult, rec: &Record) -> Result<i64> {
        let what = "recording a check";
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        let id = insert_check_in(&tx, r, rec)?;
        tx.commit().ctx(what)?;
        Ok(id)
    }

    /// Store many checks in one transaction (an import, or filling a
    /// history for a benchmark): the same rows as [`Store::record_check`]
    /// one by one, with one commit. Returns their ids in order; on an error
    /// nothing is stored.
    pub fn record_checks<'a, I>(&self, checks: I) -> Result<Vec<i64>>
    where
        I: IntoIterator<Item = (&'a CheckResult, &'a Record)>,
    {
        let what = "recording checks in a batch";
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        let ids = checks
            .into_iter()
            .map(|(r, rec)| insert_check_in(&tx, r, rec))
            .collect::<Result<Vec<_>>>()?;
        tx.commit().ctx(what)?;
        Ok(ids)
    }

    /// One check with its evidence.
    pub fn check(&self, id: i64) -> Result<Option<StoredCheck>> {
        let what = "reading a check";
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!("SELECT {CHECK_COLUMNS} FROM checks WHERE id = ?1"),
                [id],
                check_of_row,
            )
            .optional()
            .ctx(what)?;
        let Some((mut c, count)) = found else {
            return Ok(None);
        };
        let mut st = conn
            .prepare_cached(
                "SELECT side, direction, at_ms, flow, text FROM evidence WHERE check_id = ?1 ORDER BY seq",
            )
            .ctx(what)?;
        c.result.evidence = st
            .query_map([id], |r| {
                Ok(EvidenceMessage {
                    side: r.get(0)?,
                    direction: r.get(1)?,
                    at_ms: r.get::<_, i64>(2)?.max(0) as u64,
                    flow: r.get(3)?,
                    text: r.get(4)?,
                })
            })
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what)?;
        c.evidence_pruned = count > 0 && c.result.evidence.is_empty();
        Ok(Some(c))
    }

    /// A line's checks, newest first, a page at a time (without evidence).
    pub fn checks(&self, q: &CheckQuery) -> Result<CheckPage> {
        let what = "listing checks";
        let limit = q.limit.clamp(1, 10_000);
        let mut sql = format!("SELECT {CHECK_COLUMNS} FROM checks WHERE line = ?1");
        let mut args: Vec<rusqlite::types::Value> = vec![q.line.clone().into()];
        if let Some(s) = q.since_ms {
            args.push(s.into());
            sql.push_str(&format!(" AND started_at_ms >= ?{}", args.len()));
        }
        if let Some(u) = q.until_ms {
            args.push(u.into());
            sql.push_str(&format!(" AND started_at_ms < ?{}", args.len()));
        }
        if let Some(o) = q.outcome {
            args.push(outcome_text(o).to_string().into());
            sql.push_str(&format!(
                " AND outcome = ?{} AND NOT interrupted",
                args.len()
            ));
        }
        if let Some(c) = q.after {
            args.push(c.started_at_ms.into());
            args.push(c.id.into());
            sql.push_str(&format!(
                " AND (started_at_ms, id) < (?{}, ?{})",
                args.len() - 1,
                args.len()
            ));
        }
        // One more than asked, to know whether there is a next page.
        sql.push_str(&format!(
            " ORDER BY started_at_ms DESC, id DESC LIMIT {}",
            limit + 1
        ));
        let conn = self.conn();
        let mut st = conn.prepare_cached(&sql).ctx(what)?;
        let mut checks: Vec<StoredCheck> = st
            .query_map(rusqlite::params_from_iter(args), check_of_row)
            .ctx(what)?
            .map(|r| r.map(|(c, _)| c))
            .collect::<rusqlite::Result<_>>()
            .ctx(what)?;
        let next = if checks.len() > limit {
            checks.truncate(limit);
            checks.last().map(|c| Cursor {
                started_at_ms: ms_of_rfc3339(&c.result.started_at).unwrap_or(0),
                id: c.id,
            })
        } else {
            None
        };
        Ok(CheckPage { checks, next })
    }

    /// The latest call-ins (trigger `call-in`), newest first, without
    /// evidence: every device's and the other phones' (`self-test`).
    pub fn call_ins(&self, limit: usize) -> Result<Vec<StoredCheck>> {
        let what = "listing call-ins";
        let conn = self.conn();
        let mut st = conn.prepare_cached(&call_ins_query()).ctx(what)?;
        let rows = st
            .query_map([limit.clamp(1, 10_000) as i64], check_of_row)
            .ctx(what)?
            .map(|r| r.map(|(c, _)| c))
            .collect::<rusqlite::Result<_>>()
            .ctx(what)?;
        Ok(rows)
    }

    /// A line's (a device's) latest call-in, without evidence.
    pub fn last_call_in(&self, line: &str) -> Result<Option<StoredCheck>> {
        let what = "reading the last call-in";
        let conn = self.conn();
        conn.query_row(
            &format!(
                "SELECT {CHECK_COLUMNS} FROM checks WHERE line = ?1 AND trigger_kind = 'call-in' \
                 ORDER BY started_at_ms DESC, id DESC LIMIT 1"
            ),
            [line],
            check_of_row,
        )
        .optional()
        .map(|o| o.map(|(c, _)| c))
        .ctx(what)
    }

    /// Every line that has history, by name (found through the index
    /// without reading every row).
    pub fn lines(&self) -> Result<Vec<String>> {
        let what = "listing lines";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "WITH RECURSIVE l(line) AS ( \
                   SELECT (SELECT line FROM checks ORDER BY line LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT line FROM checks WHERE line > l.line ORDER BY line LIMIT 1) \
                   FROM l WHERE l.line IS NOT NULL) \
                 SELECT line FROM l WHERE line IS NOT NULL",
            )
            .ctx(what)?;
        let lines = st
            .query_map([], |r| r.get(0))
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .ctx(what);
        lines
    }

    /// The newest check of a line.
    pub fn latest(&self, line: &str) -> Result<Option<StoredCheck>> {
        let conn = self.conn();
        latest_in(&conn, line)
    }

    /// Outcome counts for a line's checks started at or after `since_ms`.
    pub fn ratio(&self, line: &str, since_ms: i64) -> Result<Ratio> {
        let conn = self.conn();
        Ok(ratios_in(&conn, line, [since_ms, since_ms, since_ms])?[0])
    }

    /// A line's newest `n` checks as marks (id, start, outcome), newest
    /// first: read from the line's time index alone, without the stored
    /// JSON, for the overview's history bars.
    pub fn recent_marks(&self, line: &str, n: usize) -> Result<Vec<CheckMark>> {
        let what = "listing recent outcomes";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, started_at_ms, outcome, interrupted FROM checks WHERE line = ?1 \
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?2",
            )
            .ctx(what)?;
        let rows = st
            .query_map(params![line, n.min(10_000) as i64], |r| {
                Ok(CheckMark {
                    id: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    outcome: outcome_of(&r.get::<_, String>(2)?),
                    interrupted: r.get(3)?,
                })
            })
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }

    /// Every check ever counted, per line with history, from the daily
    /// counts in one grouped read (interrupted checks are not counted).
    pub fn totals(&self) -> Result<HashMap<String, Ratio>> {
        let what = "counting all outcomes";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT line, sum(pass), sum(fail), sum(inconclusive) FROM daily_counts GROUP BY line",
            )
            .ctx(what)?;
        let rows = st
            .query_map([], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok((
                    r.get::<_, String>(0)?,
                    Ratio {
                        pass: n(1)?,
                        fail: n(2)?,
                        inconclusive: n(3)?,
                    },
                ))
            })
            .ctx(what)?
            .collect::<rusqlite::Result<HashMap<_, _>>>()
            .ctx(what);
        rows
    }

    /// The dashboard's overview: each line's latest check and its pass
    /// counts over the last 24 hours, 7 days and 90 days. `lines` are the
    /// configured lines; None means every line with history.
    pub fn overview(&self, lines: Option<&[String]>, now_ms: i64) -> Result<Vec<LineOverview>> {
        let names = match lines {
            Some(l) => l.to_vec(),
            None => self.lines()?,
        };
        let conn = self.conn();
        let mut out = Vec::with_capacity(names.len());
        for line in names {
            let [day, week, quarter] = ratios_in(
                &conn,
                &line,
                [now_ms - DAY_MS, now_ms - 7 * DAY_MS, now_ms - 90 * DAY_MS],
            )?;
            out.push(LineOverview {
                latest: latest_in(&conn, &line)?,
                line,
                day,
                week,
                quarter,
            });
        }
        Ok(out)
    }

    /// Delete evidence recorded before `before_ms`, at most `batch` messages
    /// (the caller loops, so no single transaction holds the lock long).
    /// Returns how many were deleted.
    pub fn prune_evidence(&self, before_ms: i64, batch: usize) -> Result<usize> {
        self.conn()
            .execute(
                "DELETE FROM evidence WHERE id IN \
                 (SELECT id FROM evidence WHERE recorded_at_ms < ?1 LIMIT ?2)",
                params![before_ms, batch.max(1) as i64],
            )
            .ctx("pruning evidence")
    }

    // ----- last runs ------------------------------------------------------

    /// Each line's last completed scheduled slot (ms).
    pub fn last_slots(&self) -> Result<HashMap<String, i64>> {
        let what = "reading last run times";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT line, slot_ms FROM last_runs")
            .ctx(what)?;
        let map = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(what)?
            .collect::<rusqlite::Result<HashMap<String, i64>>>()
            .ctx(what);
        map
    }

    /// Remember a line's last scheduled slot (never moves backwards).
    pub fn set_last_slot(&self, line: &str, slot_ms: i64) -> Result<()> {
        set_last_slot_in(&self.conn(), line, slot_ms).ctx("writing a last run time")?;
        Ok(())
    }

    // ----- PBX software -------------------------------------------------

    /// The software last seen on a PBX.
    pub fn pbx_software(&self, registrar: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT software FROM pbx_software WHERE registrar = ?1",
                [registrar],
                |r| r.get(0),
            )
            .optional()
            .ctx("reading PBX software")
    }

    /// Record what a PBX says it runs; a difference from last time is
    /// stored as a change.
    pub fn observe_pbx(
        &self,
        registrar: &str,
        software: &str,
        at_ms: i64,
    ) -> Result<PbxObservation> {
        let what = "recording PBX software";
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        let before: Option<String> = tx
            .query_row(
                "SELECT software FROM pbx_software WHERE registrar = ?1",
                [registrar],
                |r| r.get(0),
            )
            .optional()
            .ctx(what)?;
        tx.execute(
            "INSERT INTO pbx_software (registrar, software, seen_at_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT(registrar) DO UPDATE SET software = excluded.software, seen_at_ms = excluded.seen_at_ms",
            params![registrar, software, at_ms],
        )
        .ctx(what)?;
        let obs = match before {
            None => PbxObservation::First,
            Some(b) if b == software => PbxObservation::Unchanged,
            Some(from) => {
                tx.execute(
                    "INSERT INTO pbx_changes (registrar, from_software, to_software, at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![registrar, from, software, at_ms],
                )
                .ctx(what)?;
                PbxObservation::Changed {
                    id: tx.last_insert_rowid(),
                    from,
                }
            }
        };
        tx.commit().ctx(what)?;
        Ok(obs)
    }

    /// PBX software changes, newest first.
    pub fn pbx_changes(&self, registrar: Option<&str>, limit: usize) -> Result<Vec<PbxChange>> {
        let what = "listing PBX changes";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, registrar, from_software, to_software, at_ms FROM pbx_changes \
                 WHERE ?1 IS NULL OR registrar = ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2",
            )
            .ctx(what)?;
        let rows = st
            .query_map(params![registrar, limit as i64], |r| {
                Ok(PbxChange {
                    id: r.get(0)?,
                    registrar: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                    at_ms: r.get(4)?,
                })
            })
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }

    // ----- maintenance ----------------------------------------------------

    /// Add a maintenance window (through the API); returns its id.
    pub fn add_maintenance(&self, start_ms: i64, end_ms: i64, reason: Option<&str>) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO maintenance (start_ms, end_ms, reason) VALUES (?1, ?2, ?3)",
            params![start_ms, end_ms, reason],
        )
        .ctx("adding a maintenance window")?;
        Ok(conn.last_insert_rowid())
    }

    /// Remove a window; false if there was none with that id.
    pub fn remove_maintenance(&self, id: i64) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM maintenance WHERE id = ?1", [id])
            .ctx("removing a maintenance window")?
            > 0)
    }

    /// Windows set through the API that end after `after_ms`.
    pub fn maintenance_windows(&self, after_ms: i64) -> Result<Vec<StoredWindow>> {
        let what = "listing maintenance windows";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, start_ms, end_ms, reason FROM maintenance WHERE end_ms > ?1 ORDER BY start_ms",
            )
            .ctx(what)?;
        let rows = st
            .query_map([after_ms], |r| {
                Ok(StoredWindow {
                    id: r.get(0)?,
                    start_ms: r.get(1)?,
                    end_ms: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }
}

/// Insert one check, its evidence, its last slot and its day's counts
/// inside the caller's transaction.
fn insert_check_in(tx: &Connection, r: &CheckResult, rec: &Record) -> Result<i64> {
    let what = "recording a check";
    let started_ms = ms_of_rfc3339(&r.started_at).unwrap_or(rec.recorded_at_ms);
    tx.prepare_cached(
        "INSERT INTO checks (line, trigger_kind, trigger_label, trigger_json, started_at_ms, \
         duration_ms, outcome, reason, expected, presented_json, findings_json, notes_json, \
         call_json, pbx_software, summary, recorded_at_ms, interrupted, evidence_count) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )
    .ctx(what)?
    .execute(params![
        r.line,
        r.trigger.kind(),
        r.trigger.note(),
        serde_json::to_string(&r.trigger).ctx(what)?,
        started_ms,
        r.duration_ms.min(i64::MAX as u64) as i64,
        outcome_text(r.outcome),
        r.reason,
        r.expected.to_string(),
        serde_json::to_string(&r.presented).ctx(what)?,
        serde_json::to_string(&r.findings).ctx(what)?,
        serde_json::to_string(&r.notes).ctx(what)?,
        serde_json::to_string(&r.call).ctx(what)?,
        r.pbx_software,
        r.summary(),
        rec.recorded_at_ms,
        rec.interrupted,
        r.evidence.len() as i64,
    ])
    .ctx(what)?;
    let id = tx.last_insert_rowid();
    if !r.evidence.is_empty() {
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO evidence (check_id, seq, side, direction, at_ms, flow, text, recorded_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .ctx(what)?;
        for (seq, m) in r.evidence.iter().enumerate() {
            ins.execute(params![
                id,
                seq as i64,
                m.side,
                m.direction,
                m.at_ms.min(i64::MAX as u64) as i64,
                m.flow,
                redact(m.text.as_bytes()),
                rec.recorded_at_ms,
            ])
            .ctx(what)?;
        }
    }
    if let Some(slot) = rec.slot_ms {
        set_last_slot_in(tx, &r.line, slot).ctx(what)?;
    }
    if !rec.interrupted {
        let (p, f, i) = match r.outcome {
            Outcome::Pass => (1, 0, 0),
            Outcome::Fail => (0, 1, 0),
            Outcome::Inconclusive => (0, 0, 1),
        };
        tx.prepare_cached(
            "INSERT INTO daily_counts (line, day, pass, fail, inconclusive) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(line, day) DO UPDATE SET pass = pass + excluded.pass, \
             fail = fail + excluded.fail, inconclusive = inconclusive + excluded.inconclusive",
        )
        .ctx(what)?
        .execute(params![r.line, started_ms.div_euclid(DAY_MS), p, f, i])
        .ctx(what)?;
    }
    Ok(id)
}

fn latest_in(conn: &Connection, line: &str) -> Result<Option<StoredCheck>> {
    conn.prepare_cached(&format!(
        "SELECT {CHECK_COLUMNS} FROM checks WHERE line = ?1 ORDER BY started_at_ms DESC, id DESC LIMIT 1"
    ))
    .and_then(|mut st| st.query_row([line], check_of_row).optional())
    .map(|o| o.map(|(c, _)| c))
    .ctx("reading the latest check")
}

/// Counts for three periods, in one statement. Whole UTC days come from
/// `daily_counts`; only the part of the first day after each period's
/// start is counted from the checks themselves (through the line's time
/// index, at most a day of rows).
fn ratios_in(conn: &Connection, line: &str, since: [i64; 3]) -> Result<[Ratio; 3]> {
    let what = "counting outcomes";
    let mut out = [Ratio::default(); 3];
    let first_whole_day =
        since.map(|s| s.div_euclid(DAY_MS) + i64::from(s.rem_euclid(DAY_MS) != 0));
    let partial = |n: usize| {
        format!(
            "SELECT {k}, coalesce(sum(outcome = 'pass'), 0), coalesce(sum(outcome = 'fail'), 0), \
             coalesce(sum(outcome = 'inconclusive'), 0) FROM checks WHERE line = ?1 \
             AND started_at_ms >= ?{a} AND started_at_ms < ?{b} AND NOT interrupted",
            k = n,
            a = 2 + 2 * n,
            b = 3 + 2 * n
        )
    };
    let whole = |n: usize| {
        format!(
            "SELECT {k}, coalesce(sum(pass), 0), coalesce(sum(fail), 0), \
             coalesce(sum(inconclusive), 0) FROM daily_counts WHERE line = ?1 AND day >= ?{d}",
            k = n,
            d = 8 + n
        )
    };
    let sql = [
        partial(0),
        partial(1),
        partial(2),
        whole(0),
        whole(1),
        whole(2),
    ]
    .join(" UNION ALL ");
    let mut st = conn.prepare_cached(&sql).ctx(what)?;
    let [d0, d1, d2] = first_whole_day;
    let mut rows = st
        .query(params![
            line,
            since[0],
            d0 * DAY_MS,
            since[1],
            d1 * DAY_MS,
            since[2],
            d2 * DAY_MS,
            d0,
            d1,
            d2
        ])
        .ctx(what)?;
    while let Some(r) = rows.next().ctx(what)? {
        let k = r.get::<_, i64>(0).ctx(what)?.rem_euclid(3) as usize;
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64).ctx(what);
        out[k].pass += n(1)?;
        out[k].fail += n(2)?;
        out[k].inconclusive += n(3)?;
    }
    Ok(out)
}

fn set_last_slot_in(conn: &Connection, line: &str, slot_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO last_runs (line, slot_ms) VALUES (?1, ?2) \
         ON CONFLICT(line) DO UPDATE SET slot_ms = max(slot_ms, excluded.slot_ms)",
        params![line, slot_ms],
    )
}

/// Create the state directory readable by its owner only: the evidence in
/// it identifies the organisation's lines.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::StateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// The latest call-ins, newest first (found through the partial index
/// `checks_call_ins`, whose condition this query repeats word for word).
fn call_ins_query() -> String {
    format!(
        "SELECT {CHECK_COLUMNS} FROM checks WHERE trigger_kind = 'call-in' \
         ORDER BY started_at_ms DESC, id DESC LIMIT ?1"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_call_ins_are_found_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("history.db")).unwrap();
        let conn = store.conn();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", call_ins_query()))
            .unwrap()
            .query_map([20], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // Read in order from the index: no scan of the history, no sort.
        assert_eq!(
            plan,
            ["SCAN checks USING INDEX checks_call_ins"],
            "{plan:?}"
        );
    }
}
