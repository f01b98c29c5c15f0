//! ntfy: a push notification to a topic (https://docs.ntfy.sh/publish/).
//!
//! POST to the topic URL with the message as the body and the details as
//! headers: `Title`, `Priority` (leak 5 "urgent", reminder, can't test and
//! maintenance summary 4 "high", the rest 3 "default"; the channel's
//! `priority` table overrides), `Tags` (emoji short codes and the kind),
//! `Click` (the dashboard link), and `Authorization: Bearer <token>` for a
//! protected topic. A title with characters outside ASCII goes as an
//! RFC 2047 encoded word, which ntfy decodes (HTTP headers are ASCII).
//!
//! ntfy has no idempotency key: after a crash between its answer and the
//! outbox's record, the notification comes twice (the only duplicate the
//! channel can show; `X-Cidguard-Delivery` is sent for whoever logs it).

use std::collections::BTreeMap;

use async_trait::async_trait;
use hyper::header::{HeaderName, HeaderValue};

use crate::config::ChannelKind;

use super::super::chat::{chat, Severity};
use super::super::mailer::DialogueStep;
use super::super::notice::{delivery_id, Notice};
use super::super::render::Renderer;
use super::super::AlertKind;
use super::http::{Client, Outgoing, Target};
use super::{header_text, http_deliver, Channel, Delivered, DeliveryError, Subscription};

/// An ntfy topic.
pub struct Ntfy {
    /// The channel's name.
    pub name: String,
    /// The topic URL (not shown: a topic is a password).
    pub target: Target,
    /// An access token for a protected topic.
    pub token: Option<String>,
    /// Priority per notice kind, over the defaults.
    pub priorities: BTreeMap<String, u8>,
    /// Sends the request.
    pub client: Client,
    /// Renders and masks.
    pub renderer: Renderer,
    /// The notices it gets.
    pub subscription: Subscription,
}

impl std::fmt::Debug for Ntfy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ntfy")
            .field("name", &self.name)
            .field("at", &self.target.origin())
            .finish()
    }
}

/// The default priority of a kind: 5 urgent, 4 high, 3 default.
pub fn default_priority(kind: AlertKind) -> u8 {
    match kind {
        AlertKind::Leak => 5,
        AlertKind::Reminder | AlertKind::CantTest | AlertKind::MaintenanceSummary => 4,
        AlertKind::Resolved | AlertKind::Drift | AlertKind::Test | AlertKind::DeviceReminder => 3,
    }
}

/// Emoji short codes ntfy shows before the title, then the kind.
fn tags(kind: AlertKind, severity: Severity) -> String {
    let emoji = match (kind, severity) {
        (AlertKind::Leak | AlertKind::Reminder, _) => "rotating_light",
        (AlertKind::CantTest, _) => "warning",
        (AlertKind::Resolved, _) => "white_check_mark",
        (AlertKind::Drift, _) => "mag",
        (AlertKind::MaintenanceSummary, Severity::Alarm) => "rotating_light",
        (AlertKind::MaintenanceSummary, _) => "memo",
        (AlertKind::Test, _) => "test_tube",
        (AlertKind::DeviceReminder, _) => "telephone_receiver",
    };
    format!("{emoji},cidguard,{}", kind.as_str())
}

impl Ntfy {
    /// The priority this channel gives a kind.
    pub fn priority(&self, kind: AlertKind) -> u8 {
        self.priorities
            .get(kind.as_str())
            .copied()
            .filter(|p| (1..=5).contains(p))
            .unwrap_or_else(|| default_priority(kind))
    }
}

#[async_trait]
impl Channel for Ntfy {
    channel_basics!(ChannelKind::Ntfy);

    fn describe(&self) -> String {
        format!("ntfy {}", self.target.origin())
    }

    async fn deliver_logged(
        &self,
        notice: &Notice,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivered, DeliveryError> {
        let m = chat(&self.renderer, notice);
        // The title is a header; the body is the rest.
        let mut text = m.text();
        if let Some((_, rest)) = text.split_once('\n') {
            text = rest.to_string();
        }
        let mut headers = vec![
            (HeaderName::from_static("title"), header_text(&m.title)),
            (
                HeaderName::from_static("priority"),
                HeaderValue::from(u16::from(self.priority(notice.kind))),
            ),
            (
                HeaderName::from_static("tags"),
                header_text(&tags(notice.kind, m.severity)),
            ),
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                HeaderName::from_static("x-cidguard-delivery"),
                header_text(&delivery_id(&notice.key, &self.name)),
            ),
        ];
        if let Some(link) = &m.link {
            if let Ok(v) = HeaderValue::from_str(link) {
                headers.push((HeaderName::from_static("click"), v));
            }
        }
        if let Some(t) = &self.token {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {t}")) {
                v.set_sensitive(true);
                headers.push((hyper::header::AUTHORIZATION, v));
            }
        }
        let req = Outgoing {
            method: hyper::Method::POST,
            target: self.target.clone(),
            headers,
            body: text.into_bytes().into(),
        };
        http_deliver(&self.client, req, log).await
    }
}
