//! Config files: the shipped example is valid, and invalid configs fail
//! with the file and the field named.

use std::path::Path;

use cidguard::config::{Config, ConfigError};
use cidguard::plan::Plan;

/// The config as written, once it has been validated and compiled.
fn check(text: &str) -> Result<Config, ConfigError> {
    Plan::from_toml(text, Path::new("test.toml")).map(|p| p.config().clone())
}

const ORG: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]
"#;

#[test]
fn shipped_example_is_valid() {
    let plan = Plan::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example.toml"
    )))
    .unwrap();
    let cfg = plan.config();
    assert_eq!(cfg.lines.len(), 2);
    assert_eq!(
        cfg.lines[1].umbrella.as_ref().unwrap().name,
        "Salvation Army"
    );
}

/// The issue's contract, exactly as written there, must stay valid.
#[test]
fn public_contract_snippet_is_valid() {
    let text = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"                               # how national-format numbers are read
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]   # every number, and number ranges, that must never be shown
names = ["Eastside Women's Refuge", "Eastside Refuge"]  # names and words that must never be shown
hosts = ["pbx.eastside-refuge.org.au", "203.0.113.10"] # domains and addresses that identify the organisation

[[line]]
name = "reception"
expect = "withheld"

[[line]]
name = "outreach"
expect = "umbrella"
umbrella = { name = "Salvation Army", numbers = ["+61 2 9000 0000"] }
"#;
    check(text).unwrap();
}

fn field_of(text: &str) -> String {
    match check(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        Err(e) => format!("other error: {e}"),
        Ok(_) => "accepted".into(),
    }
}

#[test]
fn errors_name_the_field() {
    assert_eq!(
        field_of(&format!(
            "{ORG}[[line]]\nname = \"a\"\nexpect = \"umbrella\"\n"
        )),
        "line[0] (a).umbrella"
    );
    assert_eq!(
        field_of(&ORG.replace("+61 3 7010 0142", "call me maybe")),
        "organisation.numbers[0]"
    );
    assert_eq!(
        field_of(&format!(
            "{}[[line]]\nname = \"a\"\nexpect = \"withheld\"\n",
            ORG.replace("\"AU\"", "\"XX\"")
        )),
        "organisation.region"
    );
    assert_eq!(
        field_of(&format!("{ORG}[[line]]\nname = \"a\"\nexpect = \"withheld\"\n[[line]]\nname = \"a\"\nexpect = \"withheld\"\n")),
        "line[1] (a).name"
    );
    assert_eq!(
        field_of(&format!("{ORG}[[line]]\nname = \"a\"\nexpect = \"withheld\"\n[line.account]\nregistrar = \"sip:pbx\"\nusername = \"201\"\npassword = {{ env = \"X\", file = \"/y\" }}\n")),
        "line[0] (a).account.password"
    );
    assert_eq!(field_of(ORG), "line");
}

