//! Crash points: named places where a test can make the process die, to
//! prove that what was written before survives and what was not is redone.
//!
//! `CIDGUARD_CRASH_AT=<point>` (or `<point>#<n>` for its n-th hit, 1-based)
//! makes [`crash_point`] abort the process (`std::process::abort`, as abrupt
//! as `kill -9`: no destructors, no flush) when that point is reached. Only
//! debug builds look at the variable: in a release build every crash point
//! compiles to nothing, so no setting can make an installed daemon abort.

/// Abort here if `CIDGUARD_CRASH_AT` names this point (debug builds only).
#[cfg(debug_assertions)]
pub fn crash_point(name: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    /// The point asked for and at which hit, read once.
    static TARGET: OnceLock<Option<(String, u32)>> = OnceLock::new();
    /// Hits of the target point so far in this process.
    static HITS: AtomicU32 = AtomicU32::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("CIDGUARD_CRASH_AT").ok()?;
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        Some(match v.rsplit_once('#') {
            Some((point, n)) => (point.to_string(), n.parse().unwrap_or(1).max(1)),
            None => (v.to_string(), 1),
        })
    });
    let Some((point, nth)) = target else { return };
    if point != name {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "cidguard: crash point {name:?} (hit {nth}) reached: aborting as asked by CIDGUARD_CRASH_AT"
        );
        std::process::abort();
    }
}

/// Release builds: crash points do nothing.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn crash_point(_name: &str) {}
