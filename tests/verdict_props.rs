//! Property tests: no input panics, and a configured number written any of
//! the supported ways, anywhere in the message, is always caught.

use proptest::prelude::*;

use cidguard::verdict::{judge, Kind, Outcome};

use crate::verdict_corpus::example_policies;

const BASE: &str = "INVITE sip:+61399990000@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\nFrom: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:+61399990000@cidguard.test>\r\nCall-ID: 1@carrier.example\r\nCSeq: 1 INVITE\r\n";

/// Ways to write the NSN 3 7010 01xx (all in the configured range).
fn written(sub: u32, style: u8) -> String {
    let last = format!("01{:02}", sub % 100);
    match style % 12 {
        0 => format!("+61370100{}", &last[1..]),
        1 => format!("61370100{}", &last[1..]),
        2 => format!("0370100{}", &last[1..]),
        3 => format!("(03) 7010-{last}"),
        4 => format!("03 7010 {last}"),
        5 => format!("+61 3 7010 {last}"),
        6 => format!("0011 61 3 7010 {last}"),
        7 => format!("00613-7010-{last}"),
        8 => format!("%2B61370100{}", &last[1..]),
        9 => format!("+61.3.7010.{last}"),
        10 => format!("011-61-3-7010-{last}"),
        _ => format!("+61-3-7010-{last}"),
    }
}

fn placed(number: &str, place: u8) -> (String, &'static str) {
    match place % 8 {
        0 => (
            format!("P-Asserted-Identity: <sip:{number}@carrier.example>\r\n"),
            "P-Asserted-Identity",
        ),
        1 => (
            format!(
                "Remote-Party-ID: <sip:{number}@carrier.example>;party=calling;privacy=full\r\n"
            ),
            "Remote-Party-ID",
        ),
        2 => (
            format!("Diversion: <sip:{number}@carrier.example>;reason=unconditional\r\n"),
            "Diversion",
        ),
        3 => (format!("X-Orig-Caller: {number}\r\n"), "X-Orig-Caller"),
        4 => (
            format!("History-Info: <sip:{number}@carrier.example>;index=1\r\n"),
            "History-Info",
        ),
        5 => (
            format!("P-Preferred-Identity: <tel:{number}>\r\n"),
            "P-Preferred-Identity",
        ),
        6 => (
            format!("Contact: <sip:{number}@198.51.100.7>\r\n"),
            "Contact",
        ),
        _ => (format!("Subject: call {number} back\r\n"), "Subject"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn a_configured_number_is_always_caught(sub in 0u32..100, style in 0u8..12, place in 0u8..8) {
        let policies = example_policies();
        let n = written(sub, style);
        let (header_line, header) = placed(&n, place);
        let msg = format!("{BASE}{header_line}Content-Length: 0\r\n\r\n");
        let v = judge(&policies[0], msg.as_bytes());
        prop_assert_eq!(v.outcome, Outcome::Fail, "{} in {}: {:?}", n, header, v);
        prop_assert!(v.findings.iter().any(|f| f.header == header && f.kind == Kind::Number), "{} in {}: {:?}", n, header, v.findings);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let policies = example_policies();
        let v = judge(&policies[0], &bytes);
        prop_assert!(v.outcome != Outcome::Pass || bytes.starts_with(b"INVITE"));
    }

    #[test]
    fn mangled_invites_never_panic(cut in 0usize..400, junk in "[ -~\t\r\n<>\",;:%\\\\]{0,64}") {
        let policies = example_policies();
        let mut msg = format!("{BASE}P-Asserted-Identity: \"Eastside Refuge\" <tel:+61370100142>\r\nContent-Length: 0\r\n\r\n");
        let cut = cut.min(msg.len());
        let cut = (0..=cut).rev().find(|i| msg.is_char_boundary(*i)).unwrap_or(0);
        msg.insert_str(cut, &junk);
        let _ = judge(&policies[0], msg.as_bytes());
        let _ = cidguard::sip::parse(msg.as_bytes());
    }
}
