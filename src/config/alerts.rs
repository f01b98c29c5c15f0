//! `[alerts]`: when to tell people, and the channels that tell them.
//!
//! The email settings directly in `[alerts]` (`recipients`, `from`,
//! `[alerts.smtp]` or `[alerts.file]`) are the email channel named `email`,
//! as before channels existed. `[[alerts.channel]]` entries add more:
//! another mailbox, a signed webhook, ntfy, Microsoft Teams, Slack, Matrix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{de_duration, default_true, Secret};

/// `[alerts]`: who is told, when, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Addresses that receive every alert through the `email` channel.
    /// Optional when `[[alerts.channel]]` entries say where alerts go.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The sender: `cidguard <cidguard@example.org>` or a bare address.
    /// Email channels without their own `from` use it too.
    #[serde(default)]
    pub from: String,
    /// The dashboard's base URL; each alert links to
    /// `<dashboard_url>/checks/<id>`. No link when unset.
    #[serde(default)]
    pub dashboard_url: Option<String>,
    /// Show only the last two digits of the organisation's numbers in
    /// emails (`+•• • •••• ••42`): mail is forwarded and read on shared
    /// screens. Channels that are not email mask by default whatever this
    /// says (see [`AlertChannel::mask_numbers`]).
    #[serde(default)]
    pub mask_numbers: bool,
    /// Consecutive inconclusive results before a "can't test" alert.
    #[serde(default = "default_inconclusive_after")]
    pub inconclusive_after: u32,
    /// How often to remind while a line keeps failing; `0` for never.
    #[serde(default = "default_reminder_every", deserialize_with = "de_duration")]
    pub reminder_every: Duration,
    /// Tell when a passing line's identity headers change shape.
    #[serde(default = "default_true")]
    pub drift: bool,
    /// Leaks whose confirming re-check passed, within
    /// `intermittent_window`, that count as an (intermittent) leak: with the
    /// default 2, a second unconfirmed leak alerts at once. `0` never alerts
    /// on unconfirmed leaks; `1` alerts on every failed check without
    /// waiting for the re-check.
    #[serde(default = "default_intermittent_after")]
    pub intermittent_after: u32,
    /// How far back unconfirmed leaks are counted for `intermittent_after`.
    #[serde(
        default = "default_intermittent_window",
        deserialize_with = "de_duration"
    )]
    pub intermittent_window: Duration,
    /// First retry delay after a failed send; doubles up to `retry_max`.
    /// Every channel retries on its own schedule.
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    /// The longest wait between two attempts of one delivery.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Send through an SMTP server...
    #[serde(default)]
    pub smtp: Option<Smtp>,
    /// ...or write `.eml` files to a folder (demo mode, tests).
    #[serde(default)]
    pub file: Option<MailFiles>,
    /// More channels (`[[alerts.channel]]`), each with its own name, kind,
    /// settings and choice of notices.
    #[serde(default, rename = "channel")]
    pub channels: Vec<AlertChannel>,
}

impl Alerts {
    /// The name of the email channel made of `[alerts]`'s own settings.
    pub const EMAIL: &'static str = "email";

    /// Whether `[alerts]`'s own email settings make a channel: always
    /// without `[[alerts.channel]]` (as before channels existed), else only
    /// when recipients or a transport are given.
    pub fn has_implicit_email(&self) -> bool {
        self.channels.is_empty()
            || !self.recipients.is_empty()
            || self.smtp.is_some()
            || self.file.is_some()
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465).
    Tls,
    /// No encryption: only for a relay on the same host (port 25).
    Plain,
}

impl SmtpSecurity {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Plain => 25,
        }
    }
}

impl fmt::Display for SmtpSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SmtpSecurity::Starttls => "STARTTLS",
            SmtpSecurity::Tls => "implicit TLS",
            SmtpSecurity::Plain => "plain, unencrypted",
        })
    }
}

