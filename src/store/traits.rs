//! The history as each of its users sees it: one trait per consumer, so a
//! second backend is an implementation of these, not a rewrite of the
//! daemon and the dashboard. SQLite ([`Store`]) implements them all, by
//! its own methods of the same names.
//!
//! (The alert side's outbox and alert state have their own traits, with
//! the alert code.)

use std::collections::HashMap;

use super::{
    CheckPage, CheckQuery, LineOverview, PbxChange, PbxObservation, Ratio, Record, Result, Store,
    StoredCheck, StoredWindow,
};
use crate::check::result::CheckResult;

/// What the daemon writes: each check as it is recorded, the schedule's
/// last run times, PBX software seen, and pruning of old evidence.
pub trait HistoryWrite: Send + Sync {
    /// Store a check and its evidence at once; returns its id.
    fn record_check(&self, r: &CheckResult, rec: &Record) -> Result<i64>;
    /// Each line's last scheduled run (ms), for catching up after a stop.
    fn last_slots(&self) -> Result<HashMap<String, i64>>;
    /// Remember a line's last scheduled run (ms).
    fn set_last_slot(&self, line: &str, slot_ms: i64) -> Result<()>;
    /// Note the software a PBX said it runs; says whether it changed.
    fn observe_pbx(&self, registrar: &str, software: &str, at_ms: i64) -> Result<PbxObservation>;
    /// Delete up to `batch` evidence messages of checks started before
    /// `before_ms`; returns how many went.
    fn prune_evidence(&self, before_ms: i64, batch: usize) -> Result<usize>;
}

/// What the dashboard, `cidguard history` and the alert summaries read.
pub trait HistoryRead: Send + Sync {
    /// One check with its evidence.
    fn check(&self, id: i64) -> Result<Option<StoredCheck>>;
    /// A page of a line's checks, newest first.
    fn checks(&self, q: &CheckQuery) -> Result<CheckPage>;
    /// Every line the history has checks of.
    fn lines(&self) -> Result<Vec<String>>;
    /// A line's latest check.
    fn latest(&self, line: &str) -> Result<Option<StoredCheck>>;
    /// A line's outcome counts since `since_ms`.
    fn ratio(&self, line: &str, since_ms: i64) -> Result<Ratio>;
    /// A line's last `n` checks, for a history bar.
    fn recent_marks(&self, line: &str, n: usize) -> Result<Vec<crate::store::CheckMark>>;
    /// Every line's all-time outcome counts.
    fn totals(&self) -> Result<HashMap<String, Ratio>>;
    /// The overview of these lines (all when None) at `now_ms`.
    fn overview(&self, lines: Option<&[String]>, now_ms: i64) -> Result<Vec<LineOverview>>;
    /// The software a PBX last said it runs.
    fn pbx_software(&self, registrar: &str) -> Result<Option<String>>;
    /// PBX software changes, newest first (one PBX's when given).
    fn pbx_changes(&self, registrar: Option<&str>, limit: usize) -> Result<Vec<PbxChange>>;
    /// The latest call-ins (every device's and the other phones'), newest
    /// first, without evidence.
    fn call_ins(&self, limit: usize) -> Result<Vec<StoredCheck>>;
    /// A device's latest call-in (its name as the line).
    fn last_call_in(&self, line: &str) -> Result<Option<StoredCheck>>;
}

/// Maintenance windows set through the API.
pub trait MaintenanceStore: Send + Sync {
    /// Add a window; returns its id.
    fn add_maintenance(&self, start_ms: i64, end_ms: i64, reason: Option<&str>) -> Result<i64>;
    /// Remove a window; false when there was none with that id.
    fn remove_maintenance(&self, id: i64) -> Result<bool>;
    /// The windows that end after `after_ms`.
    fn maintenance_windows(&self, after_ms: i64) -> Result<Vec<StoredWindow>>;
}

// The SQLite store: each trait method is the store's own method of the same
// name (inherent methods are found first, so these don't call themselves).
impl HistoryWrite for Store {
    fn record_check(&self, r: &CheckResult, rec: &Record) -> Result<i64> {
        Store::record_check(self, r, rec)
    }
    fn last_slots(&self) -> Result<HashMap<String, i64>> {
        Store::last_slots(self)
    }
    fn set_last_slot(&self, line: &str, slot_ms: i64) -> Result<()> {
        Store::set_last_slot(self, line, slot_ms)
    }
    fn observe_pbx(&self, registrar: &str, software: &str, at_ms: i64) -> Result<PbxObservation> {
        Store::observe_pbx(self, registrar, software, at_ms)
    }
    fn prune_evidence(&self, before_ms: i64, batch: usize) -> Result<usize> {
        Store::prune_evidence(self, before_ms, batch)
    }
}

impl HistoryRead for Store {
    fn check(&self, id: i64) -> Result<Option<StoredCheck>> {
        Store::check(self, id)
    }
    fn checks(&self, q: &CheckQuery) -> Result<CheckPage> {
        Store::checks(self, q)
    }
    fn lines(&self) -> Result<Vec<String>> {
        Store::lines(self)
    }
    fn latest(&self, line: &str) -> Result<Option<StoredCheck>> {
        Store::latest(self, line)
    }
    fn ratio(&self, line: &str, since_ms: i64) -> Result<Ratio> {
        Store::ratio(self, line, since_ms)
    }
    fn recent_marks(&self, line: &str, n: usize) -> Result<Vec<crate::store::CheckMark>> {
        Store::recent_marks(self, line, n)
    }
    fn totals(&self) -> Result<HashMap<String, Ratio>> {
        Store::totals(self)
    }
    fn overview(&self, lines: Option<&[String]>, now_ms: i64) -> Result<Vec<LineOverview>> {
        Store::overview(self, lines, now_ms)
    }
    fn pbx_software(&self, registrar: &str) -> Result<Option<String>> {
        Store::pbx_software(self, registrar)
    }
    fn pbx_changes(&self, registrar: Option<&str>, limit: usize) -> Result<Vec<PbxChange>> {
        Store::pbx_changes(self, registrar, limit)
    }
    fn call_ins(&self, limit: usize) -> Result<Vec<StoredCheck>> {
        Store::call_ins(self, limit)
    }
    fn last_call_in(&self, line: &str) -> Result<Option<StoredCheck>> {
        Store::last_call_in(self, line)
    }
}

impl MaintenanceStore for Store {
    fn add_maintenance(&self, start_ms: i64, end_ms: i64, reason: Option<&str>) -> Result<i64> {
        Store::add_maintenance(self, start_ms, end_ms, reason)
    }
    fn remove_maintenance(&self, id: i64) -> Result<bool> {
        Store::remove_maintenance(self, id)
    }
    fn maintenance_windows(&self, after_ms: i64) -> Result<Vec<StoredWindow>> {
        Store::maintenance_windows(self, after_ms)
    }
}
