//! The `cidguard` command. Thin: parse arguments, call the library, print,
//! exit with the documented status.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use cidguard::check::evidence::EvidenceDir;
use cidguard::check::result::Trigger;
use cidguard::check::run::{CheckOptions, Checker};
use cidguard::config::Config;
use cidguard::report;
use cidguard::verdict::{self, Policy};

/// The example configuration, built in so `inspect` works out of the box.
const EXAMPLE_CONFIG: &str = include_str!("../config/example.toml");

#[derive(Parser)]
#[command(
    name = "cidguard",
    version,
    about = "Caller-ID privacy regression tester"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Judge one captured SIP INVITE against a line's policy, or every call
    /// in a packet capture (--pcap).
    ///
    /// With --pcap FILE (pcap or pcapng; Ethernet with VLAN tags, Linux
    /// cooked, raw IP or loopback; IPv4 and IPv6; UDP, and TCP with stream
    /// reassembly; IP fragments reassembled; TLS and SRTP can't be read and
    /// are counted as not readable) every initial INVITE is judged once,
    /// against --line L's policy, or with --org (the default without --line)
    /// against the organisation alone: its numbers, names and hosts must
    /// appear nowhere, and no line's presentation rules apply. --from-host
    /// and --to-host (an address, a CIDR network or address:port; repeat or
    /// separate with commas) pick the direction that matters, such as the
    /// PBX's leg to the carrier. Text output is a line per failing or
    /// inconclusive call, then a summary; --format json writes one JSON
    /// object per judged call, then a summary object.
    ///
    /// The people called stay private: the To header, the Request-URI's
    /// user part and every number that is not the organisation's are never
    /// printed or written as JSON. They are replaced by #h: tokens, a hash
    /// salted afresh on every run: the same person gets the same token
    /// within one run, so repeated calls can be grouped, and tokens don't
    /// link across runs.
    ///
    /// Exit status: 0 pass, 1 fail (identity leaked or wrong presentation),
    /// 3 inconclusive (the message can't be judged; for --pcap also: no
    /// INVITE judged, or part of the capture in that direction unreadable),
    /// 2 usage or config error, or a file that is not a capture.
    Inspect {
        /// Config file (default: the built-in example config).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The line whose policy applies (with --pcap: to every INVITE).
        #[arg(long, short, required_unless_present = "pcap", conflicts_with = "org")]
        line: Option<String>,
        /// With --pcap: judge against the organisation alone (the default
        /// without --line).
        #[arg(long, requires = "pcap")]
        org: bool,
        /// A packet capture (pcap or pcapng) whose every call is judged; `-`
        /// reads standard input.
        #[arg(long, value_name = "FILE", conflicts_with = "capture")]
        pcap: Option<PathBuf>,
        /// With --pcap: judge only messages sent from these hosts (address,
        /// CIDR or address:port).
        #[arg(long, value_name = "HOST", value_delimiter = ',', requires = "pcap")]
        from_host: Vec<String>,
        /// With --pcap: judge only messages sent to these hosts (address,
        /// CIDR or address:port).
        #[arg(long, value_name = "HOST", value_delimiter = ',', requires = "pcap")]
        to_host: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// With --pcap: threads judging calls (default: one per CPU).
        #[arg(long, value_name = "N", requires = "pcap", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// The captured message; `-` reads standard input.
        #[arg(required_unless_present = "pcap")]
        capture: Option<PathBuf>,
    },
    /// Place a real test call from each line through the PBX to the
    /// endpoint, match it, and judge what arrived.
    ///
    /// Exit status: 0 all pass, 1 any fail, 3 none failed but some
    /// inconclusive, 2 usage or config error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Check only these lines (repeat for several); all lines when absent.
        #[arg(long, short)]
        line: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Why this check is run ("after FreePBX 17 upgrade"), kept with the result.
        #[arg(long)]
        label: Option<String>,
        /// Run here even if a daemon for this config is running (by default
        /// the daemon is asked to run the checks, so the results land in its
        /// history, alerts and dashboard).
        #[arg(long)]
        standalone: bool,
        /// Where to write each result's evidence (every SIP message,
        /// credentials redacted), one new file per result, mode 0600.
        /// Default: `evidence` in the state directory (`daemon.state_dir` or
        /// $STATE_DIRECTORY) when it exists and is writable, else the private
        /// $XDG_STATE_HOME/cidguard/evidence (~/.local/state/cidguard/evidence).
        /// A folder given here must not be a symbolic link, must belong to
        /// you or root, and may be writable by others only with the sticky bit.
        #[arg(long)]
        evidence_dir: Option<PathBuf>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// SIP tools for debugging a PBX: the same code the checks use.
    Sip {
        #[command(subcommand)]
        command: SipCommand,
    },
    /// Email alerts.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Run the daemon: check every line on its schedule and record the
    /// results (a systemd service; SIGHUP reloads the config, SIGTERM stops).
    ///
    /// Exit status: 0 after a clean stop, 1 if it could not run, 2 config error.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Try cidguard with nothing else installed: a demo PBX, the endpoint
    /// and the daemon, all on 127.0.0.1, checking three lines (one withheld,
    /// one umbrella, one leaking) and writing alert emails to a folder.
    ///
    /// Keys while it runs: f + Enter makes the withheld line leak, r
    /// restores, q quits (Ctrl-C too). Exit status: 0 after a clean stop.
    Demo {
        /// How often each line is checked (`15s`, `2s`, `1m`).
        #[arg(long, default_value = "15s")]
        every: String,
        /// Stop by itself after this long (`60s`, `5m`).
        #[arg(long = "for")]
        run_for: Option<String>,
        /// Keep the demo's config, history and mail here instead of a new
        /// temporary folder.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write a commented starter config to fill in (never overwrites).
    ///
    /// Exit status: 0 written, 1 the file exists or can't be written.
    Init {
        /// Where to write it.
        #[arg(long, short, default_value = "cidguard.toml")]
        output: PathBuf,
    },
    /// Show a line's recorded checks.
    ///
    /// Exit status: 0, 1 if the history can't be read, 2 usage or config error.
    History {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        line: String,
        /// Only checks started within this long before now (`30d`, `12h`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = HistoryFormat::Text)]
        format: HistoryFormat,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum HistoryFormat {
    Text,
    Json,
    Csv,
}

#[derive(Subcommand)]
enum AlertCommand {
    /// Send a test email through the configured transport and show the
    /// SMTP dialogue.
    ///
    /// Exit status: 0 accepted by the server, 1 sending failed, 2 config error.
    Test {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum SipCommand {
    /// Register a line's account once, print the result and the PBX's
    /// Server/User-Agent, then remove the registration.
    Register {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        line: String,
    },
    /// Run the endpoint and print each arriving call's identity headers
    /// (calls are held, then rejected). Stop with Ctrl-C.
    Listen {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config and summarise its lines.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// Errors that exit with status 2.
struct UsageError(anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does; one-shot commands only warnings.
    init_tracing(if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    });
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(UsageError(e)) => {
            eprintln!("cidguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CIDGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn run(cli: Cli) -> Result<u8, UsageError> {
    match cli.command {
        Command::Demo {
            every,
            run_for,
            dir,
        } => run_demo(&every, run_for.as_deref(), dir),
        Command::Init { output } => init(&output),
        Command::Inspect {
            config,
            line,
            org: _,
            pcap: Some(pcap),
            from_host,
            to_host,
            format,
            jobs,
            capture: _,
        } => inspect_pcap(
            config.as_deref(),
            line.as_deref(),
            &pcap,
            &from_host,
            &to_host,
            format,
            jobs,
        ),
        Command::Inspect {
            config,
            line,
            format,
            capture,
            ..
        } => match (line, capture) {
            (Some(line), Some(capture)) => {
                inspect(config.as_deref(), &line, format, &capture).map_err(UsageError)
            }
            // clap requires both without --pcap.
            _ => Err(UsageError(anyhow::anyhow!(
                "give --line L and a capture file, or --pcap FILE"
            ))),
        },
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config).map_err(UsageError),
        Command::Check {
            config,
            line,
            format,
            label,
            standalone,
            evidence_dir,
        } => runtime()?.block_on(check(
            &config,
            &line,
            format,
            label,
            standalone,
            evidence_dir,
        )),
        Command::Sip {
            command: SipCommand::Register { config, line },
        } => runtime()?.block_on(sip_register(&config, &line)),
        Command::Sip {
            command: SipCommand::Listen { config },
        } => runtime()?.block_on(sip_listen(&config)),
        Command::Alert {
            command: AlertCommand::Test { config },
        } => alert_test(&config),
        Command::Run { config } => run_daemon(&config),
        Command::History {
            config,
            line,
            since,
            format,
        } => history(&config, &line, since.as_deref(), format),
    }
}

fn alert_test(path: &Path) -> Result<u8, UsageError> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.into()))?;
    let report = runtime()?
        .block_on(cidguard::alert::send_test_email(
            &cfg,
            path,
            chrono::Utc::now(),
        ))
        .map_err(|e| UsageError(e.into()))?;
    print!("{}", report.human());
    Ok(if report.accepted() { 0 } else { 1 })
}

/// The async runtime every command runs on: two workers are plenty for
/// SIP, SMTP and the dashboard, and keep the thread count small.
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// The runtime for a one-shot command; failing to start it ends the command.
fn runtime() -> Result<tokio::runtime::Runtime, UsageError> {
    build_runtime()
        .context("starting the async runtime")
        .map_err(UsageError)
}

async fn check(
    config: &Path,
    lines: &[String],
    format: Format,
    label: Option<String>,
    standalone: bool,
    evidence_dir: Option<PathBuf>,
) -> Result<u8, UsageError> {
    let cfg = Config::load(config).map_err(|e| UsageError(e.into()))?;
    for l in lines {
        if cfg.line(l).is_none() {
            return Err(UsageError(anyhow::anyhow!(
                "no line named {l:?} in {} (lines: {})",
                config.display(),
                cfg.lines
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let policies = Policy::for_config(&cfg)
        .context("organisation numbers")
        .map_err(UsageError)?;
    let from_daemon = if standalone {
        None
    } else {
        cidguard::web::client::check_via_daemon(
            &cfg,
            lines,
            label.clone(),
            std::time::Duration::from_secs(600),
        )
        .await
        .context("asking the running daemon (use --standalone to check here instead)")
        .map_err(UsageError)?
    };
    let mut evidence = None;
    let mut results = match from_daemon {
        Some(r) => {
            eprintln!("cidguard: the running daemon ran the checks; results are in its history");
            r
        }
        None => {
            // Decided before any call is placed, so a refused folder costs
            // no test calls.
            let dir = match &evidence_dir {
                Some(d) => EvidenceDir::named(d),
                None => EvidenceDir::default_for(&cfg.daemon),
            }
            .context("evidence")
            .map_err(UsageError)?;
            evidence = Some(dir);
            let cfg = std::sync::Arc::new(cfg.clone());
            let checker = Checker::start(cfg, CheckOptions::default())
                .await
                .with_context(|| format!("{}: endpoint", config.display()))
                .map_err(UsageError)?;
            let r = checker
                .check_lines(lines, Trigger::Manual { label, run: None })
                .await;
            checker.shutdown().await;
            r
        }
    };
    for r in &mut results {
        if r.evidence.is_empty() {
            continue;
        }
        if let Some(dir) = &evidence {
            match dir.write(r) {
                Ok(path) => r.evidence_ref = Some(path.display().to_string()),
                Err(e) => r.notes.push(format!("evidence not saved: {e}")),
            }
        }
        r.evidence.clear();
    }
    match format {
        Format::Text => {
            for (i, r) in results.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!(
                    "{}",
                    report::human_check(r, policies.iter().find(|p| p.line == r.line))
                );
            }
        }
        Format::Json => {
            let out = serde_json::json!({ "results": results });
            println!(
                "{}",
                serde_json::to_string_pretty(&out)
                    .context("encoding JSON")
                    .map_err(UsageError)?
            );
        }
    }
    Ok(report::combined_exit_code(results.iter().map(|r| &r.outcome)) as u8)
}

async fn sip_register(config: &Path, line: &str) -> Result<u8, UsageError> {
    let cfg = Config::load(config).map_err(|e| UsageError(e.into()))?;
    let Some(l) = cfg.line(line) else {
        return Err(UsageError(anyhow::anyhow!(
            "no line named {line:?} in {}",
            config.display()
        )));
    };
    let Some(account) = &l.account else {
        return Err(UsageError(anyhow::anyhow!(
            "{}: line {line:?} has no [line.account] to register",
            config.display()
        )));
    };
    match cidguard::sip::hooks::register_line(account, Default::default()).await {
        // The report and errors quote the registrar's reason phrase and
        // Server header: escaped (the report does it itself).
        Ok(r) => {
            println!("{line}: {r}");
            Ok(if r.registered() { 0 } else { 1 })
        }
        Err(e) => {
            println!(
                "{line}: registration failed: {}",
                cidguard::escape::control(&e.to_string())
            );
            Ok(1)
        }
    }
}

async fn sip_listen(config: &Path) -> Result<u8, UsageError> {
    let cfg = Config::load(config).map_err(|e| UsageError(e.into()))?;
    let Some(ep) = &cfg.endpoint else {
        return Err(UsageError(anyhow::anyhow!(
            "{}: no [endpoint] table",
            config.display()
        )));
    };
    println!(
        "listening on {} for calls to {}; Ctrl-C to stop",
        ep.listen.join(", "),
        ep.numbers.join(", ")
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    cidguard::sip::hooks::listen(
        ep,
        cidguard::sip::endpoint::EndpointOptions {
            // A call delivered in national form still finds its number.
            region: Some(cfg.organisation.region.clone()),
            ..Default::default()
        },
        |c| {
            // Everything but the address and transport came off the wire:
            // escaped, so an ESC or CR in a header can't act on the terminal.
            use cidguard::escape::control as esc;
            let to = c.number.as_deref().map_or_else(
                || format!("{} (stray, answered 404)", esc(&c.dialled)),
                |n| esc(n).into_owned(),
            );
            println!(
                "call {} from {} over {} to {to}",
                esc(&c.call_id),
                c.source,
                c.transport
            );
            for (name, value) in &c.headers {
                println!("  {}: {}", esc(name), esc(value));
            }
        },
        shutdown,
    )
    .await
    .context("endpoint")
    .map_err(UsageError)?;
    Ok(0)
}

/// Print a runtime failure and exit 1 (not a usage error).
fn failed(e: impl std::fmt::Display) -> Result<u8, UsageError> {
    eprintln!("cidguard: {e}");
    Ok(1)
}

fn run_daemon(config: &Path) -> Result<u8, UsageError> {
    use cidguard::daemon::wiring::{EmailAlerts, OptionsProbe, SipChecker};
    use cidguard::daemon::{self, DaemonError, Deps};
    // Refuse a bad config before anything starts, with status 2.
    Config::load(config).map_err(|e| UsageError(e.into()))?;
    let rt = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => return failed(format!("can't start the runtime: {e}")),
    };
    let outcome = rt.block_on(async {
        let (reload, stop) = daemon::unix_signals()?;
        let deps = Deps::new(
            Arc::new(SipChecker::new()),
            Arc::new(OptionsProbe),
            Arc::new(EmailAlerts::new(config)),
        );
        daemon::run(config, deps, reload, stop).await
    });
    match outcome {
        Ok(()) => Ok(0),
        Err(DaemonError::Config(e)) => Err(UsageError(e.into())),
        Err(e) => failed(e),
    }
}

fn run_demo(every: &str, run_for: Option<&str>, dir: Option<PathBuf>) -> Result<u8, UsageError> {
    use cidguard::config::parse_duration;
    use cidguard::demo;
    let every = parse_duration(every).map_err(|e| UsageError(anyhow::anyhow!("--every: {e}")))?;
    demo::schedule_for(every).map_err(|e| UsageError(e.into()))?;
    let run_for = run_for
        .map(|s| parse_duration(s).map_err(|e| UsageError(anyhow::anyhow!("--for: {e}"))))
        .transpose()?;
    let rt = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => return failed(format!("can't start the runtime: {e}")),
    };
    let outcome = rt.block_on(async {
        let shutdown = async {
            // Without a Ctrl-C handler the demo just runs to --for or q.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        demo::run(
            demo::Options {
                every,
                run_for,
                dir,
            },
            demo::stdin_commands(),
            shutdown,
        )
        .await
    });
    // The stdin thread may still be blocked on a read: don't wait for it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => Ok(0),
        Err(e) => failed(e),
    }
}

/// The starter config: the example, whose placeholders say what to change.
fn init(output: &Path) -> Result<u8, UsageError> {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return failed(format!(
                "{} already exists; not overwriting it (choose another with --output)",
                output.display()
            ))
        }
        Err(e) => return failed(format!("can't create {}: {e}", output.display())),
    };
    if let Err(e) = file.write_all(EXAMPLE_CONFIG.as_bytes()) {
        return failed(format!("can't write {}: {e}", output.display()));
    }
    println!("wrote {}", output.display());
    println!(
        "Fill in your organisation, lines, accounts and endpoint, then: cidguard config check --config {}",
        output.display()
    );
    Ok(0)
}

fn history(
    config: &Path,
    line: &str,
    since: Option<&str>,
    format: HistoryFormat,
) -> Result<u8, UsageError> {
    use cidguard::store::Store;
    let cfg = Config::load(config).map_err(|e| UsageError(e.into()))?;
    let since_ms = match since {
        Some(s) => {
            let d = cidguard::config::parse_duration(s)
                .map_err(|e| UsageError(anyhow::anyhow!("--since: {e}")))?;
            let d = chrono::Duration::from_std(d)
                .map_err(|_| UsageError(anyhow::anyhow!("--since: {s:?} is out of range")))?;
            Some((chrono::Utc::now() - d).timestamp_millis())
        }
        None => None,
    };
    let path = cfg.daemon.state_dir().join(Store::FILE_NAME);
    let store = match Store::open_existing(&path) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    if cfg.line(line).is_none() && !store.lines().unwrap_or_default().iter().any(|l| l == line) {
        return Err(UsageError(anyhow::anyhow!(
            "no line named {line:?} in the config or the history (lines: {})",
            cfg.lines
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let checks = match cidguard::history::checks_since(&store, line, since_ms) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let format = match format {
        HistoryFormat::Text => cidguard::history::Format::Text,
        HistoryFormat::Json => cidguard::history::Format::Json,
        HistoryFormat::Csv => cidguard::history::Format::Csv,
    };
    print!(
        "{}",
        cidguard::history::render(&checks, format, cfg.daemon.tz())
    );
    Ok(0)
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            eprintln!("cidguard: no --config given; using the built-in example config (config/example.toml)");
            Ok(Config::from_toml(
                EXAMPLE_CONFIG,
                Path::new("built-in example.toml"),
            )?)
        }
    }
}

fn policy_for(cfg: &Config, line: &str) -> anyhow::Result<Policy> {
    let policies = Policy::for_config(cfg).context("organisation numbers")?;
    match policies.into_iter().find(|p| p.line == line) {
        Some(p) => Ok(p),
        None => bail!(
            "no line named {line:?} in the config (lines: {})",
            cfg.lines
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn inspect(
    config: Option<&Path>,
    line: &str,
    format: Format,
    capture: &Path,
) -> anyhow::Result<u8> {
    let cfg = load_config(config)?;
    let policy = policy_for(&cfg, line)?;
    let raw = if capture == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(cidguard::sip::message::MAX_MESSAGE as u64 + 1)
            .read_to_end(&mut buf)
            .context("reading the capture from standard input")?;
        buf
    } else {
        std::fs::read(capture)
            .with_context(|| format!("can't read capture file {}", capture.display()))?
    };
    let v = verdict::judge(&policy, &raw);
    match format {
        Format::Text => print!("{}", report::human(&v, &policy)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&v).context("encoding JSON")?
        ),
    }
    Ok(report::exit_code(v.outcome) as u8)
}

/// `inspect --pcap`: judge every initial INVITE in a capture, streaming
/// the calls out as they are judged and the summary last.
fn inspect_pcap(
    config: Option<&Path>,
    line: Option<&str>,
    pcap: &Path,
    from_host: &[String],
    to_host: &[String],
    format: Format,
    jobs: Option<u16>,
) -> Result<u8, UsageError> {
    use cidguard::capture::hosts::{HostSpec, Selector};
    use cidguard::capture::inspect::Inspection;
    use cidguard::capture::redact::Redactor;
    use cidguard::report::capture as out;
    use std::io::Write;

    let cfg = load_config(config).map_err(UsageError)?;
    let policy = match line {
        Some(l) => policy_for(&cfg, l).map_err(UsageError)?,
        None => Policy::organisation(&(&cfg.organisation).into())
            .context("organisation numbers")
            .map_err(UsageError)?,
    };
    let hosts = |list: &[String], flag: &str| -> Result<Vec<HostSpec>, UsageError> {
        list.iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| {
                h.parse::<HostSpec>()
                    .map_err(|e| UsageError(anyhow::anyhow!("{flag}: {e}")))
            })
            .collect()
    };
    let selector = Selector {
        from: hosts(from_host, "--from-host")?,
        to: hosts(to_host, "--to-host")?,
    };
    let redactor = Redactor::new(&cfg)
        .context("organisation numbers")
        .map_err(UsageError)?;
    // `-`: a capture streamed in (`tcpdump -w - ... | cidguard inspect --pcap -`).
    let file: Box<dyn Read> = if pcap == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(pcap)
                .with_context(|| format!("can't read capture file {}", pcap.display()))
                .map_err(UsageError)?,
        )
    };
    let name = if pcap == Path::new("-") {
        "standard input".to_string()
    } else {
        pcap.display().to_string()
    };
    let setup = out::Setup {
        file: &name,
        policy: &policy,
        selector: &selector,
    };
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    // The first write error (a closed pipe) stops the output, not the reading.
    let mut write_err: Option<std::io::Error> = None;
    let mut put = |w: &mut std::io::BufWriter<_>, text: &str| {
        if write_err.is_none() {
            if let Err(e) = w.write_all(text.as_bytes()) {
                write_err = Some(e);
            }
        }
    };
    let inspection = Inspection::open(
        file,
        &policy,
        &redactor,
        selector.clone(),
        Default::default(),
    )
    .map_err(|e| UsageError(anyhow::anyhow!("{name}: {e}")))?;
    if format == Format::Text {
        put(&mut w, &out::text_start(&setup, inspection.format()));
    }
    let workers = jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let report = inspection
        .run_with(workers, &mut |rec| match format {
            Format::Text => {
                if let Some(line) = out::text_call(rec) {
                    put(&mut w, &line);
                }
            }
            Format::Json => {
                let mut line = out::json_call(rec).to_string();
                line.push('\n');
                put(&mut w, &line);
            }
        })
        .map_err(|e| UsageError(anyhow::anyhow!("{name}: {e}")))?;
    match format {
        Format::Text => put(&mut w, &out::text_summary(&report)),
        Format::Json => {
            let mut line = out::json_summary(&setup, &report).to_string();
            line.push('\n');
            put(&mut w, &line);
        }
    }
    if write_err.is_none() {
        if let Err(e) = w.flush() {
            write_err = Some(e);
        }
    }
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(UsageError(anyhow::anyhow!("writing the output: {e}")));
        }
    }
    Ok(report.exit_code())
}

fn config_check(path: &Path) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("can't read config file {}", path.display()))?;
    let cfg: Config = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => bail!("{}: {}", path.display(), e.to_string().trim_end()),
    };
    let problems = cfg.problems();
    if !problems.is_empty() {
        let mut msg = format!(
            "{}: {} problem{}:",
            path.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in &problems {
            msg.push_str(&format!("\n  {}: {}", p.field, p.message));
        }
        bail!(msg);
    }
    let policies = Policy::for_config(&cfg).context("organisation numbers")?;
    println!("{}: OK", path.display());
    print!("{}", report::config_summary(&cfg, &policies));
    Ok(0)
}
