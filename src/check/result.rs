//! The result of one check of one line: what `cidguard check` prints, what
//! the history stores, what alerts and the dashboard read.
//!
//! It is the inspect verdict plus what only a real call can tell: when it
//! ran, how the call went, how the arrival was matched, which PBX software
//! answered, and the evidence (every message, credentials redacted).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Expect;
use crate::verdict::{Finding, Outcome, Presented, Verdict};

/// What started a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trigger {
    /// The line's cron schedule.
    Schedule,
    /// Someone ran it by hand (CLI or dashboard), optionally saying why
    /// ("after FreePBX 17 upgrade").
    Manual {
        label: Option<String>,
        /// The dashboard or API run it belongs to, to find its results.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<u64>,
    },
    /// The PBX's software changed (from, to).
    PbxChange { from: Option<String>, to: String },
    /// An immediate re-check to confirm a new failure.
    Confirm,
    /// Through the API.
    Api {
        label: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<u64>,
    },
    /// Someone dialled a self-test number (a call-in): the check is that
    /// call. `device` is the device it is attributed to (its own self-test
    /// number, or its number shown); None for any other phone.
    CallIn {
        #[serde(default)]
        device: Option<String>,
    },
}

impl Trigger {
    /// Its name, as stored, logged and listed: `schedule`, `manual`,
    /// `pbx-change`, `confirm`, `api` or `call-in`.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual { .. } => "manual",
            Trigger::PbxChange { .. } => "pbx-change",
            Trigger::Confirm => "confirm",
            Trigger::Api { .. } => "api",
            Trigger::CallIn { .. } => "call-in",
        }
    }

    /// The words kept beside the kind: the person's label, or for a PBX
    /// change the new software.
    pub fn note(&self) -> Option<&str> {
        match self {
            Trigger::PbxChange { to, .. } => Some(to),
            other => other.label(),
        }
    }

    /// The label someone gave a check run by hand or through the API.
    pub fn label(&self) -> Option<&str> {
        match self {
            Trigger::Manual { label, .. } | Trigger::Api { label, .. } => label.as_deref(),
            _ => None,
        }
    }
}

/// How the test call went, from the line's side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSummary {
    /// Final response to the INVITE (None if none came: cancelled, error).
    pub final_status: Option<u16>,
    pub final_reason: Option<String>,
    pub call_id: Option<String>,
    /// Milliseconds from the (authenticated) INVITE to the first 1xx and to
    /// the final response.
    pub first_provisional_ms: Option<u64>,
    pub final_response_ms: Option<u64>,
    /// Microseconds from the very first INVITE (before any auth challenge)
    /// to the final response: the whole SIP exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_us: Option<u64>,
    /// How the arrival was proved to be this call, or why it couldn't be.
    pub matching: Option<String>,
}

/// One captured message, for evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceMessage {
    /// `line` (what the line sent and received) or `endpoint`.
    pub side: String,
    /// `sent` or `received`.
    pub direction: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `udp 127.0.0.1:5060 -> 127.0.0.1:5080`
    pub flow: String,
    /// The message as on the wire, with credentials redacted.
    pub text: String,
}

/// The result of checking one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub line: String,
    pub outcome: Outcome,
    pub expected: Expect,
    pub findings: Vec<Finding>,
    /// Why the result is inconclusive (None otherwise).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub presented: Presented,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    pub call: CallSummary,
    pub trigger: Trigger,
    /// The PBX's Server / User-Agent as last seen (REGISTER or call responses).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pbx_software: Option<String>,
    /// Where the evidence is: a file path for a standalone check, or the
    /// history id once stored.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub evidence_ref: Option<String>,
    /// Every message of the test call, line side and endpoint side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<EvidenceMessage>,
}

impl CheckResult {
    /// A result that could not be judged.
    pub fn inconclusive(
        line: &str,
        expected: Expect,
        started: SystemTime,
        reason: String,
        trigger: Trigger,
    ) -> CheckResult {
        CheckResult {
            line: line.to_string(),
            outcome: Outcome::Inconclusive,
            expected,
            findings: Vec::new(),
            reason: Some(reason),
            notes: Vec::new(),
            presented: Presented::default(),
            started_at: rfc3339(started),
            duration_ms: elapsed_ms(started),
            call: CallSummary::default(),
            trigger,
            pbx_software: None,
            evidence_ref: None,
            evidence: Vec::new(),
        }
    }

