//! Proves the test PBX with SIPp alone, before cidguard is put between them:
//! lines register with digest auth, calls are relayed statefully to the
//! monitored endpoint, and each caller-ID rule, switched at runtime while the
//! PBX keeps running, puts exactly what it should on the wire.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;

use crate::support::sip::{uri_user, without_tag};
use crate::support::sipp::pbx_scenario;
use crate::support::{
    self, org, poll_until, CallerIdRule, Kamailio, KamailioOpts, Line, Sipp, SippOpts, SippOutcome,
    TraceMessage, Transport,
};

const ANONYMOUS_FROM: &str = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";
const ORG_PAI: &str = "<sip:+61370100142@pbx.eastside-refuge.org.au>";

fn start_pbx() -> Kamailio {
    Kamailio::start(KamailioOpts::default()).expect("start the PBX")
}

/// One call from `line` to the monitored endpoint through the PBX; returns
/// what the line and the endpoint each logged. Both must complete the call
/// (INVITE with digest, 200, ACK, BYE routed via the PBX).
fn call(pbx: &Kamailio, transport: Transport, line: Line) -> (SippOutcome, SippOutcome) {
    let endpoint = Sipp::start(SippOpts::uas(pbx_scenario("endpoint.xml"), transport))
        .expect("start the endpoint");
    pbx.set_endpoint(org::ENDPOINT_NUMBER, &endpoint.uri())
        .expect("route the number to the endpoint");
    let caller = Sipp::run(line_opts("call.xml", pbx, transport, line)).expect("run the line");
    // Checked first: a failed call leaves the endpoint waiting until its
    // timeout, and dropping it ends it at once.
    caller.expect_success("line's call");
    let endpoint = endpoint.wait().expect("endpoint finishes");
    endpoint.expect_success("endpoint's call");
    (caller, endpoint)
}

fn line_opts(scenario: &str, pbx: &Kamailio, transport: Transport, line: Line) -> SippOpts {
    SippOpts::uac(pbx_scenario(scenario), transport, pbx.addr(transport))
        .service(org::ENDPOINT_NUMBER)
        .key("line", line.username)
        .auth(line.username, line.password)
        .timeout(Duration::from_secs(8))
}

fn the_invite(endpoint: &SippOutcome) -> TraceMessage {
    endpoint
        .received_requests("INVITE")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("endpoint got no INVITE\n{}", endpoint.describe()))
}

/// The (authenticated) INVITE the line sent.
fn line_invite(caller: &SippOutcome) -> TraceMessage {
    caller
        .messages()
        .into_iter()
        .rfind(|m| !m.received && m.is_request("INVITE"))
        .unwrap_or_else(|| panic!("line sent no INVITE\n{}", caller.describe()))
}

