//! The Debian package as an administrator gets it: `cargo deb` builds it,
//! its control data and file list are what `[package.metadata.deb]` promises,
//! and installed into a scratch root (maintainer scripts included) it creates
//! the service user and /etc/cidguard, enables the unit without starting
//! anything, and its binary checks the shipped example configuration.
//!
//! No second build: the package is made from the binary this test build
//! already linked. cargo-deb only packages `target/release/...`, so the test
//! hard-links that binary into a throwaway target directory's `release/` and
//! runs `cargo deb --no-build` with CARGO_TARGET_DIR pointing there. The
//! real target directory is never touched, so there is no contention with
//! the cargo build lock (which `cargo test` holds only while building).
//!
//! Under CI (`CI=true`) a missing cargo-deb or dpkg is a failure; elsewhere
//! the test is skipped with a notice (`.ci/install-package.sh` installs them).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const INSTALL_SCRIPT: &str = ".ci/install-package.sh";

fn tool(name: &str) -> Option<PathBuf> {
    crate::support::require_tool(name, "dpkg", INSTALL_SCRIPT)
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// `cargo deb`, if cargo-deb is installed.
fn cargo_deb() -> Option<PathBuf> {
    let works = Command::new(cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        Some(cargo())
    } else {
        crate::support::missing_tool("cargo-deb (`cargo deb`)", INSTALL_SCRIPT)
    }
}

/// Runs `cmd` to completion with its output in files (so a chatty child
/// can't block on a full pipe), killed after `limit`: a cargo lock that
/// never comes free fails the test instead of hanging the suite.
fn run(mut cmd: Command, dir: &Path, limit: Duration) -> Output {
    let name = format!("{cmd:?}");
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} still running after {limit:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}",
        o.status,
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Builds the .deb from the test build's binary into `work`, returns its path.
fn build_deb(cargo: &Path, work: &Path) -> PathBuf {
    let target = work.join("target");
    let release = target.join("release");
    std::fs::create_dir_all(&release).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_cidguard"));
    if std::fs::hard_link(bin, release.join("cidguard")).is_err() {
        std::fs::copy(bin, release.join("cidguard")).unwrap();
    }
    let out = work.join("out");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        // --no-dbgsym --strip: the debug build's full symbols would take most
        // of the time to split off and compress; everything else is as
        // `[package.metadata.deb]` says.
        .args([
            "deb",
            "--no-build",
            "--offline",
            "--fast",
            "--no-dbgsym",
            "--strip",
        ])
        .arg("--output")
        .arg(&out)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_BUILD_TARGET_DIR");
    let started = Instant::now();
    let o = run(cmd, work, Duration::from_secs(300));
    ok(o, "cargo deb");
    eprintln!("cargo deb --no-build: {:?}", started.elapsed());
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "one .deb expected in {}: {debs:?}",
        out.display()
    );
    let deb = debs[0].clone();
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("cidguard_{}-1_", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );
    deb
}

/// `dpkg-deb --contents`: path (without the leading `.`) → (mode, owner).
fn contents(dpkg_deb: &Path, deb: &Path, work: &Path) -> BTreeMap<String, (String, String)> {
    let mut cmd = Command::new(dpkg_deb);
    cmd.arg("--contents").arg(deb);
    let listing = ok(
        run(cmd, work, Duration::from_secs(60)),
        "dpkg-deb --contents",
    );
    listing
        .lines()
        .filter_map(|l| {
            // "-rwxr-xr-x root/root 1234 2026-11-29 08:00 ./usr/bin/cidguard"
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5)?.strip_prefix('.')?.trim_end_matches('/');
            Some((path.to_string(), (f[0].to_string(), f[1].to_string())))
        })
        .collect()
}

