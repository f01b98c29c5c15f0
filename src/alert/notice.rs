//! Notices: what the state machine decided to tell, as plain data. Nothing
//! in a notice is rendered: each channel turns it into its own message when
//! it delivers it, with its own masking ([`super::render`] for email,
//! [`super::chat`] for the others).
//!
//! A notice is stored as JSON in the outbox (once, whatever the number of
//! channels), so every field has a default or is optional where an older
//! notice may lack it. It never carries the evidence (the captured SIP
//! messages): the check's findings, as recorded, and a link to the
//! dashboard, where the evidence is, are what it says.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::check::result::{CallSummary, CheckResult, Trigger};
use crate::config::Expect;
use crate::verdict::{Finding, Outcome, Presented};

use super::shape::IdentityShape;
use super::state::HeldAlert;
use super::AlertKind;

/// One thing to tell people, whatever the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Stable and unique (`leak:reception:42`): the outbox stores a notice
    /// once, and each channel's delivery is keyed by it.
    pub key: String,
    /// What it is about.
    pub kind: AlertKind,
    /// The line (None for maintenance summaries and tests).
    pub line: Option<String>,
    /// The check that caused it (its history id), if any.
    pub check_id: Option<i64>,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// What the line must present, in words, as configured when decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The check's page on the dashboard, when `alerts.dashboard_url` is
    /// set: where the detail and the evidence are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Everything a renderer needs, by kind.
    pub facts: Facts,
}

/// What a notice knows, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Facts {
    /// A device has not been tested by a call-in for `every_secs`.
    DeviceReminder {
        /// The device's name.
        device: String,
        /// Its owner's e-mail address (also a recipient on email).
        owner: String,
        /// The number to dial: the device's own self-test number.
        number: String,
        /// How often it is to be tested.
        every_secs: u64,
        /// Its last call-in, if it ever had one.
        #[serde(default)]
        last_call_in: Option<DateTime<Utc>>,
    },
    /// A confirmed (or repeated) leak or wrong presentation.
    Leak {
        /// The check that confirmed it.
        check: CheckFacts,
        /// When the line started failing.
        since: DateTime<Utc>,
        /// Why it is alerted now.
        basis: LeakBasis,
    },
    /// Still failing, `every_secs` after the last notice.
    Reminder {
        /// The latest failing check.
        check: CheckFacts,
        /// When the line started failing.
        since: DateTime<Utc>,
        /// The reminder interval, in seconds.
        every_secs: u64,
    },
    /// A failing line passes again, or an untestable line can be tested.
    Resolved {
        /// The passing check.
        check: CheckFacts,
        /// When the failure started (None: the line could not be tested).
        failed_since: Option<DateTime<Utc>>,
        /// What the failure was (`number shown in From`).
        #[serde(default)]
        failed_summary: Option<String>,
    },
    /// cidguard can't test the line: `run` inconclusive results in a row.
    CantTest {
        /// The latest inconclusive check.
        check: CheckFacts,
        /// How many in a row.
        run: u32,
        /// Since when.
        since: DateTime<Utc>,
        /// The distinct reasons given, oldest first.
        reasons: Vec<String>,
        /// Where the line stood before.
        last: LastKnown,
    },
    /// A passing line's identity headers changed shape.
    Drift {
        /// The passing check.
        check: CheckFacts,
        /// The shape of the line's previous pass.
        before: IdentityShape,
        /// The shape now.
        after: IdentityShape,
    },
    /// Notices held during a maintenance window, per line.
    MaintenanceSummary {
        /// Each line that held something.
        lines: Vec<SummaryLine>,
    },
    /// `cidguard alert test`.
    Test {},
    /// An email rendered by an earlier cidguard and still in its outbox
    /// when it was upgraded: sent as it was rendered, by email only.
    LegacyEmail {
        /// Its recipients.
        recipients: Vec<String>,
        /// Its subject.
        subject: String,
        /// Its text part.
        text: String,
        /// Its HTML part.
        html: String,
    },
}

impl Facts {
    /// The check the notice is about, if one.
    pub fn check(&self) -> Option<&CheckFacts> {
        match self {
            Facts::Leak { check, .. }
            | Facts::Reminder { check, .. }
            | Facts::Resolved { check, .. }
            | Facts::CantTest { check, .. }
            | Facts::Drift { check, .. } => Some(check),
            _ => None,
        }
    }
}