/// `[alerts.smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// The server's host name or address.
    pub host: String,
    /// Defaults to 587 (starttls), 465 (tls) or 25 (plain).
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is secured.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Log in with this user (AUTH PLAIN or LOGIN) when set.
    #[serde(default)]
    pub username: Option<String>,
    /// The login's password (prefer `{ env = "VAR" }` or a file).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Extra CA certificates (PEM) to trust for the server, for a relay with
    /// a private CA. The bundled public roots are trusted as well.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name sent in EHLO; defaults to this host's name.
    #[serde(default)]
    pub helo_name: Option<String>,
    /// Limit for connecting and for each step of the SMTP dialogue.
    #[serde(default = "default_smtp_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Smtp {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }
}

/// `[alerts.file]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailFiles {
    /// Folder the `.eml` files are written to (created when missing).
    pub dir: PathBuf,
}

/// What a channel delivers through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// An email (SMTP or `.eml` files), like `[alerts]`'s own.
    Email,
    /// A signed JSON POST to any HTTP endpoint.
    Webhook,
    /// A push notification through an ntfy topic.
    Ntfy,
    /// A Microsoft Teams Workflows webhook (an Adaptive Card).
    Teams,
    /// A Slack incoming webhook.
    Slack,
    /// A message into a Matrix room.
    Matrix,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Teams => "teams",
            ChannelKind::Slack => "slack",
            ChannelKind::Matrix => "matrix",
        }
    }

    /// A chat or push channel: read on phones and in shared rooms, so
    /// numbers are masked unless the channel says otherwise.
    pub fn is_chat(self) -> bool {
        !matches!(self, ChannelKind::Email | ChannelKind::Webhook)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The notices a channel can ask for (`notices = [...]`).
pub const NOTICE_KINDS: [&str; 7] = [
    "leak",
    "resolved",
    "cant-test",
    "reminder",
    "drift",
    "maintenance-summary",
    "device-reminder",
];

/// Notices whose priority an ntfy channel can set (`priority = {...}`).
const PRIORITY_KINDS: [&str; 8] = [
    "leak",
    "resolved",
    "cant-test",
    "reminder",
    "drift",
    "maintenance-summary",
    "test",
    "device-reminder",
];

/// One `[[alerts.channel]]` entry. Which settings apply depends on `kind`;
/// `config check` names any that don't.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertChannel {
    /// Unique; used in logs, the outbox and `cidguard alert test --channel`.
    pub name: String,
    /// What it delivers through.
    pub kind: ChannelKind,
    /// The notices it gets: `leak`, `resolved`, `cant-test`, `reminder`,
    /// `drift`, `maintenance-summary`. All of them when absent. A
    /// maintenance summary also goes to a channel that asked for any kind
    /// of notice it summarises.
    #[serde(default)]
    pub notices: Option<Vec<String>>,
    /// Show only the last two digits of phone numbers. Default: on for
    /// every kind but email (which follows `alerts.mask_numbers`).
    #[serde(default)]
    pub mask_numbers: Option<bool>,
    /// webhook, teams, slack: the URL posted to; ntfy: the topic URL
    /// (`https://ntfy.sh/mytopic`). A secret in itself for Slack and Teams
    /// (and an ntfy topic is a password), so `{ env = "VAR" }` works here.
    #[serde(default)]
    pub url: Option<Secret>,
    /// webhook: the key of the `X-Cidguard-Signature` HMAC-SHA256.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// ntfy: an access token, sent as `Authorization: Bearer`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// matrix: the homeserver's base URL (`https://matrix.example.org`).
    #[serde(default)]
    pub homeserver: Option<String>,
    /// matrix: the room's id (`!abcdef:example.org`, not an alias).
    #[serde(default)]
    pub room_id: Option<String>,
    /// matrix: the sending account's access token.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// ntfy: priority (1 to 5) per notice kind, over the defaults (leak 5,
    /// reminder, can't test and maintenance summary 4, the rest 3).
    #[serde(default)]
    pub priority: Option<BTreeMap<String, u8>>,
    /// email: the addresses this channel sends to.
    #[serde(default)]
    pub recipients: Option<Vec<String>>,
    /// email: the sender; default `alerts.from`.
    #[serde(default)]
    pub from: Option<String>,
    /// email: the SMTP server; default `[alerts.smtp]`.
    #[serde(default)]
    pub smtp: Option<Smtp>,
    /// email: `.eml` files instead; default `[alerts.file]`.
    #[serde(default)]
    pub file: Option<MailFiles>,
    /// HTTP kinds: extra CA certificates (PEM) to trust, for a server with
    /// a private CA; the bundled public roots are trusted as well.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// HTTP kinds: the limit for one whole request (connect, TLS, send,
    /// answer).
    #[serde(default = "default_channel_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl AlertChannel {
    /// Whether numbers are masked on this channel.
    pub fn masks(&self, alerts: &Alerts) -> bool {
        self.mask_numbers.unwrap_or(match self.kind {
            ChannelKind::Email => alerts.mask_numbers,
            _ => true,
        })
    }

    /// Whether the channel asked for this notice kind (kebab-case name).
    pub fn wants(&self, kind: &str) -> bool {
        self.notices
            .as_ref()
            .is_none_or(|n| n.iter().any(|k| k == kind))
    }
}

