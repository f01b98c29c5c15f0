//! `cidguard check` end to end: real test calls from lines registered on a
//! real Kamailio, relayed to cidguard's own endpoint, matched, and judged;
//! the PBX's caller-ID rules are switched at runtime to imitate an update
//! that breaks privacy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cidguard::check::result::{CheckResult, Trigger};
use cidguard::check::run::{CheckOptions, Checker};
use cidguard::config::Transport as CfgTransport;
use cidguard::plan::Plan;
use cidguard::verdict::{Kind, Outcome};

use crate::support::sipp::pbx_scenario;
use crate::support::{self, org, CallerIdRule, Kamailio, KamailioOpts, Sipp, SippOpts, Transport};

pub struct Setup {
    pub pbx: Kamailio,
    pub checker: Checker,
}

/// A config whose lines are accounts 201.. on the test PBX, and whose
/// endpoint listens on loopback ports chosen by the OS.
pub fn config_text(
    pbx: &Kamailio,
    transport: &str,
    matching: &str,
    lines: &[(&str, &str, &str)],
    numbers: &[&str],
) -> String {
    let t = match transport {
        "tcp" => Transport::Tcp,
        _ => Transport::Udp,
    };
    let mut s = format!(
        r#"
[organisation]
name = "Eastside Women's Refuge"
region = "AU"
numbers = ["+61 3 7010 0142", "+61 3 7010 0100-0199"]
names = ["Eastside Women's Refuge", "Eastside Refuge"]
hosts = ["pbx.eastside-refuge.org.au", "203.0.113.10"]

[endpoint]
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
numbers = [{}]
matching = "{matching}"
hold_min = "200ms"
hold_max = "1200ms"
"#,
        numbers
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, expect, user) in lines {
        let umbrella = if *expect == "umbrella" {
            "umbrella = { name = \"Salvation Army\", numbers = [\"+61 2 9000 0000\"] }\n"
        } else {
            ""
        };
        let line = support::Line::get(user);
        s.push_str(&format!(
            "\n[[line]]\nname = \"{name}\"\nexpect = \"{expect}\"\n{umbrella}[line.account]\nregistrar = \"sip:{}\"\ntransport = \"{transport}\"\nusername = \"{user}\"\npassword = \"{}\"\nring_timeout = \"10s\"\n",
            pbx.addr(t),
            line.password
        ));
    }
    s
}

pub async fn setup(
    transport: &str,
    matching: &str,
    lines: &[(&str, &str, &str)],
    numbers: &[&str],
) -> Setup {
    setup_with(|t| t, transport, matching, lines, numbers).await
}

/// Like [`setup`], with a chance to edit the config text first.
pub async fn setup_with(
    edit: impl FnOnce(String) -> String,
    transport: &str,
    matching: &str,
    lines: &[(&str, &str, &str)],
    numbers: &[&str],
) -> Setup {
    let pbx = Kamailio::start(KamailioOpts::default()).expect("start the PBX");
    let text = edit(config_text(&pbx, transport, matching, lines, numbers));
    let plan = Plan::from_toml(&text, Path::new("test.toml")).expect("config");
    let checker = Checker::start(Arc::new(plan), CheckOptions::default())
        .await
        .expect("checker");
    let (ct, st) = match transport {
        "tcp" => (CfgTransport::Tcp, "tcp"),
        _ => (CfgTransport::Udp, "udp"),
    };
    let addr = checker.endpoint_addr(ct).expect("endpoint address");
    for n in numbers {
        pbx.set_endpoint(n, &format!("sip:{addr};transport={st}"))
            .expect("route to endpoint");
    }
    Setup { pbx, checker }
}