/// Where the organisation shows up in a message: names of headers, and
/// `body:<line type>` for SDP lines, mentioning its number (any format), its
/// name or its domain.
fn org_mentions(msg: &TraceMessage) -> BTreeSet<String> {
    let hit = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.contains("370100142") || s.contains("eastside") || s.contains("refuge")
    };
    let mut out = BTreeSet::new();
    for (name, value) in msg.headers() {
        if hit(&value) {
            out.insert(name);
        }
    }
    for line in msg.body().lines() {
        if hit(line) {
            out.insert(format!("body:{}", line.split('=').next().unwrap_or("")));
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Checks the INVITE the endpoint received carries exactly what `rule`
/// promises, and nothing else about the organisation.
fn assert_rule_on_wire(rule: CallerIdRule, invite: &TraceMessage, line_invite: &TraceMessage) {
    let ctx = format!("rule {rule}, INVITE at the endpoint:\n{}", invite.text);
    let from = invite.header("From").expect("From");
    let from = without_tag(&from);
    let pai = invite.header_all("P-Asserted-Identity");
    let privacy = invite.header_all("Privacy");

    // Whatever the line announced itself as never passes through as such.
    assert!(
        invite.header("P-Preferred-Identity").is_none(),
        "line's PPI relayed; {ctx}"
    );
    assert_eq!(
        invite.request_uri().and_then(uri_user),
        Some(org::ENDPOINT_NUMBER),
        "dialled number; {ctx}"
    );

    let anonymous = |ctx: &str| {
        assert_eq!(from, ANONYMOUS_FROM, "From; {ctx}");
        assert_eq!(privacy, vec!["id"], "Privacy; {ctx}");
    };
    let mentions = org_mentions(invite);
    match rule {
        CallerIdRule::Withheld => {
            anonymous(&ctx);
            assert!(pai.is_empty(), "PAI; {ctx}");
            assert!(invite.header("Remote-Party-ID").is_none(), "RPID; {ctx}");
            assert_eq!(mentions, set(&[]), "{ctx}");
        }
        CallerIdRule::WithheldPaiPrivacy => {
            anonymous(&ctx);
            assert_eq!(pai, vec![ORG_PAI], "PAI; {ctx}");
            assert_eq!(mentions, set(&["P-Asserted-Identity"]), "{ctx}");
        }
        CallerIdRule::PaiLeak => {
            assert_eq!(from, ANONYMOUS_FROM, "From; {ctx}");
            assert_eq!(pai, vec![ORG_PAI], "PAI; {ctx}");
            assert!(privacy.is_empty(), "Privacy; {ctx}");
            assert_eq!(mentions, set(&["P-Asserted-Identity"]), "{ctx}");
        }
        CallerIdRule::FromLeak => {
            assert_eq!(
                from, "\"Eastside Women's Refuge\" <sip:+61370100142@pbx.eastside-refuge.org.au>",
                "From; {ctx}"
            );
            assert!(pai.is_empty(), "PAI; {ctx}");
            assert!(privacy.is_empty(), "Privacy; {ctx}");
            assert_eq!(mentions, set(&["From"]), "{ctx}");
        }
        CallerIdRule::Umbrella => {
            assert_eq!(
                from, "\"Salvation Army\" <sip:+61290000000@salvationarmy.org.au>",
                "From; {ctx}"
            );
            assert!(pai.is_empty(), "PAI; {ctx}");
            assert!(privacy.is_empty(), "Privacy; {ctx}");
            assert_eq!(mentions, set(&[]), "{ctx}");
        }
        CallerIdRule::Rpid => {
            anonymous(&ctx);
            assert_eq!(
                invite.header_all("Remote-Party-ID"),
                vec![
                    "<sip:+61370100142@pbx.eastside-refuge.org.au>;party=calling;privacy=full;screen=yes"
                ],
                "{ctx}"
            );
            assert_eq!(mentions, set(&["Remote-Party-ID"]), "{ctx}");
        }
        CallerIdRule::Diversion => {
            anonymous(&ctx);
            assert_eq!(
                invite.header_all("Diversion"),
                vec!["<sip:0370100142@pbx.eastside-refuge.org.au>;reason=unconditional"],
                "{ctx}"
            );
            assert_eq!(mentions, set(&["Diversion"]), "{ctx}");
        }
        CallerIdRule::Identity => {
            anonymous(&ctx);
            let identity = invite.header("Identity").expect("Identity header");
            let (jwt, params) = identity.split_once(';').expect("Identity parameters");
            assert!(params.contains("ppt=shaken"), "{ctx}");
            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3, "PASSporT is a JWS; {ctx}");
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .expect("base64url payload");
            let payload: serde_json::Value =
                serde_json::from_slice(&payload).expect("JSON payload");
            assert_eq!(payload["orig"]["tn"], "61370100142", "{ctx}");
            // Only the encoded payload carries the number.
            assert_eq!(mentions, set(&[]), "{ctx}");
        }
        CallerIdRule::Contact => {
            anonymous(&ctx);
            let contact = invite.header("Contact").expect("Contact");
            assert_eq!(uri_user(&contact), Some(org::NUMBER), "{ctx}");
            // Still the line's own address, so in-dialog requests reach it.
            let line_contact = line_invite.header("Contact").expect("line's Contact");
            let host_of = |c: &str| c.split('@').nth(1).map(str::to_ascii_lowercase);
            assert_eq!(host_of(&contact), host_of(&line_contact), "{ctx}");
            assert_eq!(mentions, set(&["Contact"]), "{ctx}");
        }
        CallerIdRule::Sdp => {
            anonymous(&ctx);
            let body = invite.body();
            assert!(
                body.lines()
                    .any(|l| l.starts_with("o=EastsideWomensRefuge ")),
                "{ctx}"
            );
            assert!(
                body.lines().any(|l| l == "s=Eastside Womens Refuge"),
                "{ctx}"
            );
            let length: usize = invite
                .header("Content-Length")
                .expect("Content-Length")
                .parse()
                .expect("numeric Content-Length");
            assert_eq!(length, body.len(), "Content-Length fixed up; {ctx}");
            assert_eq!(mentions, set(&["body:o", "body:s"]), "{ctx}");
        }
    }
}

/// The line must see its own From in replies: the PBX restores what it
/// rewrote, so the dialog still matches on the line's side.
fn assert_line_sees_own_from(caller: &SippOutcome, line: Line) {
    let ok = caller
        .received_responses()
        .into_iter()
        .find(|m| {
            m.status() == Some(200) && m.header("CSeq").is_some_and(|c| c.ends_with("INVITE"))
        })
        .unwrap_or_else(|| panic!("no 200 for the INVITE\n{}", caller.describe()));
    let from = ok.header("From").expect("From");
    assert_eq!(uri_user(&from), Some(line.username), "{}", ok.text);
}

fn rules_switch_at_runtime(transport: Transport) {
    if support::skip_without_peers() {
        return;
    }
    let pbx = start_pbx();
    let line = Line::get("201");
    let pid = pbx.pgid();
    for rule in CallerIdRule::ALL {
        // Changed between calls while the PBX keeps running, as a PBX
        // update or an admin's edit would.
        pbx.set_rule(line.username, rule).expect("set rule");
        let (caller, endpoint) = call(&pbx, transport, line);
        assert_rule_on_wire(rule, &the_invite(&endpoint), &line_invite(&caller));
        assert_line_sees_own_from(&caller, line);
    }
    assert_eq!(pbx.pgid(), pid, "same PBX process throughout");
}

#[test]
fn caller_id_rules_switch_at_runtime_over_udp() {
    rules_switch_at_runtime(Transport::Udp);
}

#[test]
fn caller_id_rules_switch_at_runtime_over_tcp() {
    rules_switch_at_runtime(Transport::Tcp);
}

#[test]
fn rules_are_per_line_default_to_withheld_and_unknown_ones_refuse_calls() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = start_pbx();
    let (l201, l202, l203) = (Line::get("201"), Line::get("202"), Line::get("203"));
    pbx.set_rule(l201.username, CallerIdRule::FromLeak)
        .expect("set rule");

    let (caller, endpoint) = call(&pbx, Transport::Udp, l202);
    assert_rule_on_wire(
        CallerIdRule::Withheld,
        &the_invite(&endpoint),
        &line_invite(&caller),
    );

    let (caller, endpoint) = call(&pbx, Transport::Udp, l201);
    assert_rule_on_wire(
        CallerIdRule::FromLeak,
        &the_invite(&endpoint),
        &line_invite(&caller),
    );

    pbx.clear_rule(l201.username).expect("clear rule");
    let (caller, endpoint) = call(&pbx, Transport::Udp, l201);
    assert_rule_on_wire(
        CallerIdRule::Withheld,
        &the_invite(&endpoint),
        &line_invite(&caller),
    );

    // A misspelt rule must not look like "withheld": the call is refused.
    pbx.set_rule_name(l203.username, "witheld")
        .expect("set rule");
    let caller = Sipp::run(line_opts("call.xml", &pbx, Transport::Udp, l203)).unwrap();
    assert!(!caller.success(), "{}", caller.describe());
    assert!(
        caller
            .received_responses()
            .iter()
            .any(|m| m.status() == Some(500)),
        "{}",
        caller.describe()
    );
}

