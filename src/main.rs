//! The `cidguard` command. Thin: parse arguments, call the library, print,
//! exit with the documented status.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Judge one captured SIP INVITE against a line's policy.
    ///
    /// Exit status: 0 pass, 1 fail (identity leaked or wrong presentation),
    /// 3 inconclusive (the message can't be judged), 2 usage or config error.
    Inspect {
        /// Config file (default: the built-in example config).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The line whose policy applies.
        #[arg(long, short)]
        line: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// The captured message; `-` reads standard input.
        capture: PathBuf,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Email alerts.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
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
    init_tracing();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(UsageError(e)) => {
            eprintln!("cidguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CIDGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<u8, UsageError> {
    match cli.command {
        Command::Inspect {
            config,
            line,
            format,
            capture,
        } => inspect(config.as_deref(), &line, format, &capture).map_err(UsageError),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config).map_err(UsageError),
        Command::Alert {
            command: AlertCommand::Test { config },
        } => alert_test(&config),
    }
}

fn alert_test(path: &Path) -> Result<u8, UsageError> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.into()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(UsageError)?;
    let report = rt
        .block_on(cidguard::alert::send_test_email(
            &cfg,
            path,
            chrono::Utc::now(),
        ))
        .map_err(|e| UsageError(e.into()))?;
    print!("{}", report.human());
    Ok(if report.accepted() { 0 } else { 1 })
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
