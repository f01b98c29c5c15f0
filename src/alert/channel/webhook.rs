//! The generic webhook: a JSON POST (`components.schemas.WebhookNotice` in
//! docs/openapi.yaml), signed so the receiver knows it came from cidguard
//! and is fresh.
//!
//! Headers:
//!
//! - `X-Cidguard-Timestamp`: the attempt's time, Unix seconds.
//! - `X-Cidguard-Signature: sha256=<hex>`: HMAC-SHA256, keyed with the
//!   channel's `secret`, of the timestamp, a full stop, and the body's exact
//!   bytes (`<timestamp>.<body>`). A receiver recomputes it over the raw
//!   body, compares in constant time, and refuses timestamps more than a few
//!   minutes old (a replayed request carries an old one).
//! - `X-Cidguard-Delivery` and `Idempotency-Key`: the delivery's stable id,
//!   the same on every retry and after a restart: drop a second copy by it.
//! - `X-Cidguard-Event`: the notice's kind.
//!
//! Any 2xx is delivered; 408, 429 and 5xx are retried with backoff
//! (`Retry-After` honoured); other statuses are retried too, in case the
//! receiver is fixed, and each failure is recorded in the outbox.

use async_trait::async_trait;
use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::config::ChannelKind;

use super::super::chat::mask_long_numbers;
use super::super::mailer::DialogueStep;
use super::super::notice::{delivery_id, Facts, LastKnown, Notice};
use super::super::render::{one_line, Renderer};
use super::hmac::{hex, hmac_sha256};
use super::http::{Client, Outgoing, Target};
use super::{http_deliver, Channel, Delivered, DeliveryError, Subscription};

/// A signed JSON webhook.
pub struct Webhook {
    /// The channel's name.
    pub name: String,
    /// Where to POST (the URL is not shown: it may be a secret).
    pub target: Target,
    /// The HMAC key.
    pub secret: String,
    /// Sends the request.
    pub client: Client,
    /// Renders titles and masks values.
    pub renderer: Renderer,
    /// The notices it gets.
    pub subscription: Subscription,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, nor the URL's path.
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("at", &self.target.origin())
            .finish()
    }
}

/// The JSON body (documented as `WebhookNotice` in docs/openapi.yaml).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookNotice {
    /// The notice's stable key (`leak:reception:42`).
    pub id: String,
    /// The delivery's stable id, also in `X-Cidguard-Delivery`.
    pub delivery: String,
    /// leak, reminder, resolved, cant-test, drift, maintenance-summary, test.
    pub kind: String,
    /// The line, when the notice is about one.
    pub line: Option<String>,
    /// The check that caused it (its id in the history and the dashboard).
    pub check_id: Option<i64>,
    /// When cidguard decided to tell (RFC 3339).
    pub at: String,
    /// The organisation.
    pub organisation: String,
    /// One line for people: the email's subject without `[cidguard] `.
    pub title: String,
    /// The check's outcome: pass, fail or inconclusive.
    pub outcome: Option<String>,
    /// The check in a few words (`number shown in From`).
    pub summary: Option<String>,
    /// What the line must present.
    pub expected: Option<String>,
    /// Since when the line has been failing (leak, reminder, resolved) or
    /// inconclusive (cant-test).
    pub since: Option<String>,
    /// What leaked or was wrong, as recorded (values masked on a masked
    /// channel).
    pub findings: Vec<WebhookFinding>,
    /// Why the checks were inconclusive (cant-test).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// What changed in the identity headers (drift).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Each line of a maintenance summary.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<WebhookSummaryLine>,
    /// The check's dashboard page: the detail and the evidence are there.
    pub link: Option<String>,
    /// Whether numbers are masked in this body.
    pub masked: bool,
}

/// One finding in a [`WebhookNotice`].
#[derive(Debug, Clone, Serialize)]
pub struct WebhookFinding {
    /// Where: a header name, `Request-URI` or `SDP`.
    pub header: String,
    /// number, name, host, presentation or descriptor.
    pub kind: String,
    /// Whether phones typically display this place.
    pub shown: bool,
    /// The value as received (masked on a masked channel, cut short).
    pub value: String,
    /// Why it matters.
    pub detail: String,
    /// The configured entry it matched.
    pub matched: String,
}

/// One line of a maintenance summary in a [`WebhookNotice`].
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSummaryLine {
    /// The line.
    pub line: String,
    /// leaking, cant-test, private, unconfirmed or unknown.
    pub state: String,
    /// How many notices were held for it.
    pub held: usize,
}

