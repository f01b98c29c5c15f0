//! Delivering one alert: an SMTP dialogue driven step by step (so a failure
//! says which server and which step, and `cidguard alert test` can show the
//! whole dialogue), or an `.eml` file written by lettre's file transport.
//!
//! The SMTP password is only ever inside lettre's credentials: it is never
//! formatted, logged, or put in an error.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};

use crate::config::{Alerts, SmtpSecurity};

use super::AlertKind;

/// One email to send: what the email channel made of a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// What it is about (the `X-Cidguard-Alert` header).
    pub kind: AlertKind,
    /// Who gets it.
    pub recipients: Vec<String>,
    /// One line.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
    /// The Message-ID is derived from it: the same key gives the same id,
    /// so a copy sent twice can be folded by mail clients.
    pub id_key: String,
    /// When the alert was decided (ms since the Unix epoch): the Date.
    pub created_at_ms: i64,
}

/// Problems found while setting the mailer up from the config.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("alerts: no transport: add [alerts.smtp] or [alerts.file]")]
    NoTransport,
    #[error("alerts.from: {value:?} is not an email address: {message}")]
    From { value: String, message: String },
    #[error("alerts.smtp.password: {0}")]
    Password(String),
    #[error("alerts.smtp.ca_file: can't read {}: {source}", path.display())]
    CaFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("alerts.smtp.ca_file: {} holds no usable PEM certificate: {source}", path.display())]
    CaFileParse {
        path: PathBuf,
        source: lettre::transport::smtp::Error,
    },
    #[error("alerts.smtp: can't set up TLS for {host}: {source}")]
    Tls {
        host: String,
        source: lettre::transport::smtp::Error,
    },
}

/// One step of an SMTP dialogue and the server's reply (or what happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogueStep {
    /// `connect`, `STARTTLS`, `AUTH`, `MAIL FROM`, `RCPT TO <a@b>`, `DATA`.
    pub step: String,
    pub reply: String,
}

/// A recipient the server refused (the others still got the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub recipient: String,
    pub reply: String,
}

/// The server (or the folder) took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The final reply: `250 2.0.0 Ok: queued as 4F2`, or the file written.
    pub reply: String,
    pub refused: Vec<Refusal>,
}

/// Which part of sending failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Build,
    /// TCP connect, implicit TLS handshake, greeting and EHLO.
    Connect,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    WriteFile,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Build => "building the message",
            Step::Connect => "connect (TCP, TLS, greeting, EHLO)",
            Step::StartTls => "STARTTLS",
            Step::Auth => "AUTH",
            Step::MailFrom => "MAIL FROM",
            Step::RcptTo => "RCPT TO",
            Step::Data => "DATA",
            Step::WriteFile => "writing the .eml file",
        })
    }
}

