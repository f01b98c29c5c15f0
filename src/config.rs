//! Configuration: a TOML file, read with `deny_unknown_fields`, then validated
//! into something the rest of cidguard can trust. Every error names the file,
//! the field and what is wrong, and is reported before any socket is bound.
//!
//! Secrets (SIP and SMTP passwords, API tokens) are [`Secret`]s: they may be
//! inline, but can always come from an environment variable, a file, or a
//! systemd credential instead, and they never print.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::verdict::numbers::{NumberError, NumberSet};
use crate::verdict::{LineSpec, OrgSpec, Policy, UmbrellaSpec};

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub organisation: Organisation,
    /// Where test calls are received. Optional so a config that is only used
    /// with `inspect` stays small.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    #[serde(rename = "line", default)]
    pub lines: Vec<Line>,
    /// Email alerts; without this section the daemon sends none.
    #[serde(default)]
    pub alerts: Option<Alerts>,
    /// `cidguard run`: history, schedules, maintenance. All optional.
    #[serde(default)]
    pub daemon: Daemon,
    /// The web dashboard and JSON API, served by `cidguard run` when present.
    #[serde(default)]
    pub dashboard: Option<Dashboard>,
}

/// The dashboard's settings (`[dashboard]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Address to listen on. Loopback by default: the pages name lines and
    /// show captured calls, so exposing them is a deliberate choice.
    #[serde(default = "default_dashboard_listen")]
    pub listen: String,
    /// Bearer token needed for anything that changes state (run-now,
    /// maintenance windows); without it those are refused.
    #[serde(default)]
    pub token: Option<Secret>,
    /// When true, reading pages and the API needs the token too.
    #[serde(default)]
    pub read_auth: bool,
    /// The address people reach the dashboard at (behind a proxy), for links.
    #[serde(default)]
    pub public_url: Option<String>,
}

impl Default for Dashboard {
    fn default() -> Dashboard {
        Dashboard {
            listen: default_dashboard_listen(),
            token: None,
            read_auth: false,
            public_url: None,
        }
    }
}

fn default_dashboard_listen() -> String {
    "127.0.0.1:8080".into()
}

/// The daemon's settings (`[daemon]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    /// Where the history database lives. `$STATE_DIRECTORY` (set by systemd
    /// from `StateDirectory=`) takes precedence; see [`Daemon::state_dir`].
    #[serde(default = "default_state_dir", rename = "state_dir")]
    pub configured_state_dir: PathBuf,
    /// IANA time zone the schedules and maintenance times are read in.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Cron schedule for lines without their own (5 fields, or 6 with
    /// seconds first).
    #[serde(default = "default_schedule")]
    pub default_schedule: String,
    /// Each scheduled check starts at a random delay up to this long after
    /// its time, so lines (and several sites) don't all call at once.
    #[serde(default = "default_jitter", deserialize_with = "de_duration")]
    pub jitter: Duration,
    /// How long captured messages are kept; verdicts are kept for good.
    #[serde(
        default = "default_evidence_retention",
        deserialize_with = "de_duration"
    )]
    pub evidence_retention: Duration,
    /// How often each PBX is asked for its software version.
    #[serde(default = "default_pbx_poll", deserialize_with = "de_duration")]
    pub pbx_poll: Duration,
    /// On stop, how long checks in progress may take to finish before they
    /// are recorded as interrupted.
    #[serde(default = "default_grace", deserialize_with = "de_duration")]
    pub grace: Duration,
    /// A check still running after this long is abandoned and recorded as
    /// inconclusive, so one stuck call can't stop the others.
    #[serde(default = "default_check_timeout", deserialize_with = "de_duration")]
    pub check_timeout: Duration,
    /// Planned work on the phone system: checks still run and are recorded,
    /// alerts are held until the window ends.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
}

impl Default for Daemon {
    fn default() -> Daemon {
        Daemon {
            configured_state_dir: default_state_dir(),
            time_zone: default_time_zone(),
            default_schedule: default_schedule(),
            jitter: default_jitter(),
            evidence_retention: default_evidence_retention(),
            pbx_poll: default_pbx_poll(),
            grace: default_grace(),
            check_timeout: default_check_timeout(),
            maintenance: Vec::new(),
        }
    }
}

impl Daemon {
    /// The state directory: the first entry of `$STATE_DIRECTORY` when
    /// systemd sets it, else `state_dir` from the file.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir_with(std::env::var_os("STATE_DIRECTORY"))
    }

    /// [`Daemon::state_dir`] with the environment value given.
    pub fn state_dir_with(&self, env: Option<std::ffi::OsString>) -> PathBuf {
        // systemd joins several StateDirectory= entries with ':'.
        env.and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| self.configured_state_dir.clone())
    }

    /// The configured time zone (UTC if it can't be read; `problems()`
    /// reports that).
    pub fn tz(&self) -> chrono_tz::Tz {
        crate::daemon::schedule::parse_time_zone(&self.time_zone).unwrap_or(chrono_tz::Tz::UTC)
    }
}

