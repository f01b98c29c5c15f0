//! `cidguard demo`: the whole thing on one machine with nothing else
//! installed, so a newcomer sees a pass, an umbrella pass, a leak and its
//! alert email within a minute.
//!
//! A demo PBX ([`pbx`]), cidguard's endpoint and the real daemon (the same
//! checker, PBX probe and email alerts as `cidguard run`) all run on
//! 127.0.0.1. The configuration is `config/demo.toml` with free ports, a
//! temporary folder and the chosen schedule filled in; results are printed
//! as they come, and so is each alert email written to the mail folder.

pub mod pbx;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::check::result::{CheckResult, Trigger};
use crate::config::{Config, ConfigError, Expect};
use crate::daemon::wiring::{EmailAlerts, OptionsProbe, SipChecker};
use crate::daemon::{self, BoxError, CheckRequest, Checker, DaemonError, Deps, Event};
use pbx::{DemoPbx, Identities, PbxError, Rule};

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
const RULES: &[(&str, Rule)] = &[
    ("reception", Rule::Withheld),
    ("outreach", Rule::Umbrella),
    ("intake", Rule::Leak),
];
/// The line that `f` makes leak and `r` restores.
pub const FLIP_LINE: &str = "reception";

/// How long the daemon gets to stop before the demo gives up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the mail folder is looked at for new alert emails.
const MAIL_POLL: Duration = Duration::from_millis(300);

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
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("the daemon task failed: {0}")]
    Join(String),
}

/// What the person at the keyboard asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Make the withheld line leak.
    Flip,
    /// Put every rule back.
    Restore,
    Quit,
}

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often each line is checked.
    pub every: Duration,
    /// Stop by itself after this long.
    pub run_for: Option<Duration>,
    /// Where to keep the config, history and mail (default: a new folder in
    /// the system's temporary directory).
    pub dir: Option<PathBuf>,
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

/// Read commands from standard input, one per line, on a thread of its own
/// (stdin reads block). When stdin is closed or not there at all (CI, a
/// service), the channel simply closes and the demo runs on.
pub fn stdin_commands() -> mpsc::UnboundedReceiver<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("demo-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let cmd = match line.trim() {
                    "f" | "F" => Command::Flip,
                    "r" | "R" => Command::Restore,
                    "q" | "Q" => Command::Quit,
                    "" => continue,
                    other => {
                        println!("  (unknown key {other:?}: f = leak, r = restore, q = quit)");
                        continue;
                    }
                };
                if tx.send(cmd).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "can't read keys from standard input; the demo runs without them");
    }
    rx
}

/// One result as it comes back from a check, for the console.
struct Reported {
    line: String,
    trigger: Trigger,
    outcome: crate::verdict::Outcome,
    summary: String,
}

/// The real SIP checker, telling the console about each result.
struct ReportingChecker {
    inner: SipChecker,
    tx: mpsc::UnboundedSender<Reported>,
}

#[async_trait]
impl Checker for ReportingChecker {
    async fn configure(&self, config: &Arc<Config>) -> Result<(), BoxError> {
        self.inner.configure(config).await
    }

    async fn check(&self, req: CheckRequest) -> CheckResult {
        let r = self.inner.check(req).await;
        let _ = self.tx.send(Reported {
            line: r.line.clone(),
            trigger: r.trigger.clone(),
            outcome: r.outcome,
            summary: console_summary(&r),
        });
        r
    }
}

/// The result's summary, plus what a passing call presented: a newcomer
/// should see that "pass" means "Anonymous" or the umbrella agency arrived.
fn console_summary(r: &CheckResult) -> String {
    // What arrived is shown escaped, like every value from the wire.
    crate::escape::control(&console_summary_raw(r)).into_owned()
}

fn console_summary_raw(r: &CheckResult) -> String {
    if r.outcome != crate::verdict::Outcome::Pass {
        return r.summary();
    }
    let what = r.summary();
    let from = r
        .presented
        .identities
        .iter()
        .find(|i| i.header == "From")
        .map(|i| format!("; From {i}"))
        .unwrap_or_default();
    let privacy = r
        .presented
        .privacy
        .as_ref()
        .map(|p| format!(", Privacy: {p}"))
        .unwrap_or_default();
    format!("{what}{from}{privacy}")
}