/// A send that did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("can't build the email: {0}")]
    Build(String),
    #[error("{server}: {step} failed: {source}")]
    Smtp {
        server: String,
        step: Step,
        source: lettre::transport::smtp::Error,
    },
    #[error("{server}: {step} timed out after {}s", after.as_secs_f32())]
    Timeout {
        server: String,
        step: Step,
        after: Duration,
    },
    #[error("{server}: {step}: {message}")]
    Refused {
        server: String,
        step: Step,
        message: String,
    },
    #[error("{}: {step} failed: {source}", dir.display())]
    File {
        dir: PathBuf,
        step: Step,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SendError {
    /// What went wrong without the server and step (the dialogue already
    /// shows those).
    fn short(&self) -> String {
        match self {
            SendError::Smtp { source, .. } => source.to_string(),
            SendError::Timeout { after, .. } => {
                format!("no answer within {}s", after.as_secs_f32())
            }
            SendError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The server (or folder) could not be used at all, so every other
    /// alert would fail the same way right now: connection, TLS, login.
    /// Otherwise the failure is about this message (a refused recipient).
    pub fn is_server_level(&self) -> bool {
        match self {
            SendError::Build(_) => false,
            SendError::Smtp { step, .. }
            | SendError::Timeout { step, .. }
            | SendError::Refused { step, .. } => {
                matches!(step, Step::Connect | Step::StartTls | Step::Auth)
            }
            SendError::File { .. } => true,
        }
    }
}

#[derive(Clone)]
struct SmtpSettings {
    host: String,
    port: u16,
    security: SmtpSecurity,
    username: Option<String>,
    credentials: Option<Credentials>,
    tls: Option<TlsParameters>,
    hello: ClientId,
    timeout: Duration,
}

#[derive(Clone)]
enum Transport {
    Smtp(Box<SmtpSettings>),
    File(PathBuf),
}

/// Sends rendered alerts. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("via", &self.describe())
            .finish()
    }
}

impl Mailer {
    /// From a validated `[alerts]` section. Reads the SMTP password (env,
    /// file or credential) and the CA file now, so a mistake shows at start.
    pub fn from_config(a: &Alerts) -> Result<Mailer, MailerError> {
        Mailer::from_settings(&a.from, a.smtp.as_ref(), a.file.as_ref())
    }

    /// From a sender and a transport (an email channel's own, or
    /// `[alerts]`'s).
    pub fn from_settings(
        from: &str,
        smtp: Option<&crate::config::Smtp>,
        file: Option<&crate::config::MailFiles>,
    ) -> Result<Mailer, MailerError> {
        let from: Mailbox = from.parse().map_err(|e| MailerError::From {
            value: from.to_string(),
            message: format!("{e}"),
        })?;
        let transport = match (smtp, file) {
            (Some(s), _) => {
                let credentials = match (&s.username, &s.password) {
                    (Some(u), Some(p)) => Some(Credentials::new(
                        u.clone(),
                        p.reveal().map_err(MailerError::Password)?,
                    )),
                    _ => None,
                };
                let tls = match s.security {
                    SmtpSecurity::Plain => None,
                    SmtpSecurity::Starttls | SmtpSecurity::Tls => {
                        let mut b = TlsParameters::builder(s.host.clone());
                        if let Some(path) = &s.ca_file {
                            let pem =
                                std::fs::read(path).map_err(|source| MailerError::CaFileRead {
                                    path: path.clone(),
                                    source,
                                })?;
                            let cert = Certificate::from_pem(&pem).map_err(|source| {
                                MailerError::CaFileParse {
                                    path: path.clone(),
                                    source,
                                }
                            })?;
                            b = b.add_root_certificate(cert);
                        }
                        Some(b.build_rustls().map_err(|source| MailerError::Tls {
                            host: s.host.clone(),
                            source,
                        })?)
                    }
                };
                let hello = s
                    .helo_name
                    .clone()
                    .map_or_else(ClientId::default, ClientId::Domain);
                Transport::Smtp(Box::new(SmtpSettings {
                    host: s.host.clone(),
                    port: s.port(),
                    security: s.security,
                    username: s.username.clone(),
                    credentials,
                    tls,
                    hello,
                    timeout: s.timeout,
                }))
            }
            (None, Some(f)) => Transport::File(f.dir.clone()),
            (None, None) => return Err(MailerError::NoTransport),
        };
        Ok(Mailer { from, transport })
    }

    /// `smtp 127.0.0.1:587 (STARTTLS, as alice)` or `.eml files in /dir`.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(s) => format!(
                "smtp {}:{} ({}{})",
                s.host,
                s.port,
                s.security,
                s.username
                    .as_deref()
                    .map_or(String::new(), |u| format!(", as {u}"))
            ),
            Transport::File(dir) => format!(".eml files in {}", dir.display()),
        }
    }

    /// The email as it will be sent. The Message-ID is derived from the
    /// notice's key, so a copy sent twice (see the sender's at-least-once
    /// note) carries the same id and mail clients can fold the two.
    pub fn build_message(&self, alert: &OutgoingEmail) -> Result<Message, SendError> {
        if alert.recipients.is_empty() {
            return Err(SendError::Build("the alert has no recipients".into()));
        }
        let domain = self.from.email.domain().to_string();
        let digest = Sha256::digest(alert.id_key.as_bytes());
        let id: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject.clone())
            .message_id(Some(format!("<cidguard.{id}@{domain}>")))
            .date(
                UNIX_EPOCH + Duration::from_millis(u64::try_from(alert.created_at_ms).unwrap_or(0)),
            )
            // RFC 3834: auto-responders must not answer an alert.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Cidguard-Alert"),
                alert.kind.as_str().into(),
            ));
        for r in &alert.recipients {
            let mbox: Mailbox = r
                .parse()
                .map_err(|e| SendError::Build(format!("recipient {r:?}: {e}")))?;
            b = b.to(mbox);
        }
        b.multipart(MultiPart::alternative_plain_html(
            alert.text.clone(),
            alert.html.clone(),
        ))
        .map_err(|e| SendError::Build(e.to_string()))
    }

    /// Send one alert.
    pub async fn send(&self, alert: &OutgoingEmail) -> Result<Delivery, SendError> {
        let mut log = Vec::new();
        self.send_logged(alert, &mut log).await
    }

    /// Send one alert, recording each step of the dialogue in `log`.
    pub async fn send_logged(
        &self,
        alert: &OutgoingEmail,
        log: &mut Vec<DialogueStep>,
    ) -> Result<Delivery, SendError> {
        let message = self.build_message(alert)?;
        match &self.transport {
            Transport::Smtp(s) => smtp_dialogue(s, &message, log).await,
            Transport::File(dir) => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| SendError::File {
                        dir: dir.clone(),
                        step: Step::WriteFile,
                        source: Box::new(e),
                    })?;
                let t = AsyncFileTransport::<Tokio1Executor>::new(dir);
                let id = t.send(message).await.map_err(|e| SendError::File {
                    dir: dir.clone(),
                    step: Step::WriteFile,
                    source: Box::new(e),
                })?;
                let reply = format!("written to {}", dir.join(format!("{id}.eml")).display());
                log.push(DialogueStep {
                    step: "write".into(),
                    reply: reply.clone(),
                });
                Ok(Delivery {
                    reply,
                    refused: Vec::new(),
                })
            }
        }
    }
}

