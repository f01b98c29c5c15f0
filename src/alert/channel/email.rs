//! The email channel: the alert email as it always was (subject, text and
//! HTML parts from [`Renderer::email`]), through SMTP or `.eml` files.
//!
//! The `email` channel made of `[alerts]`'s own settings keeps the
//! Message-IDs it always had (derived from the notice's key); another email
//! channel derives them from the key and its name, so two mailboxes never
//! get the same id for different copies.

use async_trait::async_trait;

use crate::config::{AlertChannel, Alerts, ChannelKind};

use super::super::mailer::{DialogueStep, Mailer, OutgoingEmail};
use super::super::notice::{Facts, Notice};
use super::super::render::Renderer;
use super::{Channel, ChannelSetupError, Delivered, DeliveryError, Subscription};

/// Email through one transport to one list of recipients.
#[derive(Debug)]
pub struct EmailChannel {
    /// The channel's name.
    name: String,
    /// The `email` channel of `[alerts]` itself.
    implicit: bool,
    /// Sender and transport.
    mailer: Mailer,
    /// Renders the email (with this channel's recipients and masking).
    renderer: Renderer,
    /// The notices it gets.
    subscription: Subscription,
}

impl EmailChannel {
    /// `[alerts]`'s own email settings, as the channel `email`.
    pub fn implicit(alerts: &Alerts, base: &Renderer) -> Result<EmailChannel, ChannelSetupError> {
        let mailer = Mailer::from_config(alerts).map_err(|e| ChannelSetupError {
            field: "alerts".into(),
            message: e.to_string(),
        })?;
        Ok(EmailChannel {
            name: Alerts::EMAIL.to_string(),
            implicit: true,
            mailer,
            renderer: base.clone(),
            subscription: Subscription::all(),
        })
    }

    /// An `[[alerts.channel]]` of kind email; sender and transport default
    /// to `[alerts]`'s.
    pub fn configured(
        alerts: &Alerts,
        i: usize,
        c: &AlertChannel,
        renderer: Renderer,
    ) -> Result<EmailChannel, ChannelSetupError> {
        let from = c.from.as_deref().unwrap_or(&alerts.from);
        let (smtp, file) = match (&c.smtp, &c.file) {
            (None, None) => (alerts.smtp.as_ref(), alerts.file.as_ref()),
            (s, f) => (s.as_ref(), f.as_ref()),
        };
        let mailer = Mailer::from_settings(from, smtp, file).map_err(|e| ChannelSetupError {
            field: format!("alerts.channel[{i}] ({})", c.name),
            message: e.to_string(),
        })?;
        Ok(EmailChannel {
            name: c.name.clone(),
            implicit: false,
            mailer,
            renderer,
            subscription: Subscription::of(c),
        })
    }

    /// The recipients (for the test report).
    pub fn recipients(&self) -> &[String] {
        self.renderer.recipients()
    }

    /// The email of a notice, as it will be sent.
    pub fn outgoing(&self, n: &Notice) -> OutgoingEmail {
        let email = self.renderer.email(n);
        let recipients = match &n.facts {
            Facts::LegacyEmail { recipients, .. } => recipients.clone(),
            // Addressed to the device's owner, with the usual recipients.
            Facts::DeviceReminder { owner, .. } => {
                let mut r = self.renderer.recipients().to_vec();
                if !r.iter().any(|x| x.eq_ignore_ascii_case(owner)) {
                    r.insert(0, owner.clone());
                }
                r
            }
            _ => self.renderer.recipients().to_vec(),
        };
        OutgoingEmail {
            kind: n.kind,
            recipients,
            subject: email.subject,
            text: email.text,
            html: email.html,
            id_key: if self.implicit {
                n.key.clone()
            } else {
                format!("{}:{}", n.key, self.name)
            },
            created_at_ms: n.at.timestamp_millis(),
        }
    }
}

#[async_trait]
impl Channel for EmailChannel {
    channel_basics!(ChannelKind::Email);

    fn describe(&self) -> String {
        self.mailer.describe()
    }

    async fn deliver_logged(
        &self,
        notice: &Notice,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivered, DeliveryError> {
        let out = self.outgoing(notice);
        match self.mailer.send_logged(&out, log).await {
            Ok(d) => {
                for r in &d.refused {
                    tracing::warn!(
                        channel = %self.name,
                        recipient = %r.recipient,
                        reply = %crate::escape::control(&r.reply),
                        "alert recipient refused; sent to the others"
                    );
                }
                Ok(Delivered {
                    answer: d.reply,
                    refused: d.refused,
                })
            }
            Err(e) => Err(DeliveryError {
                message: e.to_string(),
                channel_down: e.is_server_level(),
                retry_after: None,
            }),
        }
    }
}
