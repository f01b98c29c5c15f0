//! Configuration: the TOML file as written, read with
//! `deny_unknown_fields`. This module only reads the file into these types;
//! [`crate::plan`] validates them (every error names the file, the field and
//! what is wrong, before any socket is bound) and compiles them into the
//! plan the rest of cidguard runs on.
//!
//! Secrets (SIP and SMTP passwords, API tokens) are [`Secret`]s: they may be
//! inline, but can always come from an environment variable, a file, or a
//! systemd credential instead, and they never print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use crate::secret::{Secret, SecretSource};
pub use crate::sip::Transport;

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
    /// Self-test numbers anyone in the organisation can call (`[selftest]`).
    #[serde(default)]
    pub selftest: Option<SelfTest>,
    /// Phones people in the organisation call from (`[[device]]`): their
    /// numbers are protected like the organisation's, and each may have
    /// its own self-test number and reminders.
    #[serde(rename = "device", default)]
    pub devices: Vec<Device>,
}

/// The dashboard's settings (`[dashboard]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

/// How a line reaches the PBX.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// Once the line's side of a test call has ended, how long the check
    /// still waits for the endpoint to report the call (a PBX or carrier
    /// may deliver it late). A call not seen by then makes the check
    /// inconclusive.
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    Duration::from_secs(5)
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

// `[alerts]` and its channels: a unit of their own.
mod alerts;
pub use alerts::*;

/// Problems in `[dashboard]` (part of [`crate::plan::problems`]).
pub(crate) fn dashboard_problems(d: &Dashboard, bad: &mut dyn FnMut(String, String)) {
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
    /// The field at fault, as written in the file (`line[0] (a).umbrella`).
    pub field: String,
    /// What is wrong with it, and how to write it instead.
    pub message: String,
}

impl Config {
    /// Read and parse a config file, as written. Not yet validated: the
    /// checks that need the verdict engine, SIP and the schedules are
    /// [`crate::plan::problems`], and [`crate::plan::Plan::load`] does both.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parse TOML text, as written (unknown fields and wrong types are
    /// refused here; everything else by [`crate::plan::problems`]); `path`
    /// is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    pub fn line(&self, name: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.name == name)
    }
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
        crate::plan::problems(&cfg)
    }

    fn dashboard_problems_for(section: &str) -> Vec<String> {
        let text = format!(
            "[organisation]\nname = \"Org\"\nregion = \"AU\"\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n[dashboard]\n{section}\n"
        );
        let cfg: Config = toml::from_str(&text).unwrap();
        crate::plan::problems(&cfg)
            .into_iter()
            .map(|p| p.field)
            .collect()
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
}

/// `[selftest]`: numbers anyone in the organisation can call, from any
/// phone, to hear whether its caller ID is hidden. The call is judged like
/// a test call and the result is played back as early media before the
/// call is rejected, so it is never answered (see [`crate::selftest`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    /// The self-test numbers: DIDs the provider or PBX routes to the
    /// endpoint, like `endpoint.numbers`, but not the same numbers.
    pub numbers: Vec<String>,
    /// What a call to them must present: `withheld` (the default) or
    /// `umbrella`.
    #[serde(default = "default_selftest_expect")]
    pub expect: Expect,
    /// Required when `expect = "umbrella"`.
    #[serde(default)]
    pub umbrella: Option<Umbrella>,
    /// A folder of the organisation's own recordings (8 kHz mono 16-bit
    /// WAV, named as [`crate::media::prompts`] lists); the built-in voice
    /// for any it doesn't have. `org-name.wav` and `umbrella-name.wav` let
    /// the names be spoken.
    #[serde(default)]
    pub prompts: Option<PathBuf>,
    /// Final response after the message has played (4xx-6xx): the call is
    /// never answered.
    #[serde(default = "default_reject_code")]
    pub reject_code: u16,
}

fn default_selftest_expect() -> Expect {
    Expect::Withheld
}

/// A phone people in the organisation call from (`[[device]]`): a
/// worker's mobile, a DECT handset. Its numbers must never be shown either;
/// its owner tests it by calling a self-test number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Short unique name (letters, digits, '-', '_', '.'), used in the
    /// history as the call-in's "line" and in alerts.
    pub name: String,
    /// Who carries it: a contact e-mail address, sent its reminders.
    pub owner: String,
    /// The device's own numbers, in any written form: protected like the
    /// organisation's, and how a call-in is told to be from it.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// What its calls must present (`withheld`, the default, or
    /// `umbrella`).
    #[serde(default = "default_selftest_expect")]
    pub expect: Expect,
    /// Required when `expect = "umbrella"`.
    #[serde(default)]
    pub umbrella: Option<Umbrella>,
    /// Its own self-test number: a call to it is this device's check,
    /// judged with its expectation, wherever it comes from.
    #[serde(default)]
    pub selftest_number: Option<String>,
    /// Remind the owner to call when the device has had no call-in for
    /// this long (`30d`); needs `selftest_number`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub remind_every: Option<Duration>,
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}