/// A check as recorded, without its evidence: what was found, what the
/// call presented, when and why it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFacts {
    /// The line checked.
    pub line: String,
    /// Pass, fail or inconclusive.
    pub outcome: Outcome,
    /// What the line must present.
    pub expected: Expect,
    /// What leaked or was wrong, as recorded.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Why the check was inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Observations that did not change the outcome.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The identities the call presented.
    #[serde(default)]
    pub presented: Presented,
    /// When the check started (RFC 3339).
    pub started_at: String,
    /// What started it.
    pub trigger: Trigger,
    /// The PBX's software, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbx_software: Option<String>,
}

impl CheckFacts {
    /// The facts of a result (its evidence left behind).
    pub fn of(r: &CheckResult) -> CheckFacts {
        CheckFacts {
            line: r.line.clone(),
            outcome: r.outcome,
            expected: r.expected,
            findings: r.findings.clone(),
            reason: r.reason.clone(),
            notes: r.notes.clone(),
            presented: r.presented.clone(),
            started_at: r.started_at.clone(),
            trigger: r.trigger.clone(),
            pbx_software: r.pbx_software.clone(),
        }
    }

    /// Back to a result (no evidence, no call details), for renderers
    /// written against results.
    pub fn to_result(&self) -> CheckResult {
        CheckResult {
            line: self.line.clone(),
            outcome: self.outcome,
            expected: self.expected,
            findings: self.findings.clone(),
            reason: self.reason.clone(),
            notes: self.notes.clone(),
            presented: self.presented.clone(),
            started_at: self.started_at.clone(),
            duration_ms: 0,
            call: CallSummary::default(),
            trigger: self.trigger.clone(),
            pbx_software: self.pbx_software.clone(),
            evidence_ref: None,
            evidence: Vec::new(),
        }
    }

    /// `number shown in From, name shown in P-Asserted-Identity`.
    pub fn summary(&self) -> String {
        crate::verdict::summarise(
            self.outcome,
            self.expected,
            self.reason.as_deref(),
            &self.findings,
        )
    }
}

/// Why a leak is alerted now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LeakBasis {
    /// The first failing check, confirmed by an immediate re-check.
    Confirmed {
        /// The first failing check.
        first_check_id: i64,
    },
    /// `count` failing checks within `window` whose re-checks passed (or,
    /// with `count` 1, alerts are set to fire on the first failure).
    Repeated {
        /// How many failed checks.
        count: u32,
        /// Within how long.
        #[serde(with = "secs")]
        window: Duration,
    },
    /// A call-in: someone dialled a self-test number and just heard the
    /// leak, so nothing is re-checked first.
    CallIn {
        /// The device it is attributed to (None: a phone not configured).
        #[serde(default)]
        device: Option<String>,
    },
}

/// Where a line stands, for "can't test" notices and maintenance summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LastKnown {
    /// Never judged.
    Unknown,
    /// Its last conclusive check passed.
    Passing,
    /// A confirmed leak, since then, with its summary.
    Failing {
        /// Since when.
        since: DateTime<Utc>,
        /// What leaked.
        summary: String,
    },
    /// A failed check whose confirming re-check never completed.
    Unconfirmed {
        /// When the check ran.
        at: DateTime<Utc>,
        /// Its history id.
        check_id: i64,
    },
}

/// One line's part of a maintenance summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryLine {
    /// The line.
    pub line: String,
    /// Where it stands now.
    pub now: LastKnown,
    /// The line can't be tested at the moment (inconclusive run alerted).
    pub cant_test: bool,
    /// What was held for it, oldest first.
    pub held: Vec<HeldAlert>,
    /// Held notices dropped to bound the state's size.
    pub dropped: u32,
}

/// Durations as whole seconds in JSON.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// A short, stable identifier of a delivery (a notice on one channel),
/// safe in a header, a URL path and a Message-ID: 32 hex digits of the
/// SHA-256 of its key. Receivers drop a second copy by it.
pub fn delivery_id(notice_key: &str, channel: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{notice_key}:{channel}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