fn has(r: &CheckResult, header: &str, kind: Kind) -> bool {
    r.findings
        .iter()
        .any(|f| f.header == header && f.kind == kind)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every caller-ID rule gives the right outcome through a real check, with
/// the timing signature, over the given transport.
fn every_rule(transport: &str) {
    if support::skip_without_peers() {
        return;
    }
    rt().block_on(async {
        let s = setup(
            transport,
            "timing",
            &[
                ("reception", "withheld", "201"),
                ("outreach", "umbrella", "202"),
            ],
            &[org::ENDPOINT_NUMBER],
        )
        .await;
        for rule in CallerIdRule::ALL {
            s.pbx.set_rule("201", rule).expect("rule");
            let r = s
                .checker
                .check_line(
                    "reception",
                    Trigger::Manual {
                        label: None,
                        run: None,
                    },
                )
                .await;
            let ok = match rule {
                CallerIdRule::Withheld => r.outcome == Outcome::Pass,
                CallerIdRule::WithheldPaiPrivacy | CallerIdRule::PaiLeak => {
                    has(&r, "P-Asserted-Identity", Kind::Number)
                }
                CallerIdRule::FromLeak => {
                    has(&r, "From", Kind::Number) && has(&r, "From", Kind::Name)
                }
                CallerIdRule::Umbrella => has(&r, "From", Kind::Presentation),
                CallerIdRule::Rpid => has(&r, "Remote-Party-ID", Kind::Number),
                CallerIdRule::Diversion => has(&r, "Diversion", Kind::Number),
                CallerIdRule::Identity => has(&r, "Identity", Kind::Number),
                CallerIdRule::Contact => has(&r, "Contact", Kind::Number),
                CallerIdRule::Sdp => has(&r, "SDP", Kind::Name),
            };
            let expected_outcome = if rule == CallerIdRule::Withheld {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
            assert!(
                ok && r.outcome == expected_outcome,
                "rule {} over {transport}: {}\n{:#?}",
                rule.name(),
                r.summary(),
                r
            );
            assert!(
                r.call
                    .matching
                    .as_deref()
                    .is_some_and(|m| m.contains("held the call")),
                "{:?}",
                r.call
            );
            assert!(
                r.evidence.iter().any(|e| e.side == "endpoint")
                    && r.evidence.iter().any(|e| e.side == "line")
            );
            assert!(
                r.evidence.iter().all(|e| !e.text.contains("response=")),
                "credentials must be redacted from evidence"
            );
        }
        s.pbx.set_rule("202", CallerIdRule::Umbrella).expect("rule");
        let r = s.checker.check_line("outreach", Trigger::Schedule).await;
        assert_eq!(r.outcome, Outcome::Pass, "umbrella line: {:#?}", r);
        // The far end's Server header (our own endpoint's) is never taken
        // for the PBX's software.
        assert!(
            !r.pbx_software.as_deref().unwrap_or("").contains("cidguard"),
            "{:?}",
            r.pbx_software
        );
        s.checker.shutdown().await;
    });
}

#[test]
fn every_caller_id_rule_through_a_real_check_over_udp() {
    every_rule("udp");
}

#[test]
fn every_caller_id_rule_through_a_real_check_over_tcp() {
    every_rule("tcp");
}

#[test]
fn a_wrong_password_is_inconclusive_with_an_auth_reason() {
    if support::skip_without_peers() {
        return;
    }
    rt().block_on(async {
        let pbx = Kamailio::start(KamailioOpts::default()).expect("pbx");
        let text = config_text(
            &pbx,
            "udp",
            "timing",
            &[("reception", "withheld", "201")],
            &[org::ENDPOINT_NUMBER],
        )
        .replace("line201-test-secret", "not-the-password");
        let plan = Plan::from_toml(&text, Path::new("t.toml")).expect("config");
        let checker = Checker::start(Arc::new(plan), CheckOptions::default())
            .await
            .expect("checker");
        let r = checker.check_line("reception", Trigger::Schedule).await;
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:#?}");
        let reason = r.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("registration failed") && reason.contains("credentials"),
            "{reason}"
        );
        checker.shutdown().await;
    });
}

#[test]
fn the_pbx_down_is_inconclusive_never_a_pass() {
    if support::skip_without_peers() {
        return;
    }
    rt().block_on(async {
        let pbx = Kamailio::start(KamailioOpts::default()).expect("pbx");
        let text = config_text(
            &pbx,
            "udp",
            "timing",
            &[("reception", "withheld", "201")],
            &[org::ENDPOINT_NUMBER],
        );
        drop(pbx); // the PBX goes away: nothing answers on its port
        let plan = Plan::from_toml(&text, Path::new("t.toml")).expect("config");
        let checker = Checker::start(Arc::new(plan), CheckOptions::default())
            .await
            .expect("checker");
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            checker.check_line("reception", Trigger::Schedule),
        )
        .await
        .expect("a check always ends");
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:#?}");
        checker.shutdown().await;
    });
}