fn reply_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" / "))
}

async fn step<T, F>(s: &SmtpSettings, server: &str, which: Step, fut: F) -> Result<T, SendError>
where
    F: std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
{
    match tokio::time::timeout(s.timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SendError::Smtp {
            server: server.to_string(),
            step: which,
            source,
        }),
        Err(_) => Err(SendError::Timeout {
            server: server.to_string(),
            step: which,
            after: s.timeout,
        }),
    }
}

/// connect → (STARTTLS) → (AUTH) → MAIL FROM → RCPT TO each → DATA → QUIT.
async fn smtp_dialogue(
    s: &SmtpSettings,
    message: &Message,
    log: &mut Vec<DialogueStep>,
) -> Result<Delivery, SendError> {
    let server = format!("SMTP server {}:{}", s.host, s.port);
    let implicit = match s.security {
        SmtpSecurity::Tls => s.tls.clone(),
        _ => None,
    };
    let mut conn = step(
        s,
        &server,
        Step::Connect,
        AsyncSmtpConnection::connect_tokio1(
            (s.host.as_str(), s.port),
            Some(s.timeout),
            &s.hello,
            implicit,
            None,
        ),
    )
    .await
    .inspect_err(|e| {
        log.push(DialogueStep {
            step: "connect".into(),
            reply: format!("failed: {}", e.short()),
        })
    })?;
    log.push(DialogueStep {
        step: "connect".into(),
        reply: format!(
            "connected{}; EHLO answered by {}",
            if s.security == SmtpSecurity::Tls {
                " with TLS"
            } else {
                ""
            },
            conn.server_info().name()
        ),
    });

    let result = dialogue_after_connect(s, &server, &mut conn, message, log).await;
    // QUIT only after success. After a failed step the connection may be
    // unusable (a failed STARTTLS leaves lettre's stream empty, and writing
    // to it panics); dropping it closes the socket.
    if result.is_ok() {
        let _ = tokio::time::timeout(s.timeout, conn.quit()).await;
    }
    result
}

