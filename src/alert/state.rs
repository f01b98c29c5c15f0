//! When to alert: a pure state machine per line.
//!
//! ```text
//!            fail                        fail (re-check)
//! Unknown ──────────▶ [pending confirm] ─────────────────▶ Failing ──▶ Leak alert
//! Passing ──────────▶   RecheckNow      ── pass ──▶ Passing (unconfirmed, counted)
//!
//! Failing ── fail, `reminder_every` since last alert ──▶ Reminder
//! Failing ── pass ──▶ Passing + Resolved
//! Passing ── pass with a new identity shape ──▶ Drift
//! any     ── N-th inconclusive in a row ──▶ CantTest (never called a leak)
//! ```
//!
//! Leaks are configuration regressions, not network blips: one immediate
//! re-check confirms, no waiting for three failures. A leak whose re-check
//! passed is remembered; a second within `intermittent_window` alerts at
//! once, because a line that leaks on some calls (one of two trunks) leaks.
//!
//! During a maintenance window alerts are held in the line's state (so they
//! survive a restart with it) and summarised once the window is over.
//!
//! It decides, it does not render: what it returns are [`Decision`]s
//! carrying [`Notice`]s (plain facts). Each channel renders a notice its
//! own way when it delivers it.
//!
//! The state is persisted by the store as an opaque JSON blob; every field
//! has a default so blobs written by an older version still load.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::check::result::{CheckResult, Trigger};
use crate::plan::Plan;
use crate::verdict::Outcome;

use super::notice::{CheckFacts, Facts, LastKnown, LeakBasis, Notice, SummaryLine};
use super::shape::IdentityShape;
use super::AlertKind;

/// What the line is known to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineStatus {
    /// No conclusive result yet.
    #[default]
    Unknown,
    /// The last conclusive result passed.
    Passing,
    /// A confirmed leak (or wrong presentation) was alerted.
    Failing,
}

/// A failed check waiting for its confirming re-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFail {
    /// The failed check's history id.
    pub check_id: i64,
    /// When it ran.
    pub at: DateTime<Utc>,
}

/// A notice held during a maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAlert {
    /// What it was about.
    pub kind: AlertKind,
    /// The line.
    pub line: String,
    /// The check that caused it.
    pub check_id: Option<i64>,
    /// When it was held.
    pub at: DateTime<Utc>,
    /// The notice itself, rendered into the summary when the window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Box<Notice>>,
    /// The rendered subject, in states written by an earlier cidguard
    /// (which rendered at decision time); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// The rendered text part of a held leak, in states written by an
    /// earlier cidguard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Held alerts kept per line; older ones are counted, not kept, so a long
/// window with a flapping line can't grow the state without bound.
const MAX_HELD: usize = 20;
/// Recent distinct pass shapes remembered, so a line alternating between
/// two known shapes (two trunks) does not send a drift email every check.
const MAX_KNOWN_SHAPES: usize = 4;
/// Distinct inconclusive reasons kept for the "can't test" email.
const MAX_REASONS: usize = 3;

/// Everything remembered about one line between results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LineAlertState {
    /// What the line is known to be.
    pub status: LineStatus,
    /// A failed check waiting for its re-check.
    pub pending_confirm: Option<PendingFail>,
    /// When the current failure started (first failing check).
    pub failing_since: Option<DateTime<Utc>>,
    /// The check that started the current failure.
    pub failing_check_id: Option<i64>,
    /// Summary of the current failure (`number shown in From`).
    pub failing_summary: Option<String>,
    /// Last leak, reminder or summary sent about this failure.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Times of failed checks whose re-check passed, within the window.
    pub unconfirmed_fails: Vec<DateTime<Utc>>,
    /// Inconclusive results in a row.
    pub inconclusive_run: u32,
    /// When the current inconclusive run started.
    pub inconclusive_since: Option<DateTime<Utc>>,
    /// Its distinct reasons, oldest first.
    pub inconclusive_reasons: Vec<String>,
    /// A "can't test" alert went out for the current inconclusive run.
    pub cant_test_alerted: bool,
    /// The shape of the line's last pass, for drift.
    pub last_pass_shape: Option<IdentityShape>,
    /// Recent distinct pass shapes.
    pub known_shapes: Vec<IdentityShape>,
    /// Notices held during a maintenance window.
    pub held: Vec<HeldAlert>,
    /// Held notices dropped to bound the state's size.
    pub held_dropped: u32,
    /// A device: when its reminders started counting (first seen with
    /// `remind_every` in the config).
    pub device_seen_at: Option<DateTime<Utc>>,
    /// A device: when its last call-in was made.
    pub last_call_in: Option<DateTime<Utc>>,
    /// A device: when its owner was last reminded to call.
    pub last_device_reminder: Option<DateTime<Utc>>,
}

