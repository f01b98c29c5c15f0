//! Channels: where notices go. Each renders a [`Notice`] its own way when it
//! delivers it, and says what the far end answered.
//!
//! - [`email`]: today's alert email (SMTP or `.eml` files), unchanged.
//! - [`webhook`]: a JSON POST signed with HMAC-SHA256.
//! - [`ntfy`]: a push notification through an ntfy topic.
//! - [`teams`]: an Adaptive Card through a Teams Workflows webhook.
//! - [`slack`]: a Slack incoming webhook (text and blocks).
//! - [`matrix`]: a message into a Matrix room (client-server API).
//!
//! Every delivery carries a stable id ([`super::notice::delivery_id`]): the
//! webhook's `Idempotency-Key`, the email's Message-ID, the Matrix
//! transaction id. Delivery is at least once at one edge (the far end took
//! it, the process died before the outbox recorded it): the copy sent after
//! the restart has the same id, so a receiver can drop it (Matrix does).

/// The [`Channel`] methods every channel answers the same way, from its
/// own `name`, `subscription` and `renderer` fields: written inside its
/// `impl Channel` with its kind.
macro_rules! channel_basics {
    ($kind:expr) => {
        fn name(&self) -> &str {
            &self.name
        }

        fn kind(&self) -> crate::config::ChannelKind {
            $kind
        }

        fn wants(&self, notice: &crate::alert::notice::Notice) -> bool {
            self.subscription.wants(notice)
        }

        fn masks(&self) -> bool {
            self.renderer.masks()
        }
    };
}

pub mod email;
pub mod hmac;
pub mod http;
pub mod matrix;
pub mod ntfy;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{AlertChannel, Alerts, ChannelKind, Config, Secret};

use super::mailer::DialogueStep;
use super::notice::{Facts, Notice};
use super::render::Renderer;
use super::AlertKind;

/// The far end took the notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// What it answered (`250 2.0.0 Ok: queued as 4F2`, `200 OK: ok`).
    pub answer: String,
    /// Email: recipients the server refused (the others got it).
    pub refused: Vec<super::mailer::Refusal>,
}

/// A delivery that did not go through; it is retried with backoff.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// What went wrong, naming the server and step, never a secret.
    pub message: String,
    /// The channel can't be used at all right now (connection, TLS, login,
    /// a 5xx or 429): the channel's other due notices wait for the backoff
    /// instead of failing the same way one by one.
    pub channel_down: bool,
    /// The far end asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    /// A failure of this notice alone.
    pub fn notice(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            channel_down: false,
            retry_after: None,
        }
    }

    /// A failure of the whole channel.
    pub fn channel(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            channel_down: true,
            retry_after: None,
        }
    }

    /// Same as `channel_down`, named as the SMTP errors name it.
    pub fn is_server_level(&self) -> bool {
        self.channel_down
    }
}

/// Somewhere notices go.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Its unique name (`email`, `oncall`).
    fn name(&self) -> &str;
    /// What it delivers through.
    fn kind(&self) -> ChannelKind;
    /// Whether it asked for this notice.
    fn wants(&self, notice: &Notice) -> bool;
    /// Whether it masks numbers.
    fn masks(&self) -> bool;
    /// Where it delivers, without secrets: `smtp 127.0.0.1:25 (plain,
    /// unencrypted)`, `webhook https://hooks.example.org`.
    fn describe(&self) -> String;
    /// Deliver one notice, rendered for this channel, recording each step
    /// (for `cidguard alert test`).
    async fn deliver_logged(
        &self,
        notice: &Notice,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivered, DeliveryError>;
    /// Deliver one notice.
    async fn deliver(&self, notice: &Notice) -> Result<Delivered, DeliveryError> {
        let mut log = Vec::new();
        self.deliver_logged(notice, &mut log).await
    }
}

/// Which notices a channel gets (`notices = [...]`; all when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Kind names (`leak`); None for all.
    kinds: Option<Vec<String>>,
}

impl Subscription {
    /// Every notice.
    pub fn all() -> Subscription {
        Subscription { kinds: None }
    }

