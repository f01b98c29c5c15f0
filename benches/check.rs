//! A whole check of N lines through a real Kamailio, and SIPp on the same
//! path for reference.
//!
//! Run: `cargo bench --bench check` (needs `kamailio` and `sipp`, as the
//! tests do). All traffic stays on 127.0.0.1. Number matching (one endpoint
//! number per line, so lines are checked in parallel), holds set to zero.
//!
//! It prints, for N = 1, 10 and 50 lines:
//! - the wall time of one sweep (every line checked once);
//! - the median SIP exchange of one call, first INVITE to final response
//!   with the auth challenge included, beside SIPp's on the same path;
//! - cidguard's CPU time per check (both the line and the endpoint side,
//!   parsing, matching and the verdict), from getrusage over the sweeps
//!   only: its own overhead, without the network or the hold;
//! - how many checks were not a pass, and how many INVITEs the endpoint's
//!   flood limit refused: both must be 0 for the numbers to mean anything.
//!
//! SIPp's column is one call at a time (`-l 1`), so at N = 1 the ratio is
//! like for like; at N = 10 and 50 cidguard's calls share the PBX with the
//! rest of the sweep and the ratio also shows the PBX's queueing.
//! `CIDGUARD_BENCH_DEBUG=1` keeps SIPp's message log and prints the
//! endpoint's counters.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidguard::check::result::Trigger;
use cidguard::check::run::{CheckOptions, Checker};
use cidguard::config::Transport as CfgTransport;
use cidguard::plan::Plan;
use cidguard::sip::endpoint::EndpointOptions;
use cidguard::verdict::Outcome;

use support::{Kamailio, KamailioOpts, LINES};

/// User + system CPU time of this process (all its threads: the lines'
/// side, the endpoint and the runtime), to the microsecond.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn config(pbx: &Kamailio, n: usize) -> String {
    let numbers: Vec<String> = (0..n.max(2))
        .map(|i| format!("\"03999901{i:02}\""))
        .collect();
    let mut s = format!(
        r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]
names = ["Eastside Women's Refuge", "Eastside Refuge"]
hosts = ["pbx.eastside-refuge.org.au", "203.0.113.10"]

