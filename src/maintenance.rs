//! Maintenance windows: from the plan (`[[daemon.maintenance]]`) and set
//! through the API (stored in the history). During a window checks still
//! run and are recorded; only alerts are held (the alert side asks
//! [`in_maintenance`] or reads `AlertContext::in_maintenance`).

use chrono::{DateTime, Utc};

use crate::plan::Plan;
use crate::store::{MaintenanceStore, StoreError};

pub use crate::plan::Window;

/// Every window that hasn't ended by `now`: configured ones first, then
/// API-set ones.
pub fn windows(
    plan: &Plan,
    store: &dyn MaintenanceStore,
    now: DateTime<Utc>,
) -> Result<Vec<Window>, StoreError> {
    let mut out: Vec<Window> = plan
        .maintenance()
        .iter()
        .filter(|w| w.end > now)
        .cloned()
        .collect();
    for w in store.maintenance_windows(now.timestamp_millis())? {
        if let (Some(start), Some(end)) = (
            DateTime::<Utc>::from_timestamp_millis(w.start_ms),
            DateTime::<Utc>::from_timestamp_millis(w.end_ms),
        ) {
            out.push(Window {
                start,
                end,
                reason: w.reason,
                id: Some(w.id),
            });
        }
    }
    Ok(out)
}

/// Whether alerts are held at `now`.
pub fn in_maintenance(
    plan: &Plan,
    store: &dyn MaintenanceStore,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(windows(plan, store, now)?.iter().any(|w| w.contains(now)))
}

/// The window `now` is in, if any.
pub fn active(
    plan: &Plan,
    store: &dyn MaintenanceStore,
    now: DateTime<Utc>,
) -> Result<Option<Window>, StoreError> {
    Ok(windows(plan, store, now)?
        .into_iter()
        .find(|w| w.contains(now)))
}

/// The next time a window starts or ends after `now`.
pub fn next_boundary(windows: &[Window], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    windows
        .iter()
        .flat_map(|w| [w.start, w.end])
        .filter(|t| *t > now)
        .min()
}
