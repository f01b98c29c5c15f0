//! Property tests: no input panics, and a configured number written any of
//! the supported ways, anywhere in the message, is always caught.

use proptest::prelude::*;

use cidguard::verdict::{judge, Kind, Outcome};

use crate::verdict_corpus::example_policies;

pub(crate) const BASE: &str = "INVITE sip:+61399990000@cidguard.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\nFrom: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:+61399990000@cidguard.test>\r\nCall-ID: 1@carrier.example\r\nCSeq: 1 INVITE\r\n";

/// How many ways [`written`] knows.
pub(crate) const STYLES: u8 = 25;

/// Ways to write the Australian number +61 `area` `abcd` `efgh` (`rest`
/// is its eight digits after the area code): every form the verdict
/// engine reads.
pub(crate) fn written_nsn(area: char, rest: &str, style: u8) -> String {
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
pub(crate) fn written(sub: u32, style: u8) -> String {
    written_nsn('3', &format!("701001{:02}", sub % 100), style)
}

pub(crate) fn placed(number: &str, place: u8) -> (String, &'static str) {
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

// --- Encodings × places: decode before judging -----------------------------

use std::io::Write as _;

use base64::Engine as _;

/// What is hidden: one of the organisation's numbers, its name, or a
/// descriptor of the kind of service, with the kind of finding it must give.
pub(crate) fn secret(what: u8) -> (&'static str, Kind) {
    match what % 3 {
        0 => ("+61370100142", Kind::Number),
        1 => ("Eastside Women’s Refuge", Kind::Name),
        _ => ("Domestic Violence", Kind::Descriptor),
    }
}

/// Ways a header text can arrive encoded.
pub(crate) fn header_encoded(text: &str, style: u8) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    match style % 6 {
        0 => text.to_string(),
        1 => format!("=?UTF-8?B?{}?=", b64.encode(text)),
        2 => {
            let q: String = text
                .bytes()
                .map(|b| match b {
                    b' ' => "_".to_string(),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' => (b as char).to_string(),
                    _ => format!("={b:02X}"),
                })
                .collect();
            format!("=?utf-8?q?{q}?=")
        }
        3 => {
            // Windows-1252 bytes (’ is 0x92), Q-encoded.
            let q: String = text
                .chars()
                .map(|c| match c {
                    '’' => "=92".to_string(),
                    ' ' => "_".to_string(),
                    c => c.to_string(),
                })
                .collect();
            format!("=?windows-1252?Q?{q}?=")
        }
        4 => {
            // UTF-8 misread as Windows-1252 on the way.
            text.replace('’', "â€™")
        }
        _ => {
            // Two encoded words, split inside the text.
            let cut = text.char_indices().nth(5).map_or(text.len(), |(i, _)| i);
            format!(
                "=?UTF-8?B?{}?= =?UTF-8?B?{}?=",
                b64.encode(&text[..cut]),
                b64.encode(&text[cut..])
            )
        }
    }
}

/// Headers that carry a display name or a name (the text as their display
/// name, a name-like parameter, or their whole value).
pub(crate) fn name_place(display: &str, place: u8) -> (String, &'static str) {
    match place % 9 {
        0 => (
            format!(
                "Diversion: \"{display}\" <sip:intake@carrier.example>;reason=unconditional\r\n"
            ),
            "Diversion",
        ),
        1 => (
            format!("History-Info: \"{display}\" <sip:intake@carrier.example>;index=1\r\n"),
            "History-Info",
        ),
        2 => (
            format!("Referred-By: \"{display}\" <sip:intake@carrier.example>\r\n"),
            "Referred-By",
        ),
        3 => (
            format!("P-Served-User: \"{display}\" <sip:intake@carrier.example>;sescase=orig\r\n"),
            "P-Served-User",
        ),
        4 => (
            format!("Reply-To: \"{display}\" <sip:intake@carrier.example>\r\n"),
            "Reply-To",
        ),
        5 => (format!("Organization: {display}\r\n"), "Organization"),
        6 => (format!("X-Caller-Name: {display}\r\n"), "X-Caller-Name"),
        7 => (
            format!("Call-Info: <https://carrier.example/c>;purpose=\"{display}\"\r\n"),
            "Call-Info",
        ),
        _ => (
            format!("P-Asserted-Identity: \"{display}\" <sip:anonymous@anonymous.invalid>\r\n"),
            "P-Asserted-Identity",
        ),
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A brotli stream of one uncompressed meta-block (RFC 7932 section 9.2):
/// valid brotli that any decoder must read, without an encoder crate. The
/// fixture corpus has a stream from a real encoder.
fn brotli_stored(b: &[u8]) -> Vec<u8> {
    assert!(!b.is_empty() && b.len() <= 65536);
    let mlen = (b.len() - 1) as u32;
    // Bits, least significant first: WBITS=16 (0), ISLAST=0, MNIBBLES=4
    // (00), MLEN-1 (16 bits), ISUNCOMPRESSED=1, then padding to a byte.
    let bits: u32 = (mlen << 4) | (1 << 20);
    let mut out = vec![bits as u8, (bits >> 8) as u8, (bits >> 16) as u8];
    out.extend_from_slice(b);
    // ISLAST=1, ISLASTEMPTY=1.
    out.push(0b11);
    out
}

/// Ways a body can arrive: (extra headers, body bytes, what the finding
/// must be reported in).
pub(crate) fn body_encoded(text: &str, style: u8) -> (String, Vec<u8>, &'static str) {
    let sdp = format!("v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns={text}\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n");
    let b64 = base64::engine::general_purpose::STANDARD;
    let sdp_type = "Content-Type: application/sdp\r\n";
    match style % 9 {
        0 => (
            format!("{sdp_type}Content-Encoding: gzip\r\n"),
            gzip(sdp.as_bytes()),
            "SDP",
        ),
        1 => (
            format!("{sdp_type}Content-Encoding: deflate\r\n"),
            zlib(sdp.as_bytes()),
            "SDP",
        ),
        2 => (
            format!("{sdp_type}Content-Encoding: deflate\r\n"),
            raw_deflate(sdp.as_bytes()),
            "SDP",
        ),
        3 => (
            format!("{sdp_type}Content-Encoding: br\r\n"),
            brotli_stored(sdp.as_bytes()),
            "SDP",
        ),
        4 => (
            format!("{sdp_type}Content-Encoding: gzip, br\r\n"),
            brotli_stored(&gzip(sdp.as_bytes())),
            "SDP",
        ),
        5 => {
            let body = format!(
                "--b1\r\nContent-Type: application/sdp\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
                b64.encode(&sdp)
            );
            (
                "Content-Type: multipart/mixed;boundary=b1\r\n".into(),
                body.into_bytes(),
                "SDP",
            )
        }
        6 => {
            let qp: String = text
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b' ' {
                        (b as char).to_string()
                    } else {
                        format!("={b:02X}")
                    }
                })
                .collect();
            let body = format!(
                "--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nnote: {qp}\r\n--b1--\r\n"
            );
            (
                "Content-Type: multipart/mixed; boundary=\"b1\"\r\n".into(),
                body.into_bytes(),
                "Body",
            )
        }
        7 => {
            let inner = format!(
                "--in\r\nContent-Type: application/sdp\r\nContent-Encoding: gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--in--\r\n",
                b64.encode(gzip(sdp.as_bytes()))
            );
            let body = format!(
                "--out\r\nContent-Type: multipart/alternative;boundary=in\r\n\r\n{inner}\r\n--out--\r\n"
            );
            (
                "Content-Type: multipart/mixed;boundary=out\r\n".into(),
                body.into_bytes(),
                "SDP",
            )
        }
        _ => {
            let hexed: String = format!("agent note {text}")
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect();
            (
                format!("User-to-User: 04{hexed};encoding=hex\r\n"),
                Vec::new(),
                "User-to-User",
            )
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// A number, name or descriptor in any header that carries a name, in
    /// any header encoding, is caught as what it is.
    #[test]
    fn an_encoded_secret_in_any_name_header_is_caught(what in 0u8..3, style in 0u8..6, place in 0u8..9) {
        let policies = example_policies();
        let (text, kind) = secret(what);
        let (line, header) = name_place(&header_encoded(text, style), place);
        let msg = format!("{BASE}{line}Content-Length: 0\r\n\r\n");
        let v = judge(&policies[0], msg.as_bytes());
        prop_assert_eq!(v.outcome, Outcome::Fail, "{:?} in {}: {:#?}", text, line, v);
        prop_assert!(v.findings.iter().any(|f| f.header == header && f.kind == kind), "{} in {}: {:#?}", text, line, v.findings);
        // Base64 words can't match as sent: the finding names the layer.
        if matches!(style, 1 | 5) {
            prop_assert!(v.findings.iter().any(|f| f.header == header && f.detail.starts_with("In the ")), "the layer is named: {:#?}", v.findings);
        }
    }

    /// The same in an encoded or multipart body, or User-to-User data.
    #[test]
    fn an_encoded_secret_in_any_body_is_caught(what in 0u8..3, style in 0u8..9) {
        let policies = example_policies();
        let (text, kind) = secret(what);
        let (headers, body, place) = body_encoded(text, style);
        let mut msg = format!("{BASE}{headers}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        msg.extend_from_slice(&body);
        let v = judge(&policies[0], &msg);
        prop_assert_eq!(v.outcome, Outcome::Fail, "{:?} style {}: {:#?}", text, style, v);
        prop_assert!(v.findings.iter().any(|f| f.header == place && f.kind == kind && f.detail.contains("-decoded")), "{:?} style {}: {:#?}", text, style, v.findings);
    }

    /// The same clean body in any encoding passes: decoding adds no false
    /// alarm and no doubt.
    #[test]
    fn a_clean_encoded_body_passes(style in 0u8..9) {
        let policies = example_policies();
        let (headers, body, _) = body_encoded("-", style);
        let mut msg = format!("{BASE}{headers}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        msg.extend_from_slice(&body);
        let v = judge(&policies[0], &msg);
        prop_assert_eq!(v.outcome, Outcome::Pass, "style {}: {:#?}", style, v);
    }

    /// Junk where encoded data should be: never a panic, and never a pass
    /// unless it decoded to text that was read.
    #[test]
    fn encoded_junk_never_panics(coding in 0u8..6, junk in proptest::collection::vec(any::<u8>(), 0..600)) {
        let policies = example_policies();
        let header = match coding {
            0 => "Content-Encoding: gzip\r\n",
            1 => "Content-Encoding: deflate\r\n",
            2 => "Content-Encoding: br\r\n",
            3 => "Content-Type: multipart/mixed;boundary=x\r\n",
            4 => "Content-Type: multipart/mixed;boundary=x\r\nContent-Encoding: gzip\r\n",
            _ => "Subject: =?UTF-8?B?\r\n",
        };
        let mut msg = format!("{BASE}{header}Content-Length: {}\r\n\r\n", junk.len()).into_bytes();
        msg.extend_from_slice(&junk);
        let v = judge(&policies[0], &msg);
        if v.outcome == Outcome::Inconclusive {
            prop_assert!(v.reason.is_some());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// The caller-name (CNAM) form, upper case and cut to 15 characters, in
    /// every header that carries a name, plain or encoded.
    #[test]
    fn the_cnam_form_is_caught_in_any_name_header(style in 0u8..6, place in 0u8..9) {
        let policies = example_policies();
        let (line, header) = name_place(&header_encoded("EASTSIDE WOMENS", style), place);
        let msg = format!("{BASE}{line}Content-Length: 0\r\n\r\n");
        let v = judge(&policies[0], msg.as_bytes());
        prop_assert!(v.findings.iter().any(|f| f.header == header && f.kind == Kind::Name), "{}: {:#?}", line, v.findings);
    }

    /// "DV" by chance inside an encoded blob is not a descriptor.
    #[test]
    fn a_short_descriptor_inside_a_blob_is_not_a_leak(blob in "[A-Za-z0-9]{10,30}", at in 0usize..40, sep in 0usize..4) {
        let policies = example_policies();
        let blob = format!("Ab1{blob}");
        let cut = at.min(blob.len());
        let seps = ["+dv/", "-dv_", "/DV+", "_dV-"];
        let token = format!("{}{}{}", &blob[..cut], seps[sep], &blob[cut..]);
        let msg = format!("{BASE}X-Token: {token}\r\nP-Charging-Vector: icid-value={token};orig-ioi=carrier.example\r\nContent-Length: 0\r\n\r\n");
        let v = judge(&policies[0], msg.as_bytes());
        prop_assert_eq!(v.outcome, Outcome::Pass, "{}: {:#?}", token, v);
    }
}

/// A compression bomb in any coding and at any depth is inconclusive,
/// quickly, never a pass (and never an out-of-memory).
#[test]
fn compression_bombs_are_inconclusive() {
    let policies = example_policies();
    let big = vec![b'a'; 2 * 1024 * 1024];
    let b64 = base64::engine::general_purpose::STANDARD;
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("Content-Encoding: gzip\r\n".into(), gzip(&big)),
        ("Content-Encoding: deflate\r\n".into(), zlib(&big)),
        ("Content-Encoding: gzip, gzip\r\n".into(), gzip(&gzip(&big))),
        (
            "Content-Type: multipart/mixed;boundary=b\r\n".into(),
            format!(
                "--b\r\nContent-Type: application/sdp\r\nContent-Encoding: gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
                b64.encode(gzip(&big))
            )
            .into_bytes(),
        ),
    ];
    for (headers, body) in cases {
        let mut msg = format!("{BASE}{headers}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        msg.extend_from_slice(&body);
        let v = judge(&policies[0], &msg);
        assert_eq!(v.outcome, Outcome::Inconclusive, "{headers}: {v:#?}");
        assert!(
            v.reason
                .as_deref()
                .unwrap_or("")
                .contains("compression bomb"),
            "{headers}: {v:#?}"
        );
    }
}
