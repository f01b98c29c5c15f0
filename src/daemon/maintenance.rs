//! Maintenance windows: from the config (`[[daemon.maintenance]]`) and set
//! through the API (stored in the history). During a window checks still
//! run and are recorded; only alerts are held (the alert side asks
//! [`in_maintenance`] or reads `AlertContext::in_maintenance`).

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::store::{Store, StoreError};

/// One window, resolved to UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: Option<String>,
    /// The stored window's id, for API-set windows.
    pub id: Option<i64>,
}

impl Window {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// Every window that hasn't ended by `now`: configured ones first, then
/// API-set ones.
pub fn windows(
    config: &Config,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<Window>, StoreError> {
    let tz = config.daemon.tz();
    let mut out: Vec<Window> = config
        .daemon
        .maintenance
        .iter()
        // Validation already refused windows that don't resolve.
        .filter_map(|w| {
            w.resolve(tz).ok().map(|(start, end)| Window {
                start,
                end,
                reason: w.reason.clone(),
                id: None,
            })
        })
        .filter(|w| w.end > now)
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
    config: &Config,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(windows(config, store, now)?.iter().any(|w| w.contains(now)))
}

/// The next time a window starts or ends after `now`.
pub fn next_boundary(windows: &[Window], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    windows
        .iter()
        .flat_map(|w| [w.start, w.end])
        .filter(|t| *t > now)
        .min()
}