/// A planned maintenance window. Times are RFC 3339 with an offset
/// (`2025-06-01T22:00:00+10:00`) or local to `daemon.time_zone`
/// (`2025-06-01 22:00`), quoted or as TOML date-times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    #[serde(deserialize_with = "de_time_text")]
    pub start: String,
    #[serde(deserialize_with = "de_time_text")]
    pub end: String,
    #[serde(default)]
    pub reason: Option<String>,
}

impl MaintenanceWindow {
    /// The window as UTC instants, reading local times in `tz`.
    pub fn resolve(
        &self,
        tz: chrono_tz::Tz,
    ) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), String> {
        Ok((parse_time(&self.start, tz)?, parse_time(&self.end, tz)?))
    }
}

/// Read a date-time: RFC 3339 with an offset, or a local time in `tz`
/// (`2025-06-01 22:00`, `2025-06-01T22:00:00`). A local time in a DST gap
/// is refused; one that happens twice means the earlier.
pub fn parse_time(text: &str, tz: chrono_tz::Tz) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::TimeZone;
    let t = text.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&chrono::Utc));
    }
    let naive = ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
        .ok_or_else(|| {
            format!("{t:?} is not a date and time (write \"2025-06-01 22:00\" or \"2025-06-01T22:00:00+10:00\")")
        })?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok_or_else(|| format!("{t:?} does not exist in {tz} (a daylight saving gap)"))
}

fn de_time_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Toml(toml::value::Datetime),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Text(s) => s,
        Raw::Toml(t) => t.to_string(),
    })
}

/// Who must never be identified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// The organisation's real name (also matched as a name, with `names`).
    pub name: String,
    /// ISO 3166 region used to read national-format numbers (`AU`, `GB`, `US`).
    pub region: String,
    /// Numbers and ranges (`+61 3 7010 0100-0199`) that must never be shown.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Names and words that must never be shown; matched as whole phrases.
    #[serde(default)]
    pub names: Vec<String>,
    /// Domains and IP addresses that identify the organisation.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Phrases that reveal what kind of service is calling ("shelter",
    /// "DV"), matched like names on every line; added to the built-in list.
    #[serde(default)]
    pub descriptors: Vec<String>,
    /// Whether the built-in English descriptors apply as well (default
    /// true); false leaves only `descriptors`.
    #[serde(default = "default_true")]
    pub default_descriptors: bool,
}

/// What a line must present: the verdict engine's own type.
pub use crate::verdict::Expect;

/// The identity a line may show instead of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Umbrella {
    pub name: String,
    /// Numbers the umbrella may present; empty means the number must be withheld.
    #[serde(default)]
    pub numbers: Vec<String>,
}

/// One organisational line to be tested.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Short unique name used on the command line, in logs and alerts.
    pub name: String,
    pub expect: Expect,
    /// Required when `expect = "umbrella"`.
    #[serde(default)]
    pub umbrella: Option<Umbrella>,
    /// The line's SIP account on the PBX. A line without one can be
    /// inspected but not called.
    #[serde(default)]
    pub account: Option<Account>,
    /// Cron schedule for this line (`daemon.default_schedule` when absent).
    #[serde(default)]
    pub schedule: Option<String>,
}

// The verdict engine takes plain inputs and knows nothing of the config
// file; this is the one place the config's types become them.

impl From<&Organisation> for OrgSpec {
    fn from(o: &Organisation) -> OrgSpec {
        OrgSpec {
            name: o.name.clone(),
            names: o.names.clone(),
            numbers: o.numbers.clone(),
            hosts: o.hosts.clone(),
            region: o.region.clone(),
            descriptors: o.descriptors.clone(),
            default_descriptors: o.default_descriptors,
        }
    }
}

impl From<&Line> for LineSpec {
    fn from(l: &Line) -> LineSpec {
        LineSpec {
            name: l.name.clone(),
            expect: l.expect,
            umbrella: l.umbrella.as_ref().map(|u| UmbrellaSpec {
                name: u.name.clone(),
                numbers: u.numbers.clone(),
            }),
        }
    }
}

impl Policy {
    /// Policies for every line of a validated config, in its order. Here
    /// rather than in the verdict engine, which doesn't depend on the
    /// config.
    pub fn for_config(cfg: &Config) -> Result<Vec<Policy>, NumberError> {
        let lines: Vec<LineSpec> = cfg.lines.iter().map(LineSpec::from).collect();
        Policy::for_lines(&OrgSpec::from(&cfg.organisation), &lines)
    }
}

/// SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// How a line reaches the PBX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The PBX (registrar and proxy), as a SIP URI or host[:port]:
    /// `sip:pbx.example.org:5060`.
    pub registrar: String,
    /// Send requests here instead of to the registrar (an SBC, say).
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    #[serde(default)]
    pub transport: Transport,
    /// The extension / account name (the user part of the AOR).
    pub username: String,
    /// Digest username when it differs from `username`.
    #[serde(default)]
    pub auth_username: Option<String>,
    pub password: Secret,
    /// From user part, when the PBX wants something other than `username`.
    #[serde(default)]
    pub from_user: Option<String>,
    /// From host, when the PBX wants something other than the registrar host.
    #[serde(default)]
    pub from_domain: Option<String>,
    /// Register before calling (some PBXs refuse calls from unregistered lines).
    #[serde(default = "default_true")]
    pub register: bool,
    /// Requested registration lifetime.
    #[serde(default = "default_register_expiry", deserialize_with = "de_duration")]
    pub register_expiry: Duration,
    /// Prefix dialled before the endpoint's number (`1831`, `*67`).
    #[serde(default)]
    pub dial_prefix: Option<String>,
    /// Give up (CANCEL) when nothing final arrives within this time.
    #[serde(default = "default_ring_timeout", deserialize_with = "de_duration")]
    pub ring_timeout: Duration,
}

/// How a call that arrives at the endpoint is matched to the call placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Matching {
    /// One endpoint number, one call at a time, matched by a random hold time.
    #[default]
    Timing,
    /// Several endpoint numbers, one per call in flight.
    Numbers,
    /// Answered, matched by a token sent as RFC 4733 events in the media.
    Media,
}

/// cidguard's own receiving side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Sockets to listen on: `udp:127.0.0.1:5080`, `tcp:[::1]:5080`, `tls:0.0.0.0:5061`.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Numbers / user parts that test calls are dialled to. Calls to anything
    /// else get 404 and are logged as stray.
    pub numbers: Vec<String>,
    /// What the lines dial to reach a number above, when it differs from the
    /// number itself (e.g. the PBX routes `9` + number to a trunk). `{number}`
    /// is replaced with the endpoint number.
    #[serde(default)]
    pub dial: Option<String>,
    #[serde(default)]
    pub matching: Matching,
    /// TLS certificate chain and key (PEM), needed for a `tls:` listener.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Final response sent to a test call that is not answered.
    #[serde(default = "default_reject_code")]
    pub reject_code: u16,
    /// Shortest and longest random hold before rejecting (timing matching).
    #[serde(default = "default_hold_min", deserialize_with = "de_duration")]
    pub hold_min: Duration,
    #[serde(default = "default_hold_max", deserialize_with = "de_duration")]
    pub hold_max: Duration,
    /// How long a check waits for its call to arrive.
    #[serde(default = "default_arrival_timeout", deserialize_with = "de_duration")]
    pub arrival_timeout: Duration,
    /// Register the endpoint at a SIP provider as the DID the lines call.
    #[serde(default)]
    pub register: Option<EndpointRegistration>,
    /// Addresses or CIDR blocks (IPv4 and IPv6) the endpoint answers at all:
    /// the provider's and the PBX's. From anywhere else nothing is answered,
    /// not even an error. Empty (the default): every address is answered.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// The endpoint's own registration at a provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRegistration {
    pub registrar: String,
    #[serde(default)]
    pub transport: Transport,
    pub username: String,
    #[serde(default)]
    pub auth_username: Option<String>,
    pub password: Secret,
    #[serde(default = "default_register_expiry", deserialize_with = "de_duration")]
    pub expiry: Duration,
}

fn default_true() -> bool {
    true
}
fn default_register_expiry() -> Duration {
    Duration::from_secs(600)
}
fn default_ring_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_listen() -> Vec<String> {
    vec!["udp:127.0.0.1:5080".into()]
}
fn default_reject_code() -> u16 {
    486
}
fn default_hold_min() -> Duration {
    Duration::from_millis(1500)
}
fn default_hold_max() -> Duration {
    Duration::from_millis(6000)
}
fn default_arrival_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cidguard")
}
fn default_time_zone() -> String {
    "UTC".into()
}
fn default_schedule() -> String {
    "0 * * * *".into()
}
fn default_jitter() -> Duration {
    Duration::from_secs(30)
}
fn default_evidence_retention() -> Duration {
    Duration::from_secs(90 * 86400)
}
fn default_pbx_poll() -> Duration {
    Duration::from_secs(300)
}
fn default_grace() -> Duration {
    Duration::from_secs(20)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(180)
}

