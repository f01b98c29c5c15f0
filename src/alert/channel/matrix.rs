//! Matrix: a message into a room through the client-server API
//! (https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid):
//!
//! `PUT {homeserver}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn_id}`
//! with `Authorization: Bearer <access_token>` and `{"msgtype": "m.text",
//! "body": <plain text>, "format": "org.matrix.custom.html",
//! "formatted_body": <HTML>}`.
//!
//! The transaction id is the delivery's stable id: the homeserver treats a
//! second PUT with the same id (from the same access token) as the same
//! event, so a copy sent again after a crash posts nothing new. A 429
//! answer's `retry_after_ms` is honoured.

use std::time::Duration;

use async_trait::async_trait;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::json;

use crate::config::ChannelKind;
use crate::escape::html;

use super::super::chat::{chat, ChatMessage};
use super::super::mailer::DialogueStep;
use super::super::notice::{delivery_id, Notice};
use super::super::render::Renderer;
use super::http::{Client, Outgoing, Target};
use super::{http_deliver, Channel, Delivered, DeliveryError, Subscription};

/// A Matrix room.
pub struct Matrix {
    /// The channel's name.
    pub name: String,
    /// The homeserver's base URL.
    pub homeserver: Target,
    /// The room (`!abcdef:example.org`).
    pub room_id: String,
    /// The sending account's token.
    pub access_token: String,
    /// Sends the request.
    pub client: Client,
    /// Renders and masks.
    pub renderer: Renderer,
    /// The notices it gets.
    pub subscription: Subscription,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matrix")
            .field("name", &self.name)
            .field("at", &self.homeserver.origin())
            .field("room", &self.room_id)
            .finish()
    }
}

/// Percent-encode a path segment (everything but RFC 3986's unreserved
/// characters).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The HTML body of a chat message (every value escaped).
pub fn formatted(m: &ChatMessage) -> String {
    let mut o = format!("<p><strong>{}</strong></p>", html(&m.title));
    if !m.facts.is_empty() {
        o.push_str("<ul>");
        for (k, v) in &m.facts {
            o.push_str(&format!(
                "<li><strong>{}:</strong> {}</li>",
                html(k),
                html(v)
            ));
        }
        o.push_str("</ul>");
    }
    if !m.findings.is_empty() {
        o.push_str(&format!(
            "<p><strong>What was found ({})</strong></p><ul>",
            m.findings.len() + m.more_findings
        ));
        for f in &m.findings {
            o.push_str(&format!(
                "<li>{}: <code>{}</code></li>",
                html(&f.title),
                html(&f.value)
            ));
        }
        if m.more_findings > 0 {
            o.push_str(&format!("<li>and {} more</li>", m.more_findings));
        }
        o.push_str("</ul>");
    }
    for n in &m.notes {
        o.push_str(&format!("<p>{}</p>", html(n)));
    }
    if let Some(l) = &m.link {
        o.push_str(&format!(
            "<p><a href=\"{}\">Details and evidence</a></p>",
            html(l)
        ));
    }
    o
}

impl Matrix {
    /// The request path for a notice.
    pub fn path(&self, notice: &Notice) -> String {
        format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            segment(&self.room_id),
            delivery_id(&notice.key, &self.name)
        )
    }
}

#[async_trait]
impl Channel for Matrix {
    channel_basics!(ChannelKind::Matrix);

    fn describe(&self) -> String {
        format!("matrix {} room {}", self.homeserver.origin(), self.room_id)
    }

    async fn deliver_logged(
        &self,
        notice: &Notice,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivered, DeliveryError> {
        let m = chat(&self.renderer, notice);
        let body = serde_json::to_vec(&json!({
            "msgtype": "m.text",
            "body": m.text(),
            "format": "org.matrix.custom.html",
            "formatted_body": formatted(&m),
        }))
        .map_err(|e| DeliveryError::notice(format!("can't encode the message: {e}")))?;
        let target = self
            .homeserver
            .join(&self.path(notice))
            .map_err(|e| DeliveryError::notice(e.to_string()))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.access_token))
            .map_err(|_| DeliveryError::notice("the access token can't be sent in a header"))?;
        auth.set_sensitive(true);
        let req = Outgoing {
            method: hyper::Method::PUT,
            target,
            headers: vec![
                (
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                ),
                (hyper::header::AUTHORIZATION, auth),
            ],
            body: body.into(),
        };
        let r = http_deliver(&self.client, req, log).await;
        // Matrix says how long to wait in the body of a 429.
        r.map_err(|mut e| {
            if e.retry_after.is_none() {
                e.retry_after = retry_after_ms(&e.message);
            }
            e
        })
    }
}

/// `"retry_after_ms": 2000` in an answer quoted in an error.
fn retry_after_ms(text: &str) -> Option<Duration> {
    let at = text.find("retry_after_ms")?;
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_encoded_in_the_path() {
        assert_eq!(segment("!abc:example.org"), "%21abc%3Aexample.org");
        assert_eq!(
            retry_after_ms("answered 429 Too Many Requests: {\"errcode\":\"M_LIMIT_EXCEEDED\",\"retry_after_ms\": 2500}"),
            Some(Duration::from_millis(2500))
        );
    }
}