async fn dialogue_after_connect(
    s: &SmtpSettings,
    server: &str,
    conn: &mut AsyncSmtpConnection,
    message: &Message,
    log: &mut Vec<DialogueStep>,
) -> Result<Delivery, SendError> {
    let fail = |log: &mut Vec<DialogueStep>, name: &str, e: SendError| {
        log.push(DialogueStep {
            step: name.into(),
            reply: format!("failed: {}", e.short()),
        });
        e
    };

    if s.security == SmtpSecurity::Starttls {
        if !conn.server_info().supports_feature(Extension::StartTls) {
            return Err(fail(
                log,
                "STARTTLS",
                SendError::Refused {
                    server: server.into(),
                    step: Step::StartTls,
                    message: "the server does not offer STARTTLS, and security = \"starttls\" requires it (the message was not sent in clear)".into(),
                },
            ));
        }
        let Some(tls) = s.tls.clone() else {
            return Err(SendError::Build("no TLS parameters".into()));
        };
        step(s, server, Step::StartTls, conn.starttls(tls, &s.hello))
            .await
            .map_err(|e| fail(log, "STARTTLS", e))?;
        log.push(DialogueStep {
            step: "STARTTLS".into(),
            reply: "encrypted; EHLO again".into(),
        });
    }

    if let (Some(creds), Some(user)) = (&s.credentials, &s.username) {
        let r = step(s, server, Step::Auth, conn.auth(DEFAULT_MECHANISMS, creds))
            .await
            .map_err(|e| fail(log, "AUTH", e))?;
        log.push(DialogueStep {
            step: "AUTH".into(),
            reply: format!("{} (as {user})", reply_text(&r)),
        });
    }

    let envelope = message.envelope();
    let body = message.formatted();
    let mut params = Vec::new();
    if !body.is_ascii() {
        // The builder encodes parts as 7-bit; this is only a safety net.
        if conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        } else {
            return Err(SendError::Build(
                "the message is not 7-bit and the server lacks 8BITMIME".into(),
            ));
        }
    }
    let r = step(
        s,
        server,
        Step::MailFrom,
        conn.command(Mail::new(envelope.from().cloned(), params)),
    )
    .await
    .map_err(|e| fail(log, "MAIL FROM", e))?;
    log.push(DialogueStep {
        step: "MAIL FROM".into(),
        reply: reply_text(&r),
    });

    let mut refused = Vec::new();
    let mut accepted = 0usize;
    for to in envelope.to() {
        let name = format!("RCPT TO <{to}>");
        match step(
            s,
            server,
            Step::RcptTo,
            conn.command(Rcpt::new(to.clone(), vec![])),
        )
        .await
        {
            Ok(r) => {
                accepted += 1;
                log.push(DialogueStep {
                    step: name,
                    reply: reply_text(&r),
                });
            }
            // A refused recipient must not keep the alert from the others.
            Err(SendError::Smtp { source, .. })
                if source.is_permanent() || source.is_transient() =>
            {
                log.push(DialogueStep {
                    step: name,
                    reply: format!("refused: {source}"),
                });
                refused.push(Refusal {
                    recipient: to.to_string(),
                    reply: source.to_string(),
                });
            }
            Err(e) => return Err(fail(log, &name, e)),
        }
    }
    if accepted == 0 {
        return Err(SendError::Refused {
            server: server.into(),
            step: Step::RcptTo,
            message: format!(
                "every recipient was refused: {}",
                refused
                    .iter()
                    .map(|r| format!("{} ({})", r.recipient, r.reply))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }

    let r = step(s, server, Step::Data, conn.command(Data))
        .await
        .map_err(|e| fail(log, "DATA", e))?;
    log.push(DialogueStep {
        step: "DATA".into(),
        reply: reply_text(&r),
    });
    let r = step(s, server, Step::Data, conn.message(&body))
        .await
        .map_err(|e| fail(log, "message", e))?;
    let reply = reply_text(&r);
    log.push(DialogueStep {
        step: "message".into(),
        reply: reply.clone(),
    });
    Ok(Delivery { reply, refused })
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