impl LineAlertState {
    fn hold(&mut self, h: HeldAlert) {
        self.held.push(h);
        if self.held.len() > MAX_HELD {
            // Keep the first (what started it) and the latest.
            self.held.remove(1);
            self.held_dropped += 1;
        }
    }

    fn last_known(&self) -> LastKnown {
        match (self.status, &self.pending_confirm) {
            (LineStatus::Failing, _) => LastKnown::Failing {
                since: self.failing_since.unwrap_or_default(),
                summary: self.failing_summary.clone().unwrap_or_default(),
            },
            (_, Some(p)) => LastKnown::Unconfirmed {
                at: p.at,
                check_id: p.check_id,
            },
            (LineStatus::Passing, None) => LastKnown::Passing,
            (LineStatus::Unknown, None) => LastKnown::Unknown,
        }
    }

    fn remember_shape(&mut self, shape: IdentityShape) {
        self.known_shapes.retain(|s| *s != shape);
        self.known_shapes.push(shape.clone());
        if self.known_shapes.len() > MAX_KNOWN_SHAPES {
            self.known_shapes.remove(0);
        }
        self.last_pass_shape = Some(shape);
    }

    fn end_inconclusive_run(&mut self) {
        self.inconclusive_run = 0;
        self.inconclusive_since = None;
        self.inconclusive_reasons.clear();
        self.cant_test_alerted = false;
    }
}

/// What the state machine decided after a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Check this line again at once (`Trigger::Confirm`) to confirm a fail.
    RecheckNow,
    /// Tell people: queue the notice for every channel that wants it.
    Notify(Notice),
    /// Held for a maintenance window: already kept in the returned state,
    /// reported so the daemon can log it. Nothing to store.
    Hold(Notice),
}

/// When to alert, from `[alerts]`, and what a notice says about the lines
/// (their expectations, the dashboard link).
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    /// Inconclusive results in a row before "can't test".
    pub inconclusive_after: u32,
    /// None: no reminders.
    pub reminder_every: Option<Duration>,
    /// Tell when a passing line's headers change shape.
    pub drift: bool,
    /// 0: unconfirmed leaks never alert.
    pub intermittent_after: u32,
    /// How far back unconfirmed leaks count.
    pub intermittent_window: Duration,
    /// Line name -> what it must present, in words.
    pub expectations: HashMap<String, String>,
    /// The dashboard's base URL, without a trailing slash.
    pub dashboard_url: Option<String>,
}

impl AlertPolicy {
    /// From the plan. Without an `[alerts]` section the defaults apply
    /// (and the daemon sends nothing).
    pub fn from_plan(plan: &Plan) -> AlertPolicy {
        let a = plan.config().alerts.as_ref();
        AlertPolicy {
            inconclusive_after: a.map_or(3, |a| a.inconclusive_after).max(1),
            reminder_every: a
                .map_or(Some(Duration::from_secs(86400)), |a| Some(a.reminder_every))
                .filter(|d| !d.is_zero()),
            drift: a.is_none_or(|a| a.drift),
            intermittent_after: a.map_or(2, |a| a.intermittent_after),
            intermittent_window: a
                .map_or(Duration::from_secs(7 * 86400), |a| a.intermittent_window),
            expectations: plan
                .lines()
                .iter()
                .map(|l| (l.name().to_string(), l.policy().expectation()))
                .chain(
                    plan.callin()
                        .devices()
                        .iter()
                        .map(|d| (d.name().to_string(), d.policy().expectation())),
                )
                .chain(
                    plan.callin()
                        .policy()
                        .map(|p| (crate::plan::SELFTEST_LINE.to_string(), p.expectation())),
                )
                .collect(),
            dashboard_url: a
                .and_then(|a| a.dashboard_url.as_deref())
                .map(|u| u.trim().trim_end_matches('/').to_string()),
        }
    }

    /// What a line must present, in words.
    pub fn expectation(&self, line: &str) -> String {
        self.expectations
            .get(line)
            .cloned()
            .unwrap_or_else(|| "(this line is no longer in the config)".into())
    }

    /// The dashboard page of a check.
    pub fn check_link(&self, check_id: i64) -> Option<String> {
        self.dashboard_url
            .as_ref()
            .map(|u| format!("{u}/checks/{check_id}"))
    }

    /// A notice about a line's check.
    fn notice(
        &self,
        kind: AlertKind,
        line: &str,
        check_id: i64,
        now: DateTime<Utc>,
        facts: Facts,
    ) -> Notice {
        Notice {
            // One notice of a kind per check: replaying a result (a daemon
            // restart before the state was stored) can't queue it twice.
            key: format!("{}:{line}:{check_id}", kind.as_str()),
            kind,
            line: Some(line.to_string()),
            check_id: Some(check_id),
            at: now,
            expected: Some(self.expectation(line)),
            link: self.check_link(check_id),
            facts,
        }
    }
}

