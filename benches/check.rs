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
//!   parsing, matching and the verdict): its own overhead, without the
//!   network or the hold.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidguard::check::result::Trigger;
use cidguard::check::run::{CheckOptions, Checker};
use cidguard::config::{Config, Transport as CfgTransport};
use cidguard::verdict::Outcome;

use support::{Kamailio, KamailioOpts, LINES};

fn cpu_time() -> Duration {
    // getrusage through /proc: user + system time of this process.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
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
    let text = std::fs::read_to_string(log).ok()?;
    let mut first_invite: std::collections::HashMap<String, f64> = Default::default();
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
            if let Some(t0) = first_invite.get(&call_id) {
                out.push((t - t0) * 1000.0);
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
        "{:>6} {:>12} {:>16} {:>16} {:>10} {:>14}",
        "lines", "sweep (ms)", "exchange (ms)", "SIPp same path", "ratio", "CPU/check (ms)"
    );
    for n in [1usize, 10, 50] {
        let cfg = match Config::from_toml(&config(&pbx, n), Path::new("bench.toml")) {
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
            // Warm up (ARP-free loopback, but first-call allocations).
            let _ = checker.check_lines(&[], Trigger::Schedule).await;
            let sweeps = (200 / n).max(5);
            let mut sweep_ms = Vec::new();
            let mut exchange = Vec::new();
            let cpu0 = cpu_time();
            for _ in 0..sweeps {
                // The endpoint's flood limit refills at about one sweep a
                // second; real sweeps are minutes apart. Not timed.
                tokio::time::sleep(Duration::from_millis(if n <= 10 {
                    110 * n as u64
                } else {
                    25 * n as u64
                }))
                .await;
                let t = Instant::now();
                let rs = checker.check_lines(&[], Trigger::Schedule).await;
                sweep_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                for r in &rs {
                    if r.outcome != Outcome::Pass {
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
            if std::env::var_os("CIDGUARD_BENCH_DEBUG").is_some() {
                eprintln!("{:?}", checker.endpoint_stats());
            }
            let cpu_per_check = (cpu_time() - cpu0).as_secs_f64() * 1000.0 / (sweeps * n) as f64;
            checker.shutdown().await;
            // SIPp on the same path: line account, PBX with its auth
            // challenge, cidguard's endpoint rejecting at once.
            let Ok(cfg) = Config::from_toml(&config(&pbx, 1), Path::new("bench.toml")) else {
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
                "{:>6} {:>12.1} {:>16.2} {:>16} {:>10} {:>14.3}",
                n,
                median(sweep_ms),
                ex,
                sipp_txt,
                ratio,
                cpu_per_check
            );
        });
    }
}
