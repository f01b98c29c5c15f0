//! Where `cidguard check` keeps a result's evidence (every SIP message of
//! the test call, credentials redacted) when it runs the checks itself.
//!
//! The command is often run with `sudo`, so the place must not be one that
//! another local user can prepare: no fixed name in a shared temporary
//! folder. Evidence goes into the state directory (`daemon.state_dir` or
//! `$STATE_DIRECTORY`) when it exists and is writable, else into a private
//! per-user folder (`$XDG_STATE_HOME/cidguard/evidence`, or
//! `~/.local/state/cidguard/evidence`), created 0700 and refused if it
//! belongs to someone else or others can write to it.
//!
//! The folder is opened once without following a symbolic link and checked
//! through that open handle; each file is then created inside that very
//! folder (openat) with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, under a name
//! with 64 random bits. A planted symbolic link or file makes the write
//! fail; it is never followed and nothing is ever overwritten.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::result::CheckResult;

/// The evidence folder's name inside the state directory and inside the
/// per-user `cidguard` folder.
const EVIDENCE: &str = "evidence";
/// The per-user folder under `$XDG_STATE_HOME` or `~/.local/state`.
const APP: &str = "cidguard";
/// The longest line name kept in a file name.
const LINE_IN_NAME_MAX: usize = 64;
/// Attempts at a fresh random name before giving up (a clash of 64 random
/// bits means something else is going on).
const NAME_ATTEMPTS: usize = 4;

/// Why evidence can't be written. Every message names the folder and what
/// to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(
        "no folder for evidence: neither $XDG_STATE_HOME nor $HOME is set (give --evidence-dir)"
    )]
    NoHome,
    #[error("can't create the evidence folder {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to write evidence into {path}: it is a symbolic link (give the real folder)"
    )]
    Symlink { path: PathBuf },
    #[error("refusing to write evidence into {path}: it is not a folder")]
    NotAFolder { path: PathBuf },
    #[error("can't open the evidence folder {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to write evidence into {path}: it belongs to uid {owner}, not to you (uid {uid}); remove it, or give --evidence-dir")]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error("refusing to write evidence into {path}: others can write to it (mode {mode:04o}); make it private (chmod 700), or give --evidence-dir")]
    Writable { path: PathBuf, mode: u32 },
    #[error("can't write the evidence file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("can't encode the evidence: {0}")]
    Encode(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, EvidenceError>;

/// Who may own a folder evidence is written into, and how open it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// A folder cidguard chose: owned by the current user, writable by no
    /// one else.
    Private,
    /// A folder the user named with `--evidence-dir`: owned by the current
    /// user or root; writable by others only with the sticky bit (like
    /// /tmp), where no one can remove or replace another's file.
    Named,
}

/// An evidence folder, opened and checked: files are created relative to
/// the open handle, so the folder can't be swapped for another afterwards.
#[derive(Debug)]
pub struct EvidenceDir {
    /// The folder's path, for messages and the `evidence_ref` shown.
    path: PathBuf,
    /// The folder itself, opened without following a symbolic link.
    fd: OwnedFd,
}