    /// A result from a verdict on the matched arrival.
    pub fn from_verdict(
        v: Verdict,
        started: SystemTime,
        call: CallSummary,
        trigger: Trigger,
    ) -> CheckResult {
        CheckResult {
            line: v.line,
            outcome: v.outcome,
            expected: v.expected,
            findings: v.findings,
            reason: v.reason,
            notes: v.notes,
            presented: v.presented,
            started_at: rfc3339(started),
            duration_ms: elapsed_ms(started),
            call,
            trigger,
            pbx_software: None,
            evidence_ref: None,
            evidence: Vec::new(),
        }
    }

    /// One-line summary: `number shown in From, name shown in PAI`.
    pub fn summary(&self) -> String {
        crate::verdict::summarise(
            self.outcome,
            self.expected,
            self.reason.as_deref(),
            &self.findings,
        )
    }
}

fn elapsed_ms(started: SystemTime) -> u64 {
    started.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Format a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Redact credentials in a captured SIP message: the values of
/// Authorization and Proxy-Authorization keep only the scheme, username and
/// realm. Works on raw text, line by line, so it never depends on the
/// message being well-formed.
pub fn redact(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut in_credentials = false;
    for line in text.split_inclusive('\n') {
        let eol = &line[line.trim_end_matches(['\r', '\n']).len()..];
        let body = line.trim_end_matches(['\r', '\n']);
        if in_credentials && body.starts_with([' ', '\t']) {
            // A folded continuation of a credentials header: drop it.
            continue;
        }
        in_credentials = false;
        if body.is_empty() {
            // End of headers: the body is kept as is.
            out.push_str(line);
            let rest_at = text
                .find("\r\n\r\n")
                .map(|i| i + 4)
                .or_else(|| text.find("\n\n").map(|i| i + 2));
            if let Some(i) = rest_at {
                out.push_str(&text[i..]);
            }
            return out;
        }
        if let Some((name, value)) = body.split_once(':') {
            let n = name.trim();
            if n.eq_ignore_ascii_case("authorization")
                || n.eq_ignore_ascii_case("proxy-authorization")
            {
                let (scheme, params) = crate::sip::header::parse_auth_params(value);
                let keep: Vec<String> = params
                    .iter()
                    .filter(|(k, _)| k == "username" || k == "realm")
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                out.push_str(&format!(
                    "{name}: {scheme} {} [credentials redacted]{eol}",
                    keep.join(", ")
                ));
                in_credentials = true;
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_digest_responses() {
        let m = b"INVITE sip:x SIP/2.0\r\nProxy-Authorization: Digest username=\"201\", realm=\"pbx\", nonce=\"abc\",\r\n response=\"0123456789abcdef\"\r\nCall-ID: 1\r\n\r\nv=0\r\n";
        let r = redact(m);
        assert!(
            !r.contains("0123456789abcdef") && !r.contains("nonce"),
            "{r}"
        );
        assert!(
            r.contains("username=\"201\"") && r.contains("Call-ID: 1") && r.ends_with("v=0\r\n"),
            "{r}"
        );
    }

    /// The one name of a trigger is the one its JSON carries, so the
    /// history's column, the CSV, the log and the stored JSON agree.
    #[test]
    fn a_trigger_is_named_as_it_is_stored() {
        for (t, note) in [
            (Trigger::Schedule, None),
            (Trigger::Confirm, None),
            (
                Trigger::PbxChange {
                    from: Some("Asterisk 18".into()),
                    to: "Asterisk 20".into(),
                },
                Some("Asterisk 20"),
            ),
            (
                Trigger::Manual {
                    label: Some("after the upgrade".into()),
                    run: None,
                },
                Some("after the upgrade"),
            ),
            (
                Trigger::Api {
                    label: None,
                    run: Some(7),
                },
                None,
            ),
            (
                Trigger::CallIn {
                    device: Some("jo-mobile".into()),
                },
                None,
            ),
            (Trigger::CallIn { device: None }, None),
        ] {
            let json = serde_json::to_value(&t).unwrap();
            assert_eq!(json["kind"], t.kind(), "{t:?}");
            assert_eq!(t.note(), note, "{t:?}");
        }
    }
}