#[test]
fn unknown_keys_and_bad_values_are_syntax_errors_with_location() {
    let e = check(&format!(
        "{ORG}[[line]]\nname = \"a\"\nexpect = \"withheld\"\nexpcet = 1\n"
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("test.toml") && msg.contains("expcet"), "{msg}");
    let e = check(&format!(
        "{ORG}[[line]]\nname = \"a\"\nexpect = \"hidden\"\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("hidden"), "{e}");
}

#[test]
fn secrets_come_from_env_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "s3cret\n").unwrap();
    let text = format!(
        "{ORG}[[line]]\nname = \"a\"\nexpect = \"withheld\"\n[line.account]\nregistrar = \"sip:pbx\"\nusername = \"201\"\npassword = {{ file = {:?} }}\n",
        f.display().to_string()
    );
    let cfg = check(&text).unwrap();
    let secret = &cfg.lines[0].account.as_ref().unwrap().password;
    assert_eq!(secret.reveal().unwrap(), "s3cret");
    assert!(!format!("{cfg:?}").contains("s3cret"));
}

const LINE: &str = "[[line]]\nname = \"a\"\nexpect = \"withheld\"\n";

#[test]
fn daemon_section_defaults() {
    let cfg = check(&format!("{ORG}{LINE}")).unwrap();
    let d = &cfg.daemon;
    assert_eq!(d.configured_state_dir, Path::new("/var/lib/cidguard"));
    assert_eq!(d.time_zone, "UTC");
    assert_eq!(d.default_schedule, "0 * * * *");
    assert_eq!(d.jitter, std::time::Duration::from_secs(30));
    assert_eq!(
        d.evidence_retention,
        std::time::Duration::from_secs(90 * 86400)
    );
    assert_eq!(d.pbx_poll, std::time::Duration::from_secs(300));
    assert_eq!(d.grace, std::time::Duration::from_secs(20));
    assert!(d.maintenance.is_empty());
    assert!(cfg.lines[0].schedule.is_none());
}

#[test]
fn daemon_section_is_read_and_validated() {
    let text = format!(
        r#"{ORG}
[daemon]
state_dir = "/srv/cidguard"
time_zone = "Australia/Sydney"
default_schedule = "30 2 * * *"
jitter = "2m"
evidence_retention = "30d"
pbx_poll = 60
grace = "45s"

[[daemon.maintenance]]
start = "2025-06-01 22:00"
end = 2025-06-02T02:00:00+10:00
reason = "PBX upgrade"

{LINE}schedule = "0 */15 * * * *"
"#
    );
    let plan = Plan::from_toml(&text, Path::new("test.toml")).unwrap();
    let cfg = plan.config();
    let d = &cfg.daemon;
    assert_eq!(plan.tz(), chrono_tz::Australia::Sydney);
    assert_eq!(d.jitter, std::time::Duration::from_secs(120));
    assert_eq!(d.pbx_poll, std::time::Duration::from_secs(60));
    assert_eq!(cfg.lines[0].schedule.as_deref(), Some("0 */15 * * * *"));
    let (start, end) = d.maintenance[0].resolve(plan.tz()).unwrap();
    // 22:00 in Sydney in June (AEST, +10) is 12:00 UTC.
    assert_eq!(start.to_rfc3339(), "2025-06-01T12:00:00+00:00");
    assert_eq!(end.to_rfc3339(), "2025-06-01T16:00:00+00:00");
    // $STATE_DIRECTORY (systemd) wins over the file.
    assert_eq!(d.state_dir_with(None), Path::new("/srv/cidguard"));
    assert_eq!(
        d.state_dir_with(Some("/var/lib/cidguard:/var/lib/other".into())),
        Path::new("/var/lib/cidguard")
    );

    let daemon = |body: &str| format!("{ORG}[daemon]\n{body}\n{LINE}");
    assert_eq!(
        field_of(&daemon("time_zone = \"Mars/Olympus\"")),
        "daemon.time_zone"
    );
    assert_eq!(
        field_of(&daemon("default_schedule = \"every hour\"")),
        "daemon.default_schedule"
    );
    assert_eq!(field_of(&daemon("pbx_poll = \"0s\"")), "daemon.pbx_poll");
    assert_eq!(
        field_of(&daemon(
            "[[daemon.maintenance]]\nstart = \"2025-06-02 02:00\"\nend = \"2025-06-01 22:00\""
        )),
        "daemon.maintenance[0].end"
    );
    assert_eq!(
        field_of(&daemon(
            "[[daemon.maintenance]]\nstart = \"tonight\"\nend = \"2025-06-01 22:00\""
        )),
        "daemon.maintenance[0].start"
    );
    // A local time that doesn't exist (Sydney's spring-forward gap).
    assert_eq!(
        field_of(&daemon(
            "time_zone = \"Australia/Sydney\"\n[[daemon.maintenance]]\nstart = \"2025-10-05 02:30\"\nend = \"2025-10-05 04:00\""
        )),
        "daemon.maintenance[0].start"
    );
    assert_eq!(
        field_of(&format!("{ORG}{LINE}schedule = \"61 * * * *\"\n")),
        "line[0] (a).schedule"
    );
    let e = check(&daemon("jitter = \"soon\"")).unwrap_err();
    assert!(e.to_string().contains("soon"), "{e}");
    let e = check(&daemon("statedir = \"/x\"")).unwrap_err();
    assert!(e.to_string().contains("statedir"), "{e}");
}

/// Numbers people write, for the endpoint and a line's dial settings: what
/// can't go on the wire is refused before any call, naming the field.
#[test]
fn dial_settings_that_cant_go_on_the_wire_name_their_field() {
    let config = |numbers: &str, dial: &str, prefix: &str| {
        format!(
            "{ORG}{LINE}[line.account]\nregistrar = \"sip:pbx.eastside-refuge.org.au\"\nusername = \"201\"\npassword = \"x\"\n{prefix}\n[endpoint]\nnumbers = [{numbers}]\n{dial}\n"
        )
    };
    let ok = config(
        "\"+61 3 9999 0000\", \"+61 (0)3 9999 0001\", \"(03) 9999\u{a0}0002\", \"cidguard\"",
        "",
        "dial_prefix = \"18 31\"",
    );
    check(&ok).unwrap();
    for (text, field) in [
        (config("\"+61 3 9999 OOOO\"", "", ""), "endpoint.numbers[0]"),
        (
            config("\"4000\", \"03 9999 0000 ext 2\"", "", ""),
            "endpoint.numbers[1]",
        ),
        (config("\"4000\", \"\"", "", ""), "endpoint.numbers[1]"),
        // The same number twice: a call to one can't be told from the other.
        (
            config("\"+61 3 9999 0000\", \"(03) 9999-0000\"", "", ""),
            "endpoint.numbers[1]",
        ),
        (
            config("\"4000\"", "", "dial_prefix = \"*67 or 1831\""),
            "line[0] (a).account.dial_prefix",
        ),
        (
            config("\"4000\"", "dial = \"9+{number}\"", ""),
            "endpoint.dial",
        ),
        (
            config("\"4000\"", "dial = \"sip:{number}@sbc example.org\"", ""),
            "endpoint.dial",
        ),
        (
            config("\"4000\"", "dial = \"tel:{number}\"", ""),
            "endpoint.dial",
        ),
        (
            config(
                "\"4000\"",
                "dial = \"sip:sbc.example.org\"",
                "dial_prefix = \"1831\"",
            ),
            "line[0] (a).account.dial_prefix",
        ),
        (
            config("\"4000\"", "", "")
                .replace("sip:pbx.eastside-refuge.org.au", "sip:pbx eastside"),
            "line[0] (a).account.registrar",
        ),
    ] {
        assert_eq!(field_of(&text), field, "{text}");
    }
    let e = check(&config("\"+61 3 9999 OOOO\"", "", "")).unwrap_err();
    assert!(e.to_string().contains("'O' is a letter"), "{e}");
}