impl EvidenceDir {
    /// The default folder for a check run from the command line: the state
    /// directory's `evidence` folder when the state directory exists and is
    /// writable, else the private per-user folder (created if missing).
    pub fn default_for(daemon: &crate::config::Daemon) -> Result<EvidenceDir> {
        EvidenceDir::default_with(
            &daemon.state_dir(),
            std::env::var_os("XDG_STATE_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// [`EvidenceDir::default_for`] with the state directory and the
    /// environment given.
    pub fn default_with(
        state_dir: &Path,
        xdg_state_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Result<EvidenceDir> {
        if usable(state_dir) {
            let parent = open_dir(None, state_dir)?;
            return subfolder(&parent, state_dir, EVIDENCE, Rule::Private);
        }
        let base = per_user_base(xdg_state_home, home)?;
        make_dirs(&base)?;
        let base_fd = open_dir(None, &base)?;
        let app = subfolder(&base_fd, &base, APP, Rule::Private)?;
        subfolder(&app.fd, &app.path, EVIDENCE, Rule::Private)
    }

    /// A folder named with `--evidence-dir`: created (0700) if missing; it
    /// must not be a symbolic link, must belong to the current user or
    /// root, and may be writable by others only with the sticky bit.
    pub fn named(path: &Path) -> Result<EvidenceDir> {
        make_dirs(path)?;
        let fd = open_dir(None, path)?;
        check(&fd, path, Rule::Named)?;
        Ok(EvidenceDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write a result's evidence as JSON into a new file readable only by
    /// its owner; returns the file's path.
    pub fn write(&self, r: &CheckResult) -> Result<PathBuf> {
        let body = serde_json::to_vec_pretty(&r.evidence)?;
        let mut last = None;
        for _ in 0..NAME_ATTEMPTS {
            let name = file_name(&r.started_at, &r.line, rand::random());
            let path = self.path.join(&name);
            match create_file(&self.fd, &name) {
                Ok(fd) => {
                    let mut f = std::fs::File::from(fd);
                    f.write_all(&body).map_err(|source| EvidenceError::Write {
                        path: path.clone(),
                        source,
                    })?;
                    return Ok(path);
                }
                // A file of that name exists: never touch it; pick another.
                Err(Errno::EXIST) => last = Some((path, Errno::EXIST)),
                Err(e) => {
                    return Err(EvidenceError::Write {
                        path,
                        source: e.into(),
                    })
                }
            }
        }
        let (path, e) = last.unwrap_or((self.path.clone(), Errno::EXIST));
        Err(EvidenceError::Write {
            path,
            source: e.into(),
        })
    }
}

/// The state directory can hold evidence: it exists and this user may
/// create files in it. It is not created here: that is the daemon's job.
fn usable(state_dir: &Path) -> bool {
    state_dir.is_dir()
        && rustix::fs::accessat(
            CWD,
            state_dir,
            Access::WRITE_OK | Access::EXEC_OK,
            AtFlags::empty(),
        )
        .is_ok()
}

/// `$XDG_STATE_HOME` when set to an absolute path (the XDG rule: a relative
/// one is ignored), else `$HOME/.local/state`.
fn per_user_base(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    if let Some(x) = xdg_state_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(x);
    }
    home.map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".local").join("state"))
        .ok_or(EvidenceError::NoHome)
}

/// Create a folder and any missing parents, each 0700. Something already
/// there (a folder, a link, a file) is left for [`open_dir`] to judge.
fn make_dirs(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| EvidenceError::Create {
            path: path.to_path_buf(),
            source,
        })
}

/// Open a folder (relative to `parent` when given) without following a
/// symbolic link in its last component.
fn open_dir(parent: Option<&OwnedFd>, path: &Path) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let opened = match parent {
        Some(p) => rustix::fs::openat(p, path, flags, Mode::empty()),
        None => rustix::fs::open(path, flags, Mode::empty()),
    };
    opened.map_err(|e| match e {
        // A symbolic link opened with O_NOFOLLOW|O_DIRECTORY fails with
        // ENOTDIR (or ELOOP): say which it was.
        Errno::LOOP | Errno::NOTDIR => {
            let st = match parent {
                Some(p) => rustix::fs::statat(p, path, AtFlags::SYMLINK_NOFOLLOW),
                None => rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW),
            };
            if st.is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink) {
                EvidenceError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                EvidenceError::NotAFolder {
                    path: path.to_path_buf(),
                }
            }
        }
        e => EvidenceError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        },
    })
}

/// The folder `name` inside the open folder `parent` (at `parent_path`),
/// created 0700 if missing, opened and checked against `rule`.
fn subfolder(parent: &OwnedFd, parent_path: &Path, name: &str, rule: Rule) -> Result<EvidenceDir> {
    let path = parent_path.join(name);
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => {
            return Err(EvidenceError::Create {
                path,
                source: e.into(),
            })
        }
    }
    let fd = open_dir(Some(parent), Path::new(name)).map_err(|e| match e {
        // Name the whole path, not just the last component.
        EvidenceError::Symlink { .. } => EvidenceError::Symlink { path: path.clone() },
        EvidenceError::NotAFolder { .. } => EvidenceError::NotAFolder { path: path.clone() },
        EvidenceError::Open { source, .. } => EvidenceError::Open {
            path: path.clone(),
            source,
        },
        other => other,
    })?;
    check(&fd, &path, rule)?;
    Ok(EvidenceDir { path, fd })
}

/// Hold an open folder to `rule`: who owns it, who may write to it.
fn check(fd: &OwnedFd, path: &Path, rule: Rule) -> Result<()> {
    let st = rustix::fs::fstat(fd).map_err(|e| EvidenceError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(EvidenceError::NotAFolder {
            path: path.to_path_buf(),
        });
    }
    let uid = rustix::process::geteuid().as_raw();
    let owner = st.st_uid;
    let mode = Mode::from_raw_mode(st.st_mode);
    let others_write = mode.intersects(Mode::WGRP | Mode::WOTH);
    let owner_ok = match rule {
        Rule::Private => owner == uid,
        Rule::Named => owner == uid || owner == 0,
    };
    if !owner_ok {
        return Err(EvidenceError::NotOwned {
            path: path.to_path_buf(),
            owner,
            uid,
        });
    }
    let writable_ok = match rule {
        Rule::Private => !others_write,
        Rule::Named => !others_write || mode.contains(Mode::SVTX),
    };
    if !writable_ok {
        return Err(EvidenceError::Writable {
            path: path.to_path_buf(),
            mode: mode.bits() & 0o7777,
        });
    }
    Ok(())
}

/// Create a new file in the open folder: never an existing one, never
/// through a symbolic link, readable only by its owner.
fn create_file(dir: &OwnedFd, name: &str) -> std::result::Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

