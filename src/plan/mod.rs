//! The plan: the config file validated and compiled once into what every
//! part of cidguard runs on. The time zone, each line's verdict policy,
//! schedule, SIP account and the Request-URIs it dials, the endpoint's SIP
//! settings and matching mode, and the maintenance windows are read here
//! and nowhere else, so no part re-reads a piece of the file with rules of
//! its own.
//!
//! ```text
//!  cidguard.toml ─▶ config::Config (as written) ─▶ problems() ─▶ Plan::compile ─▶ Arc<Plan>
//! ```
//!
//! A plan is immutable. The daemon publishes the plan in force on a
//! `tokio::sync::watch` channel; the checker and the dashboard read it from
//! there, and a reload swaps it whole (a file with a problem is refused and
//! the old plan stays in force).

mod callin;
pub mod dial;
mod problems;
pub mod specs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::{self, Config, ConfigError, Expect, Matching};
use crate::schedule::{parse_time_zone, Schedule};
use crate::sip::endpoint::{normalise_number, EndpointNumber, EndpointSpec};
use crate::sip::transport::parse_listen;
use crate::sip::Account;
use crate::verdict::numbers::NumberError;
use crate::verdict::{LineSpec, OrgSpec, Policy};

pub use callin::{CallInPlan, DevicePlan, Keep, Owner, SELFTEST_LINE};
pub use problems::problems;

/// Every policy the plan holds: one per line, in file order, and the
/// organisation's alone. The one place cidguard builds a verdict
/// [`Policy`].
///
/// The devices' numbers (`[[device]]`) are protected like the
/// organisation's: every policy searches for them, so a line (or a
/// call-in) that shows a worker's mobile number fails.
fn policies(config: &Config) -> Result<(Vec<Policy>, Policy), NumberError> {
    let protected = protected(config);
    let org = OrgSpec::from(&protected.organisation);
    let lines: Vec<LineSpec> = protected.lines.iter().map(LineSpec::from).collect();
    Ok((
        Policy::for_lines(&org, &lines)?,
        Policy::organisation(&org)?,
    ))
}

/// Each line's policy, in file order, as a plan holds them (for benches
/// and tools that judge without compiling a whole plan).
pub fn line_policies(config: &Config) -> Result<Vec<Policy>, NumberError> {
    policies(config).map(|(lines, _)| lines)
}

/// The config with the devices' numbers added to the organisation's.
fn protected(config: &Config) -> Config {
    let mut c = config.clone();
    for d in &config.devices {
        c.organisation.numbers.extend(d.numbers.iter().cloned());
    }
    c
}

/// A validated config, compiled.
#[derive(Debug)]
pub struct Plan {
    /// The file as written, for settings used as they are (the
    /// organisation's name and region, `[daemon]`, `[alerts]`,
    /// `[dashboard]`).
    config: Config,
    /// `daemon.time_zone`: schedules, maintenance times and what people
    /// read are in this zone.
    tz: Tz,
    /// Every line, in file order.
    lines: Vec<LinePlan>,
    /// The organisation's rules alone (no line's presentation rules), for
    /// calls that may come from any line.
    organisation: Policy,
    /// The receiving side, when `[endpoint]` is there.
    endpoint: Option<EndpointPlan>,
    /// `[[daemon.maintenance]]`, resolved to UTC.
    maintenance: Vec<Window>,
    /// The call-in self-test: `[selftest]` and `[[device]]`.
    callin: CallInPlan,
}

/// One line, compiled.
#[derive(Debug)]
pub struct LinePlan {
    /// Its unique name.
    name: String,
    /// What it must present.
    expect: Expect,
    /// The umbrella name it may show (umbrella lines).
    umbrella: Option<String>,
    /// What its calls are judged against.
    policy: Policy,
    /// Its SIP account; None for a line that can be inspected, not called.
    account: Option<Account>,
    /// When it is checked (its own or the default, in the plan's zone);
    /// None for a line without an account.
    schedule: Option<Schedule>,
    /// The Request-URI of its test call to each endpoint number, in
    /// `endpoint.numbers` order; empty when it can't be called.
    targets: Vec<String>,
}

/// The receiving side, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    /// What the SIP endpoint listens on and answers for.
    sip: EndpointSpec,
    /// The endpoint numbers as configured, in order (the lines dial these).
    numbers: Vec<String>,
    /// The self-test numbers the endpoint also answers for (`[selftest]`
    /// and the devices'): never a line's test-call target.
    selftest_numbers: Vec<String>,
    /// How an arrival is matched to the call placed.
    matching: Matching,
    /// Shortest random hold (timing matching), and the hold of the others.
    hold_min: Duration,
    /// Longest random hold.
    hold_max: Duration,
    /// Final response to a test call that is not answered.
    reject_code: u16,
    /// How long a check waits for its call to arrive.
    arrival_timeout: Duration,
}

