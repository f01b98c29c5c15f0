//! The endpoint on the open internet, measured: `cidguard run` (the
//! release binary, with its endpoint on UDP and TCP on 127.0.0.1) under
//! the attacks of the hostile-traffic tests, while a well-behaved peer on
//! another loopback address asks OPTIONS (UDP and TCP) every 50 ms.
//!
//! Run: `cargo bench --bench hostile`. Attackers use 127.1.0.0/16, the good
//! peer 127.0.0.200; nothing leaves the machine. It prints three figures,
//! as Markdown tables:
//!
//! 1. the good peer's OPTIONS round trip (median, 99th percentile, worst,
//!    and probes unanswered after 2 s) during each attack, with the
//!    attack's requests and responses and the daemon's CPU meanwhile;
//! 2. requests per second shed: INVITE floods from 200 addresses at rising
//!    rates for 5 s each, the rate the flooder achieved, what the endpoint
//!    answered, and the good peer's round trip; the flooder shares the
//!    machine's cores with the daemon, so the highest rates say as much
//!    about the flooder as about the endpoint;
//! 3. resident memory under the 20,000-INVITE flood (100 addresses, 2 s):
//!    at rest and the peak (VmHWM), in a fresh daemon.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::attack::{self, cpu_time, memory_kib, tcp_from, GoodPeer, Probe, Req, Tally};
use tokio::io::AsyncWriteExt;