/// `20261129T062512095Z-reception-3f9a0c1d2e4b5a69.json`: the check's start
/// time, the line's name reduced to characters safe in a file name, and 64
/// random bits, so the name can't be guessed in advance.
fn file_name(started_at: &str, line: &str, random: u64) -> String {
    let stamp: String = started_at
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let line: String = line
        .chars()
        .take(LINE_IN_NAME_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stamp}-{line}-{random:016x}.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn result(line: &str) -> CheckResult {
        let mut r = CheckResult::inconclusive(
            line,
            crate::config::Expect::Withheld,
            std::time::SystemTime::now(),
            "test".into(),
            crate::check::result::Trigger::Schedule,
        );
        r.evidence = vec![crate::check::result::EvidenceMessage {
            side: "endpoint".into(),
            direction: "received".into(),
            at_ms: 1,
            flow: "udp 127.0.0.1:1 -> 127.0.0.1:2".into(),
            text: "INVITE sip:x SIP/2.0\r\n\r\n".into(),
        }];
        r
    }

    #[test]
    fn file_names_are_safe_and_unpredictable() {
        let n = file_name("2026-11-29T06:25:12.095Z", "../etc/pass wd\u{1b}", 0xabc);
        assert_eq!(
            n,
            "20261129T062512095Z-___etc_pass_wd_-0000000000000abc.json"
        );
        let long = "x".repeat(300);
        assert!(file_name("t", &long, 1).len() < 100);
    }

    #[test]
    fn a_planted_file_or_symlink_is_never_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = EvidenceDir::named(&tmp.path().join("ev")).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("ev/planted.json")).unwrap();
        assert_eq!(
            create_file(&dir.fd, "planted.json").unwrap_err(),
            Errno::EXIST
        );
        std::fs::write(tmp.path().join("ev/existing.json"), "old").unwrap();
        assert_eq!(
            create_file(&dir.fd, "existing.json").unwrap_err(),
            Errno::EXIST
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("ev/existing.json")).unwrap(),
            "old"
        );
    }

    #[test]
    fn evidence_is_private_and_new_each_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = EvidenceDir::named(&tmp.path().join("a/b")).unwrap();
        let meta = std::fs::metadata(tmp.path().join("a/b")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let r = result("reception");
        let one = dir.write(&r).unwrap();
        let two = dir.write(&r).unwrap();
        assert_ne!(one, two);
        let meta = std::fs::metadata(&one).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        assert!(std::fs::read_to_string(&one)
            .unwrap()
            .contains("INVITE sip:x"));
    }

    #[test]
    fn the_state_directory_is_used_when_writable() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let dir = EvidenceDir::default_with(&state, None, None).unwrap();
        assert_eq!(dir.path(), state.join("evidence"));
        // No state directory: the per-user folder, XDG first, then HOME.
        let gone = tmp.path().join("no-state");
        let xdg = tmp.path().join("xdg");
        let dir =
            EvidenceDir::default_with(&gone, Some(xdg.clone().into()), Some("/nowhere".into()))
                .unwrap();
        assert_eq!(dir.path(), xdg.join("cidguard/evidence"));
        let home = tmp.path().join("home");
        let dir =
            EvidenceDir::default_with(&gone, Some("relative".into()), Some(home.clone().into()))
                .unwrap();
        assert_eq!(dir.path(), home.join(".local/state/cidguard/evidence"));
        assert!(!gone.exists(), "the state directory is not created");
        assert!(matches!(
            EvidenceDir::default_with(&gone, None, None),
            Err(EvidenceError::NoHome)
        ));
    }

    #[test]
    fn an_open_or_linked_private_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let xdg = tmp.path().join("xdg");
        let gone = tmp.path().join("no-state");
        std::fs::create_dir_all(xdg.join("cidguard")).unwrap();
        // The evidence folder is a link to somewhere else.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, xdg.join("cidguard/evidence")).unwrap();
        let e = EvidenceDir::default_with(&gone, Some(xdg.clone().into()), None).unwrap_err();
        assert!(matches!(e, EvidenceError::Symlink { .. }), "{e}");
        std::fs::remove_file(xdg.join("cidguard/evidence")).unwrap();
        // Writable by the group.
        std::fs::create_dir(xdg.join("cidguard/evidence")).unwrap();
        std::fs::set_permissions(
            xdg.join("cidguard/evidence"),
            std::fs::Permissions::from_mode(0o770),
        )
        .unwrap();
        let e = EvidenceDir::default_with(&gone, Some(xdg.clone().into()), None).unwrap_err();
        assert!(
            matches!(e, EvidenceError::Writable { mode: 0o770, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 700"), "{e}");
    }

    #[test]
    fn a_named_folder_may_be_shared_only_with_the_sticky_bit() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            EvidenceDir::named(&open),
            Err(EvidenceError::Writable { .. })
        ));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        EvidenceDir::named(&open).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(matches!(
            EvidenceDir::named(&link),
            Err(EvidenceError::Symlink { .. })
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            EvidenceDir::named(&file),
            Err(EvidenceError::NotAFolder { .. })
        ));
    }
}