/// The files and addresses of one demo run.
struct Setup {
    dir: PathBuf,
    mail: PathBuf,
    config_path: PathBuf,
    config: Config,
    endpoint: SocketAddr,
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

/// A free UDP port on loopback for the endpoint. The endpoint binds it
/// itself from the config, so the port is released first; another program
/// grabbing it in between is possible but the start then fails loudly.
fn free_udp_port() -> Result<SocketAddr, DemoError> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(DemoError::Port)?;
    s.local_addr().map_err(DemoError::Port)
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

fn prepare(opts: &Options, pbx_addr: SocketAddr, endpoint: SocketAddr) -> Result<Setup, DemoError> {
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => new_private_folder()?,
    };
    let mail = dir.join("mail");
    let state = dir.join("state");
    folder(&mail)?;
    folder(&state)?;
    let mut text = DEMO_CONFIG.to_string();
    text = replace_once(&text, PBX_PLACEHOLDER, &pbx_addr.to_string())?;
    text = replace_once(&text, ENDPOINT_PLACEHOLDER, &endpoint.to_string())?;
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
        &format!("default_schedule = \"{}\"", schedule_for(opts.every)?),
    )?;
    // The dashboard on a free loopback port, with a token for run-now that
    // is printed with its address (a demo has nothing to protect).
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(DemoError::Port)?;
    let token = crate::check::token::random_token(20);
    text.push_str(&format!(
        "\n# Added by the demo: the dashboard on a free port.\n[dashboard]\nlisten = \"{web}\"\ntoken = \"{token}\"\n"
    ));
    let config_path = dir.join("cidguard-demo.toml");
    std::fs::write(&config_path, &text).map_err(|source| DemoError::Folder {
        path: config_path.clone(),
        source,
    })?;
    let config = Config::load(&config_path)?;
    Ok(Setup {
        dir,
        mail,
        config_path,
        config,
        endpoint,
    })
}

/// A configured number as the demo PBX puts it on the wire: its dialable
/// form (`+61 3 7010 0142` is `+61370100142`).
fn e164(n: &str, region: &str) -> String {
    crate::verdict::numbers::dialable(n, Some(region)).unwrap_or_else(|_| n.to_string())
}

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

fn username(cfg: &Config, line: &'static str) -> Result<String, DemoError> {
    cfg.line(line)
        .and_then(|l| l.account.as_ref())
        .map(|a| a.username.clone())
        .ok_or(DemoError::Line(line))
}

fn now() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// The `Subject:` of an `.eml` file, unfolded.
fn subject_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let first = lines.find(|l| l.to_ascii_lowercase().starts_with("subject:"))?;
    let mut s = first["subject:".len()..].trim().to_string();
    for l in lines {
        if l.starts_with(' ') || l.starts_with('\t') {
            s.push(' ');
            s.push_str(l.trim());
        } else {
            break;
        }
    }
    Some(s)
}

fn new_emails(mail: &Path, seen: &mut BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(mail) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml") && !seen.contains(p))
        .collect();
    found.sort();
    // A file still being written has no subject yet: pick it up next time.
    found.retain(|p| subject_of(p).is_some());
    seen.extend(found.iter().cloned());
    found
}

/// The dashboard's address (the demo always adds a `[dashboard]`).
fn dashboard_url(cfg: &Config) -> Option<String> {
    cfg.dashboard
        .as_ref()
        .map(|d| format!("http://{}/", d.listen))
}

/// Flip or restore the demo PBX's rules, and say so on the console.
fn apply(c: Command, pbx: &DemoPbx, flip_user: &str, initial: &[(&str, String, Rule)], from: &str) {
    match c {
        Command::Flip => {
            pbx.set_rule(flip_user, Rule::Leak);
            println!(
                "{}  PBX rule for {FLIP_LINE} is now \"leak\" (from the {from}): its next check should fail",
                now()
            );
        }
        Command::Restore => {
            for (_, user, rule) in initial {
                pbx.set_rule(user, *rule);
            }
            println!("{}  PBX rules restored (from the {from})", now());
        }
        Command::Quit => {}
    }
}