/// Where the result says the check started, or `now`.
fn started(result: &CheckResult, now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&result.started_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

struct Out<'a> {
    decisions: Vec<Decision>,
    in_maintenance: bool,
    policy: &'a AlertPolicy,
    now: DateTime<Utc>,
}

impl Out<'_> {
    fn alert(
        &mut self,
        s: &mut LineAlertState,
        kind: AlertKind,
        line: &str,
        check_id: i64,
        facts: Facts,
    ) {
        let notice = self.policy.notice(kind, line, check_id, self.now, facts);
        if self.in_maintenance {
            s.hold(HeldAlert {
                kind,
                line: line.to_string(),
                check_id: Some(check_id),
                at: self.now,
                notice: Some(Box::new(notice.clone())),
                subject: String::new(),
                text: None,
            });
            self.decisions.push(Decision::Hold(notice));
        } else {
            self.decisions.push(Decision::Notify(notice));
        }
    }
}

/// Fold one check result into a line's state. Pure: the same inputs give
/// the same state and decisions.
///
/// `check_id` is the result's history id (it makes dedupe keys and links);
/// `in_maintenance` says whether `now` is inside a maintenance window.
pub fn on_result(
    state: &LineAlertState,
    result: &CheckResult,
    check_id: i64,
    now: DateTime<Utc>,
    policy: &AlertPolicy,
    in_maintenance: bool,
) -> (LineAlertState, Vec<Decision>) {
    let mut s = state.clone();
    let mut out = Out {
        decisions: Vec::new(),
        in_maintenance,
        policy,
        now,
    };
    let line = result.line.as_str();
    if let Trigger::CallIn { .. } = result.trigger {
        s.last_call_in = Some(started(result, now));
    }

    // A window ended and nobody summarised what it held (the daemon
    // normally calls `maintenance_summary` over all lines first): summarise
    // this line alone rather than keep its alerts forever.
    if !in_maintenance && !s.held.is_empty() {
        if let Some(n) = maintenance_summary([(line, &mut s)], now, policy) {
            out.decisions.push(Decision::Notify(n));
        }
    }

    match (&result.trigger, result.outcome) {
        // A call-in from a phone that is not a configured device: each
        // leak is told at once (a person just heard it), and nothing else:
        // a pass from another phone proves nothing about the first, so
        // there is no state to resolve.
        (Trigger::CallIn { device: None }, Outcome::Fail) => {
            let facts = Facts::Leak {
                check: CheckFacts::of(result),
                since: started(result, now),
                basis: LeakBasis::CallIn { device: None },
            };
            out.alert(&mut s, AlertKind::Leak, line, check_id, facts);
        }
        (Trigger::CallIn { device: None }, _) => {}
        // A device's call-in leak: at once, no confirming re-check.
        (Trigger::CallIn { device: Some(d) }, Outcome::Fail) if s.status != LineStatus::Failing => {
            s.end_inconclusive_run();
            s.pending_confirm = None;
            let since = started(result, now);
            s.status = LineStatus::Failing;
            s.failing_since = Some(since);
            s.failing_check_id = Some(check_id);
            s.failing_summary = Some(result.summary());
            s.last_notified_at = Some(now);
            let facts = Facts::Leak {
                check: CheckFacts::of(result),
                since,
                basis: LeakBasis::CallIn {
                    device: Some(d.clone()),
                },
            };
            out.alert(&mut s, AlertKind::Leak, line, check_id, facts);
        }
        (_, Outcome::Fail) => on_fail(&mut s, result, check_id, now, &mut out),
        (_, Outcome::Pass) => on_pass(&mut s, result, check_id, now, &mut out),
        (_, Outcome::Inconclusive) => on_inconclusive(&mut s, result, check_id, now, &mut out),
    }
    (s, out.decisions)
}

