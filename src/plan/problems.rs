//! Validation: every problem in a config as written, each naming its
//! field, found before anything is compiled or bound.

use crate::config::{parse_time, Config, Endpoint, Expect, Matching, Problem};
use crate::schedule::Schedule;
use crate::sip::transport::parse_listen;
use crate::sip::Transport;
use crate::verdict::numbers::{NumberError, NumberSet};

use super::dial::{self, DialError};

/// Every problem in a config as written, in file order: what the file
/// says that can't be used, each with its field and how to write it.
pub fn problems(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |field: String, message: String| out.push(Problem { field, message });
    if let Some(d) = &cfg.dashboard {
        crate::config::dashboard_problems(d, &mut bad);
    }
    let tz = crate::schedule::parse_time_zone(&cfg.daemon.time_zone);
    let org = &cfg.organisation;
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
    if cfg.lines.is_empty() {
        bad(
            "line".into(),
            "no [[line]] tables: configure at least one line".into(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, line) in cfg.lines.iter().enumerate() {
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
        if line.name == super::SELFTEST_LINE {
            bad(
                f("name"),
                format!("{:?} is the name call-ins to the self-test numbers are recorded under: choose another", super::SELFTEST_LINE),
            );
        }
        if let Some(j) = cfg.devices.iter().position(|d| d.name == line.name) {
            bad(
                f("name"),
                format!("device[{j}] has the same name: a device's call-ins are recorded under its name, so lines and devices need different names"),
            );
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
            if let Err(e) = Schedule::parse(s, *tz) {
                bad(f("schedule"), e.to_string());
            }
        }
    }
    if let Some(ep) = &cfg.endpoint {
        if ep.numbers.is_empty() {
            bad(
                "endpoint.numbers".into(),
                "list at least one number or user the lines call".into(),
            );
        }
        endpoint_number_problems(cfg, ep, &mut bad);
        for (i, l) in ep.listen.iter().enumerate() {
            match parse_listen(l) {
                Err(m) => bad(format!("endpoint.listen[{i}]"), m),
                Ok((Transport::Tls, _)) if ep.tls_cert.is_none() || ep.tls_key.is_none() => bad(
                    format!("endpoint.listen[{i}]"),
                    "a tls: listener needs endpoint.tls_cert and endpoint.tls_key".into(),
                ),
                Ok(_) => {}
            }
        }
        if !(400..=699).contains(&ep.reject_code) {
            bad(
                "endpoint.reject_code".into(),
                format!("{} is not a 4xx-6xx final response", ep.reject_code),
            );
        }
        if ep.arrival_timeout.is_zero() {
            bad(
                "endpoint.arrival_timeout".into(),
                "must be more than zero (the endpoint reports a call just after the line's side ends)".into(),
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
    if let Some(st) = &cfg.selftest {
        selftest_problems(cfg, st, &mut bad);
    }
    device_problems(cfg, &mut bad);
    if let Some(a) = &cfg.alerts {
        crate::config::alerts_problems(a, &mut bad);
    }
    let d = &cfg.daemon;
    if d.configured_state_dir.as_os_str().is_empty() {
        bad("daemon.state_dir".into(), "must name a directory".into());
    }
    match &tz {
        Err(m) => bad("daemon.time_zone".into(), m.clone()),
        Ok(tz) => {
            if let Err(e) = Schedule::parse(&d.default_schedule, *tz) {
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

/// Endpoint numbers that can't be dialled, the same number listed twice,
/// and, per line with an account, a Request-URI that can't be built (the
/// field at fault named: the number, `endpoint.dial`, the line's
/// `dial_prefix` or `registrar`).
fn endpoint_number_problems(cfg: &Config, ep: &Endpoint, bad: &mut dyn FnMut(String, String)) {
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
        let mine = super::delivered_keys(n, known_region.then_some(region.as_str()));
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

/// `[selftest]` problems: numbers that can't be dialled or clash with each
/// other or an endpoint number, the umbrella, the reject code, and every
/// problem with the prompt folder's files.
pub(super) fn selftest_problems(
    cfg: &Config,
    st: &crate::config::SelfTest,
    bad: &mut dyn FnMut(String, String),
) {
    let region = &cfg.organisation.region;
    let known_region = crate::verdict::numbers::region_id(region).is_some();
    if st.numbers.is_empty() {
        bad(
            "selftest.numbers".into(),
            "list at least one number people can call to test their phone".into(),
        );
    }
    if cfg.endpoint.is_none() {
        bad(
            "selftest".into(),
            "calls to the self-test numbers arrive at cidguard's endpoint: add an [endpoint] section".into(),
        );
    }
    let endpoint_numbers: Vec<(usize, Vec<String>)> = cfg
        .endpoint
        .iter()
        .flat_map(|ep| ep.numbers.iter().enumerate())
        .map(|(i, n)| {
            let keys = super::delivered_keys(n, known_region.then_some(region.as_str()));
            (i, keys)
        })
        .collect();
    let mut seen: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, n) in st.numbers.iter().enumerate() {
        let field = format!("selftest.numbers[{i}]");
        if let Err(e) = dial::dial_user(n, Some(region)) {
            bad(field, e.to_string());
            continue;
        }
        let mine = super::delivered_keys(n, known_region.then_some(region.as_str()));
        let same = |keys: &Vec<String>| keys.iter().any(|k| mine.contains(k));
        if let Some((j, _)) = seen.iter().find(|(_, k)| same(k)) {
            bad(
                field,
                format!(
                    "{n:?} is the same number as selftest.numbers[{j}] ({:?})",
                    st.numbers[*j]
                ),
            );
        } else if let Some((j, _)) = endpoint_numbers.iter().find(|(_, k)| same(k)) {
            bad(
                field,
                format!(
                    "{n:?} is also endpoint.numbers[{j}]: a self-test call could not be told from a line's test call; give the self-test its own number"
                ),
            );
        }
        seen.push((i, mine));
    }
    match (st.expect, &st.umbrella) {
        (Expect::Umbrella, None) => bad(
            "selftest.umbrella".into(),
            "expect = \"umbrella\" needs umbrella = { name = \"...\" }".into(),
        ),
        (Expect::Withheld, Some(_)) => bad(
            "selftest.umbrella".into(),
            "set only for expect = \"umbrella\"; the self-test expects withheld".into(),
        ),
        (Expect::Umbrella, Some(u)) => {
            if crate::verdict::names::normalise(&u.name).is_empty() {
                bad("selftest.umbrella.name".into(), "must not be empty".into());
            }
            for (j, n) in u.numbers.iter().enumerate() {
                if let Err(e) = NumberSet::parse_one(n, region) {
                    bad(
                        format!("selftest.umbrella.numbers[{j}]"),
                        describe_number_error(n, &e),
                    );
                }
            }
        }
        (Expect::Withheld, None) => {}
    }
    if !(400..=699).contains(&st.reject_code) {
        bad(
            "selftest.reject_code".into(),
            format!("{} is not a 4xx-6xx final response", st.reject_code),
        );
    }
    if let Some(dir) = &st.prompts {
        if let Err(errors) = crate::media::prompts::Prompts::load(dir) {
            for e in errors {
                bad("selftest.prompts".into(), e.to_string());
            }
        }
    }
}

/// `[[device]]` problems: names (unique, not a line's, not "self-test"),
/// the owner's address, numbers that can't be read, the expectation, the
/// self-test number (dialable, not another self-test or endpoint number)
/// and reminders without one.
fn device_problems(cfg: &Config, bad: &mut dyn FnMut(String, String)) {
    let region = &cfg.organisation.region;
    let known_region = crate::verdict::numbers::region_id(region).is_some();
    let keys_of = |n: &str| super::delivered_keys(n, known_region.then_some(region.as_str()));
    // Every number the endpoint already answers for, with its field.
    let mut taken: Vec<(String, Vec<String>)> = Vec::new();
    for ep in cfg.endpoint.iter() {
        for (i, n) in ep.numbers.iter().enumerate() {
            taken.push((format!("endpoint.numbers[{i}]"), keys_of(n)));
        }
    }
    for st in cfg.selftest.iter() {
        for (i, n) in st.numbers.iter().enumerate() {
            taken.push((format!("selftest.numbers[{i}]"), keys_of(n)));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, d) in cfg.devices.iter().enumerate() {
        let f = |s: &str| format!("device[{i}] ({}).{s}", d.name);
        if d.name.trim().is_empty()
            || !d
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.".contains(c))
        {
            bad(
                format!("device[{i}].name"),
                format!(
                    "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                    d.name
                ),
            );
        } else if d.name == super::SELFTEST_LINE {
            bad(
                f("name"),
                format!(
                    "{:?} is the name of call-ins not from a known device: choose another",
                    super::SELFTEST_LINE
                ),
            );
        }
        if !names.insert(d.name.clone()) {
            bad(
                f("name"),
                "the same name is used by an earlier device".into(),
            );
        }
        if let Err(e) = d.owner.parse::<lettre::message::Mailbox>() {
            bad(
                f("owner"),
                format!("{:?} is not an e-mail address ({e})", d.owner),
            );
        }
        if known_region {
            for (j, n) in d.numbers.iter().enumerate() {
                if let Err(e) = NumberSet::parse_one(n, region) {
                    bad(f(&format!("numbers[{j}]")), describe_number_error(n, &e));
                }
            }
        }
        match (d.expect, &d.umbrella) {
            (Expect::Umbrella, None) => bad(
                f("umbrella"),
                "expect = \"umbrella\" needs umbrella = { name = \"...\" }".into(),
            ),
            (Expect::Withheld, Some(_)) => bad(
                f("umbrella"),
                "set only for expect = \"umbrella\"; this device expects withheld".into(),
            ),
            (Expect::Umbrella, Some(u)) => {
                if crate::verdict::names::normalise(&u.name).is_empty() {
                    bad(f("umbrella.name"), "must not be empty".into());
                }
                for (j, n) in u.numbers.iter().enumerate() {
                    if let Err(e) = NumberSet::parse_one(n, region) {
                        bad(
                            f(&format!("umbrella.numbers[{j}]")),
                            describe_number_error(n, &e),
                        );
                    }
                }
            }
            (Expect::Withheld, None) => {}
        }
        match &d.selftest_number {
            Some(n) => {
                if cfg.endpoint.is_none() {
                    bad(
                        f("selftest_number"),
                        "calls to a self-test number arrive at cidguard's endpoint: add an [endpoint] section".into(),
                    );
                }
                if let Err(e) = dial::dial_user(n, Some(region)) {
                    bad(f("selftest_number"), e.to_string());
                } else {
                    let mine = keys_of(n);
                    if let Some((other, _)) =
                        taken.iter().find(|(_, k)| k.iter().any(|x| mine.contains(x)))
                    {
                        bad(
                            f("selftest_number"),
                            format!("{n:?} is the same number as {other}: each self-test number must be a number of its own"),
                        );
                    }
                    taken.push((f("selftest_number"), mine));
                }
            }
            None if d.remind_every.is_some() => bad(
                f("remind_every"),
                "reminders ask the owner to call the device's own self-test number: set selftest_number too".into(),
            ),
            None => {}
        }
    }
}