/// Run the demo until `shutdown`, `q`, or `opts.run_for`.
pub async fn run(
    opts: Options,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    // The built-in file, placeholders and all, says who is who; the PBX
    // then binds a free port, which goes into the effective config.
    let base = Config::from_toml(DEMO_CONFIG, Path::new("config/demo.toml"))?;
    let mut rules = HashMap::new();
    let mut initial = Vec::new();
    for (line, rule) in RULES {
        let user = username(&base, line)?;
        rules.insert(user.clone(), *rule);
        initial.push((*line, user, *rule));
    }
    let flip_user = username(&base, FLIP_LINE)?;
    let endpoint = free_udp_port()?;
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let pbx = DemoPbx::start(listen, endpoint, identities(&base), rules).await?;
    let setup = match prepare(&opts, pbx.addr(), endpoint) {
        Ok(s) => s,
        Err(e) => {
            pbx.shutdown().await;
            return Err(e);
        }
    };
    let cfg = &setup.config;

    println!("cidguard demo: everything runs on 127.0.0.1, nothing leaves this machine.");
    println!("  demo PBX     udp {} ({})", pbx.addr(), pbx::SERVER);
    println!("  endpoint     udp {}", setup.endpoint);
    println!("  config       {}", setup.config_path.display());
    println!("  history      {}", cfg.daemon.state_dir().display());
    println!("  mail folder  {}", setup.mail.display());
    if let Some(url) = dashboard_url(cfg) {
        let token = cfg
            .dashboard
            .as_ref()
            .and_then(|d| d.token.as_ref())
            .and_then(|t| t.reveal().ok())
            .unwrap_or_default();
        // A demo token guards nothing real, so it is printed for pasting.
        println!("  dashboard    {url}  (token for run-now and the demo switch: {token})");
    }
    println!("  lines:");
    for (line, user, rule) in &initial {
        let expect = match cfg.line(line).map(|l| l.expect) {
            Some(Expect::Umbrella) => "umbrella",
            _ => "withheld",
        };
        println!(
            "    {line:<10} ext {user}  expects {expect:<8}  PBX rule {}",
            rule.name()
        );
    }
    println!(
        "  every line is checked every {} s; keys: f + Enter = make {FLIP_LINE} leak, r = restore, q = quit (or use the dashboard)",
        opts.every.as_secs()
    );

    let (result_tx, mut results) = mpsc::unbounded_channel();
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let mut deps = Deps::new(
        Arc::new(ReportingChecker {
            inner: SipChecker::new(),
            tx: result_tx,
        }),
        Arc::new(OptionsProbe),
        Arc::new(EmailAlerts::new(&setup.config_path)),
    );
    deps.events = Some(event_tx);
    // The dashboard's demo controls send the same commands as the keys.
    let (web_tx, mut web_commands) = mpsc::unbounded_channel();
    deps.demo = Some(Arc::new(move |a: crate::web::DemoAction| {
        let c = match a {
            crate::web::DemoAction::Leak => Command::Flip,
            crate::web::DemoAction::Restore => Command::Restore,
        };
        let _ = web_tx.send(c);
    }));
    // A demo is not a systemd service, even when started from one.
    deps.notifier = daemon::notify::Notifier::disabled();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let config_path = setup.config_path.clone();
    let mut daemon_task = tokio::spawn(async move {
        daemon::run(&config_path, deps, reload_rx, async {
            let _ = stop_rx.await;
        })
        .await
    });

    let deadline = opts.run_for.map(|d| tokio::time::Instant::now() + d);
    let mut seen = BTreeSet::new();
    let mut poll = tokio::time::interval(MAIL_POLL);
    let mut commands_open = true;
    let mut daemon_result = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                println!("{}  stopping (interrupted)", now());
                break;
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                println!("{}  stopping (--for elapsed)", now());
                break;
            }
            r = &mut daemon_task => {
                daemon_result = Some(r);
                break;
            }
            Some(r) = results.recv() => {
                let again = if r.trigger == Trigger::Confirm { " (re-check)" } else { "" };
                println!("{}  {:<10} {:<12} {}{again}", now(), r.line, r.outcome.to_string().to_uppercase(), r.summary);
            }
            Some(e) = events.recv() => {
                if e == Event::Ready {
                    println!("{}  daemon ready: first checks at the next scheduled time", now());
                }
            }
            c = commands.recv(), if commands_open => match c {
                None => commands_open = false,
                Some(Command::Quit) => {
                    println!("{}  stopping (q)", now());
                    break;
                }
                Some(c) => apply(c, &pbx, &flip_user, &initial, "key"),
            },
            Some(c) = web_commands.recv() => apply(c, &pbx, &flip_user, &initial, "dashboard"),
            _ = poll.tick() => {
                for p in new_emails(&setup.mail, &mut seen) {
                    let subject = subject_of(&p).unwrap_or_default();
                    println!("{}  ALERT EMAIL  {subject}\n{:>10}   {}", now(), "", p.display());
                }
            }
        }
    }

    let daemon_result = match daemon_result {
        Some(r) => r,
        None => {
            let _ = stop_tx.send(());
            match tokio::time::timeout(STOP_TIMEOUT, &mut daemon_task).await {
                Ok(r) => r,
                Err(_) => {
                    warn!("the daemon did not stop in time");
                    daemon_task.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    // Results and emails that arrived while stopping are still worth showing.
    while let Ok(r) = results.try_recv() {
        println!(
            "{}  {:<10} {:<12} {}",
            now(),
            r.line,
            r.outcome.to_string().to_uppercase(),
            r.summary
        );
    }
    for p in new_emails(&setup.mail, &mut seen) {
        let subject = subject_of(&p).unwrap_or_default();
        println!(
            "{}  ALERT EMAIL  {subject}\n{:>10}   {}",
            now(),
            "",
            p.display()
        );
    }
    pbx.shutdown().await;
    println!(
        "demo stopped. Its files stay in {} (history, config, mail).",
        setup.dir.display()
    );
    match daemon_result {
        Ok(r) => r.map_err(DemoError::from),
        Err(e) => Err(DemoError::Join(e.to_string())),
    }
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
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        for (line, _) in RULES {
            username(&cfg, line).unwrap();
        }
        let ids = identities(&cfg);
        assert_eq!(ids.org_number, "+61370100142");
        assert_eq!(ids.umbrella_number, "+61290000000");
    }
}