/// A maintenance window, resolved to UTC: checks still run and are
/// recorded; alerts are held until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// When it opens.
    pub start: DateTime<Utc>,
    /// When it closes (not included).
    pub end: DateTime<Utc>,
    /// Why, as given.
    pub reason: Option<String>,
    /// The stored window's id for a window set through the API; None for
    /// one in the config.
    pub id: Option<i64>,
}

impl Window {
    /// Whether `t` is inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

impl Plan {
    /// Read, validate and compile a config file.
    pub fn load(path: &Path) -> Result<Plan, ConfigError> {
        Plan::compile(Config::load(path)?, path)
    }

    /// Parse, validate and compile TOML text; `path` is only used in
    /// messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Plan, ConfigError> {
        Plan::compile(Config::from_toml(text, path)?, path)
    }

    /// Validate a config as written and compile it. The first problem
    /// found (in file order) refuses it.
    pub fn compile(config: Config, path: &Path) -> Result<Plan, ConfigError> {
        if let Some(p) = problems(&config).into_iter().next() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: p.field,
                message: p.message,
            });
        }
        // Validation has refused everything below can fail on; an error
        // here still names its field rather than panicking.
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let tz = parse_time_zone(&config.daemon.time_zone)
            .map_err(|m| invalid("daemon.time_zone", m))?;
        let (policies, organisation) =
            policies(&config).map_err(|e| invalid("organisation.numbers", e.to_string()))?;
        let region = config.organisation.region.as_str();
        let org = std::sync::Arc::new(
            crate::verdict::OrgMatcher::new(&OrgSpec::from(&protected(&config).organisation))
                .map_err(|e| invalid("organisation.numbers", e.to_string()))?,
        );
        let callin =
            CallInPlan::compile(&config, &org).map_err(|e| invalid("selftest", e.to_string()))?;
        let selftest_numbers: Vec<String> =
            callin.numbers().iter().map(|(n, _)| n.clone()).collect();
        let endpoint = match &config.endpoint {
            Some(ep) => Some(
                EndpointPlan::compile(ep, &selftest_numbers, Some(region))
                    .map_err(|m| invalid("endpoint", m))?,
            ),
            None => None,
        };
        let mut lines = Vec::with_capacity(config.lines.len());
        for (i, (line, policy)) in config.lines.iter().zip(policies).enumerate() {
            let field = |f: &str| format!("line[{i}] ({}).{f}", line.name);
            let account = line.account.as_ref().map(sip_account);
            let schedule = match &line.account {
                None => None,
                Some(_) => {
                    let text = line
                        .schedule
                        .as_deref()
                        .unwrap_or(&config.daemon.default_schedule);
                    Some(
                        Schedule::parse(text, tz)
                            .map_err(|e| invalid(&field("schedule"), e.to_string()))?,
                    )
                }
            };
            let targets = match (&line.account, &config.endpoint) {
                (Some(acc), Some(ep)) => ep
                    .numbers
                    .iter()
                    .map(|n| dial::for_line(acc, ep, n, region))
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(|e| invalid(&field("account"), e.to_string()))?,
                _ => Vec::new(),
            };
            lines.push(LinePlan {
                name: line.name.clone(),
                expect: line.expect,
                umbrella: line.umbrella.as_ref().map(|u| u.name.clone()),
                policy,
                account,
                schedule,
                targets,
            });
        }
        let mut maintenance = Vec::with_capacity(config.daemon.maintenance.len());
        for (i, w) in config.daemon.maintenance.iter().enumerate() {
            let (start, end) = w
                .resolve(tz)
                .map_err(|m| invalid(&format!("daemon.maintenance[{i}]"), m))?;
            maintenance.push(Window {
                start,
                end,
                reason: w.reason.clone(),
                id: None,
            });
        }
        Ok(Plan {
            config,
            tz,
            lines,
            organisation,
            endpoint,
            maintenance,
            callin,
        })
    }

    /// The call-in self-test: `[selftest]`, the devices, their policies
    /// and the prompts.
    pub fn callin(&self) -> &CallInPlan {
        &self.callin
    }

    /// The file as written.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The zone schedules and maintenance times are read in, and times are
    /// shown in.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Every line, in file order.
    pub fn lines(&self) -> &[LinePlan] {
        &self.lines
    }

    /// The line called `name`.
    pub fn line(&self, name: &str) -> Option<&LinePlan> {
        self.lines.iter().find(|l| l.name == name)
    }

    /// What a line must present; withheld for a line the plan doesn't
    /// have (a result for it can then only be inconclusive anyway).
    pub fn expect_of(&self, name: &str) -> Expect {
        self.line(name).map_or(Expect::Withheld, |l| l.expect)
    }

    /// The lines that are checked on a schedule (those with an account),
    /// with their schedules.
    pub fn scheduled(&self) -> impl Iterator<Item = (&LinePlan, &Schedule)> {
        self.lines
            .iter()
            .filter_map(|l| l.schedule.as_ref().map(|s| (l, s)))
    }

    /// The organisation's rules alone, for calls that may come from any
    /// line (`inspect --pcap --org`).
    pub fn organisation_policy(&self) -> &Policy {
        &self.organisation
    }

    /// The receiving side, when configured.
    pub fn endpoint(&self) -> Option<&EndpointPlan> {
        self.endpoint.as_ref()
    }

    /// The configured maintenance windows.
    pub fn maintenance(&self) -> &[Window] {
        &self.maintenance
    }

    /// Where the history lives (`$STATE_DIRECTORY` first).
    pub fn state_dir(&self) -> PathBuf {
        self.config.daemon.state_dir()
    }

    /// The distinct PBXs the lines use, each with one of its lines'
    /// accounts (to ask it what software it runs).
    pub fn pbxs(&self) -> BTreeMap<String, Account> {
        let mut out = BTreeMap::new();
        for a in self.lines.iter().filter_map(|l| l.account.as_ref()) {
            out.entry(a.registrar.clone()).or_insert_with(|| a.clone());
        }
        out
    }

    /// The names of the lines on the PBX `registrar`.
    pub fn lines_on(&self, registrar: &str) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.account.as_ref().is_some_and(|a| a.registrar == registrar))
            .map(|l| l.name.clone())
            .collect()
    }
}

