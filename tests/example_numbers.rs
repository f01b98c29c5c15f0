//! The shipped example configuration's numbers, exactly as written there
//! (`"+61 3 9999 0000"`, spaced as people write them), through a real PBX
//! over UDP and TCP: the line dials the endpoint in its dialable form, the
//! PBX routes it, the endpoint recognises the call however the PBX delivers
//! the number, and every check concludes.
//!
//! Regression guarded: a config written like the example used to send
//! `INVITE sip:+61 3 9999 0000@pbx SIP/2.0`; Kamailio refuses to parse that
//! Request-URI, and every line timed out inconclusive ("timed out waiting
//! for a final response").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cidguard::check::result::{CheckResult, Trigger};
use cidguard::check::run::{CheckOptions, Checker};
use cidguard::config::Transport as CfgTransport;
use cidguard::plan::Plan;
use cidguard::verdict::{Kind, Outcome};

use crate::support::{self, CallerIdRule, Kamailio, KamailioOpts, Transport, LINES};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");

/// What the example's endpoint number goes on the wire as.
const WIRE: &str = "+61399990000";

/// The example as shipped, its numbers untouched, with the test PBX's line
/// accounts added to its lines and the endpoint on loopback ports.
pub fn example_on(pbx: &Kamailio, transport: &str) -> String {
    let text = std::fs::read_to_string(EXAMPLE).expect("read the example");
    let mut v: toml::Table = toml::from_str(&text).expect("the example is TOML");
    let t = match transport {
        "tcp" => Transport::Tcp,
        _ => Transport::Udp,
    };
    let ep = v
        .get_mut("endpoint")
        .and_then(|e| e.as_table_mut())
        .expect("the example has [endpoint]");
    ep.insert(
        "listen".into(),
        vec!["udp:127.0.0.1:0", "tcp:127.0.0.1:0"].into(),
    );
    ep.insert("hold_min".into(), "100ms".into());
    ep.insert("hold_max".into(), "800ms".into());
    let lines = v
        .get_mut("line")
        .and_then(|l| l.as_array_mut())
        .expect("the example has [[line]]s");
    for (line, account) in lines.iter_mut().zip(LINES) {
        let mut a = toml::Table::new();
        a.insert("registrar".into(), format!("sip:{}", pbx.addr(t)).into());
        a.insert("transport".into(), transport.into());
        a.insert("username".into(), account.username.into());
        a.insert("password".into(), account.password.into());
        a.insert("ring_timeout".into(), "10s".into());
        line.as_table_mut()
            .expect("a [[line]] is a table")
            .insert("account".into(), a.into());
    }
    toml::to_string(&v).expect("write TOML")
}

fn has(r: &CheckResult, header: &str, kind: Kind) -> bool {
    r.findings
        .iter()
        .any(|f| f.header == header && f.kind == kind)
}

/// The outcome each caller-ID rule must get on a withheld line.
fn concluded_right(rule: CallerIdRule, r: &CheckResult) -> bool {
    let found = match rule {
        CallerIdRule::Withheld => return r.outcome == Outcome::Pass,
        CallerIdRule::WithheldPaiPrivacy | CallerIdRule::PaiLeak => {
            has(r, "P-Asserted-Identity", Kind::Number)
        }
        CallerIdRule::FromLeak => has(r, "From", Kind::Number) && has(r, "From", Kind::Name),
        CallerIdRule::Umbrella => has(r, "From", Kind::Presentation),
        CallerIdRule::Rpid => has(r, "Remote-Party-ID", Kind::Number),
        CallerIdRule::Diversion => has(r, "Diversion", Kind::Number),
        CallerIdRule::Identity => has(r, "Identity", Kind::Number),
        CallerIdRule::Contact => has(r, "Contact", Kind::Number),
        CallerIdRule::Sdp => has(r, "SDP", Kind::Name),
    };
    found && r.outcome == Outcome::Fail
}

async fn check(checker: &Checker, line: &str) -> CheckResult {
    tokio::time::timeout(
        Duration::from_secs(60),
        checker.check_line(line, Trigger::Schedule),
    )
    .await
    .expect("a check always ends")
}

fn example_through_a_real_pbx(transport: &str) {
    if support::skip_without_peers() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pbx = Kamailio::start(KamailioOpts::default()).expect("start the PBX");
        let text = example_on(&pbx, transport);
        let plan = Plan::from_toml(&text, Path::new("example.toml")).expect("config");
        let ep = plan.config().endpoint.clone().expect("endpoint");
        assert!(
            ep.numbers.iter().all(|n| n.contains(' ')),
            "the example writes its numbers as people do: {:?}",
            ep.numbers
        );
        let checker = Checker::start(Arc::new(plan), CheckOptions::default())
            .await
            .expect("checker");
        let (ct, st) = match transport {
            "tcp" => (CfgTransport::Tcp, "tcp"),
            _ => (CfgTransport::Udp, "udp"),
        };
        let addr = checker.endpoint_addr(ct).expect("endpoint address");
        // Only the dialable form is routed: anything else gets 404.
        pbx.set_endpoint(WIRE, &format!("sip:{addr};transport={st}"))
            .expect("route to the endpoint");

        for rule in CallerIdRule::ALL {
            pbx.set_rule("201", rule).expect("rule");
            let r = check(&checker, "reception").await;
            assert!(
                concluded_right(rule, &r),
                "rule {rule} over {transport}: {}\n{r:#?}",
                r.summary()
            );
        }
        let sent = r_uri_sent(&check(&checker, "reception").await);
        assert!(
            sent.starts_with(&format!("INVITE sip:{WIRE}@")),
            "the Request-URI sent: {sent}"
        );
        pbx.set_rule("202", CallerIdRule::Umbrella).expect("rule");
        let r = check(&checker, "outreach").await;
        assert_eq!(
            r.outcome,
            Outcome::Pass,
            "umbrella over {transport}: {r:#?}"
        );

        // However the PBX delivers the number, it is the endpoint's.
        pbx.set_rule("201", CallerIdRule::PaiLeak).expect("rule");
        for delivered in ["0399990000", "61399990000", "399990000", WIRE] {
            pbx.set_delivered(WIRE, delivered).expect("deliver");
            let r = check(&checker, "reception").await;
            assert!(
                concluded_right(CallerIdRule::PaiLeak, &r),
                "delivered as {delivered} over {transport}: {r:#?}"
            );
            let f = r
                .findings
                .iter()
                .find(|f| f.header == "P-Asserted-Identity")
                .expect("finding");
            assert!(
                f.detail
                    .contains("+61370100142 (configured as \"+61 3 7010 0142\""),
                "{}",
                f.detail
            );
        }
        assert_eq!(checker.endpoint_stats().stray, 0, "no call was a stray");
        checker.shutdown().await;
    });
}

/// The first line of the INVITE the line sent.
fn r_uri_sent(r: &CheckResult) -> String {
    r.evidence
        .iter()
        .find(|e| e.side == "line" && e.text.starts_with("INVITE "))
        .and_then(|e| e.text.lines().next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn example_config_numbers_as_written_check_lines_through_a_real_pbx_over_udp() {
    example_through_a_real_pbx("udp");
}

#[test]
fn example_config_numbers_as_written_check_lines_through_a_real_pbx_over_tcp() {
    example_through_a_real_pbx("tcp");
}