/// `[alerts]`: who is told, when, and how the email leaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Addresses that receive every alert.
    pub recipients: Vec<String>,
    /// The sender: `cidguard <cidguard@example.org>` or a bare address.
    pub from: String,
    /// The dashboard's base URL; each alert links to
    /// `<dashboard_url>/checks/<id>`. No link when unset.
    #[serde(default)]
    pub dashboard_url: Option<String>,
    /// Show only the last two digits of the organisation's numbers in
    /// emails (`+•• • •••• ••42`): mail is forwarded and read on shared
    /// screens.
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
    #[serde(
        default = "default_intermittent_window",
        deserialize_with = "de_duration"
    )]
    pub intermittent_window: Duration,
    /// First retry delay after a failed send; doubles up to `retry_max`.
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Send through an SMTP server...
    #[serde(default)]
    pub smtp: Option<Smtp>,
    /// ...or write `.eml` files to a folder (demo mode, tests).
    #[serde(default)]
    pub file: Option<MailFiles>,
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
    pub host: String,
    /// Defaults to 587 (starttls), 465 (tls) or 25 (plain).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Log in with this user (AUTH PLAIN or LOGIN) when set.
    #[serde(default)]
    pub username: Option<String>,
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

/// Is this host name or address the local machine? Plain SMTP with a
/// password is only allowed there: anywhere else the password would cross
/// the network in clear.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn alerts_problems(a: &Alerts, bad: &mut dyn FnMut(String, String)) {
    use lettre::message::Mailbox;
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
    if let Err(e) = a.from.parse::<Mailbox>() {
        bad(
            "alerts.from".into(),
            format!(
                "{:?} is not an email address (write \"cidguard <cidguard@example.org>\"): {e}",
                a.from
            ),
        );
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
    match (&a.smtp, &a.file) {
        (None, None) => bad(
            "alerts".into(),
            "say how to send: an [alerts.smtp] table, or [alerts.file] for .eml files".into(),
        ),
        (Some(_), Some(_)) => bad(
            "alerts".into(),
            "give either [alerts.smtp] or [alerts.file], not both".into(),
        ),
        (Some(s), None) => {
            if s.host.trim().is_empty() || s.host.contains(char::is_whitespace) {
                bad(
                    "alerts.smtp.host".into(),
                    format!("{:?} is not a host name or address", s.host),
                );
            }
            if s.port == Some(0) {
                bad("alerts.smtp.port".into(), "must not be 0".into());
            }
            match (&s.username, &s.password) {
                (Some(_), None) => bad(
                    "alerts.smtp.password".into(),
                    "a username needs a password (prefer { env = \"VAR\" })".into(),
                ),
                (None, Some(_)) => bad(
                    "alerts.smtp.username".into(),
                    "a password is given but no username".into(),
                ),
                (Some(u), Some(p)) => {
                    if u.trim().is_empty() {
                        bad("alerts.smtp.username".into(), "must not be empty".into());
                    }
                    if let Err(m) = p.check_shape() {
                        bad("alerts.smtp.password".into(), m);
                    }
                    if s.security == SmtpSecurity::Plain && !is_loopback_host(&s.host) {
                        bad(
                            "alerts.smtp.security".into(),
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
                    bad(
                        "alerts.smtp.helo_name".into(),
                        format!("{h:?} is not a host name"),
                    );
                }
            }
            if s.timeout.is_zero() {
                bad(
                    "alerts.smtp.timeout".into(),
                    "must be more than zero".into(),
                );
            }
        }
        (None, Some(f)) => {
            if f.dir.as_os_str().is_empty() {
                bad("alerts.file.dir".into(), "must name a folder".into());
            }
        }
    }
}

fn dashboard_problems(d: &Dashboard, bad: &mut dyn FnMut(String, String)) {
    if d.listen.parse::<std::net::SocketAddr>().is_err() {
        bad(
            "dashboard.listen".into(),
            format!(
                "{:?} is not an address and port, e.g. \"127.0.0.1:8080\"",
                d.listen
            ),
        );
    }
    match &d.token {
        Some(t) => {
            if let Err(m) = t.check_shape() {
                bad("dashboard.token".into(), m);
            } else if let Secret::Inline(s) = t {
                if s.trim().len() < 16 {
                    bad(
                        "dashboard.token".into(),
                        "must be at least 16 characters (a random string)".into(),
                    );
                }
            }
        }
        None if d.read_auth => bad(
            "dashboard.read_auth".into(),
            "needs dashboard.token: reading would require a token that isn't set".into(),
        ),
        None => {}
    }
    if let Some(u) = &d.public_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            bad(
                "dashboard.public_url".into(),
                format!("{u:?} must start with http:// or https://"),
            );
        }
    }
}

