//! Slack through an incoming webhook
//! (https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks/):
//! a POST of `{"text": ..., "blocks": [...]}`; `text` is the notification's
//! fallback, the blocks are what the channel shows. Slack answers `200 ok`.
//!
//! `&`, `<` and `>` are Slack's control characters in text
//! (https://docs.slack.dev/messaging/formatting-message-text/): they are
//! escaped in everything but our own link, so a header value can't make a
//! link or mention `@channel`.

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::config::ChannelKind;

use super::super::chat::{chat, ChatMessage, Severity};
use super::super::mailer::DialogueStep;
use super::super::notice::{delivery_id, Notice};
use super::super::render::Renderer;
use super::http::{Client, Target};
use super::{post_chat_json, Channel, Delivered, DeliveryError, Subscription};

/// A Slack incoming webhook.
pub struct Slack {
    /// The channel's name.
    pub name: String,
    /// The webhook URL (a credential: never shown).
    pub target: Target,
    /// Sends the request.
    pub client: Client,
    /// Renders and masks.
    pub renderer: Renderer,
    /// The notices it gets.
    pub subscription: Subscription,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack")
            .field("name", &self.name)
            .field("at", &self.target.origin())
            .finish()
    }
}

/// Escape Slack's control characters.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cut to Slack's limits (a header's text is at most 150 characters, a
/// section's 3000).
fn cut(s: &str, max: usize) -> String {
    crate::escape::clip(s, max).into_owned()
}

/// The webhook body of a chat message.
pub fn payload(m: &ChatMessage) -> Value {
    let icon = match m.severity {
        Severity::Alarm => ":rotating_light:",
        Severity::Warn => ":warning:",
        Severity::Good => ":white_check_mark:",
        Severity::Info => ":information_source:",
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": cut(&m.title, 150), "emoji": true}
    })];
    let mut facts = String::new();
    for (k, v) in &m.facts {
        facts.push_str(&format!("*{}:* {}\n", esc(k), esc(v)));
    }
    if !facts.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(facts.trim_end(), 2900)}}));
    }
    if !m.findings.is_empty() {
        let mut t = format!(
            "*What was found ({})*\n",
            m.findings.len() + m.more_findings
        );
        for f in &m.findings {
            t.push_str(&format!(
                "• {}: `{}`\n",
                esc(&f.title),
                esc(&f.value.replace('`', "'"))
            ));
        }
        if m.more_findings > 0 {
            t.push_str(&format!("• and {} more\n", m.more_findings));
        }
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(t.trim_end(), 2900)}}),
        );
    }
    for n in &m.notes {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&esc(n), 2900)}}),
        );
    }
    if let Some(link) = &m.link {
        blocks.push(json!({
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Details and evidence"}, "url": link}]
        }));
    }
    blocks
        .push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": esc(&m.footer)}]}));
    json!({
        "text": format!("{icon} {}", esc(&m.title)),
        "blocks": blocks,
    })
}

#[async_trait]
impl Channel for Slack {
    channel_basics!(ChannelKind::Slack);

    fn describe(&self) -> String {
        format!("slack {}", self.target.origin())
    }

    async fn deliver_logged(
        &self,
        notice: &Notice,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivered, DeliveryError> {
        let body = serde_json::to_vec(&payload(&chat(&self.renderer, notice)))
            .map_err(|e| DeliveryError::notice(format!("can't encode the message: {e}")))?;
        let delivery = delivery_id(&notice.key, &self.name);
        post_chat_json(&self.client, &self.target, &delivery, body, log).await
    }
}