fn on_fail(
    s: &mut LineAlertState,
    r: &CheckResult,
    check_id: i64,
    now: DateTime<Utc>,
    out: &mut Out<'_>,
) {
    let policy = out.policy;
    s.end_inconclusive_run();
    if s.status == LineStatus::Failing {
        s.failing_summary = Some(r.summary());
        let since = s.failing_since.unwrap_or(now);
        let due = match (policy.reminder_every, s.last_notified_at) {
            (Some(every), Some(last)) => (now - last).to_std().is_ok_and(|d| d >= every),
            (Some(_), None) => true,
            (None, _) => false,
        };
        // During a window reminders are not held: the summary at its end
        // says the line is still failing, and reminders resume after it.
        if due && !out.in_maintenance {
            if let Some(every) = policy.reminder_every {
                let facts = Facts::Reminder {
                    check: CheckFacts::of(r),
                    since,
                    every_secs: every.as_secs(),
                };
                out.alert(s, AlertKind::Reminder, &r.line, check_id, facts);
                s.last_notified_at = Some(now);
            }
        }
        return;
    }

    let window =
        chrono::Duration::from_std(policy.intermittent_window).unwrap_or(chrono::Duration::MAX);
    s.unconfirmed_fails.retain(|t| now - *t <= window);

    if let Some(p) = s.pending_confirm.take() {
        // The re-check (or whatever check came next) failed too: confirmed.
        let since = p.at;
        s.status = LineStatus::Failing;
        s.failing_since = Some(since);
        s.failing_check_id = Some(p.check_id);
        s.failing_summary = Some(r.summary());
        s.last_notified_at = Some(now);
        let facts = Facts::Leak {
            check: CheckFacts::of(r),
            since,
            basis: LeakBasis::Confirmed {
                first_check_id: p.check_id,
            },
        };
        out.alert(s, AlertKind::Leak, &r.line, check_id, facts);
        return;
    }

    let count = s.unconfirmed_fails.len() as u32 + 1;
    if policy.intermittent_after > 0 && count >= policy.intermittent_after {
        // Leaked before within the window although re-checks passed: a
        // leak that comes and goes is a leak. No re-check this time.
        let since = s
            .unconfirmed_fails
            .first()
            .copied()
            .unwrap_or_else(|| started(r, now));
        s.status = LineStatus::Failing;
        s.failing_since = Some(since);
        s.failing_check_id = Some(check_id);
        s.failing_summary = Some(r.summary());
        s.last_notified_at = Some(now);
        s.unconfirmed_fails.clear();
        let facts = Facts::Leak {
            check: CheckFacts::of(r),
            since,
            basis: LeakBasis::Repeated {
                count,
                window: policy.intermittent_window,
            },
        };
        out.alert(s, AlertKind::Leak, &r.line, check_id, facts);
        return;
    }

    s.pending_confirm = Some(PendingFail {
        check_id,
        at: started(r, now),
    });
    out.decisions.push(Decision::RecheckNow);
}

fn on_pass(
    s: &mut LineAlertState,
    r: &CheckResult,
    check_id: i64,
    now: DateTime<Utc>,
    out: &mut Out<'_>,
) {
    let policy = out.policy;
    let was_untestable = s.cant_test_alerted;
    s.end_inconclusive_run();
    if let Some(p) = s.pending_confirm.take() {
        // Not confirmed: no alert, but remembered (see intermittent).
        s.unconfirmed_fails.push(p.at);
    }
    let shape = IdentityShape::of(&r.presented);

    if s.status == LineStatus::Failing {
        let since = s.failing_since.unwrap_or(now);
        let summary = s.failing_summary.clone().unwrap_or_default();
        let facts = Facts::Resolved {
            check: CheckFacts::of(r),
            failed_since: Some(since),
            failed_summary: Some(summary),
        };
        out.alert(s, AlertKind::Resolved, &r.line, check_id, facts);
        s.status = LineStatus::Passing;
        s.failing_since = None;
        s.failing_check_id = None;
        s.failing_summary = None;
        s.last_notified_at = None;
        s.remember_shape(shape);
        return;
    }

    if was_untestable {
        let facts = Facts::Resolved {
            check: CheckFacts::of(r),
            failed_since: None,
            failed_summary: None,
        };
        out.alert(s, AlertKind::Resolved, &r.line, check_id, facts);
    } else if policy.drift && s.status == LineStatus::Passing {
        if let Some(before) = s.last_pass_shape.clone() {
            if before != shape && !s.known_shapes.contains(&shape) {
                let facts = Facts::Drift {
                    check: CheckFacts::of(r),
                    before,
                    after: shape.clone(),
                };
                out.alert(s, AlertKind::Drift, &r.line, check_id, facts);
            }
        }
    }
    s.status = LineStatus::Passing;
    s.remember_shape(shape);
}

fn on_inconclusive(
    s: &mut LineAlertState,
    r: &CheckResult,
    check_id: i64,
    now: DateTime<Utc>,
    out: &mut Out<'_>,
) {
    let policy = out.policy;
    s.inconclusive_run = s.inconclusive_run.saturating_add(1);
    if s.inconclusive_since.is_none() {
        s.inconclusive_since = Some(started(r, now));
    }
    let reason = r.reason.clone().unwrap_or_else(|| "no reason given".into());
    s.inconclusive_reasons.retain(|x| *x != reason);
    s.inconclusive_reasons.push(reason);
    if s.inconclusive_reasons.len() > MAX_REASONS {
        s.inconclusive_reasons.remove(0);
    }
    // A pending confirmation stays pending: the re-check neither confirmed
    // nor refuted the failure; the next conclusive result decides.
    if s.inconclusive_run >= policy.inconclusive_after && !s.cant_test_alerted {
        s.cant_test_alerted = true;
        let facts = Facts::CantTest {
            check: CheckFacts::of(r),
            run: s.inconclusive_run,
            since: s.inconclusive_since.unwrap_or(now),
            reasons: s.inconclusive_reasons.clone(),
            last: s.last_known(),
        };
        out.alert(s, AlertKind::CantTest, &r.line, check_id, facts);
    }
}