impl LinePlan {
    /// Its unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it must present.
    pub fn expected(&self) -> Expect {
        self.expect
    }

    /// The umbrella name it may show (umbrella lines).
    pub fn umbrella(&self) -> Option<&str> {
        self.umbrella.as_deref()
    }

    /// What its calls are judged against.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Its SIP account, when it can be called.
    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    /// Its schedule, when it is checked on one.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// The Request-URI of its test call to endpoint number `index` (in
    /// `endpoint.numbers` order).
    pub fn target(&self, index: usize) -> Option<&str> {
        self.targets.get(index).map(String::as_str)
    }
}

impl EndpointPlan {
    /// Compile `[endpoint]` with the self-test numbers it also answers
    /// for; `region` reads numbers written nationally.
    pub fn compile(
        ep: &config::Endpoint,
        selftest_numbers: &[String],
        region: Option<&str>,
    ) -> Result<EndpointPlan, String> {
        let mut sip = endpoint_spec(ep, region)?;
        sip.numbers
            .extend(selftest_numbers.iter().map(|n| EndpointNumber {
                number: n.clone(),
                keys: delivered_keys(n, region),
            }));
        Ok(EndpointPlan {
            sip,
            numbers: ep.numbers.clone(),
            selftest_numbers: selftest_numbers.to_vec(),
            matching: ep.matching,
            hold_min: ep.hold_min,
            hold_max: ep.hold_max,
            reject_code: ep.reject_code,
            arrival_timeout: ep.arrival_timeout,
        })
    }

    /// What the SIP endpoint listens on and answers for.
    pub fn sip(&self) -> &EndpointSpec {
        &self.sip
    }

    /// The endpoint numbers as configured, in order.
    pub fn numbers(&self) -> &[String] {
        &self.numbers
    }

    /// The self-test numbers it also answers for, as configured (never a
    /// line's test-call target).
    pub fn selftest_numbers(&self) -> &[String] {
        &self.selftest_numbers
    }

    /// How an arrival is matched to the call placed.
    pub fn matching(&self) -> Matching {
        self.matching
    }

    /// Shortest random hold (and the hold of the other modes).
    pub fn hold_min(&self) -> Duration {
        self.hold_min
    }

    /// Longest random hold.
    pub fn hold_max(&self) -> Duration {
        self.hold_max
    }

    /// Final response to a test call that is not answered.
    pub fn reject_code(&self) -> u16 {
        self.reject_code
    }

    /// How long a check waits for its call to arrive.
    pub fn arrival_timeout(&self) -> Duration {
        self.arrival_timeout
    }
}