/// A secret value. Written in TOML as an inline string, or as a table
/// `{ env = "VAR" }`, `{ file = "/path" }` or `{ credential = "name" }`
/// (a systemd credential, read from `$CREDENTIALS_DIRECTORY/name`).
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    Inline(String),
    Source(SecretSource),
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub credential: Option<String>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(inline, redacted)"),
            Secret::Source(s) => f
                .debug_struct("Secret")
                .field("env", &s.env)
                .field("file", &s.file)
                .field("credential", &s.credential)
                .finish(),
        }
    }
}

impl Secret {
    /// Read the secret. The error says where it was looked for, never what it is.
    pub fn reveal(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::Source(src) => {
                if let Some(var) = &src.env {
                    return std::env::var(var)
                        .map_err(|_| format!("environment variable {var} is not set"));
                }
                if let Some(path) = &src.file {
                    return read_secret_file(path);
                }
                if let Some(name) = &src.credential {
                    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                        format!("credential {name:?} asked for, but CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)")
                    })?;
                    return read_secret_file(&Path::new(&dir).join(name));
                }
                Err("no env, file or credential given".into())
            }
        }
    }

    fn check_shape(&self) -> Result<(), String> {
        match self {
            Secret::Inline(_) => Ok(()),
            Secret::Source(s) => {
                let n =
                    s.env.is_some() as u8 + s.file.is_some() as u8 + s.credential.is_some() as u8;
                if n == 1 {
                    Ok(())
                } else {
                    Err("give exactly one of env, file or credential".into())
                }
            }
        }
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| format!("can't read secret file {}: {e}", path.display()))
}

/// Parse a duration written as `500ms`, `2s`, `5m`, `1h`, `30d`, or a bare
/// number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 2s, 5m, 1h, 30d)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
    }
}