    /// These kinds (kebab-case names).
    pub fn only(kinds: &[&str]) -> Subscription {
        Subscription {
            kinds: Some(kinds.iter().map(|k| k.to_string()).collect()),
        }
    }

    /// As configured.
    pub fn of(c: &AlertChannel) -> Subscription {
        Subscription {
            kinds: c.notices.clone(),
        }
    }

    /// Whether the notice is wanted. A maintenance summary is wanted by a
    /// channel that asked for summaries or for any kind it summarises (a
    /// leak held during the window must still reach a leak-only channel).
    pub fn wants(&self, n: &Notice) -> bool {
        let Some(kinds) = &self.kinds else {
            return true;
        };
        let has = |k: AlertKind| kinds.iter().any(|x| x == k.as_str());
        match (&n.kind, &n.facts) {
            (AlertKind::Test, _) => true,
            (AlertKind::MaintenanceSummary, Facts::MaintenanceSummary { lines }) => {
                has(AlertKind::MaintenanceSummary)
                    || lines
                        .iter()
                        .flat_map(|l| l.held.iter())
                        .any(|h| has(h.kind))
            }
            (k, _) => has(*k),
        }
    }
}

/// A channel as the alert step routes to it: its name and what it wants.
/// Made from the config alone (nothing to read, nothing that can fail), so
/// notices are queued for a channel even while it can't be set up (a secret
/// not readable yet): they wait in the outbox until it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The channel's name.
    pub name: String,
    /// What it wants.
    pub subscription: Subscription,
}

/// Every configured channel's route, in the order of [`from_config`].
pub fn routes(cfg: &Config) -> Vec<Route> {
    let Some(alerts) = &cfg.alerts else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if alerts.has_implicit_email() {
        out.push(Route {
            name: Alerts::EMAIL.to_string(),
            subscription: Subscription::all(),
        });
    }
    out.extend(alerts.channels.iter().map(|c| Route {
        name: c.name.clone(),
        subscription: Subscription::of(c),
    }));
    out
}

/// A channel could not be set up from the config (a secret can't be read,
/// a CA file is unusable, a URL from the environment is not usable).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ChannelSetupError {
    /// The field at fault: `alerts.channel[2] (oncall).url`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Read a secret for a channel, naming the field when it can't be read.
pub(crate) fn reveal(field: &str, s: &Secret) -> Result<String, ChannelSetupError> {
    s.reveal().map_err(|message| ChannelSetupError {
        field: field.to_string(),
        message,
    })
}

/// Read a URL (possibly a secret) and check it as `config check` checks an
/// inline one.
pub(crate) fn url_target(field: &str, s: &Secret) -> Result<http::Target, ChannelSetupError> {
    let url = reveal(field, s)?;
    let err = |message: String| ChannelSetupError {
        field: field.to_string(),
        message,
    };
    crate::config::alert_url(&url).map_err(err)?;
    http::Target::parse(&url).map_err(|e| err(e.to_string()))
}

/// Every channel the config asks for: the `email` channel made of
/// `[alerts]`'s own settings (when there is one), then each
/// `[[alerts.channel]]`, in order. Secrets and CA files are read now, so a
/// mistake shows at start; the first one is the error.
pub fn from_config(
    cfg: &Config,
    config_path: &Path,
) -> Result<Vec<Arc<dyn Channel>>, ChannelSetupError> {
    build_each(cfg, config_path).into_iter().collect()
}

/// Each channel of [`from_config`], or why it can't be set up: the daemon
/// runs the channels it can and keeps the others' notices waiting.
pub fn build_each(
    cfg: &Config,
    config_path: &Path,
) -> Vec<Result<Arc<dyn Channel>, ChannelSetupError>> {
    let Some(alerts) = &cfg.alerts else {
        return Vec::new();
    };
    let base = match Renderer::from_config(cfg, config_path) {
        Ok(r) => r,
        Err(e) => {
            return vec![Err(ChannelSetupError {
                field: "organisation.numbers".into(),
                message: e.to_string(),
            })]
        }
    };
    let mut out: Vec<Result<Arc<dyn Channel>, ChannelSetupError>> = Vec::new();
    if alerts.has_implicit_email() {
        out.push(
            email::EmailChannel::implicit(alerts, &base).map(|c| Arc::new(c) as Arc<dyn Channel>),
        );
    }
    for (i, c) in alerts.channels.iter().enumerate() {
        out.push(one(alerts, i, c, &base));
    }
    out
}

