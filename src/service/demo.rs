//! `cidguard demo`: the whole thing on one machine with nothing else
//! installed, so a newcomer sees a pass, an umbrella pass, a leak and its
//! alert email within a minute.
//!
//! The demo's PBX and lines ([`crate::demo`]) with the service as `cidguard
//! run` wires it (the same checker, PBX probe and email alerts, the
//! dashboard with the demo's switch), all on 127.0.0.1. Results are printed
//! as they come, and so is each alert email written to the mail folder.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{Service, ServiceError};
use crate::check::result::{CheckResult, Trigger};
use crate::config::Expect;
use crate::daemon::wiring::{EmailAlerts, OptionsProbe, SipChecker};
use crate::daemon::{self, BoxError, CheckRequest, Checker, Deps, Event};
use crate::demo::caller::{call_and_record, CallerId, CallerOptions, Identity};
use crate::demo::pbx::{self, DemoPbx, Rule};
use crate::demo::{self, DemoError, DemoLines, FLIP_LINE};
use crate::plan::Plan;
use crate::sip::Transport;
use crate::verdict::Outcome;
use crate::web::{DemoAction, DemoSwitch};

/// How long the daemon gets to stop before the demo gives up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the mail folder is looked at for new alert emails.
const MAIL_POLL: Duration = Duration::from_millis(300);

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoRunError {
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("the demo config has no UDP listener for the endpoint")]
    NoEndpoint,
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
    /// Stop the demo.
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
    /// The line checked.
    line: String,
    /// Why it was checked.
    trigger: Trigger,
    /// What was found.
    outcome: Outcome,
    /// One line for the console.
    summary: String,
}

/// The real SIP checker, telling the console about each result.
struct ReportingChecker {
    /// The real checker.
    inner: SipChecker,
    /// Where each result goes for the console.
    tx: mpsc::UnboundedSender<Reported>,
}

#[async_trait]
impl Checker for ReportingChecker {
    async fn configure(&self, plan: &Arc<Plan>) -> Result<(), BoxError> {
        self.inner.configure(plan).await
    }

    async fn check(&self, req: CheckRequest) -> CheckResult {
        let r = self.inner.check(req).await;
        self.report(&r);
        r
    }

    async fn next_call_in(&self) -> Option<CheckResult> {
        // Cancel-safe as the inner one is: a result is reported only once
        // it has been taken.
        let r = self.inner.next_call_in().await?;
        self.report(&r);
        Some(r)
    }
}

impl ReportingChecker {
    fn report(&self, r: &CheckResult) {
        let _ = self.tx.send(Reported {
            line: r.line.clone(),
            trigger: r.trigger.clone(),
            outcome: r.outcome,
            summary: console_summary(r),
        });
    }
}

/// The result's summary, plus what a passing call presented: a newcomer
/// should see that "pass" means "Anonymous" or the umbrella agency arrived.
fn console_summary(r: &CheckResult) -> String {
    // What arrived is shown escaped, like every value from the wire.
    crate::escape::control(&console_summary_raw(r)).into_owned()
}