#[test]
fn lines_register_with_digest_auth_and_wrong_passwords_are_refused() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = start_pbx();
    for (transport, line) in [
        (Transport::Udp, Line::get("201")),
        (Transport::Tcp, Line::get("202")),
    ] {
        let reg = Sipp::run(line_opts("register.xml", &pbx, transport, line)).unwrap();
        reg.expect_success("registration");
        let challenge = reg
            .received_responses()
            .into_iter()
            .find(|m| m.status() == Some(401))
            .expect("a 401 challenge");
        let www = challenge.header("WWW-Authenticate").expect("challenge");
        assert!(www.starts_with("Digest "), "{www}");
        assert!(www.contains("qop=\"auth\""), "{www}");
        assert!(
            www.contains(&format!("realm=\"{}\"", org::PBX_HOST)),
            "{www}"
        );
        let contacts = pbx.registered_contacts(line.username).unwrap();
        assert_eq!(contacts.len(), 1, "{contacts:?}");
        assert!(
            contacts[0].starts_with(&format!("sip:{}@127.0.0.1:", line.username)),
            "{contacts:?}"
        );

        let wrong = Line {
            password: "not-the-password",
            ..Line::get("203")
        };
        Sipp::run(line_opts(
            "register-wrong-password.xml",
            &pbx,
            transport,
            wrong,
        ))
        .unwrap()
        .expect_success("wrong password gets 403");
        assert!(pbx.registered_contacts("203").unwrap().is_empty());
    }
}

