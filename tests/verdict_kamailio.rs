//! The verdict engine on INVITEs that a real PBX produced: each caller-ID
//! rule of the test Kamailio is switched at runtime, a SIPp line calls
//! through it, a SIPp endpoint captures what arrives, and the capture is
//! judged for the example config's lines.

use std::time::Duration;

use cidguard::verdict::{judge, Kind, Outcome};

use crate::support::sipp::pbx_scenario;
use crate::support::{
    self, org, CallerIdRule, Kamailio, KamailioOpts, Line, Sipp, SippOpts, Transport,
};
use crate::verdict_corpus::example_policies;

/// What each rule must give for the withheld line `reception`, and the
/// (header, kind) findings that must be among the results.
fn expected(rule: CallerIdRule) -> (Outcome, &'static [(&'static str, Kind)]) {
    use CallerIdRule::*;
    match rule {
        Withheld => (Outcome::Pass, &[]),
        WithheldPaiPrivacy | PaiLeak => (Outcome::Fail, &[("P-Asserted-Identity", Kind::Number)]),
        FromLeak => (
            Outcome::Fail,
            &[("From", Kind::Number), ("From", Kind::Name)],
        ),
        Umbrella => (Outcome::Fail, &[("From", Kind::Presentation)]),
        Rpid => (Outcome::Fail, &[("Remote-Party-ID", Kind::Number)]),
        Diversion => (Outcome::Fail, &[("Diversion", Kind::Number)]),
        Identity => (Outcome::Fail, &[("Identity", Kind::Number)]),
        Contact => (Outcome::Fail, &[("Contact", Kind::Number)]),
        Sdp => (Outcome::Fail, &[("SDP", Kind::Name)]),
    }
}

#[test]
fn invites_relayed_by_kamailio_get_the_right_verdict() {
    if support::skip_without_peers() {
        return;
    }
    let policies = example_policies();
    let (reception, outreach) = (&policies[0], &policies[1]);
    let pbx = Kamailio::start(KamailioOpts::default()).expect("start the PBX");
    let line = Line::get("202");
    for rule in CallerIdRule::ALL {
        pbx.set_rule(line.username, rule).expect("set rule");
        let endpoint = Sipp::start(SippOpts::uas(pbx_scenario("endpoint.xml"), Transport::Udp))
            .expect("endpoint");
        pbx.set_endpoint(org::ENDPOINT_NUMBER, &endpoint.uri())
            .expect("route");
        let caller = Sipp::run(
            SippOpts::uac(
                pbx_scenario("call.xml"),
                Transport::Udp,
                pbx.addr(Transport::Udp),
            )
            .service(org::ENDPOINT_NUMBER)
            .key("line", line.username)
            .auth(line.username, line.password)
            .timeout(Duration::from_secs(8)),
        )
        .expect("line");
        caller.expect_success("line's call");
        let endpoint = endpoint.wait().expect("endpoint finishes");
        let invite = endpoint
            .received_requests("INVITE")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no INVITE arrived\n{}", endpoint.describe()));

        let v = judge(reception, invite.text.as_bytes());
        let (outcome, flags) = expected(rule);
        assert_eq!(
            v.outcome,
            outcome,
            "rule {}: {}\n{:#?}\n{}",
            rule.name(),
            v.summary(),
            v.findings,
            invite.text
        );
        for (h, k) in flags {
            assert!(
                v.findings.iter().any(|f| f.header == *h && f.kind == *k),
                "rule {}: expected a {k} finding in {h}: {:#?}",
                rule.name(),
                v.findings
            );
        }
        if rule == CallerIdRule::Umbrella {
            let v = judge(outreach, invite.text.as_bytes());
            assert_eq!(
                v.outcome,
                Outcome::Pass,
                "umbrella rule for the umbrella line: {:#?}",
                v.findings
            );
        }
    }
}