fn console_summary_raw(r: &CheckResult) -> String {
    if r.outcome != Outcome::Pass {
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

/// The demo's self-test calls: the first device with its own self-test
/// number calls it as a phone would, straight at the endpoint (as a
/// carrier delivers a call to the DID), once with its number withheld
/// (anonymous From, `Privacy: id`, no asserted identity: a network that
/// honours the request strips it) and once showing it in From. What it heard is saved as WAV files in the demo's
/// folder; the lines returned say how each call went and where they are.
fn selftest_calls(
    plan: &Plan,
    endpoint: SocketAddr,
    dir: &Path,
) -> Option<impl Future<Output = Vec<String>> + Send + 'static> {
    let device = plan
        .config()
        .devices
        .iter()
        .find(|d| d.selftest_number.is_some())?;
    let region = Some(plan.config().organisation.region.as_str());
    let dial = crate::plan::dial::dial_user(device.selftest_number.as_deref()?, region).ok()?;
    let own = crate::plan::dial::dial_user(device.numbers.first()?, region).ok()?;
    let name = device.name.clone();
    let shown_number = device.selftest_number.clone().unwrap_or_default();
    let folder = dir.join("self-test");
    Some(async move {
        let mut out = Vec::new();
        if let Err(e) = std::fs::create_dir_all(&folder) {
            out.push(format!("can't create {}: {e}", folder.display()));
            return out;
        }
        let me = Identity {
            display: None,
            user: own,
            host: "mobile.carrier.example".into(),
        };
        let calls = [
            (
                "withheld",
                "with its number withheld",
                CallerId::Withheld { asserted: None },
            ),
            ("showing", "showing its number", CallerId::Shown(me)),
        ];
        // Both at once: the second needn't wait for the first's message.
        let calls = calls.into_iter().map(|(file, how, caller_id)| {
            let opts = CallerOptions::new(endpoint, &dial, caller_id);
            let path = folder.join(format!("{file}.wav"));
            let (name, shown_number) = (&name, &shown_number);
            async move {
                match call_and_record(&opts).await {
                    Ok(heard) => {
                        let saved = match heard.write_wav(&path) {
                            Ok(()) => format!("saved to {}", path.display()),
                            Err(e) => format!("could not save it: {e}"),
                        };
                        let answered = if heard.answered {
                            " (it was ANSWERED: a self-test call must never be)"
                        } else {
                            ""
                        };
                        format!(
                            "SELF-TEST    {name} called {shown_number} {how}: heard {:.1} s of early media, then {} {}{answered}\n{:>10}   {saved}",
                            heard.duration().as_secs_f64(),
                            heard.final_status,
                            crate::escape::control(&heard.final_reason),
                            "",
                        )
                    }
                    Err(e) => {
                        format!("SELF-TEST    {name} could not call {shown_number} {how}: {e}")
                    }
                }
            }
        });
        out.extend(futures_util::future::join_all(calls).await);
        out
    })
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
) -> Result<(), DemoRunError> {
    // The built-in file, placeholders and all, says who is who. The demo
    // PBX's socket is bound first, so its address goes into the effective
    // config; the service then binds the endpoint and the dashboard on free
    // ports, and the PBX starts relaying to the endpoint's.
    let lines = DemoLines::read()?;
    let pbx_socket = tokio::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(DemoError::Port)?;
    let pbx_addr = pbx_socket.local_addr().map_err(DemoError::Port)?;
    let files = demo::write_config(opts.every, opts.dir.as_deref(), pbx_addr)?;
    let mut service = Service::prepare(&files.config_path).await?;
    let plan = service.plan();
    let Some(endpoint) = service
        .endpoint_addrs()
        .iter()
        .find(|(t, _)| *t == Transport::Udp)
        .map(|(_, a)| *a)
    else {
        return Err(DemoRunError::NoEndpoint);
    };
    let pbx = DemoPbx::start_on(
        pbx_socket,
        endpoint,
        lines.identities.clone(),
        lines.rules(),
    )
    .map_err(DemoError::from)?;

    println!("cidguard demo: everything runs on 127.0.0.1, nothing leaves this machine.");
    println!("  demo PBX     udp {} ({})", pbx.addr(), pbx::SERVER);
    println!("  endpoint     udp {endpoint}");
    println!("  config       {}", files.config_path.display());
    println!("  history      {}", plan.state_dir().display());
    println!("  mail folder  {}", files.mail.display());
    if let Some(addr) = service.dashboard_addr() {
        let token = plan
            .config()
            .dashboard
            .as_ref()
            .and_then(|d| d.token.as_ref())
            .and_then(|t| t.reveal().ok())
            .unwrap_or_default();
        // A demo token guards nothing real, so it is printed for pasting.
        println!("  dashboard    http://{addr}/  (token for run-now and the demo switch: {token})");
    }
    println!("  lines:");
    for (line, user, rule) in &lines.initial {
        let expect = match plan.line(line).map(|l| l.expected()) {
            Some(Expect::Umbrella) => "umbrella",
            _ => "withheld",
        };
        println!(
            "    {line:<10} ext {user}  expects {expect:<8}  PBX rule {}",
            rule.name()
        );
    }
    let callin = plan.callin();
    for (number, owner) in callin.numbers() {
        let whose = match owner {
            crate::plan::Owner::Organisation => "any phone may call it".to_string(),
            crate::plan::Owner::Device(i) => callin
                .devices()
                .get(*i)
                .map(|d| {
                    format!(
                        "{}'s own (it calls it once withheld, once showing its number)",
                        d.name()
                    )
                })
                .unwrap_or_default(),
        };
        println!("  self-test    {number}  {whose}");
    }
    println!(
        "  every line is checked every {} s; keys: f + Enter = make {FLIP_LINE} leak, r = restore, q = quit (or use the dashboard)",
        opts.every.as_secs()
    );
    let initial = &lines.initial;
    let flip_user = &lines.flip_user;

    let (result_tx, mut results) = mpsc::unbounded_channel();
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let mut deps = Deps::new(
        Arc::new(ReportingChecker {
            inner: service.sip_checker(),
            tx: result_tx,
        }),
        Arc::new(OptionsProbe),
        Arc::new(EmailAlerts::new(&files.config_path)),
    );
    deps.events = Some(event_tx);
    // The dashboard's demo switch sends the same commands as the keys.
    let (web_tx, mut web_commands) = mpsc::unbounded_channel();
    service.show_demo(DemoSwitch {
        line: FLIP_LINE.to_string(),
        flip: Arc::new(move |a: DemoAction| {
            let c = match a {
                DemoAction::Leak => Command::Flip,
                DemoAction::Restore => Command::Restore,
            };
            let _ = web_tx.send(c);
        }),
    });
    // A demo is not a systemd service, even when started from one.
    deps.notifier = daemon::notify::Notifier::disabled();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let mut daemon_task = tokio::spawn(async move {
        service
            .run(deps, reload_rx, async {
                let _ = stop_rx.await;
            })
            .await
    });

    let deadline = opts.run_for.map(|d| tokio::time::Instant::now() + d);
    let mut seen = BTreeSet::new();
    let mut poll = tokio::time::interval(MAIL_POLL);
    let mut commands_open = true;
    let mut daemon_result = None;
    // The demo mobile's two self-test calls, once the daemon is ready.
    let mut selftest_task: Option<tokio::task::JoinHandle<Vec<String>>> = None;
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
                let again = match &r.trigger {
                    Trigger::Confirm => " (re-check)",
                    Trigger::CallIn { .. } => " (call-in)",
                    _ => "",
                };
                println!("{}  {:<10} {:<12} {}{again}", now(), r.line, r.outcome.to_string().to_uppercase(), r.summary);
            }
            Some(e) = events.recv() => {
                if e == Event::Ready {
                    println!("{}  daemon ready: first checks at the next scheduled time", now());
                    if let Some(calls) = selftest_calls(&plan, endpoint, &files.dir) {
                        selftest_task = Some(tokio::spawn(calls));
                    }
                }
            }
            Some(r) = async {
                match selftest_task.as_mut() {
                    Some(t) => Some(t.await),
                    None => std::future::pending().await,
                }
            } => {
                selftest_task = None;
                match r {
                    Ok(heard) => {
                        for h in heard {
                            println!("{}  {}", now(), h);
                        }
                    }
                    Err(e) => warn!("the demo's self-test calls failed: {e}"),
                }
            }
            c = commands.recv(), if commands_open => match c {
                None => commands_open = false,
                Some(Command::Quit) => {
                    println!("{}  stopping (q)", now());
                    break;
                }
                Some(c) => apply(c, &pbx, flip_user, initial, "key"),
            },
            Some(c) = web_commands.recv() => apply(c, &pbx, flip_user, initial, "dashboard"),
            _ = poll.tick() => {
                for p in new_emails(&files.mail, &mut seen) {
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
    for p in new_emails(&files.mail, &mut seen) {
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
        files.dir.display()
    );
    match daemon_result {
        Ok(r) => r.map_err(DemoRunError::from),
        Err(e) => Err(DemoRunError::Join(e.to_string())),
    }
}