fn one(
    alerts: &Alerts,
    i: usize,
    c: &AlertChannel,
    base: &Renderer,
) -> Result<Arc<dyn Channel>, ChannelSetupError> {
    let field = |name: &str| format!("alerts.channel[{i}] ({}).{name}", c.name);
    let renderer = base.for_channel(c.recipients.clone().unwrap_or_default(), c.masks(alerts));
    let client = || {
        http::Client::new(c.ca_file.as_deref(), c.timeout).map_err(|e| ChannelSetupError {
            field: field("ca_file"),
            message: e.to_string(),
        })
    };
    let missing = |name: &str| ChannelSetupError {
        field: field(name),
        message: "is required".into(),
    };
    Ok(match c.kind {
        ChannelKind::Email => Arc::new(email::EmailChannel::configured(alerts, i, c, renderer)?),
        ChannelKind::Webhook => Arc::new(webhook::Webhook {
            name: c.name.clone(),
            target: url_target(&field("url"), c.url.as_ref().ok_or_else(|| missing("url"))?)?,
            secret: reveal(
                &field("secret"),
                c.secret.as_ref().ok_or_else(|| missing("secret"))?,
            )?,
            client: client()?,
            renderer,
            subscription: Subscription::of(c),
        }),
        ChannelKind::Ntfy => Arc::new(ntfy::Ntfy {
            name: c.name.clone(),
            target: url_target(&field("url"), c.url.as_ref().ok_or_else(|| missing("url"))?)?,
            token: c
                .token
                .as_ref()
                .map(|t| reveal(&field("token"), t))
                .transpose()?,
            priorities: c.priority.clone().unwrap_or_default(),
            client: client()?,
            renderer,
            subscription: Subscription::of(c),
        }),
        ChannelKind::Teams => Arc::new(teams::Teams {
            name: c.name.clone(),
            target: url_target(&field("url"), c.url.as_ref().ok_or_else(|| missing("url"))?)?,
            client: client()?,
            renderer,
            subscription: Subscription::of(c),
        }),
        ChannelKind::Slack => Arc::new(slack::Slack {
            name: c.name.clone(),
            target: url_target(&field("url"), c.url.as_ref().ok_or_else(|| missing("url"))?)?,
            client: client()?,
            renderer,
            subscription: Subscription::of(c),
        }),
        ChannelKind::Matrix => {
            let hs = c
                .homeserver
                .as_deref()
                .ok_or_else(|| missing("homeserver"))?;
            let err = |message: String| ChannelSetupError {
                field: field("homeserver"),
                message,
            };
            crate::config::alert_url(hs).map_err(err)?;
            Arc::new(matrix::Matrix {
                name: c.name.clone(),
                homeserver: http::Target::parse(hs).map_err(|e| err(e.to_string()))?,
                room_id: c.room_id.clone().ok_or_else(|| missing("room_id"))?,
                access_token: reveal(
                    &field("access_token"),
                    c.access_token
                        .as_ref()
                        .ok_or_else(|| missing("access_token"))?,
                )?,
                client: client()?,
                renderer,
                subscription: Subscription::of(c),
            })
        }
    })
}

/// POST a JSON body that a chat service renders (Slack, Teams), with the
/// delivery id as `X-Cidguard-Delivery`, and read its answer as
/// [`http_deliver`] does.
pub(crate) async fn post_chat_json(
    client: &http::Client,
    target: &http::Target,
    delivery: &str,
    body: Vec<u8>,
    log: &mut Vec<DialogueStep>,
) -> Result<Delivered, DeliveryError> {
    use hyper::header::{HeaderName, HeaderValue};
    let req = http::Outgoing {
        method: hyper::Method::POST,
        target: target.clone(),
        headers: vec![
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("x-cidguard-delivery"),
                header_text(delivery),
            ),
        ],
        body: body.into(),
    };
    http_deliver(client, req, log).await
}