async fn run_stray(ep: std::net::SocketAddr) {
    let _ = tokio::task::spawn_blocking(move || {
        Sipp::run(
            SippOpts::uac(pbx_scenario("stray.xml"), Transport::Udp, ep)
                .service(org::ENDPOINT_NUMBER)
                .timeout(Duration::from_secs(10)),
        )
    })
    .await;
}

/// A stray call to the endpoint's number while the line's (leaking) call is
/// held there: two arrivals in the window, so the line's own call can't be
/// told apart. Inconclusive, never a pass.
#[test]
fn a_stray_call_in_the_window_makes_the_check_ambiguous() {
    if support::skip_without_peers() {
        return;
    }
    rt().block_on(async {
        let s = setup_with(
            |t| {
                t.replace("hold_min = \"200ms\"", "hold_min = \"2500ms\"")
                    .replace("hold_max = \"1200ms\"", "hold_max = \"3500ms\"")
            },
            "udp",
            "timing",
            &[("reception", "withheld", "201")],
            &[org::ENDPOINT_NUMBER],
        )
        .await;
        s.pbx.set_rule("201", CallerIdRule::FromLeak).expect("rule");
        let ep = s.checker.endpoint_addr(CfgTransport::Udp).expect("addr");
        let (r, ()) = tokio::join!(
            s.checker.check_line("reception", Trigger::Schedule),
            run_stray(ep)
        );
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:#?}");
        assert!(
            r.reason
                .as_deref()
                .unwrap_or("")
                .contains("2 calls arrived"),
            "{:?}",
            r.reason
        );
        s.checker.shutdown().await;
    });
}

/// The worst case for a privacy tester: after a PBX change the line's call
/// goes somewhere else (rejected at once there), while a clean stray call
/// rings the endpoint during the window. The stray must not stand in for
/// the line's call.
#[test]
fn a_stray_call_cannot_stand_in_for_a_call_that_went_elsewhere() {
    if support::skip_without_peers() {
        return;
    }
    rt().block_on(async {
        let s = setup_with(
            |t| {
                t.replace("hold_min = \"200ms\"", "hold_min = \"1500ms\"")
                    .replace("hold_max = \"1200ms\"", "hold_max = \"2500ms\"")
            },
            "udp",
            "timing",
            &[("reception", "withheld", "201")],
            &[org::ENDPOINT_NUMBER],
        )
        .await;
        let elsewhere = Sipp::start(SippOpts::uas(pbx_scenario("reject.xml"), Transport::Udp))
            .expect("elsewhere");
        s.pbx
            .set_endpoint(org::ENDPOINT_NUMBER, &elsewhere.uri())
            .expect("misroute");
        let ep = s.checker.endpoint_addr(CfgTransport::Udp).expect("addr");
        let (r, ()) = tokio::join!(
            s.checker.check_line("reception", Trigger::Schedule),
            run_stray(ep)
        );
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:#?}");
        assert_eq!(r.call.final_status, Some(486));
        let reason = r.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("could not be proved")
                && reason.contains("before the endpoint released"),
            "{reason}"
        );
        drop(elsewhere);
        s.checker.shutdown().await;
    });
}

/// Number matching: several endpoint numbers, lines checked in parallel.
#[test]
fn number_matching_checks_lines_in_parallel() {
    if support::skip_without_peers() {
        return;
    }
    rt().block_on(async {
        let numbers = ["0399990001", "0399990002", "0399990003"];
        let s = setup(
            "udp",
            "numbers",
            &[
                ("a", "withheld", "201"),
                ("b", "withheld", "202"),
                ("c", "withheld", "203"),
            ],
            &numbers,
        )
        .await;
        s.pbx.set_rule("202", CallerIdRule::PaiLeak).expect("rule");
        let rs = s.checker.check_lines(&[], Trigger::Schedule).await;
        let outcomes: Vec<Outcome> = rs.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            vec![Outcome::Pass, Outcome::Fail, Outcome::Pass],
            "{rs:#?}"
        );
        s.checker.shutdown().await;
    });
}

