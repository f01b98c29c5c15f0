//! `cidguard demo`: the whole thing on one machine with nothing else
//! installed, so a newcomer sees a pass, an umbrella pass, a leak and its
//! alert email within a minute.
//!
//! This module is the demo's own part: a demo PBX ([`pbx`]) and the demo's
//! lines and configuration (`config/demo.toml` with a free port, a
//! temporary folder and the chosen schedule filled in). The service runs it
//! with cidguard's endpoint, the real daemon (the same checker, PBX probe
//! and email alerts as `cidguard run`) and the dashboard, all on 127.0.0.1
//! ([`crate::service::demo`]).

pub mod caller;
pub mod pbx;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ConfigError};
use pbx::{Identities, PbxError, Rule};

/// The demo's configuration, with placeholders filled in at start.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// The placeholders in [`DEMO_CONFIG`] (each must be present exactly as
/// written, so an edit to the file can't silently leave one unreplaced).
const PBX_PLACEHOLDER: &str = "127.0.0.1:35060";
const ENDPOINT_PLACEHOLDER: &str = "127.0.0.1:35080";
const MAIL_PLACEHOLDER: &str = "dir = \"cidguard-demo-mail\"";
const STATE_PLACEHOLDER: &str = "state_dir = \"cidguard-demo-state\"";
const SCHEDULE_PLACEHOLDER: &str = "default_schedule = \"*/15 * * * * *\"";