/// POST or PUT a body to an HTTP channel and read what it means: 2xx is
/// delivered; 408, 429 and 5xx mean the channel is down for now (retry
/// after `Retry-After` when given); other statuses fail this notice. Each
/// step is logged for `cidguard alert test`.
pub(crate) async fn http_deliver(
    client: &http::Client,
    req: http::Outgoing,
    log: &mut Vec<DialogueStep>,
) -> Result<Delivered, DeliveryError> {
    let step = format!("{} {}", req.method, req.target.origin());
    match client.send(req).await {
        Err(e) => {
            log.push(DialogueStep {
                step,
                reply: format!("failed: {e}"),
            });
            Err(DeliveryError::channel(e.to_string()))
        }
        Ok(a) => {
            let summary = a.summary();
            log.push(DialogueStep {
                step,
                reply: summary.clone(),
            });
            match a.status {
                200..=299 => Ok(Delivered {
                    answer: summary,
                    refused: Vec::new(),
                }),
                408 | 429 | 500..=599 => Err(DeliveryError {
                    message: format!("answered {summary}"),
                    channel_down: true,
                    retry_after: a.retry_after,
                }),
                _ => Err(DeliveryError::notice(format!("answered {summary}"))),
            }
        }
    }
}

/// A header value from our own text: control characters (which HTTP
/// forbids) become spaces; non-ASCII is sent as an RFC 2047 encoded word,
/// which ntfy decodes.
pub(crate) fn header_text(s: &str) -> hyper::header::HeaderValue {
    use base64::Engine as _;
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let v = if clean.is_ascii() {
        clean
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(clean.as_bytes())
        )
    };
    hyper::header::HeaderValue::from_str(&v)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("cidguard"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::notice::{LastKnown, SummaryLine};
    use crate::alert::state::HeldAlert;

    fn notice(kind: AlertKind, facts: Facts) -> Notice {
        Notice {
            key: "k".into(),
            kind,
            line: None,
            check_id: None,
            at: chrono::Utc::now(),
            expected: None,
            link: None,
            facts,
        }
    }

    /// A leak held during a maintenance window reaches a leak-only channel
    /// through the summary; a drift-only one does not get it.
    #[test]
    fn summaries_go_where_their_held_notices_would_have() {
        let held = HeldAlert {
            kind: AlertKind::Leak,
            line: "reception".into(),
            check_id: Some(3),
            at: chrono::Utc::now(),
            notice: None,
            subject: "s".into(),
            text: None,
        };
        let summary = notice(
            AlertKind::MaintenanceSummary,
            Facts::MaintenanceSummary {
                lines: vec![SummaryLine {
                    line: "reception".into(),
                    now: LastKnown::Passing,
                    cant_test: false,
                    held: vec![held],
                    dropped: 0,
                }],
            },
        );
        assert!(Subscription::only(&["leak"]).wants(&summary));
        assert!(!Subscription::only(&["drift"]).wants(&summary));
        assert!(Subscription::only(&["maintenance-summary"]).wants(&summary));
        assert!(Subscription::all().wants(&summary));
        let test = notice(AlertKind::Test, Facts::Test {});
        assert!(Subscription::only(&["drift"]).wants(&test));
    }

    #[test]
    fn header_text_is_always_a_valid_header() {
        assert_eq!(
            header_text("PRIVACY LEAK").to_str().unwrap(),
            "PRIVACY LEAK"
        );
        assert_eq!(header_text("a\r\nb").to_str().unwrap(), "a  b");
        assert_eq!(
            header_text("Women’s").to_str().unwrap(),
            "=?UTF-8?B?V29tZW7igJlz?="
        );
    }
}
