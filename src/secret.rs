//! Secrets (SIP and SMTP passwords, API tokens): inline in the config, or
//! read from an environment variable, a file, or a systemd credential when
//! needed. They never print: `Debug` says where a secret comes from, never
//! what it is.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret value. Written in TOML as an inline string, or as a table
/// `{ env = "VAR" }`, `{ file = "/path" }` or `{ credential = "name" }`
/// (a systemd credential, read from `$CREDENTIALS_DIRECTORY/name`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// The value itself, written in the file.
    Inline(String),
    /// Where to read it from when it is needed.
    Source(SecretSource),
}

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable holding the value.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the value (a trailing newline is dropped).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`.
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

    /// Exactly one place to read it from (an inline value always is).
    pub fn check_shape(&self) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_never_shows_value() {
        let s = Secret::Inline("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