/// A configuration problem: which file, which field, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("can't read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl ConfigError {
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A single validation problem, before the file path is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parse and validate TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if let Some(p) = cfg.problems().into_iter().next() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: p.field,
                message: p.message,
            });
        }
        Ok(cfg)
    }

    /// Every semantic problem in the config, in file order.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: String, message: String| out.push(Problem { field, message });
        if let Some(d) = &self.dashboard {
            dashboard_problems(d, &mut bad);
        }
        let tz = crate::daemon::schedule::parse_time_zone(&self.daemon.time_zone);
        let org = &self.organisation;
        if org.name.trim().is_empty() {
            bad("organisation.name".into(), "must not be empty".into());
        }
        if crate::verdict::numbers::region_id(&org.region).is_none() {
            bad(
                "organisation.region".into(),
                format!(
                    "{:?} is not a known ISO 3166 region code (e.g. AU, GB, US)",
                    org.region
                ),
            );
        } else {
            for (i, n) in org.numbers.iter().enumerate() {
                if let Err(e) = NumberSet::parse_one(n, &org.region) {
                    bad(
                        format!("organisation.numbers[{i}]"),
                        describe_number_error(n, &e),
                    );
                }
            }
        }
        for (i, n) in org.names.iter().enumerate() {
            if crate::verdict::names::normalise(n).is_empty() {
                bad(
                    format!("organisation.names[{i}]"),
                    "has no letters or digits".into(),
                );
            }
        }
        for (i, d) in org.descriptors.iter().enumerate() {
            if crate::verdict::names::normalise(d).is_empty() {
                bad(
                    format!("organisation.descriptors[{i}]"),
                    "has no letters or digits".into(),
                );
            }
        }
        for (i, h) in org.hosts.iter().enumerate() {
            let h = h.trim();
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                bad(
                    format!("organisation.hosts[{i}]"),
                    format!("{h:?} is not a domain or IP address"),
                );
            }
        }
        if self.lines.is_empty() {
            bad(
                "line".into(),
                "no [[line]] tables: configure at least one line".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, line) in self.lines.iter().enumerate() {
            let f = |s: &str| format!("line[{i}] ({}).{s}", line.name);
            if line.name.trim().is_empty()
                || !line
                    .name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_.".contains(c))
            {
                bad(
                    format!("line[{i}].name"),
                    format!(
                        "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                        line.name
                    ),
                );
            }
            if !seen.insert(line.name.clone()) {
                bad(f("name"), "the same name is used by an earlier line".into());
            }
            match (line.expect, &line.umbrella) {
                (Expect::Umbrella, None) => bad(
                    f("umbrella"),
                    "expect = \"umbrella\" needs umbrella = { name = \"...\" }".into(),
                ),
                (Expect::Withheld, Some(_)) => bad(
                    f("umbrella"),
                    "set only for expect = \"umbrella\"; this line expects withheld".into(),
                ),
                (Expect::Umbrella, Some(u)) => {
                    if crate::verdict::names::normalise(&u.name).is_empty() {
                        bad(f("umbrella.name"), "must not be empty".into());
                    }
                    for (j, n) in u.numbers.iter().enumerate() {
                        if let Err(e) = NumberSet::parse_one(n, &org.region) {
                            bad(
                                f(&format!("umbrella.numbers[{j}]")),
                                describe_number_error(n, &e),
                            );
                        }
                    }
                }
                (Expect::Withheld, None) => {}
            }
            if let Some(acc) = &line.account {
                if let Err(m) = acc.password.check_shape() {
                    bad(f("account.password"), m);
                }
                if acc.registrar.trim().is_empty() {
                    bad(
                        f("account.registrar"),
                        "must name the PBX, e.g. \"sip:pbx.example.org:5060\"".into(),
                    );
                }
                if acc.username.trim().is_empty() {
                    bad(f("account.username"), "must not be empty".into());
                }
                if acc.ring_timeout.is_zero() {
                    bad(f("account.ring_timeout"), "must be more than zero".into());
                }
                if !acc.registrar.trim().is_empty()
                    && crate::sip::uac::registrar_uri_part(&acc.registrar).is_err()
                {
                    bad(
                        f("account.registrar"),
                        format!(
                            "{:?} is not a SIP address (write \"sip:pbx.example.org:5060\" or \"pbx.example.org\")",
                            acc.registrar
                        ),
                    );
                }
                if let Some(p) = acc.dial_prefix.as_deref().filter(|p| !p.trim().is_empty()) {
                    if let Err(e) = crate::verdict::numbers::dial_chars(p) {
                        bad(
                            f("account.dial_prefix"),
                            format!("{p:?} can't be dialled: {e}"),
                        );
                    }
                }
            }
            if let (Some(s), Ok(tz)) = (&line.schedule, &tz) {
                if let Err(e) = crate::daemon::schedule::Schedule::parse(s, *tz) {
                    bad(f("schedule"), e.to_string());
                }
            }
        }
        if let Some(ep) = &self.endpoint {
            if ep.numbers.is_empty() {
                bad(
                    "endpoint.numbers".into(),
                    "list at least one number or user the lines call".into(),
                );
            }
            endpoint_number_problems(self, ep, &mut bad);
            for (i, l) in ep.listen.iter().enumerate() {
                match parse_listen(l) {
                    Err(m) => bad(format!("endpoint.listen[{i}]"), m),
                    Ok((Transport::Tls, _)) if ep.tls_cert.is_none() || ep.tls_key.is_none() => {
                        bad(
                            format!("endpoint.listen[{i}]"),
                            "a tls: listener needs endpoint.tls_cert and endpoint.tls_key".into(),
                        )
                    }
                    Ok(_) => {}
                }
            }
            if !(400..=699).contains(&ep.reject_code) {
                bad(
                    "endpoint.reject_code".into(),
                    format!("{} is not a 4xx-6xx final response", ep.reject_code),
                );
            }
            if ep.hold_min > ep.hold_max {
                bad(
                    "endpoint.hold_min".into(),
                    "is longer than endpoint.hold_max".into(),
                );
            }
            if ep.matching == Matching::Numbers && ep.numbers.len() < 2 {
                bad(
                    "endpoint.matching".into(),
                    "\"numbers\" matching needs at least two endpoint numbers".into(),
                );
            }
            if let Some(r) = &ep.register {
                if let Err(m) = r.password.check_shape() {
                    bad("endpoint.register.password".into(), m);
                }
            }
            for (i, a) in ep.allow.iter().enumerate() {
                if let Err(m) = crate::sip::guard::Cidr::parse(a) {
                    bad(
                        format!("endpoint.allow[{i}]"),
                        format!("{m} (write an address, or a block such as \"203.0.113.0/24\")"),
                    );
                }
            }
        }
        if let Some(a) = &self.alerts {
            alerts_problems(a, &mut bad);
        }
        let d = &self.daemon;
        if d.configured_state_dir.as_os_str().is_empty() {
            bad("daemon.state_dir".into(), "must name a directory".into());
        }
        match &tz {
            Err(m) => bad("daemon.time_zone".into(), m.clone()),
            Ok(tz) => {
                if let Err(e) = crate::daemon::schedule::Schedule::parse(&d.default_schedule, *tz) {
                    bad("daemon.default_schedule".into(), e.to_string());
                }
                for (i, w) in d.maintenance.iter().enumerate() {
                    let start = parse_time(&w.start, *tz);
                    let end = parse_time(&w.end, *tz);
                    if let Err(m) = &start {
                        bad(format!("daemon.maintenance[{i}].start"), m.clone());
                    }
                    if let Err(m) = &end {
                        bad(format!("daemon.maintenance[{i}].end"), m.clone());
                    }
                    if let (Ok(s), Ok(e)) = (start, end) {
                        if e <= s {
                            bad(
                                format!("daemon.maintenance[{i}].end"),
                                "must be after start".into(),
                            );
                        }
                    }
                }
            }
        }
        for (name, v) in [
            ("pbx_poll", d.pbx_poll),
            ("check_timeout", d.check_timeout),
            ("evidence_retention", d.evidence_retention),
        ] {
            if v.is_zero() {
                bad(format!("daemon.{name}"), "must be more than zero".into());
            }
        }
        out
    }

    pub fn line(&self, name: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.name == name)
    }
}

