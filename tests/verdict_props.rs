//! Property tests: no input panics, and a configured number written any of
//! the supported ways, anywhere in the message, is always caught.

use proptest::prelude::*;

use cidguard::verdict::{judge, Kind, Outcome};

use crate::verdict_corpus::example_policies;

const BASE: &str = "INVITE sip:+61399990000@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\nFrom: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:+61399990000@cidguard.test>\r\nCall-ID: 1@carrier.example\r\nCSeq: 1 INVITE\r\n";

/// How many ways [`written`] knows.
const STYLES: u8 = 25;

/// Ways to write the Australian number +61 `area` `abcd` `efgh` (`rest`
/// is its eight digits after the area code): every form the verdict
/// engine reads.
fn written_nsn(area: char, rest: &str, style: u8) -> String {
    let (a, b) = rest.split_at(4);
    let z = area;
    match style % STYLES {
        0 => format!("+61{z}{a}{b}"),
        1 => format!("61{z}{a}{b}"),
        2 => format!("0{z}{a}{b}"),
        3 => format!("(0{z}) {a}-{b}"),
        4 => format!("0{z} {a} {b}"),
        5 => format!("+61 {z} {a} {b}"),
        6 => format!("0011 61 {z} {a} {b}"),
        7 => format!("0061{z}-{a}-{b}"),
        8 => format!("%2B61{z}{a}{b}"),
        9 => format!("+61.{z}.{a}.{b}"),
        10 => format!("011-61-{z}-{a}-{b}"),
        11 => format!("+61-{z}-{a}-{b}"),
        // The trunk 0 kept after the country code.
        12 => format!("+61 (0){z} {a} {b}"),
        13 => format!("+61 0{z} {a} {b}"),
        14 => format!("+61-0{z}-{a}-{b}"),
        15 => format!("0061 (0){z} {a} {b}"),
        16 => format!("+610{z}{a}{b}"),
        17 => format!("00610{z}{a}{b}"),
        18 => format!("%2B610{z}{a}{b}"),
        // A local number in a global phone-context (RFC 3966), as a tel: or
        // user=phone sip: URI's number carries it.
        19 => format!("{a}-{b};phone-context=+61-{z}"),
        20 => format!("0{z}-{a}-{b};phone-context=+61"),
        21 => format!("0{z}{a}{b};phone-context=+61"),
        // Pasted: no-break spaces, Unicode dashes.
        22 => format!("+61\u{a0}{z}\u{a0}{a}\u{a0}{b}"),
        23 => format!("(0{z})\u{202f}{a}\u{2013}{b}"),
        _ => format!("+61\u{2011}(0){z}\u{2011}{a}\u{2011}{b}"),
    }
}

/// Ways to write the NSN 3 7010 01xx (all in the configured range).
fn written(sub: u32, style: u8) -> String {
    written_nsn('3', &format!("701001{:02}", sub % 100), style)
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
    fn a_configured_number_is_always_caught(sub in 0u32..100, style in 0u8..STYLES, place in 0u8..8) {
        let policies = example_policies();
        let n = written(sub, style);
        let (header_line, header) = placed(&n, place);
        let msg = format!("{BASE}{header_line}Content-Length: 0\r\n\r\n");
        let v = judge(&policies[0], msg.as_bytes());
        prop_assert_eq!(v.outcome, Outcome::Fail, "{} in {}: {:?}", n, header, v);
        // The finding names the number actually seen, not the range's first.
        let seen = format!("+613701001{:02}", sub % 100);
        prop_assert!(
            v.findings.iter().any(|f| f.header == header && f.kind == Kind::Number && f.detail.contains(&seen)),
            "{} in {}: {:?}", n, header, v.findings
        );
    }

    /// Precision: a carrier's number sharing the organisation's digits (its
    /// area code or one of the next four digits changed, so outside every
    /// configured entry), written any supported way, and digit runs built
    /// from the organisation's digits in the Call-ID, tag and branch, are
    /// never the organisation's number.
    #[test]
    fn near_misses_are_never_the_organisations_number(
        pos in 0usize..5,
        bump in 1u8..10,
        other_area in proptest::sample::select(vec!['2', '7', '8']),
        last in 0u32..10000,
        style in 0u8..STYLES,
        place in 0u8..8,
        noise in "[0-9a-f]{0,6}",
    ) {
        let policies = example_policies();
        let mut rest: Vec<u8> = format!("7010{last:04}").into_bytes();
        let area = if pos == 4 {
            other_area
        } else {
            rest[pos] = b'0' + (rest[pos] - b'0' + bump) % 10;
            '3'
        };
        let rest = String::from_utf8(rest).unwrap_or_default();
        let n = written_nsn(area, &rest, style);
        let (header_line, header) = placed(&n, place);
        let digits = format!("61{area}{rest}");
        let msg = format!(
            "INVITE sip:+61399990000@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK{noise}{digits}\r\nFrom: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=0{digits}{noise}\r\nTo: <sip:+61399990000@cidguard.test>\r\nCall-ID: {noise}00{digits}-0{area}{rest}@carrier.example\r\nCSeq: 1 INVITE\r\n{header_line}Content-Length: 0\r\n\r\n"
        );
        let v = judge(&policies[0], msg.as_bytes());
        prop_assert!(
            v.findings.iter().all(|f| f.kind != Kind::Number),
            "{} in {}: {:?}", n, header, v.findings
        );
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