/// Longest value in a webhook body.
const MAX_VALUE: usize = 400;

impl Webhook {
    /// The body for a notice.
    pub fn body(&self, n: &Notice) -> WebhookNotice {
        notice_json(&self.renderer, n, &self.name)
    }
}

/// The webhook body of a notice for a channel.
pub fn notice_json(r: &Renderer, n: &Notice, channel: &str) -> WebhookNotice {
    let masked = r.masks();
    let m = |s: &str| {
        let s = r.mask(s);
        let s = if masked { mask_long_numbers(&s) } else { s };
        crate::escape::clip(&one_line(&s), MAX_VALUE).into_owned()
    };
    // The same title a chat channel shows (masked as the channel masks).
    let title = crate::alert::chat::chat(r, n).title;
    let mut body = WebhookNotice {
        id: n.key.clone(),
        delivery: delivery_id(&n.key, channel),
        kind: n.kind.as_str().to_string(),
        line: n.line.clone(),
        check_id: n.check_id,
        at: n.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        organisation: r.org_name().to_string(),
        title,
        outcome: None,
        summary: None,
        expected: n.expected.clone(),
        since: None,
        findings: Vec::new(),
        reasons: Vec::new(),
        changes: Vec::new(),
        lines: Vec::new(),
        link: n.link.clone(),
        masked,
    };
    if let Some(c) = n.facts.check() {
        body.outcome = Some(
            match c.outcome {
                crate::verdict::Outcome::Pass => "pass",
                crate::verdict::Outcome::Fail => "fail",
                crate::verdict::Outcome::Inconclusive => "inconclusive",
            }
            .to_string(),
        );
        body.summary = Some(m(&c.summary()));
        body.findings = c
            .findings
            .iter()
            .map(|f| WebhookFinding {
                header: crate::escape::clip(&f.header, 100).into_owned(),
                kind: f.kind.to_string(),
                shown: f.shown,
                value: m(&f.value),
                detail: m(&f.detail),
                matched: m(&f.matched),
            })
            .collect();
    }
    let rfc =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match &n.facts {
        Facts::Leak { since, .. } | Facts::Reminder { since, .. } => body.since = Some(rfc(since)),
        Facts::Resolved { failed_since, .. } => body.since = failed_since.as_ref().map(rfc),
        Facts::CantTest { since, reasons, .. } => {
            body.since = Some(rfc(since));
            body.reasons = reasons.iter().map(|x| m(x)).collect();
        }
        Facts::Drift { before, after, .. } => {
            body.changes = before.changes(after).iter().map(|x| m(x)).collect();
        }
        Facts::MaintenanceSummary { lines } => {
            body.lines = lines
                .iter()
                .map(|l| WebhookSummaryLine {
                    line: l.line.clone(),
                    state: match (&l.now, l.cant_test) {
                        (LastKnown::Failing { .. }, _) => "leaking",
                        (_, true) => "cant-test",
                        (LastKnown::Passing, false) => "private",
                        (LastKnown::Unconfirmed { .. }, false) => "unconfirmed",
                        (LastKnown::Unknown, false) => "unknown",
                    }
                    .to_string(),
                    held: l.held.len() + l.dropped as usize,
                })
                .collect();
        }
        Facts::Test {} | Facts::LegacyEmail { .. } | Facts::DeviceReminder { .. } => {}
    }
    body
}

/// The signature header's value for a body sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), &signed)))
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("-")),
    )
}

#[async_trait]
impl Channel for Webhook {
    channel_basics!(ChannelKind::Webhook);

    fn describe(&self) -> String {
        format!("webhook {}", self.target.origin())
    }

    async fn deliver_logged(
        &self,
        notice: &Notice,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivered, DeliveryError> {
        let body = serde_json::to_vec(&self.body(notice))
            .map_err(|e| DeliveryError::notice(format!("can't encode the body: {e}")))?;
        let id = delivery_id(&notice.key, &self.name);
        let ts = chrono::Utc::now().timestamp();
        let req = Outgoing {
            method: hyper::Method::POST,
            target: self.target.clone(),
            headers: vec![
                header("content-type", "application/json"),
                header("x-cidguard-event", notice.kind.as_str()),
                header("x-cidguard-delivery", &id),
                header("idempotency-key", &id),
                header("x-cidguard-timestamp", &ts.to_string()),
                header("x-cidguard-signature", &signature(&self.secret, ts, &body)),
            ],
            body: body.into(),
        };
        http_deliver(&self.client, req, log).await
    }
}