/// Endpoint numbers that can't be dialled, the same number listed twice,
/// and, per line with an account, a Request-URI that can't be built (the
/// field at fault named: the number, `endpoint.dial`, the line's
/// `dial_prefix` or `registrar`).
fn endpoint_number_problems(cfg: &Config, ep: &Endpoint, bad: &mut dyn FnMut(String, String)) {
    use crate::sip::dial::{self, DialError};
    let region = &cfg.organisation.region;
    let known_region = crate::verdict::numbers::region_id(region).is_some();
    let mut keys: Vec<(usize, Vec<String>)> = Vec::new();
    let mut dialable = vec![true; ep.numbers.len()];
    for (i, n) in ep.numbers.iter().enumerate() {
        if let Err(e) = dial::dial_user(n, Some(region)) {
            let hint = match e {
                DialError::Number {
                    source: crate::verdict::numbers::DialableError::Letter(_),
                    ..
                } => " (a SIP user name instead is letters, '-', '_' and '.' only)",
                _ => "",
            };
            bad(format!("endpoint.numbers[{i}]"), format!("{e}{hint}"));
            dialable[i] = false;
            continue;
        }
        let mine = crate::sip::endpoint::delivered_keys(n, known_region.then_some(region.as_str()));
        if let Some((j, _)) = keys
            .iter()
            .find(|(_, k)| k.iter().any(|x| mine.contains(x)))
        {
            bad(
                format!("endpoint.numbers[{i}]"),
                format!(
                    "{n:?} is the same number as endpoint.numbers[{j}] ({:?}): a call to one can't be told from a call to the other",
                    ep.numbers[*j]
                ),
            );
        }
        keys.push((i, mine));
    }
    let mut reported: Vec<String> = Vec::new();
    for (li, line) in cfg.lines.iter().enumerate() {
        let Some(acc) = &line.account else { continue };
        for (i, n) in ep.numbers.iter().enumerate() {
            if !dialable[i] {
                continue;
            }
            let field = |s: &str| format!("line[{li}] ({}).account.{s}", line.name);
            let (f, msg) = match dial::for_line(acc, ep, n, region) {
                Ok(_) => continue,
                // Reported above, with the account's own checks.
                Err(
                    DialError::Number { .. }
                    | DialError::Registrar { .. }
                    | DialError::Prefix { .. },
                ) => continue,
                Err(e @ DialError::PrefixWithoutUser { .. }) => {
                    (field("dial_prefix"), e.to_string())
                }
                Err(e @ DialError::Template { .. }) => ("endpoint.dial".to_string(), e.to_string()),
                Err(e @ DialError::Uri { .. }) => {
                    let f = if ep.dial.is_some() {
                        "endpoint.dial".to_string()
                    } else {
                        field("registrar")
                    };
                    (
                        f,
                        format!("the test call to endpoint.numbers[{i}] would be sent to {e}"),
                    )
                }
            };
            if !reported.contains(&f) {
                reported.push(f.clone());
                bad(f, msg);
            }
        }
    }
}

fn describe_number_error(n: &str, e: &NumberError) -> String {
    format!("{n:?} is not a usable phone number or range: {e}")
}