/// Which demo line gets which rule at start, by line name.
pub const RULES: &[(&str, Rule)] = &[
    ("reception", Rule::Withheld),
    ("outreach", Rule::Umbrella),
    ("intake", Rule::Leak),
];
/// The line that `f` makes leak and `r` restores.
pub const FLIP_LINE: &str = "reception";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "--every must be whole seconds, from 1 s to 59 s, or whole minutes up to 59 (got {0:?})"
    )]
    Every(Duration),
    #[error("can't prepare the demo folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("can't find a free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    #[error("the built-in demo config has no {0:?} to fill in")]
    Placeholder(&'static str),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the demo config has no line {0:?} with an account")]
    Line(&'static str),
    #[error(transparent)]
    Pbx(#[from] PbxError),
}

/// A cron schedule (seconds first) for "every `every`".
pub fn schedule_for(every: Duration) -> Result<String, DemoError> {
    let s = every.as_secs();
    if every.subsec_nanos() != 0 || s == 0 {
        return Err(DemoError::Every(every));
    }
    if s < 60 {
        return Ok(format!("*/{s} * * * * *"));
    }
    if s % 60 == 0 && s / 60 < 60 {
        return Ok(format!("0 */{} * * * *", s / 60));
    }
    Err(DemoError::Every(every))
}

/// The files of one demo run.
#[derive(Debug, Clone)]
pub struct Files {
    /// The demo's folder (kept after the demo ends).
    pub dir: PathBuf,
    /// Where the alert emails are written.
    pub mail: PathBuf,
    /// The effective configuration.
    pub config_path: PathBuf,
}

/// The demo's lines: who is who on the demo PBX, from the built-in config.
#[derive(Debug, Clone)]
pub struct DemoLines {
    /// Each line, its PBX username and its rule at start, in [`RULES`]
    /// order.
    pub initial: Vec<(&'static str, String, Rule)>,
    /// The PBX username of [`FLIP_LINE`].
    pub flip_user: String,
    /// What the demo PBX presents for the organisation and the umbrella.
    pub identities: Identities,
}

impl DemoLines {
    /// Read them from the built-in config (placeholders and all).
    pub fn read() -> Result<DemoLines, DemoError> {
        let base = Config::from_toml(DEMO_CONFIG, Path::new("config/demo.toml"))?;
        let mut initial = Vec::new();
        for (line, rule) in RULES {
            initial.push((*line, username(&base, line)?, *rule));
        }
        Ok(DemoLines {
            initial,
            flip_user: username(&base, FLIP_LINE)?,
            identities: identities(&base),
        })
    }

    /// Each PBX username's rule at start.
    pub fn rules(&self) -> HashMap<String, Rule> {
        self.initial
            .iter()
            .map(|(_, user, rule)| (user.clone(), *rule))
            .collect()
    }
}

fn folder(path: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(path).map_err(|source| DemoError::Folder {
        path: path.to_path_buf(),
        source,
    })
}

/// A new folder of our own in the temporary directory, 0700: created here
/// (never one that already exists, nor through a link someone planted at
/// that name), with random bits in its name so it can't be prepared in
/// advance.
fn new_private_folder() -> Result<PathBuf, DemoError> {
    use std::os::unix::fs::DirBuilderExt;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut last = None;
    for _ in 0..4 {
        let path = std::env::temp_dir().join(format!(
            "cidguard-demo-{}-{stamp}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(source) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                last = Some(DemoError::Folder { path, source });
            }
            Err(source) => return Err(DemoError::Folder { path, source }),
        }
    }
    Err(last.unwrap_or_else(|| DemoError::Folder {
        path: std::env::temp_dir(),
        source: std::io::ErrorKind::AlreadyExists.into(),
    }))
}

fn replace_once(text: &str, from: &'static str, to: &str) -> Result<String, DemoError> {
    if !text.contains(from) {
        return Err(DemoError::Placeholder(from));
    }
    Ok(text.replace(from, to))
}

fn toml_string(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Write the effective configuration into `dir` (a new private folder when
/// None): the demo PBX at `pbx_addr`, the endpoint and the dashboard on
/// free loopback ports (port 0: the service binds them and says where),
/// every line checked `every`.
pub fn write_config(
    every: Duration,
    dir: Option<&Path>,
    pbx_addr: SocketAddr,
) -> Result<Files, DemoError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => new_private_folder()?,
    };
    let mail = dir.join("mail");
    let state = dir.join("state");
    folder(&mail)?;
    folder(&state)?;
    let mut text = DEMO_CONFIG.to_string();
    text = replace_once(&text, PBX_PLACEHOLDER, &pbx_addr.to_string())?;
    text = replace_once(&text, ENDPOINT_PLACEHOLDER, "127.0.0.1:0")?;
    text = replace_once(
        &text,
        MAIL_PLACEHOLDER,
        &format!("dir = {}", toml_string(&mail)),
    )?;
    text = replace_once(
        &text,
        STATE_PLACEHOLDER,
        &format!("state_dir = {}", toml_string(&state)),
    )?;
    text = replace_once(
        &text,
        SCHEDULE_PLACEHOLDER,
        &format!("default_schedule = \"{}\"", schedule_for(every)?),
    )?;
    // The dashboard on a free loopback port, with a token for run-now that
    // is printed with its address (a demo has nothing to protect).
    let token = crate::check::token::random_token(20);
    text.push_str(&format!(
        "\n# Added by the demo: the dashboard on a free port.\n[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"
    ));
    let config_path = dir.join("cidguard-demo.toml");
    std::fs::write(&config_path, &text).map_err(|source| DemoError::Folder {
        path: config_path.clone(),
        source,
    })?;
    Ok(Files {
        dir,
        mail,
        config_path,
    })
}

/// A configured number as the demo PBX puts it on the wire: its dialable
/// form (`+61 3 7010 0142` is `+61370100142`).
fn e164(n: &str, region: &str) -> String {
    crate::verdict::numbers::dialable(n, Some(region)).unwrap_or_else(|_| n.to_string())
}

/// What the demo PBX presents: the organisation's name and first number,
/// the umbrella's name and first number.
fn identities(cfg: &Config) -> Identities {
    let region = &cfg.organisation.region;
    let umbrella = cfg.lines.iter().find_map(|l| l.umbrella.clone());
    Identities {
        org_name: cfg.organisation.name.clone(),
        org_number: cfg
            .organisation
            .numbers
            .first()
            .map(|n| e164(n, region))
            .unwrap_or_default(),
        umbrella_name: umbrella
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default(),
        umbrella_number: umbrella
            .and_then(|u| u.numbers.first().map(|n| e164(n, region)))
            .unwrap_or_default(),
    }
}

/// A line's PBX username.
fn username(cfg: &Config, line: &'static str) -> Result<String, DemoError> {
    cfg.line(line)
        .and_then(|l| l.account.as_ref())
        .map(|a| a.username.clone())
        .ok_or(DemoError::Line(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the demo's folder had a guessable name and was created
    /// with create_dir_all, so a folder or link planted under that name in
    /// the shared temporary directory was used.
    #[test]
    fn the_demo_folder_is_new_private_and_unguessable() {
        use std::os::unix::fs::PermissionsExt;
        let a = new_private_folder().unwrap();
        let b = new_private_folder().unwrap();
        let modes: Vec<u32> = [&a, &b]
            .iter()
            .map(|p| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777)
            .collect();
        let _ = std::fs::remove_dir(&a);
        let _ = std::fs::remove_dir(&b);
        assert_ne!(a, b);
        assert_eq!(modes, [0o700, 0o700]);
    }

    #[test]
    fn schedules_for_every() {
        assert_eq!(
            schedule_for(Duration::from_secs(2)).unwrap(),
            "*/2 * * * * *"
        );
        assert_eq!(
            schedule_for(Duration::from_secs(120)).unwrap(),
            "0 */2 * * * *"
        );
        for bad in [0, 61, 3600] {
            assert!(schedule_for(Duration::from_secs(bad)).is_err(), "{bad}");
        }
        assert!(schedule_for(Duration::from_millis(1500)).is_err());
    }

    #[test]
    fn the_built_in_config_has_every_placeholder_and_line() {
        for p in [
            PBX_PLACEHOLDER,
            ENDPOINT_PLACEHOLDER,
            MAIL_PLACEHOLDER,
            STATE_PLACEHOLDER,
            SCHEDULE_PLACEHOLDER,
        ] {
            assert!(DEMO_CONFIG.contains(p), "{p}");
        }
        let cfg = Config::from_toml(DEMO_CONFIG, Path::new("demo.toml")).unwrap();
        let problems = crate::plan::problems(&cfg);
        assert!(problems.is_empty(), "{problems:?}");
        for (line, _) in RULES {
            username(&cfg, line).unwrap();
        }
        let ids = identities(&cfg);
        assert_eq!(ids.org_number, "+61370100142");
        assert_eq!(ids.umbrella_number, "+61290000000");
    }
}