/// Each matching mode works over UDP and TCP: a clean line passes and a
/// leaking one fails, with the match explained.
fn matching_mode(transport: &str, mode: &str) {
    if support::skip_without_peers() {
        return;
    }
    rt().block_on(async {
        let numbers: &[&str] = if mode == "numbers" {
            &["0399990001", "0399990002"]
        } else {
            &[org::ENDPOINT_NUMBER]
        };
        let s = setup(
            transport,
            mode,
            &[("clean", "withheld", "201"), ("leaky", "withheld", "202")],
            numbers,
        )
        .await;
        s.pbx.set_rule("202", CallerIdRule::PaiLeak).expect("rule");
        let rs = s.checker.check_lines(&[], Trigger::Schedule).await;
        assert_eq!(
            rs[0].outcome,
            Outcome::Pass,
            "{mode} over {transport}: {:#?}",
            rs[0]
        );
        assert_eq!(
            rs[1].outcome,
            Outcome::Fail,
            "{mode} over {transport}: {:#?}",
            rs[1]
        );
        let how = rs[0].call.matching.clone().unwrap_or_default();
        let expected = match mode {
            "media" => "decoded the line's token",
            "numbers" => "the only call to",
            _ => "held the call",
        };
        assert!(how.contains(expected), "{mode}: {how}");
        if mode == "media" {
            assert!(
                rs[0].evidence.iter().any(|e| e.text.starts_with("BYE ")),
                "an answered call is hung up"
            );
        }
        s.checker.shutdown().await;
    });
}

#[test]
fn media_token_matching_over_udp() {
    matching_mode("udp", "media");
}

#[test]
fn media_token_matching_over_tcp() {
    matching_mode("tcp", "media");
}

#[test]
fn number_matching_over_tcp() {
    matching_mode("tcp", "numbers");
}

#[test]
fn timing_matching_of_two_lines_in_turn_over_udp() {
    matching_mode("udp", "timing");
}

/// The `cidguard check` command as a user runs it: exit status and JSON.
#[test]
fn check_command_prints_results_and_exits_with_the_worst_outcome() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = Kamailio::start(KamailioOpts::default()).expect("pbx");
    // The endpoint needs a fixed port the PBX can route to.
    let port = support::net::free_port().expect("free port");
    let text = config_text(
        &pbx,
        "udp",
        "timing",
        &[
            ("reception", "withheld", "201"),
            ("outreach", "umbrella", "202"),
        ],
        &[org::ENDPOINT_NUMBER],
    )
    .replace(
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]",
        &format!("listen = [\"udp:127.0.0.1:{port}\"]"),
    );
    pbx.set_endpoint(
        org::ENDPOINT_NUMBER,
        &format!("sip:127.0.0.1:{port};transport=udp"),
    )
    .expect("route");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("cidguard.toml");
    std::fs::write(&cfg, text).expect("write config");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cidguard"))
            .arg("check")
            .arg("--config")
            .arg(&cfg)
            .arg("--evidence-dir")
            .arg(dir.path().join("evidence"))
            .args(args)
            .output()
            .expect("run cidguard")
    };

    pbx.set_rule("202", CallerIdRule::Umbrella).expect("rule");
    let out = run(&["--label", "after PBX upgrade"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Line \"reception\"")
            && stdout.contains("Outcome: PASS")
            && stdout.contains("Evidence: "),
        "{stdout}"
    );

    pbx.set_rule("201", CallerIdRule::PaiLeak).expect("rule");
    let text = run(&["--line", "reception"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Outcome: FAIL")
            && text.contains("Matched: the endpoint held the call")
            && text.contains("P-Asserted-Identity"),
        "{text}"
    );
    let out = run(&["--line", "reception", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let r = &v["results"][0];
    assert_eq!(r["line"], "reception");
    assert_eq!(r["outcome"], "fail");
    assert_eq!(r["findings"][0]["header"], "P-Asserted-Identity");
    assert!(
        r["call"]["final_status"].as_u64().is_some() && r["call"]["call_id"].is_string(),
        "{r}"
    );
    assert!(r["started_at"].is_string() && r["duration_ms"].is_u64());
    let evidence = std::fs::read_to_string(r["evidence_ref"].as_str().expect("evidence file"))
        .expect("read evidence");
    assert!(
        evidence.contains("INVITE sip:") && !evidence.contains("response=\""),
        "evidence is saved, credentials redacted"
    );

    let out = run(&["--line", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));

    drop(pbx);
    let out = run(&["--line", "reception"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "PBX down: inconclusive\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