/// `cidguard run` with an endpoint and nothing scheduled.
struct Target {
    child: Child,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Target {
    fn start() -> Target {
        let dir = tempfile::tempdir().expect("tmp");
        let port = support::net::free_port().expect("port");
        let cfg = format!(
            r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142"]

[endpoint]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
numbers = ["+61 3 9999 0000"]

[daemon]
state_dir = "{}"

[[line]]
name = "reception"
expect = "withheld"
"#,
            dir.path().join("state").display()
        );
        let path = dir.path().join("cidguard.toml");
        std::fs::write(&path, cfg).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_cidguard"))
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cidguard run");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        support::net::options(support::Transport::Udp, addr, None, Duration::from_secs(20))
            .expect("the endpoint answers");
        Target {
            child,
            _dir: dir,
            addr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One attack's measurements.
struct Row {
    what: String,
    tally: Tally,
    udp: Vec<Probe>,
    tcp: Vec<Probe>,
    cpu: Duration,
    wall: Duration,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Run `attack` while the good peer probes; a short quiet pause after.
fn measure<F>(t: &Target, what: &str, attack: impl FnOnce(SocketAddr) -> F) -> Row
where
    F: std::future::Future<Output = Tally>,
{
    let rt = runtime();
    let peer = GoodPeer::start(t.addr, Some(t.addr), Duration::from_millis(50));
    let cpu0 = cpu_time(t.pid()).unwrap_or_default();
    let t0 = std::time::Instant::now();
    let tally = rt.block_on(attack(t.addr));
    let wall = t0.elapsed();
    let cpu = cpu_time(t.pid()).unwrap_or_default().saturating_sub(cpu0);
    let probes = peer.finish();
    drop(rt);
    std::thread::sleep(Duration::from_secs(2));
    let (udp, tcp): (Vec<_>, Vec<_>) = probes.into_iter().partition(|(t, _)| *t == "udp");
    Row {
        what: what.to_string(),
        tally,
        udp: udp.into_iter().map(|(_, p)| p).collect(),
        tcp: tcp.into_iter().map(|(_, p)| p).collect(),
        cpu,
        wall,
    }
}

/// Median, 99th percentile and worst of the answered probes, and how many
/// were not answered.
fn summary(probes: &[Probe]) -> String {
    let mut ok: Vec<Duration> = probes
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .copied()
        .collect();
    ok.sort();
    let lost = probes.len() - ok.len();
    if ok.is_empty() {
        return format!("none answered ({lost} lost)");
    }
    let at = |q: f64| ok[((ok.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    format!(
        "{} / {} / {}{}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*ok.last().unwrap_or(&Duration::ZERO)),
        if lost > 0 {
            format!(" ({lost} lost)")
        } else {
            String::new()
        }
    )
}

fn attacks(t: &Target) -> Vec<Row> {
    let msg73 = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 18446744073709551543\r\n\r\n";
    let mut rows = Vec::new();
    rows.push(measure(t, "none (baseline)", |_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Tally::default()
    }));
    rows.push(measure(
        t,
        "73-byte Content-Length, 24 TCP connections",
        |addr| async move {
            let mut tally = Tally::default();
            let mut open = Vec::new();
            for _ in 0..6 {
                for i in 0..4 {
                    if let Ok(mut c) = tcp_from(attack::attacker(i), addr).await {
                        let _ = c.write_all(msg73).await;
                        tally.requests += 1;
                        open.push(c);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            tally
        },
    ));
    for method in ["INVITE", "CANCEL"] {
        let what = format!("6,000 in-dialog {method}s for no dialog, 1 address, 3 s");
        // Each attack from addresses of its own, so none starts in debt.
        let first = if method == "INVITE" { 1000 } else { 1100 };
        rows.push(measure(t, &what, |addr| async move {
            attack::udp_flood_from(
                first,
                addr,
                1,
                6000,
                Duration::from_secs(3),
                Duration::from_secs(1),
                move |i| {
                    let r = Req::new(method, &format!("{}", 1000 + i % 97));
                    if method == "INVITE" {
                        r.in_dialog()
                    } else {
                        r
                    }
                },
            )
            .await
            .unwrap_or_default()
        }));
    }
    rows.push(measure(
        t,
        "300 slow TCP connections, 20 addresses, 12 s",
        |addr| async move {
            attack::slow_connections(
                addr,
                20,
                15,
                Duration::from_secs(2),
                Duration::from_secs(12),
            )
            .await;
            Tally::default()
        },
    ));
    let scans: [(&str, usize, usize, &'static str); 3] = [
        (
            "svmap OPTIONS sweep, 50 addresses, 3 s",
            50,
            3000,
            "OPTIONS",
        ),
        (
            "svwar REGISTER enumeration, 1 address, 3 s",
            1,
            2000,
            "REGISTER",
        ),
        (
            "svwar INVITE enumeration, 4 addresses, 3 s",
            4,
            2000,
            "INVITE",
        ),
    ];
    for (k, (what, sources, total, method)) in scans.into_iter().enumerate() {
        rows.push(measure(t, what, |addr| async move {
            attack::udp_flood_from(
                1200 + 100 * k,
                addr,
                sources,
                total,
                Duration::from_secs(3),
                Duration::from_secs(1),
                move |i| Req::new(method, &format!("{}", 100 + i)).scanner(),
            )
            .await
            .unwrap_or_default()
        }));
    }
    rows.push(measure(
        t,
        "20,000 INVITEs, 100 addresses, 2 s",
        |addr| async move {
            attack::udp_flood(
                addr,
                100,
                20_000,
                Duration::from_secs(2),
                Duration::from_secs(1),
                |i| Req::new("INVITE", &format!("0399{:06}", i % 999_983)),
            )
            .await
            .unwrap_or_default()
        },
    ));
    rows
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# cidguard run (release) on 127.0.0.1, {cores} cores shared with the attackers\n");

    let t = Target::start();
    println!("## 1. The good peer's OPTIONS during each attack (ms: median / p99 / worst)\n");
    println!("| attack | requests | responses | UDP OPTIONS | TCP OPTIONS | daemon CPU |");
    println!("|---|---:|---:|---|---|---:|");
    for r in attacks(&t) {
        println!(
            "| {} | {} | {} | {} | {} | {:.0}% |",
            r.what,
            r.tally.requests,
            r.tally.responses,
            summary(&r.udp),
            summary(&r.tcp),
            100.0 * r.cpu.as_secs_f64() / r.wall.as_secs_f64().max(0.001)
        );
    }

    println!("\n## 2. Requests shed: INVITE floods from 200 addresses, 5 s each\n");
    println!(
        "| offered (req/s) | achieved (req/s) | answered (per s) | UDP OPTIONS (ms) | daemon CPU |"
    );
    println!("|---:|---:|---:|---|---:|");
    let rates = [5_000usize, 10_000, 20_000, 40_000, 80_000];
    for (k, rate) in rates.into_iter().enumerate() {
        let secs = 5;
        let r = measure(&t, "flood", |addr| async move {
            attack::udp_flood_from(
                2000 + 250 * k,
                addr,
                200,
                rate * secs,
                Duration::from_secs(secs as u64),
                Duration::from_millis(500),
                |i| Req::new("INVITE", &format!("0399{:06}", i % 999_983)),
            )
            .await
            .unwrap_or_default()
        });
        let send_secs = r.wall.as_secs_f64() - 0.5;
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.0}% |",
            rate,
            r.tally.requests as f64 / send_secs.max(0.001),
            r.tally.responses as f64 / send_secs.max(0.001),
            summary(&r.udp),
            100.0 * r.cpu.as_secs_f64() / r.wall.as_secs_f64().max(0.001)
        );
    }
    drop(t);

    println!("\n## 3. Memory under the 20,000-INVITE flood (fresh daemon)\n");
    let t = Target::start();
    let rest = memory_kib(t.pid(), "VmRSS").unwrap_or_default();
    let r = measure(
        &t,
        "20,000 INVITEs, 100 addresses, 2 s",
        |addr| async move {
            attack::udp_flood(
                addr,
                100,
                20_000,
                Duration::from_secs(2),
                Duration::from_secs(1),
                |i| Req::new("INVITE", &format!("0399{:06}", i % 999_983)),
            )
            .await
            .unwrap_or_default()
        },
    );
    let peak = memory_kib(t.pid(), "VmHWM").unwrap_or_default();
    let after = memory_kib(t.pid(), "VmRSS").unwrap_or_default();
    println!("| at rest | peak during the flood | after |");
    println!("|---:|---:|---:|");
    println!(
        "| {:.1} MiB | {:.1} MiB | {:.1} MiB |",
        rest as f64 / 1024.0,
        peak as f64 / 1024.0,
        after as f64 / 1024.0
    );
    println!(
        "\n(the flood: {} requests, {} responses; good peer UDP {})",
        r.tally.requests,
        r.tally.responses,
        summary(&r.udp)
    );
}