#[test]
fn deb_builds_installs_into_a_scratch_root_and_checks_the_example() {
    let (Some(dpkg_deb), Some(cargo)) = (tool("dpkg-deb"), cargo_deb()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(&cargo, work.path());

    // Control data: what an administrator sees in `apt show`.
    let mut cmd = Command::new(&dpkg_deb);
    cmd.arg("--info").arg(&deb);
    let info = ok(
        run(cmd, work.path(), Duration::from_secs(60)),
        "dpkg-deb --info",
    );
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {name} field:\n{info}"))
    };
    assert_eq!(field("Package"), "cidguard");
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('<'), "{info}");
    let depends = field("Depends");
    assert!(
        depends.contains("libc6") && depends.contains("systemd | systemd-standalone-sysusers"),
        "Depends: {depends}"
    );
    assert!(
        info.contains("caller ID is still private"),
        "extended description:\n{info}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            // "    2446 bytes,    56 lines   *  postinst             #!/bin/sh"
            info.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.contains(&"*") && f.contains(&script) && f.last() == Some(&"#!/bin/sh")
            }),
            "{script} not in the control archive:\n{info}"
        );
    }

    // Files, modes and owners.
    let files = contents(&dpkg_deb, &deb, work.path());
    for (path, mode) in [
        ("/usr/bin/cidguard", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/cidguard.service", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/cidguard.conf", "-rw-r--r--"),
        (
            "/usr/share/doc/cidguard/examples/cidguard.toml",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/cidguard/README.md", "-rw-r--r--"),
        ("/usr/share/doc/cidguard/copyright", "-rw-r--r--"),
    ] {
        let (m, owner) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in the package: {files:#?}"));
        assert_eq!(m, mode, "{path}");
        // cargo-deb writes numeric ids without names.
        assert!(
            matches!(owner.as_str(), "0/0" | "root/root"),
            "{path}: {owner}"
        );
    }
    // No configuration in /etc: the unit must wait for the administrator's.
    assert!(
        !files.keys().any(|p| p.starts_with("/etc")),
        "the package ships files in /etc: {files:#?}"
    );

    // Install into a scratch root, maintainer scripts and all (as root; a
    // non-root run can only unpack).
    let root = work.path().join("root");
    let scripts_ran = install(&deb, &root, work.path());

    let bin = root.join("usr/bin/cidguard");
    assert!(bin.metadata().unwrap().permissions().mode() & 0o111 != 0);
    let unit = root.join("usr/lib/systemd/system/cidguard.service");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("ConditionPathExists=/etc/cidguard/cidguard.toml"));
    if scripts_ran {
        installed_state(&root);
        // An upgrade (postinst configure <old version>) keeps it all: the
        // same user, the administrator's /etc/cidguard, the unit enabled.
        std::fs::set_permissions(
            root.join("etc/cidguard"),
            std::fs::Permissions::from_mode(0o710),
        )
        .unwrap();
        let mut cmd = dpkg_in(&root);
        cmd.arg("--install").arg(&deb);
        ok(
            run(cmd, work.path(), Duration::from_secs(120)),
            "dpkg --install (again)",
        );
        let mode = root.join("etc/cidguard").metadata().unwrap().mode() & 0o7777;
        assert_eq!(
            mode, 0o710,
            "postinst changed the administrator's /etc/cidguard"
        );
        std::fs::set_permissions(
            root.join("etc/cidguard"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        installed_state(&root);
    }

    // The installed binary checks the installed example.
    let example = root.join("usr/share/doc/cidguard/examples/cidguard.toml");
    let mut cmd = Command::new(&bin);
    cmd.args(["config", "check", "--config"]).arg(&example);
    let summary = ok(
        run(cmd, work.path(), Duration::from_secs(60)),
        "cidguard config check",
    );
    assert!(
        summary.starts_with(&format!("{}: OK\n", example.display()))
            && summary.contains("Organisation: Eastside Women's Refuge")
            && summary.contains("Lines (2):")
            && summary.contains("reception")
            && summary.contains("outreach"),
        "{summary}"
    );

    // The installed unit is the one deploy.rs rates, and systemd accepts it
    // with ExecStart pointing at the installed binary (verify needs the
    // executable; the scratch root has no systemd of its own for --root).
    assert_eq!(
        unit_text,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cidguard.service")
        )
        .unwrap()
    );
    if let Some(analyze) = tool_quiet("systemd-analyze") {
        let copy = work.path().join("cidguard.service");
        let bin_path = bin.to_str().unwrap();
        std::fs::write(&copy, unit_text.replace("/usr/bin/cidguard", bin_path)).unwrap();
        let mut cmd = Command::new(analyze);
        cmd.args(["verify", "--man=no"]).arg(&copy);
        let o = run(cmd, work.path(), Duration::from_secs(60));
        let t = text(&o);
        let ours: Vec<&str> = t.lines().filter(|l| l.contains("cidguard")).collect();
        assert!(o.status.success() && ours.is_empty(), "verify: {t}");
    }

    if scripts_ran {
        purge(&root, work.path());
    }
}

/// systemd-analyze is deploy.rs's business (and its CI failure); here it is
/// a bonus.
fn tool_quiet(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn dpkg_in(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        // Scripts run on this host with DPKG_ROOT set, not chrooted (the
        // scratch root has no shell); they must honour DPKG_ROOT.
        .args([
            "--force-script-chrootless",
            "--force-not-root",
            // libc6 and systemd are the host's, not the scratch root's.
            "--force-depends",
            "--log=/dev/null",
        ]);
    cmd
}

/// Installs `deb` into `root`; true if the maintainer scripts ran.
fn install(deb: &Path, root: &Path, work: &Path) -> bool {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    if uid != 0 || tool_quiet("dpkg").is_none() {
        eprintln!("NOTICE: not root (or no dpkg): unpacking only, maintainer scripts not run");
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(deb).arg(root);
        ok(run(cmd, work, Duration::from_secs(60)), "dpkg-deb -x");
        return false;
    }
    // The skeleton a root filesystem has: a dpkg database, /etc, and a
    // policy-rc.d that forbids starting services (belt and braces: the
    // scripts never start anything outside a live host anyway).
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "etc",
        "usr/sbin",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = dpkg_in(root);
    cmd.arg("--install").arg(deb);
    ok(run(cmd, work, Duration::from_secs(120)), "dpkg --install");
    true
}

/// What postinst leaves behind: the user, /etc/cidguard, the enabled unit.
fn installed_state(root: &Path) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("cidguard:"))
        .unwrap_or_else(|| panic!("no cidguard user: {passwd}"));
    assert!(
        user.ends_with(":/var/lib/cidguard:/usr/sbin/nologin"),
        "{user}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("cidguard:"))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no cidguard group: {group}"));

    let etc = root.join("etc/cidguard").metadata().unwrap();
    assert!(etc.is_dir());
    assert_eq!(etc.mode() & 0o7777, 0o750, "/etc/cidguard mode");
    assert_eq!((etc.uid(), etc.gid()), (0, gid), "/etc/cidguard owner");
    assert!(
        !root.join("etc/cidguard/cidguard.toml").exists(),
        "no configuration until the administrator writes one"
    );

    let wants = root.join("etc/systemd/system/multi-user.target.wants/cidguard.service");
    let link = std::fs::read_link(&wants)
        .unwrap_or_else(|e| panic!("unit not enabled ({}): {e}", wants.display()));
    assert_eq!(link, Path::new("/usr/lib/systemd/system/cidguard.service"));
}

/// Purging takes away the files and the enablement, and the empty /etc/cidguard.
fn purge(root: &Path, work: &Path) {
    let mut cmd = dpkg_in(root);
    cmd.args(["--purge", "cidguard"]);
    ok(run(cmd, work, Duration::from_secs(120)), "dpkg --purge");
    for gone in [
        "usr/bin/cidguard",
        "usr/lib/systemd/system/cidguard.service",
        "etc/systemd/system/multi-user.target.wants/cidguard.service",
        "etc/cidguard",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
}