fn default_inconclusive_after() -> u32 {
    3
}
fn default_reminder_every() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_intermittent_after() -> u32 {
    2
}
fn default_intermittent_window() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_channel_timeout() -> Duration {
    Duration::from_secs(15)
}

/// Is this host name or address the local machine? Plain SMTP with a
/// password, and plain HTTP, are only allowed there: anywhere else secrets
/// and alerts would cross the network in clear.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of an `http://` or `https://` URL, and whether it is https;
/// or why the URL can't be used for alerts (https, or http only to this
/// host; no user name or password in it).
pub fn alert_url(url: &str) -> Result<(bool, String), String> {
    let u = url.trim();
    let (https, rest) = if let Some(r) = u.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = u.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("must start with https:// (or http:// to this host)".into());
    };
    if rest.contains(char::is_whitespace) || rest.contains(['"', '<', '>', '\\']) {
        return Err("is not a URL: spaces, quotes or <> in it".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "must not carry a user name or password (use the channel's token or secret settings)"
                .into(),
        );
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, _)) => format!("[{h}]"),
            None => return Err("has an unclosed [ in its host".into()),
        }
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    if host.is_empty() {
        return Err("names no host".into());
    }
    if !https && !is_loopback_host(&host) {
        return Err(format!(
            "is plain http to {host}: use https (http is only for a receiver on this host)"
        ));
    }
    Ok((https, host))
}