/// Parse an endpoint listen spec: `udp:127.0.0.1:5080`, `tcp:[::1]:5080`.
pub fn parse_listen(spec: &str) -> Result<(Transport, std::net::SocketAddr), String> {
    let (proto, addr) = spec.split_once(':').ok_or_else(|| {
        format!("{spec:?}: write it as udp:ADDR:PORT, tcp:ADDR:PORT or tls:ADDR:PORT")
    })?;
    let t = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        other => {
            return Err(format!(
                "{spec:?}: unknown transport {other:?} (udp, tcp or tls)"
            ))
        }
    };
    let sa = addr
        .parse()
        .map_err(|_| format!("{spec:?}: {addr:?} is not an IP address and port"))?;
    Ok((t, sa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert!(parse_duration("5 parsecs").is_err());
    }

    fn alerts_problems_for(alerts: &str) -> Vec<Problem> {
        let text = format!(
            "[organisation]\nname = \"Org\"\nregion = \"AU\"\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n[alerts]\n{alerts}\n"
        );
        let cfg: Config = toml::from_str(&text).unwrap();
        cfg.problems()
    }

    fn dashboard_problems_for(section: &str) -> Vec<String> {
        let text = format!(
            "[organisation]\nname = \"Org\"\nregion = \"AU\"\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n[dashboard]\n{section}\n"
        );
        let cfg: Config = toml::from_str(&text).unwrap();
        cfg.problems().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn dashboard_section_defaults_and_validation() {
        let text = "[organisation]\nname = \"Org\"\nregion = \"AU\"\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n[dashboard]\n";
        let cfg: Config = toml::from_str(text).unwrap();
        let d = cfg.dashboard.unwrap();
        assert_eq!(d.listen, "127.0.0.1:8080");
        assert!(!d.read_auth && d.token.is_none());
        assert!(dashboard_problems_for("").is_empty());
        assert_eq!(
            dashboard_problems_for("listen = \"nowhere\""),
            ["dashboard.listen"]
        );
        assert_eq!(
            dashboard_problems_for("token = \"short\""),
            ["dashboard.token"]
        );
        assert_eq!(
            dashboard_problems_for("read_auth = true"),
            ["dashboard.read_auth"]
        );
        assert_eq!(
            dashboard_problems_for("public_url = \"cidguard.example.org\""),
            ["dashboard.public_url"]
        );
        let text = "[organisation]\nname = \"Org\"\nregion = \"AU\"\n[dashboard]\nport = 1\n";
        assert!(
            toml::from_str::<Config>(text).is_err(),
            "unknown fields refused"
        );
    }

    #[test]
    fn alerts_section_defaults_and_validation() {
        let ok = alerts_problems_for(
            "recipients = [\"a@example.org\"]\nfrom = \"cidguard <c@example.org>\"\n[alerts.smtp]\nhost = \"smtp.example.org\"\nusername = \"u\"\npassword = { env = \"SMTP_PW\" }",
        );
        assert!(ok.is_empty(), "{ok:?}");
        let text = "[organisation]\nname = \"Org\"\nregion = \"AU\"\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n[alerts]\nrecipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\n[alerts.smtp]\nhost = \"smtp.example.org\"\n";
        let a = toml::from_str::<Config>(text).unwrap().alerts.unwrap();
        assert_eq!(a.inconclusive_after, 3);
        assert_eq!(a.reminder_every, Duration::from_secs(86400));
        assert!(a.drift && !a.mask_numbers);
        let smtp = a.smtp.unwrap();
        assert_eq!((smtp.security, smtp.port()), (SmtpSecurity::Starttls, 587));

        for (alerts, field) in [
            ("recipients = []\nfrom = \"c@example.org\"\nfile = { dir = \"/tmp\" }", "alerts.recipients"),
            ("recipients = [\"nope\"]\nfrom = \"c@example.org\"\nfile = { dir = \"/tmp\" }", "alerts.recipients[0]"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c\"\nfile = { dir = \"/tmp\" }", "alerts.from"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"", "alerts"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\ndashboard_url = \"javascript:x\"\nfile = { dir = \"/tmp\" }", "alerts.dashboard_url"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\ninconclusive_after = 0\nfile = { dir = \"/tmp\" }", "alerts.inconclusive_after"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\nretry_initial = \"1h\"\nretry_max = \"1m\"\nfile = { dir = \"/tmp\" }", "alerts.retry_max"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\nfile = { dir = \"/tmp\" }\n[alerts.smtp]\nhost = \"x\"", "alerts"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\n[alerts.smtp]\nhost = \"smtp.example.org\"\nusername = \"u\"", "alerts.smtp.password"),
            ("recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\n[alerts.smtp]\nhost = \"smtp.example.org\"\nsecurity = \"plain\"\nusername = \"u\"\npassword = \"p\"", "alerts.smtp.security"),
        ] {
            let p = alerts_problems_for(alerts);
            assert!(p.iter().any(|p| p.field == field), "{alerts}: expected {field}, got {p:?}");
        }
        // Plain with a password is fine to a relay on this host.
        let p = alerts_problems_for(
            "recipients = [\"a@example.org\"]\nfrom = \"c@example.org\"\n[alerts.smtp]\nhost = \"127.0.0.1\"\nport = 25\nsecurity = \"plain\"\nusername = \"u\"\npassword = \"p\"",
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn secret_debug_never_shows_value() {
        let s = Secret::Inline("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
