//! Microsoft Teams through a Workflows webhook ("Send webhook alerts to a
//! channel"), which posts an Adaptive Card
//! (https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using:
//! Workflows take Adaptive Cards only, wrapped as a message attachment):
//!
//! ```json
//! {"type": "message", "attachments": [{"contentType":
//!   "application/vnd.microsoft.card.adaptive", "contentUrl": null,
//!   "content": {"type": "AdaptiveCard", "version": "1.4", ...}}]}
//! ```
//!
//! Text from the wire goes in `TextRun`s of `RichTextBlock`s, which are not
//! read as Markdown, so a header value can't turn into a link or
//! formatting. The flow answers 202 Accepted once it has the request.

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::config::ChannelKind;

use super::super::chat::{chat, ChatMessage, Severity};
use super::super::mailer::DialogueStep;
use super::super::notice::{delivery_id, Notice};
use super::super::render::Renderer;
use super::http::{Client, Target};
use super::{post_chat_json, Channel, Delivered, DeliveryError, Subscription};

/// A Teams Workflows webhook.
pub struct Teams {
    /// The channel's name.
    pub name: String,
    /// The workflow's URL (a credential: never shown).
    pub target: Target,
    /// Sends the request.
    pub client: Client,
    /// Renders and masks.
    pub renderer: Renderer,
    /// The notices it gets.
    pub subscription: Subscription,
}

impl std::fmt::Debug for Teams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teams")
            .field("name", &self.name)
            .field("at", &self.target.origin())
            .finish()
    }
}

/// A run of plain text (no Markdown).
fn run(text: &str) -> Value {
    json!({"type": "TextRun", "text": text})
}

/// A paragraph of plain text runs.
fn para(runs: Vec<Value>) -> Value {
    json!({"type": "RichTextBlock", "inlines": runs})
}

/// The Adaptive Card of a chat message.
pub fn card(m: &ChatMessage) -> Value {
    let colour = match m.severity {
        Severity::Alarm => "Attention",
        Severity::Warn => "Warning",
        Severity::Good => "Good",
        Severity::Info => "Accent",
    };
    let mut body = vec![json!({
        "type": "RichTextBlock",
        "inlines": [{"type": "TextRun", "text": m.title, "weight": "Bolder",
                     "size": "Medium", "color": colour}]
    })];
    for (k, v) in &m.facts {
        body.push(para(vec![
            json!({"type": "TextRun", "text": format!("{k}: "), "weight": "Bolder"}),
            run(v),
        ]));
    }
    if !m.findings.is_empty() {
        body.push(para(vec![json!({
            "type": "TextRun", "text": format!("What was found ({})", m.findings.len() + m.more_findings),
            "weight": "Bolder"
        })]));
        for f in &m.findings {
            body.push(para(vec![
                run(&format!("{}: ", f.title)),
                json!({"type": "TextRun", "text": f.value, "fontType": "Monospace"}),
            ]));
        }
        if m.more_findings > 0 {
            body.push(para(vec![run(&format!("and {} more", m.more_findings))]));
        }
    }
    for n in &m.notes {
        body.push(para(vec![run(n)]));
    }
    body.push(para(vec![json!({
        "type": "TextRun", "text": m.footer, "isSubtle": true, "size": "Small"
    })]));
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(link) = &m.link {
        content["actions"] = json!([
            {"type": "Action.OpenUrl", "title": "Details and evidence", "url": link}
        ]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }]
    })
}

#[async_trait]
impl Channel for Teams {
    channel_basics!(ChannelKind::Teams);

    fn describe(&self) -> String {
        format!("teams {}", self.target.origin())
    }

    async fn deliver_logged(
        &self,
        notice: &Notice,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivered, DeliveryError> {
        let body = serde_json::to_vec(&card(&chat(&self.renderer, notice)))
            .map_err(|e| DeliveryError::notice(format!("can't encode the card: {e}")))?;
        let delivery = delivery_id(&notice.key, &self.name);
        post_chat_json(&self.client, &self.target, &delivery, body, log).await
    }
}