pub(crate) fn alerts_problems(a: &Alerts, bad: &mut dyn FnMut(String, String)) {
    use lettre::message::Mailbox;
    if a.has_implicit_email() {
        if a.recipients.is_empty() {
            bad(
                "alerts.recipients".into(),
                "list at least one address to send alerts to".into(),
            );
        }
        for (i, r) in a.recipients.iter().enumerate() {
            if let Err(e) = r.parse::<Mailbox>() {
                bad(
                    format!("alerts.recipients[{i}]"),
                    format!("{r:?} is not an email address: {e}"),
                );
            }
        }
    }
    let email_channel_uses_from = a
        .channels
        .iter()
        .any(|c| c.kind == ChannelKind::Email && c.from.is_none());
    if a.has_implicit_email() || email_channel_uses_from {
        if let Err(e) = a.from.parse::<Mailbox>() {
            bad(
                "alerts.from".into(),
                format!(
                    "{:?} is not an email address (write \"cidguard <cidguard@example.org>\"): {e}",
                    a.from
                ),
            );
        }
    }
    if let Some(u) = &a.dashboard_url {
        let u = u.trim();
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"));
        if rest.is_none_or(|r| {
            r.is_empty() || r.contains(char::is_whitespace) || r.contains(['"', '<', '>'])
        }) {
            bad(
                "alerts.dashboard_url".into(),
                format!("{u:?} is not an http:// or https:// URL"),
            );
        }
    }
    if a.inconclusive_after == 0 {
        bad(
            "alerts.inconclusive_after".into(),
            "must be at least 1".into(),
        );
    }
    if a.retry_initial.is_zero() {
        bad(
            "alerts.retry_initial".into(),
            "must be more than zero".into(),
        );
    }
    if a.retry_max < a.retry_initial {
        bad(
            "alerts.retry_max".into(),
            "is shorter than alerts.retry_initial".into(),
        );
    }
    if a.has_implicit_email() {
        match (&a.smtp, &a.file) {
            (None, None) => bad(
                "alerts".into(),
                "say how to send: an [alerts.smtp] table, or [alerts.file] for .eml files".into(),
            ),
            (Some(_), Some(_)) => bad(
                "alerts".into(),
                "give either [alerts.smtp] or [alerts.file], not both".into(),
            ),
            (Some(s), None) => smtp_problems("alerts.smtp", s, bad),
            (None, Some(f)) => {
                if f.dir.as_os_str().is_empty() {
                    bad("alerts.file.dir".into(), "must name a folder".into());
                }
            }
        }
    }
    let mut names: Vec<&str> = Vec::new();
    if a.has_implicit_email() {
        names.push(Alerts::EMAIL);
    }
    for (i, c) in a.channels.iter().enumerate() {
        channel_problems(a, i, c, &mut names, bad);
    }
}

fn smtp_problems(prefix: &str, s: &Smtp, bad: &mut dyn FnMut(String, String)) {
    let f = |name: &str| format!("{prefix}.{name}");
    if s.host.trim().is_empty() || s.host.contains(char::is_whitespace) {
        bad(
            f("host"),
            format!("{:?} is not a host name or address", s.host),
        );
    }
    if s.port == Some(0) {
        bad(f("port"), "must not be 0".into());
    }
    match (&s.username, &s.password) {
        (Some(_), None) => bad(
            f("password"),
            "a username needs a password (prefer { env = \"VAR\" })".into(),
        ),
        (None, Some(_)) => bad(f("username"), "a password is given but no username".into()),
        (Some(u), Some(p)) => {
            if u.trim().is_empty() {
                bad(f("username"), "must not be empty".into());
            }
            if let Err(m) = p.check_shape() {
                bad(f("password"), m);
            }
            if s.security == SmtpSecurity::Plain && !is_loopback_host(&s.host) {
                bad(
                    f("security"),
                    format!(
                        "\"plain\" with a password would send it unencrypted to {:?}; use \"starttls\" or \"tls\" (plain is for a relay on this host)",
                        s.host
                    ),
                );
            }
        }
        (None, None) => {}
    }
    if let Some(h) = &s.helo_name {
        if h.trim().is_empty() || h.contains(char::is_whitespace) {
            bad(f("helo_name"), format!("{h:?} is not a host name"));
        }
    }
    if s.timeout.is_zero() {
        bad(f("timeout"), "must be more than zero".into());
    }
}