#[test]
fn calls_from_lines_are_challenged_and_cancel_is_relayed() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = start_pbx();
    let line = Line::get("204");
    for transport in [Transport::Udp, Transport::Tcp] {
        let endpoint = Sipp::start(SippOpts::uas(pbx_scenario("endpoint-ring.xml"), transport))
            .expect("start the endpoint");
        pbx.set_default_endpoint(&endpoint.uri()).unwrap();
        let caller = Sipp::run(line_opts("call-cancel.xml", &pbx, transport, line)).unwrap();
        caller.expect_success("line cancels");
        let endpoint = endpoint.wait().unwrap();
        endpoint.expect_success("endpoint sees the cancel");

        let challenge = caller
            .received_responses()
            .into_iter()
            .find(|m| m.status() == Some(407))
            .expect("INVITE challenged with 407");
        let auth = challenge.header("Proxy-Authenticate").expect("challenge");
        assert!(auth.contains("qop=\"auth\""), "{auth}");
        assert_eq!(endpoint.received_requests("CANCEL").len(), 1);
        // The PBX answers the line's ACK for the 487 itself and sends its
        // own to the endpoint.
        assert!(!endpoint.received_requests("ACK").is_empty());
    }
}

fn server_header(reply: &str) -> Vec<String> {
    reply
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Server: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn options_server_header_changes_at_runtime() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = start_pbx();
    let probe = |transport: Transport| {
        let out = Sipp::run(
            SippOpts::uac(pbx_scenario("options.xml"), transport, pbx.addr(transport))
                .timeout(Duration::from_secs(5)),
        )
        .unwrap();
        out.expect_success("OPTIONS");
        let reply = out.received_responses().pop().expect("a reply");
        reply.header_all("Server")
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        assert_eq!(probe(transport), vec![support::kamailio::DEFAULT_SERVER]);
    }

    // A "software update" of the PBX.
    let updated = "FreePBX 17.0.19 (Asterisk 21.4.1)";
    pbx.set_server(updated).unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        assert_eq!(probe(transport), vec![updated]);
        let reply = pbx.options(transport).unwrap();
        assert!(reply.starts_with("SIP/2.0 200 "), "{reply}");
        assert_eq!(server_header(&reply), vec![updated]);
    }
}

#[test]
fn tls_listener_answers_with_a_certificate_from_the_test_ca() {
    if support::skip_without_tls_peers() {
        return;
    }
    let pbx = Kamailio::start(KamailioOpts {
        tls: true,
        server: Some("Eastside PBX 1.1".into()),
        ..Default::default()
    })
    .expect("start the PBX with TLS");
    // The probe trusts only the CA generated for this instance.
    let reply = pbx.options(Transport::Tls).unwrap();
    assert!(reply.starts_with("SIP/2.0 200 "), "{reply}");
    assert_eq!(server_header(&reply), vec!["Eastside PBX 1.1"]);
    assert!(pbx
        .tls_ca()
        .unwrap()
        .ca_pem()
        .starts_with("-----BEGIN CERTIFICATE-----"));
}

/// Processes of a process group that are still running (zombies excluded:
/// they hold no ports, and reaping orphans is the init process's job).
fn live_group_members(pgid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the command name: state ppid pgrp ...
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .count()
}

#[test]
fn dropping_the_pbx_kills_all_its_processes() {
    if support::skip_without_peers() {
        return;
    }
    let pbx = start_pbx();
    let pgid = pbx.pgid();
    let addr = pbx.udp_addr();
    assert!(live_group_members(pgid) > 1, "Kamailio runs workers");
    drop(pbx);
    poll_until(Duration::from_secs(5), "the PBX's processes to end", || {
        Ok((live_group_members(pgid) == 0).then_some(()))
    })
    .unwrap();
    assert!(
        !support::net::port_is_bound(Transport::Udp, addr.port()),
        "port released"
    );
}
