//! Config files: the shipped example is valid, and invalid configs fail
//! with the file and the field named.

use std::path::Path;

use cidguard::config::{Config, ConfigError};

fn check(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("test.toml"))
}

const ORG: &str = r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]
"#;

#[test]
fn shipped_example_is_valid() {
    let cfg = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example.toml"
    )))
    .unwrap();
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