/// The problems of one `[[alerts.channel]]` entry, each field named as
/// `alerts.channel[2] (oncall).url`.
fn channel_problems<'a>(
    a: &Alerts,
    i: usize,
    c: &'a AlertChannel,
    names: &mut Vec<&'a str>,
    bad: &mut dyn FnMut(String, String),
) {
    use lettre::message::Mailbox;
    let f = |name: &str| format!("alerts.channel[{i}] ({}).{name}", c.name);
    let kind = c.kind;
    if c.name.is_empty()
        || c.name.len() > 40
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        bad(
            format!("alerts.channel[{i}].name"),
            format!(
                "{:?} is not a channel name: 1 to 40 letters, digits, '-' or '_'",
                c.name
            ),
        );
    } else if names.contains(&c.name.as_str()) {
        bad(
            f("name"),
            if c.name == Alerts::EMAIL && a.has_implicit_email() {
                "\"email\" is the name of the channel made of [alerts]'s own recipients; choose another".into()
            } else {
                format!("another channel is already called {:?}", c.name)
            },
        );
    } else {
        names.push(&c.name);
    }
    if let Some(notices) = &c.notices {
        if notices.is_empty() {
            bad(
                f("notices"),
                "lists no notice: leave it out for all of them".into(),
            );
        }
        for (j, n) in notices.iter().enumerate() {
            if !NOTICE_KINDS.contains(&n.as_str()) {
                bad(
                    f(&format!("notices[{j}]")),
                    format!(
                        "{n:?} is not a notice; choose from {}",
                        NOTICE_KINDS.join(", ")
                    ),
                );
            }
        }
    }
    // Settings for other kinds are mistakes: say so rather than ignore them.
    let given: [(&str, bool, &[ChannelKind]); 12] = [
        (
            "url",
            c.url.is_some(),
            &[
                ChannelKind::Webhook,
                ChannelKind::Ntfy,
                ChannelKind::Teams,
                ChannelKind::Slack,
            ],
        ),
        ("secret", c.secret.is_some(), &[ChannelKind::Webhook]),
        ("token", c.token.is_some(), &[ChannelKind::Ntfy]),
        ("homeserver", c.homeserver.is_some(), &[ChannelKind::Matrix]),
        ("room_id", c.room_id.is_some(), &[ChannelKind::Matrix]),
        (
            "access_token",
            c.access_token.is_some(),
            &[ChannelKind::Matrix],
        ),
        ("priority", c.priority.is_some(), &[ChannelKind::Ntfy]),
        ("recipients", c.recipients.is_some(), &[ChannelKind::Email]),
        ("from", c.from.is_some(), &[ChannelKind::Email]),
        ("smtp", c.smtp.is_some(), &[ChannelKind::Email]),
        ("file", c.file.is_some(), &[ChannelKind::Email]),
        (
            "ca_file",
            c.ca_file.is_some(),
            &[
                ChannelKind::Webhook,
                ChannelKind::Ntfy,
                ChannelKind::Teams,
                ChannelKind::Slack,
                ChannelKind::Matrix,
            ],
        ),
    ];
    for (field, present, kinds) in given {
        if present && !kinds.contains(&kind) {
            bad(f(field), format!("does not apply to a {kind} channel"));
        }
    }
    let secret = |field: &str, s: &Option<Secret>, bad: &mut dyn FnMut(String, String)| {
        if let Some(s) = s {
            if let Err(m) = s.check_shape() {
                bad(f(field), m);
            }
        }
    };
    secret("url", &c.url, bad);
    secret("secret", &c.secret, bad);
    secret("token", &c.token, bad);
    secret("access_token", &c.access_token, bad);
    if kind != ChannelKind::Email && c.timeout.is_zero() {
        bad(f("timeout"), "must be more than zero".into());
    }
    match kind {
        ChannelKind::Email => {
            match &c.recipients {
                None => bad(
                    f("recipients"),
                    "list the addresses this channel sends to".into(),
                ),
                Some(r) if r.is_empty() => bad(
                    f("recipients"),
                    "list at least one address to send alerts to".into(),
                ),
                Some(r) => {
                    for (j, addr) in r.iter().enumerate() {
                        if let Err(e) = addr.parse::<Mailbox>() {
                            bad(
                                f(&format!("recipients[{j}]")),
                                format!("{addr:?} is not an email address: {e}"),
                            );
                        }
                    }
                }
            }
            if let Some(from) = &c.from {
                if let Err(e) = from.parse::<Mailbox>() {
                    bad(f("from"), format!("{from:?} is not an email address: {e}"));
                }
            }
            match (&c.smtp, &c.file) {
                (Some(_), Some(_)) => bad(f("smtp"), "give either smtp or file, not both".into()),
                (Some(s), None) => smtp_problems(&f("smtp"), s, bad),
                (None, Some(fl)) => {
                    if fl.dir.as_os_str().is_empty() {
                        bad(f("file.dir"), "must name a folder".into());
                    }
                }
                (None, None) => {
                    if a.smtp.is_none() && a.file.is_none() {
                        bad(
                            f("smtp"),
                            "say how to send: an smtp table, or file for .eml files (or [alerts.smtp] for every email channel)".into(),
                        );
                    }
                }
            }
        }
        ChannelKind::Webhook | ChannelKind::Ntfy | ChannelKind::Teams | ChannelKind::Slack => {
            match &c.url {
                None => bad(
                    f("url"),
                    match kind {
                        ChannelKind::Ntfy => "give the topic URL, e.g. \"https://ntfy.sh/your-topic\"",
                        ChannelKind::Teams => "give the Workflows webhook URL (Teams channel, Workflows, \"Send webhook alerts to a channel\")",
                        ChannelKind::Slack => "give the incoming webhook URL (https://hooks.slack.com/services/...)",
                        _ => "give the URL to post to",
                    }
                    .into(),
                ),
                // A URL from env, a file or a credential is checked when the
                // channel starts (config check may run without it).
                Some(Secret::Inline(u)) => {
                    if let Err(m) = alert_url(u) {
                        bad(f("url"), m);
                    } else if kind == ChannelKind::Ntfy {
                        let path = u.trim().splitn(4, '/').nth(3).unwrap_or("");
                        if path.trim_matches('/').is_empty() {
                            bad(
                                f("url"),
                                "names no topic: write the topic URL, e.g. \"https://ntfy.sh/your-topic\"".into(),
                            );
                        }
                    }
                }
                Some(Secret::Source(_)) => {}
            }
            if kind == ChannelKind::Webhook && c.secret.is_none() {
                bad(
                    f("secret"),
                    "a webhook needs a secret to sign its requests with (prefer { env = \"VAR\" })"
                        .into(),
                );
            }
            if let Some(p) = &c.priority {
                for (k, v) in p {
                    if !PRIORITY_KINDS.contains(&k.as_str()) {
                        bad(
                            f(&format!("priority.{k}")),
                            format!("is not a notice; choose from {}", PRIORITY_KINDS.join(", ")),
                        );
                    } else if !(1..=5).contains(v) {
                        bad(
                            f(&format!("priority.{k}")),
                            "must be 1 (min) to 5 (max, urgent)".into(),
                        );
                    }
                }
            }
        }
        ChannelKind::Matrix => {
            match &c.homeserver {
                None => bad(
                    f("homeserver"),
                    "give the homeserver's URL, e.g. \"https://matrix.example.org\"".into(),
                ),
                Some(h) => {
                    if let Err(m) = alert_url(h) {
                        bad(f("homeserver"), m);
                    }
                }
            }
            match &c.room_id {
                None => bad(
                    f("room_id"),
                    "give the room's id (\"!abcdef:example.org\", from the room's settings)".into(),
                ),
                Some(r) => {
                    let ok = r.starts_with('!')
                        && r.len() > 3
                        && r.contains(':')
                        && !r.contains(|ch: char| ch.is_whitespace() || ch.is_control());
                    if !ok {
                        bad(
                            f("room_id"),
                            format!("{r:?} is not a room id: it looks like \"!abcdef:example.org\" (an alias such as #room:server won't do)"),
                        );
                    }
                }
            }
            if c.access_token.is_none() {
                bad(
                    f("access_token"),
                    "give the sending account's access token (prefer { env = \"VAR\" })".into(),
                );
            }
        }
    }
}