/// The SIP endpoint's settings from `[endpoint]`: the listeners read, and
/// each number with every form a PBX may deliver it in (`region` reads
/// national forms; without it only the digits as written and E.164).
pub fn endpoint_spec(ep: &config::Endpoint, region: Option<&str>) -> Result<EndpointSpec, String> {
    let listen = ep
        .listen
        .iter()
        .map(|l| parse_listen(l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EndpointSpec {
        listen,
        numbers: ep
            .numbers
            .iter()
            .map(|n| EndpointNumber {
                number: n.clone(),
                keys: delivered_keys(n, region),
            })
            .collect(),
        tls_cert: ep.tls_cert.clone(),
        tls_key: ep.tls_key.clone(),
        allow: ep.allow.clone(),
        register: ep.register.as_ref().map(|r| Account {
            registrar: r.registrar.clone(),
            outbound_proxy: None,
            transport: r.transport,
            username: r.username.clone(),
            auth_username: r.auth_username.clone(),
            password: r.password.clone(),
            from_user: None,
            from_domain: None,
            register: true,
            register_expiry: r.expiry,
            ring_timeout: Duration::from_secs(30),
        }),
    })
}

/// A line's `[line.account]` as the SIP stack takes it (the dial prefix
/// goes into the line's Request-URIs instead).
pub fn sip_account(a: &config::Account) -> Account {
    Account {
        registrar: a.registrar.clone(),
        outbound_proxy: a.outbound_proxy.clone(),
        transport: a.transport,
        username: a.username.clone(),
        auth_username: a.auth_username.clone(),
        password: a.password.clone(),
        from_user: a.from_user.clone(),
        from_domain: a.from_domain.clone(),
        register: a.register,
        register_expiry: a.register_expiry,
        ring_timeout: a.ring_timeout,
    }
}

/// The normalised forms ([`normalise_number`]) a call to an endpoint number
/// configured as `number` may arrive with: as written, E.164 with or
/// without `+`, and, knowing the region, its national forms
/// ([`crate::verdict::numbers::delivered_forms`]).
pub fn delivered_keys(number: &str, region: Option<&str>) -> Vec<String> {
    let mut keys = vec![normalise_number(number)];
    let forms = match region {
        Some(r) => crate::verdict::numbers::delivered_forms(number, r),
        None => crate::verdict::numbers::dialable(number, None)
            .map(|d| vec![d])
            .unwrap_or_default(),
    };
    for f in forms {
        let k = normalise_number(&f);
        if !k.is_empty() && !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "[organisation]\nname = \"Eastside Women's Refuge\"\nregion = \"AU\"\nnumbers = [\"+61 3 7010 0142\"]\n";

    fn plan(extra: &str) -> Plan {
        let text = format!(
            "{ORG}[daemon]\ntime_zone = \"Australia/Sydney\"\ndefault_schedule = \"0 * * * *\"\n\
[[daemon.maintenance]]\nstart = \"2025-06-01 22:00\"\nend = \"2025-06-02 02:00\"\n\
[endpoint]\nnumbers = [\"+61 3 9999 0001\", \"+61 3 9999 0002\"]\nmatching = \"numbers\"\n\
[[line]]\nname = \"reception\"\nexpect = \"withheld\"\nschedule = \"30 2 * * *\"\n\
[line.account]\nregistrar = \"sip:pbx.example.org\"\nusername = \"201\"\npassword = \"x\"\ndial_prefix = \"1831\"\n\
[[line]]\nname = \"outreach\"\nexpect = \"umbrella\"\numbrella = {{ name = \"Salvation Army\" }}\n\
[line.account]\nregistrar = \"sip:pbx.example.org\"\nusername = \"202\"\npassword = \"x\"\n\
[[line]]\nname = \"inspect-only\"\nexpect = \"withheld\"\n{extra}"
        );
        Plan::from_toml(&text, Path::new("t.toml")).unwrap()
    }

    /// What every part reads is compiled once, here: the zone, each line's
    /// schedule (its own or the default, in the zone), what it dials per
    /// endpoint number, its policy, and the windows in UTC.
    #[test]
    fn a_plan_holds_everything_compiled_once() {
        let p = plan("");
        assert_eq!(p.tz(), chrono_tz::Australia::Sydney);
        let names: Vec<&str> = p.lines().iter().map(LinePlan::name).collect();
        assert_eq!(names, ["reception", "outreach", "inspect-only"]);
        let reception = p.line("reception").unwrap();
        let schedule = reception.schedule().unwrap();
        assert_eq!(
            (schedule.as_str(), schedule.time_zone()),
            ("30 2 * * *", p.tz())
        );
        assert_eq!(
            p.line("outreach").unwrap().schedule().unwrap().as_str(),
            "0 * * * *"
        );
        assert!(p.line("inspect-only").unwrap().schedule().is_none());
        let scheduled: Vec<&str> = p.scheduled().map(|(l, _)| l.name()).collect();
        assert_eq!(scheduled, ["reception", "outreach"]);
        assert_eq!(
            reception.target(0),
            Some("sip:1831+61399990001@pbx.example.org")
        );
        assert_eq!(
            reception.target(1),
            Some("sip:1831+61399990002@pbx.example.org")
        );
        assert_eq!(reception.target(2), None);
        assert!(p.line("inspect-only").unwrap().target(0).is_none());
        assert_eq!(reception.policy().line, "reception");
        assert_eq!(
            p.line("outreach").unwrap().umbrella(),
            Some("Salvation Army")
        );
        assert!(p.organisation_policy().is_organisation_only());
        assert_eq!(p.expect_of("outreach"), Expect::Umbrella);
        assert_eq!(p.expect_of("nobody"), Expect::Withheld);
        // 22:00 in Sydney in June (AEST, +10) is 12:00 UTC.
        assert_eq!(
            p.maintenance()[0].start.to_rfc3339(),
            "2025-06-01T12:00:00+00:00"
        );
        let pbxs = p.pbxs();
        assert_eq!(pbxs.len(), 1);
        assert_eq!(pbxs["sip:pbx.example.org"].username, "201");
        assert_eq!(p.lines_on("sip:pbx.example.org"), ["reception", "outreach"]);
        let ep = p.endpoint().unwrap();
        assert_eq!(ep.matching(), Matching::Numbers);
        assert_eq!(ep.sip().numbers[0].number, "+61 3 9999 0001");
        assert!(ep.sip().numbers[0].keys.contains(&"0399990001".to_string()));
    }

    /// A reload keeps the endpoint running only when its compiled settings
    /// are equal as values: the same file is, a changed password (which a
    /// comparison of printed settings could not see) or region is not.
    #[test]
    fn endpoint_plans_are_compared_as_values() {
        let register = "[endpoint.register]\nregistrar = \"sip:provider.example\"\nusername = \"did\"\npassword = \"one\"\n";
        let with = |extra: &str| {
            let text = format!(
                "{ORG}[endpoint]\nnumbers = [\"+61 3 9999 0001\"]\n{extra}[[line]]\nname = \"l\"\nexpect = \"withheld\"\n"
            );
            Plan::from_toml(&text, Path::new("t.toml")).unwrap()
        };
        let a = with(register);
        assert_eq!(a.endpoint(), with(register).endpoint());
        assert_ne!(
            a.endpoint(),
            with(&register.replace("\"one\"", "\"two\"")).endpoint()
        );
        let nz = Plan::from_toml(
            &format!(
                "{}[endpoint]\nnumbers = [\"+61 3 9999 0001\"]\n{register}[[line]]\nname = \"l\"\nexpect = \"withheld\"\n",
                ORG.replace("\"AU\"", "\"NZ\"")
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_ne!(a.endpoint(), nz.endpoint());
    }

    /// A file with a problem is refused with its first problem's field, and
    /// nothing is compiled.
    #[test]
    fn a_file_with_a_problem_is_refused_naming_the_field() {
        let text = format!("{ORG}[daemon]\ntime_zone = \"Mars/Olympus\"\n[[line]]\nname = \"l\"\nexpect = \"withheld\"\n");
        match Plan::from_toml(&text, Path::new("t.toml")) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "daemon.time_zone"),
            other => panic!("{other:?}"),
        }
    }

    /// A number configured as people write it is recognised however the
    /// PBX delivers it; otherwise real test calls become strays.
    #[test]
    fn delivered_forms_of_a_configured_number() {
        let keys = delivered_keys("+61 3 9999 0000", Some("AU"));
        for delivered in [
            "+61399990000",
            "61399990000",
            "0399990000",
            "399990000",
            "+61399990000;npdi",
        ] {
            assert!(
                keys.contains(&normalise_number(delivered)),
                "{delivered}: {keys:?}"
            );
        }
        assert!(!keys.contains(&normalise_number("0399990001")));
        // Without the region: as written and E.164 only.
        let keys = delivered_keys("+61 (0)3 9999 0000", None);
        assert!(keys.contains(&normalise_number("+61399990000")), "{keys:?}");
        assert!(!keys.contains(&normalise_number("0399990000")), "{keys:?}");
        assert_eq!(delivered_keys("CidGuard", Some("AU")), ["cidguard"]);
    }
}