[endpoint]
listen = ["udp:127.0.0.1:0"]
numbers = [{}]
matching = "numbers"
hold_min = "0ms"
hold_max = "0ms"
"#,
        numbers.join(", ")
    );
    for i in 0..n {
        let acc = LINES[i % LINES.len()];
        s.push_str(&format!(
            "\n[[line]]\nname = \"line{i}\"\nexpect = \"withheld\"\n[line.account]\nregistrar = \"sip:{}\"\nusername = \"{}\"\npassword = \"{}\"\nregister = false\n",
            pbx.udp_addr(),
            acc.username,
            acc.password
        ));
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Seconds since midnight from SIPp's trace separator line
/// (`----- 2026-11-29\t05:55:12.123456`).
fn trace_time(sep: &str) -> Option<f64> {
    let t = sep.split_whitespace().last()?;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// SIPp's exchange on the same path, in milliseconds (median over `calls`),
/// from the microsecond timestamps of its message trace: first INVITE sent
/// to final response received, per call.
fn sipp_exchange_ms(pbx: &Kamailio, number: &str, calls: usize) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/pbx/call-reject.xml");
    let acc = LINES[0];
    let log = dir.path().join("messages.log");
    let status = Command::new(support::binary("sipp").ok()?)
        .current_dir(dir.path())
        .args([
            "-sf",
            scenario.to_str()?,
            "-t",
            "u1",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-nostdin",
        ])
        .args([
            "-s",
            number,
            "-key",
            "line",
            acc.username,
            "-au",
            acc.username,
            "-ap",
            acc.password,
        ])
        .args([
            "-m",
            &calls.to_string(),
            "-l",
            "1",
            "-r",
            "10",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .args(["-trace_msg", "-message_file", log.to_str()?])
        .arg(pbx.udp_addr().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("sipp failed: {status}");
    }
    let text = std::fs::read_to_string(&log).ok()?;
    if std::env::var_os("CIDGUARD_BENCH_DEBUG").is_some() {
        let kept = dir.keep();
        eprintln!(
            "SIPp message log kept: {}",
            kept.join("messages.log").display()
        );
    }
    let mut first_invite: std::collections::HashMap<String, f64> = Default::default();
    let mut finished: std::collections::HashSet<String> = Default::default();
    let mut out = Vec::new();
    let mut when = None;
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("-----") {
            when = trace_time(l);
            continue;
        }
        let sent = l.contains(" message sent");
        let received = l.contains(" message received");
        if !(sent || received) {
            continue;
        }
        // Skip the blank line to the start line, then find the Call-ID.
        let mut start = "";
        let mut call_id = String::new();
        while let Some(m) = lines.peek() {
            if m.starts_with("-----") {
                break;
            }
            let m = lines.next().unwrap_or_default();
            if start.is_empty() && !m.trim().is_empty() {
                start = m;
            }
            if let Some(v) = m.strip_prefix("Call-ID:") {
                call_id = v.trim().to_string();
            }
        }
        let Some(t) = when else { continue };
        if sent && start.starts_with("INVITE ") {
            first_invite.entry(call_id).or_insert(t);
        } else if received && start.starts_with("SIP/2.0 486") {
            // The first final response only: a retransmission of it (the
            // PBX repeats a final response until its ACK matches) is not a
            // new exchange.
            if let Some(t0) = first_invite.get(&call_id) {
                if finished.insert(call_id) {
                    out.push((t - t0) * 1000.0);
                }
            }
        }
    }
    (!out.is_empty()).then(|| median(out))
}

fn main() {
    if support::binary("kamailio").is_err() || support::binary("sipp").is_err() {
        eprintln!(
            "the check benchmark needs kamailio and sipp (Debian packages kamailio and sip-tester)"
        );
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    let Ok(pbx) = Kamailio::start(KamailioOpts::default()) else {
        eprintln!("could not start Kamailio");
        return;
    };
    println!(
        "{:>6} {:>8} {:>12} {:>16} {:>16} {:>8} {:>14} {:>12} {:>12}",
        "lines",
        "checks",
        "sweep (ms)",
        "exchange (ms)",
        "SIPp same path",
        "ratio",
        "CPU/check (ms)",
        "unexpected",
        "rate-limited"
    );
    for n in [1usize, 10, 50] {
        let cfg = match Plan::from_toml(&config(&pbx, n), Path::new("bench.toml")) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("bench config invalid: {e}");
                return;
            }
        };
        rt.block_on(async {
            let Ok(checker) = Checker::start(Arc::new(cfg), CheckOptions::default()).await else {
                eprintln!("checker failed to start");
                return;
            };
            let Some(addr) = checker.endpoint_addr(CfgTransport::Udp) else {
                return;
            };
            if pbx
                .set_default_endpoint(&format!("sip:{addr};transport=udp"))
                .is_err()
            {
                return;
            }
            // The endpoint limits INVITEs per source, and every test call
            // reaches it from the one PBX address. `Checker::start` sizes the
            // burst for a whole parallel sweep and never sets the refill rate
            // below the endpoint's default, so waiting for that rate to
            // refill one sweep's worth of INVITEs before each sweep keeps
            // every sweep inside the limit (real sweeps are minutes apart).
            // The wait is not timed.
            let refill =
                Duration::from_secs_f64(1.1 * n as f64 / EndpointOptions::default().invite_rate);
            // Warm up (first-call allocations, Kamailio's first auth).
            tokio::time::sleep(refill).await;
            let _ = checker.check_lines(&[], Trigger::Schedule).await;
            let sweeps = (200 / n).max(5);
            let mut sweep_ms = Vec::new();
            let mut exchange = Vec::new();
            let mut cpu = Duration::ZERO;
            let mut unexpected = 0usize;
            let limited0 = checker.endpoint_stats().rate_limited;
            for _ in 0..sweeps {
                tokio::time::sleep(refill).await;
                // CPU from the start of the sweep to its last result: the
                // checks' own work, not the idle runtime between sweeps.
                let c = cpu_time();
                let t = Instant::now();
                let rs = checker.check_lines(&[], Trigger::Schedule).await;
                sweep_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                cpu += cpu_time().saturating_sub(c);
                for r in &rs {
                    if r.outcome != Outcome::Pass {
                        unexpected += 1;
                        eprintln!("unexpected {}: {}", r.outcome, r.summary());
                        if std::env::var_os("CIDGUARD_BENCH_DEBUG").is_some() {
                            eprintln!(
                                "{}",
                                pbx.log()
                                    .lines()
                                    .rev()
                                    .take(30)
                                    .collect::<Vec<_>>()
                                    .join("\n")
                            );
                        }
                    }
                    if let Some(us) = r.call.exchange_us {
                        exchange.push(us as f64 / 1000.0);
                    }
                }
            }
            let limited = checker.endpoint_stats().rate_limited - limited0;
            if std::env::var_os("CIDGUARD_BENCH_DEBUG").is_some() {
                eprintln!("{:?}", checker.endpoint_stats());
            }
            let cpu_per_check = cpu.as_secs_f64() * 1000.0 / (sweeps * n) as f64;
            checker.shutdown().await;
            // SIPp on the same path: line account, PBX with its auth
            // challenge, cidguard's endpoint rejecting at once.
            let Ok(cfg) = Plan::from_toml(&config(&pbx, 1), Path::new("bench.toml")) else {
                return;
            };
            let Ok(target) = Checker::start(Arc::new(cfg), CheckOptions::default()).await else {
                return;
            };
            let Some(addr) = target.endpoint_addr(CfgTransport::Udp) else {
                return;
            };
            let _ = pbx.set_default_endpoint(&format!("sip:{addr};transport=udp"));
            // No check is waiting, so the endpoint rejects each call at once.
            let sipp_ms = sipp_exchange_ms(&pbx, "0399990100", 50);
            target.shutdown().await;
            let ex = median(exchange);
            let (sipp_txt, ratio) = match sipp_ms {
                Some(s) => (format!("{s:.2}"), format!("{:.2}", ex / s)),
                None => ("n/a".into(), "n/a".into()),
            };
            println!(
                "{:>6} {:>8} {:>12.1} {:>16.2} {:>16} {:>8} {:>14.3} {:>12} {:>12}",
                n,
                sweeps * n,
                median(sweep_ms),
                ex,
                sipp_txt,
                ratio,
                cpu_per_check,
                unexpected,
                limited
            );
        });
    }
}