/// A device's reminder, if one is due at `now`: a device with its own
/// self-test number and `remind_every` that has had no call-in for that
/// long (counting from when it was first seen, its last call-in and its
/// last reminder, whichever is latest) gets one notice, addressed to its
/// owner. Returns the new state (None when nothing changed) and the notice.
pub fn device_reminder(
    state: &LineAlertState,
    device: &crate::plan::DevicePlan,
    now: DateTime<Utc>,
) -> (Option<LineAlertState>, Option<Notice>) {
    let (Some(every), Some(number)) = (device.remind_every(), device.selftest_number()) else {
        return (None, None);
    };
    let mut s = state.clone();
    let seen = *s.device_seen_at.get_or_insert(now);
    let base = [Some(seen), s.last_call_in, s.last_device_reminder]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    let due = (now - base).to_std().is_ok_and(|d| d >= every);
    if !due {
        let changed = state.device_seen_at.is_none();
        return (changed.then_some(s), None);
    }
    s.last_device_reminder = Some(now);
    let notice = Notice {
        key: format!(
            "{}:{}:{}",
            AlertKind::DeviceReminder.as_str(),
            device.name(),
            now.timestamp_millis()
        ),
        kind: AlertKind::DeviceReminder,
        line: Some(device.name().to_string()),
        check_id: None,
        at: now,
        expected: Some(device.policy().expectation()),
        link: None,
        facts: Facts::DeviceReminder {
            device: device.name().to_string(),
            owner: device.owner().to_string(),
            number: number.to_string(),
            every_secs: every.as_secs(),
            last_call_in: s.last_call_in,
        },
    };
    (Some(s), Some(notice))
}

/// Summarise and clear what every line held during a maintenance window:
/// one notice for all lines, or None when nothing was held. Call it when no
/// window is open and any state holds alerts; store the states together
/// with the returned notice. The key depends only on what was held, so a
/// retry after a crash can't queue a second summary.
pub fn maintenance_summary<'a>(
    states: impl IntoIterator<Item = (&'a str, &'a mut LineAlertState)>,
    now: DateTime<Utc>,
    _policy: &AlertPolicy,
) -> Option<Notice> {
    let mut lines = Vec::new();
    let mut ids: Vec<i64> = Vec::new();
    let mut count = 0usize;
    for (line, s) in states {
        if s.held.is_empty() {
            continue;
        }
        let held = std::mem::take(&mut s.held);
        let dropped = std::mem::take(&mut s.held_dropped);
        ids.extend(held.iter().filter_map(|h| h.check_id));
        count += held.len() + dropped as usize;
        if s.status == LineStatus::Failing {
            // The summary is this failure's latest notice: reminders count
            // from here.
            s.last_notified_at = Some(now);
        }
        lines.push(SummaryLine {
            line: line.to_string(),
            now: s.last_known(),
            cant_test: s.cant_test_alerted,
            held,
            dropped,
        });
    }
    if lines.is_empty() {
        return None;
    }
    let first = ids.iter().min().copied().unwrap_or(0);
    let last = ids.iter().max().copied().unwrap_or(0);
    let single = (lines.len() == 1).then(|| lines[0].line.clone());
    Some(Notice {
        key: format!("maintenance-summary:{first}-{last}:{count}"),
        kind: AlertKind::MaintenanceSummary,
        line: single,
        check_id: None,
        at: now,
        expected: None,
        link: None,
        facts: Facts::MaintenanceSummary { lines },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::result::{CallSummary, Trigger};
    use crate::config::Expect;
    use crate::verdict::{Finding, Kind, Presented, PresentedIdentity};

    const POLICY_TOML: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]

[[line]]
name = "reception"
expect = "withheld"

[alerts]
recipients = ["noc@example.org", "manager@example.org"]
from = "cidguard <cidguard@example.org>"
reminder_every = "24h"
inconclusive_after = 3
file = { dir = "/tmp/unused" }
"#;

    fn policy() -> AlertPolicy {
        let plan = Plan::from_toml(POLICY_TOML, std::path::Path::new("t.toml")).unwrap();
        AlertPolicy::from_plan(&plan)
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn anon(header: &str) -> PresentedIdentity {
        PresentedIdentity {
            header: header.into(),
            display: Some("Anonymous".into()),
            user: Some("anonymous".into()),
            host: "anonymous.invalid".into(),
        }
    }

    /// Results by name: `pass`, `pass+pai` (another shape), `fail`, `inc`.
    fn result(kind: &str, at: DateTime<Utc>) -> CheckResult {
        let (outcome, findings, reason, ids) = match kind {
            "pass" => (Outcome::Pass, vec![], None, vec![anon("From")]),
            "pass+pai" => (
                Outcome::Pass,
                vec![],
                None,
                vec![anon("From"), anon("P-Asserted-Identity")],
            ),
            "fail" => (
                Outcome::Fail,
                vec![Finding {
                    header: "From".into(),
                    value: "<sip:+61370100142@pbx>".into(),
                    kind: Kind::Number,
                    shown: true,
                    detail: "the caller number is the organisation's".into(),
                    matched: "+61 3 7010 0142".into(),
                    seen: String::new(),
                }],
                None,
                vec![anon("From")],
            ),
            "inc" => (
                Outcome::Inconclusive,
                vec![],
                Some("REGISTER refused: 401 Unauthorized (auth failed)".into()),
                vec![],
            ),
            other => panic!("unknown result kind {other}"),
        };
        CheckResult {
            line: "reception".into(),
            outcome,
            expected: Expect::Withheld,
            findings,
            reason,
            notes: vec![],
            presented: Presented {
                identity_headers: ids.iter().map(|i| i.header.clone()).collect(),
                identities: ids,
                privacy: Some("id".into()),
            },
            started_at: crate::check::result::rfc3339(at.into()),
            duration_ms: 1,
            call: CallSummary::default(),
            trigger: Trigger::Schedule,
            pbx_software: None,
            evidence_ref: None,
            evidence: vec![],
        }
    }

    /// What one step is expected to produce, in short.
    fn summarise(actions: &[Decision]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Decision::RecheckNow => "recheck".to_string(),
                Decision::Notify(x) => format!("queue {}", x.kind),
                Decision::Hold(x) => format!("hold {}", x.kind),
            })
            .collect()
    }

    /// The email a notice becomes on the `email` channel.
    fn email(n: &Notice) -> super::super::Email {
        let cfg =
            crate::config::Config::from_toml(POLICY_TOML, std::path::Path::new("t.toml")).unwrap();
        super::super::Renderer::from_config(&cfg, std::path::Path::new("/etc/cidguard.toml"))
            .unwrap()
            .email(n)
    }

    struct Step {
        /// Hours after t0.
        hour: i64,
        result: &'static str,
        maintenance: bool,
        expect: &'static [&'static str],
    }

    const fn st(hour: i64, result: &'static str, expect: &'static [&'static str]) -> Step {
        Step {
            hour,
            result,
            maintenance: false,
            expect,
        }
    }

    const fn mt(hour: i64, result: &'static str, expect: &'static [&'static str]) -> Step {
        Step {
            hour,
            result,
            maintenance: true,
            expect,
        }
    }

    fn run(name: &str, steps: &[Step]) -> (LineAlertState, Vec<Vec<Decision>>) {
        let p = policy();
        let mut s = LineAlertState::default();
        let mut all = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let now = t0() + chrono::Duration::hours(step.hour);
            let r = result(step.result, now);
            let (next, actions) = on_result(&s, &r, 100 + i as i64, now, &p, step.maintenance);
            assert_eq!(
                summarise(&actions),
                step.expect,
                "{name}: step {i} ({} at +{}h)",
                step.result,
                step.hour
            );
            // The state must survive the store's JSON round trip unchanged.
            let json = serde_json::to_string(&next).unwrap();
            let back: LineAlertState = serde_json::from_str(&json).unwrap();
            assert_eq!(back, next, "{name}: step {i}: JSON round trip");
            s = next;
            all.push(actions);
        }
        (s, all)
    }

    #[test]
    fn transitions() {
        let table: &[(&str, &[Step])] = &[
            (
                "pass -> fail -> confirmed -> alert",
                &[
                    st(0, "pass", &[]),
                    st(1, "fail", &["recheck"]),
                    st(1, "fail", &["queue leak"]),
                ],
            ),
            (
                "unknown -> fail -> confirmed -> alert",
                &[st(0, "fail", &["recheck"]), st(0, "fail", &["queue leak"])],
            ),
            (
                "fail not confirmed by the re-check: no alert",
                &[
                    st(0, "pass", &[]),
                    st(1, "fail", &["recheck"]),
                    st(1, "pass", &[]),
                    st(2, "pass", &[]),
                ],
            ),
            (
                "a second unconfirmed leak within the window alerts at once",
                &[
                    st(0, "pass", &[]),
                    st(1, "fail", &["recheck"]),
                    st(1, "pass", &[]),
                    st(30, "fail", &["queue leak"]),
                ],
            ),
            (
                "unconfirmed leaks further apart than the window don't add up",
                &[
                    st(0, "fail", &["recheck"]),
                    st(0, "pass", &[]),
                    st(24 * 8, "fail", &["recheck"]),
                    st(24 * 8, "pass", &[]),
                ],
            ),
            (
                "reminders while failing, at the configured interval",
                &[
                    st(0, "fail", &["recheck"]),
                    st(0, "fail", &["queue leak"]),
                    st(6, "fail", &[]),
                    st(23, "fail", &[]),
                    st(24, "fail", &["queue reminder"]),
                    st(30, "fail", &[]),
                    st(48, "fail", &["queue reminder"]),
                ],
            ),
            (
                "resolved when a failing line passes",
                &[
                    st(0, "fail", &["recheck"]),
                    st(0, "fail", &["queue leak"]),
                    st(5, "pass", &["queue resolved"]),
                    st(6, "pass", &[]),
                ],
            ),
            (
                "inconclusive alerts only after three in a row, once",
                &[
                    st(0, "pass", &[]),
                    st(1, "inc", &[]),
                    st(2, "inc", &[]),
                    st(3, "inc", &["queue cant-test"]),
                    st(4, "inc", &[]),
                    st(5, "pass", &["queue resolved"]),
                    st(6, "pass", &[]),
                ],
            ),
            (
                "an inconclusive run broken by a pass starts again",
                &[
                    st(1, "inc", &[]),
                    st(2, "inc", &[]),
                    st(3, "pass", &[]),
                    st(4, "inc", &[]),
                    st(5, "inc", &[]),
                    st(6, "inc", &["queue cant-test"]),
                ],
            ),
            (
                "inconclusive while failing: can't test, no reminder, no resolve",
                &[
                    st(0, "fail", &["recheck"]),
                    st(0, "fail", &["queue leak"]),
                    st(30, "inc", &[]),
                    st(31, "inc", &[]),
                    st(32, "inc", &["queue cant-test"]),
                    st(33, "fail", &["queue reminder"]),
                ],
            ),
            (
                "inconclusive re-check keeps the failure pending",
                &[
                    st(0, "pass", &[]),
                    st(1, "fail", &["recheck"]),
                    st(1, "inc", &[]),
                    st(2, "fail", &["queue leak"]),
                ],
            ),
            (
                "drift: a passing line's headers change shape, once",
                &[
                    st(0, "pass", &[]),
                    st(1, "pass", &[]),
                    st(2, "pass+pai", &["queue drift"]),
                    st(3, "pass+pai", &[]),
                    st(4, "pass", &[]),
                    st(5, "pass+pai", &[]),
                ],
            ),
            (
                "no drift on the first pass or after a resolve",
                &[
                    st(0, "pass+pai", &[]),
                    st(1, "fail", &["recheck"]),
                    st(1, "fail", &["queue leak"]),
                    st(2, "pass", &["queue resolved"]),
                ],
            ),
            (
                "maintenance: held, then one summary; checks and re-checks go on",
                &[
                    st(0, "pass", &[]),
                    mt(1, "fail", &["recheck"]),
                    mt(1, "fail", &["hold leak"]),
                    mt(2, "fail", &[]),
                    mt(30, "fail", &[]),
                    mt(31, "pass", &["hold resolved"]),
                    st(32, "pass", &["queue maintenance-summary"]),
                    st(33, "pass", &[]),
                ],
            ),
            (
                "maintenance: a leak still open at the end is summarised, reminders resume after",
                &[
                    mt(0, "fail", &["recheck"]),
                    mt(0, "fail", &["hold leak"]),
                    st(2, "fail", &["queue maintenance-summary"]),
                    st(20, "fail", &[]),
                    st(26, "fail", &["queue reminder"]),
                ],
            ),
        ];
        for (name, steps) in table {
            run(name, steps);
        }
    }

    #[test]
    fn leak_alert_content_and_dedupe_key() {
        let (_, actions) = run(
            "leak",
            &[
                st(0, "pass", &[]),
                st(1, "fail", &["recheck"]),
                st(1, "fail", &["queue leak"]),
            ],
        );
        let Decision::Notify(n) = &actions[2][0] else {
            panic!("not queued")
        };
        assert_eq!(n.key, "leak:reception:102");
        assert_eq!(n.check_id, Some(102));
        assert_eq!(n.line.as_deref(), Some("reception"));
        let a = email(n);
        let cfg =
            crate::config::Config::from_toml(POLICY_TOML, std::path::Path::new("t.toml")).unwrap();
        let r = super::super::Renderer::from_config(&cfg, std::path::Path::new("/x")).unwrap();
        assert_eq!(r.recipients(), ["noc@example.org", "manager@example.org"]);
        assert_eq!(
            a.subject,
            "[cidguard] PRIVACY LEAK on line \"reception\": number shown in From"
        );
        assert!(
            a.text.contains("#101") && a.text.contains("#102"),
            "{}",
            a.text
        );
    }

    #[test]
    fn cant_test_says_why_and_is_not_a_leak() {
        let (_, actions) = run(
            "inc",
            &[
                st(0, "inc", &[]),
                st(1, "inc", &[]),
                st(2, "inc", &["queue cant-test"]),
            ],
        );
        let Decision::Notify(n) = &actions[2][0] else {
            panic!("not queued")
        };
        let a = email(n);
        assert!(a
            .subject
            .starts_with("[cidguard] Can't test line \"reception\": REGISTER refused"));
        assert!(!a.subject.to_lowercase().contains("leak"), "{}", a.subject);
        assert!(a.text.contains("This is not a leak report"), "{}", a.text);
        assert!(a.text.contains("refused the line's login"), "{}", a.text);
    }

    #[test]
    fn one_summary_for_all_lines_and_a_stable_key() {
        let p = policy();
        let mut a = LineAlertState::default();
        let mut b = LineAlertState::default();
        let now = t0();
        for (s, id) in [(&mut a, 1), (&mut b, 2)] {
            let (n1, _) = on_result(s, &result("fail", now), id * 10, now, &p, true);
            let (n2, acts) = on_result(&n1, &result("fail", now), id * 10 + 1, now, &p, true);
            assert_eq!(summarise(&acts), ["hold leak"]);
            *s = n2;
        }
        let (a0, b0) = (a.clone(), b.clone());
        let later = now + chrono::Duration::hours(3);
        let sum = maintenance_summary([("reception", &mut a), ("outreach", &mut b)], later, &p)
            .expect("a summary");
        assert!(a.held.is_empty() && b.held.is_empty());
        assert_eq!(sum.kind, AlertKind::MaintenanceSummary);
        let e = email(&sum);
        assert!(
            e.subject
                .contains("PRIVACY LEAK on lines \"reception\", \"outreach\""),
            "{}",
            e.subject
        );
        assert!(e.text.contains("STILL LEAKING"), "{}", e.text);
        // Replaying from the stored states (a crash before they were
        // saved) gives the same key: the outbox refuses the duplicate.
        let (mut a1, mut b1) = (a0, b0);
        let again = maintenance_summary([("reception", &mut a1), ("outreach", &mut b1)], later, &p)
            .unwrap();
        assert_eq!(again.key, sum.key);
        // Nothing held, nothing sent.
        assert!(maintenance_summary([("reception", &mut a)], later, &p).is_none());
    }

    #[test]
    fn old_state_blobs_still_load() {
        let s: LineAlertState = serde_json::from_str(r#"{"status":"failing"}"#).unwrap();
        assert_eq!(s.status, LineStatus::Failing);
        let s: LineAlertState = serde_json::from_str("{}").unwrap();
        assert_eq!(s, LineAlertState::default());
    }

    /// A call-in leak alerts at once (no re-check: a person just heard
    /// it); a device then resolves like a line; call-ins from other phones
    /// alert each leak and never resolve.
    #[test]
    fn call_in_leaks_alert_at_once_and_only_devices_resolve() {
        let p = policy();
        let call_in = |kind: &str, at, device: Option<&str>| {
            let mut r = result(kind, at);
            r.line = device.unwrap_or("self-test").into();
            r.trigger = Trigger::CallIn {
                device: device.map(String::from),
            };
            r
        };
        let kinds = |d: &[Decision]| -> Vec<String> {
            d.iter()
                .map(|d| match d {
                    Decision::RecheckNow => "recheck".to_string(),
                    Decision::Notify(n) | Decision::Hold(n) => n.kind.as_str().to_string(),
                })
                .collect()
        };
        let s0 = LineAlertState::default();
        let (s1, d) = on_result(&s0, &call_in("fail", t0(), Some("jo")), 1, t0(), &p, false);
        assert_eq!(kinds(&d), ["leak"]);
        assert_eq!(s1.status, LineStatus::Failing);
        assert!(s1.last_call_in.is_some());
        let (_, d) = on_result(&s1, &call_in("pass", t0(), Some("jo")), 2, t0(), &p, false);
        assert_eq!(kinds(&d), ["resolved"]);

        let (s1, d) = on_result(&s0, &call_in("fail", t0(), None), 3, t0(), &p, false);
        assert_eq!(kinds(&d), ["leak"]);
        let (s2, d) = on_result(&s1, &call_in("fail", t0(), None), 4, t0(), &p, false);
        assert_eq!(kinds(&d), ["leak"], "each leak");
        let (_, d) = on_result(&s2, &call_in("pass", t0(), None), 5, t0(), &p, false);
        assert!(d.is_empty(), "never resolved: {d:?}");
    }
}
