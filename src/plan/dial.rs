//! What a line dials: the one place where an endpoint number, the account's
//! `dial_prefix` and the endpoint's `dial` template become the Request-URI
//! of a test call. `cidguard config check` prints what [`for_line`] returns,
//! and the line sends exactly that.
//!
//! Numbers go on the wire in their dialable form
//! ([`crate::verdict::numbers::dialable`]): `"+61 3 9999 0000"` is dialled
//! as `sip:+61399990000@pbx`, never with the spaces (a real PBX refuses to
//! parse that Request-URI, and the call never happens). Whatever comes out
//! is checked as a SIP URI before it is used.

use crate::config::{Account, Endpoint};
use crate::sip::uri::{check_uri, escape_user, is_uri};
use crate::verdict::numbers::{dial_chars, dialable, DialableError};

/// Why a test call's Request-URI can't be built, saying which setting is
/// at fault so `config check` can name the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// An endpoint number (`endpoint.numbers[i]`).
    #[error("{text:?} can't be dialled: {source}")]
    Number { text: String, source: DialableError },
    /// The account's `dial_prefix`.
    #[error("{text:?} can't be dialled: {source}")]
    Prefix { text: String, source: DialableError },
    /// The account's `dial_prefix` where the dial template has no user part
    /// to put it in front of.
    #[error("{uri:?} has no user part to put the dial prefix in front of")]
    PrefixWithoutUser { uri: String },
    /// The endpoint's `dial` template.
    #[error("{text:?} can't be used: {why}")]
    Template { text: String, why: String },
    /// The account's `registrar`.
    #[error(
        "{text:?} is not a SIP address (write \"sip:pbx.example.org:5060\" or \"pbx.example.org\")"
    )]
    Registrar { text: String },
    /// The finished Request-URI (a full URI template, filled in).
    #[error("{uri:?} is not a valid SIP URI: {why}")]
    Uri { uri: String, why: String },
}

/// What a line dials with, besides the number.
#[derive(Debug, Clone, Copy, Default)]
pub struct DialPlan<'a> {
    /// The registrar as it goes in a URI: `host[:port]`, IPv6 in brackets.
    pub host: &'a str,
    /// Dialled before the number (`1831`, `*67`).
    pub prefix: Option<&'a str>,
    /// `endpoint.dial`: a dial string around `{number}` (`9{number}`), or a
    /// full `sip:`/`sips:`/`tel:` URI template.
    pub template: Option<&'a str>,
    /// `organisation.region`, for recognising the region's own
    /// international prefix (`0011 61 (0)3 ...`).
    pub region: Option<&'a str>,
}

/// The Request-URI of a line's test call to endpoint number `number`.
pub fn for_line(
    account: &Account,
    endpoint: &Endpoint,
    number: &str,
    region: &str,
) -> Result<String, DialError> {
    let host = crate::sip::uac::registrar_uri_part(&account.registrar).map_err(|_| {
        DialError::Registrar {
            text: account.registrar.clone(),
        }
    })?;
    request_uri(
        &DialPlan {
            host: &host,
            prefix: account.dial_prefix.as_deref(),
            template: endpoint.dial.as_deref(),
            region: Some(region),
        },
        number,
    )
}

/// The Request-URI for `number` under `plan`: the dialable form of the
/// number (or a SIP user name as written), the prefix in front, in the
/// template or `sip:<prefix><number>@<host>`; checked before it is returned.
pub fn request_uri(plan: &DialPlan<'_>, number: &str) -> Result<String, DialError> {
    let num = dial_user(number, plan.region)?;
    let prefix = match plan.prefix.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => {
            let (plus, chars) = dial_chars(p).map_err(|source| DialError::Prefix {
                text: p.to_string(),
                source,
            })?;
            format!("{}{chars}", if plus { "+" } else { "" })
        }
        None => String::new(),
    };
    let template = plan.template.map(str::trim).filter(|t| !t.is_empty());
    let uri = match template {
        Some(t) if is_uri(t) => {
            let filled = t.replace("{number}", &escape_user(&num));
            with_prefix(&filled, &escape_user(&prefix))?
        }
        Some(t) => {
            let user = fill_dial_string(t, &num)?;
            format!(
                "sip:{}@{}",
                escape_user(&format!("{prefix}{user}")),
                plan.host
            )
        }
        None => format!(
            "sip:{}@{}",
            escape_user(&format!("{prefix}{num}")),
            plan.host
        ),
    };
    check_uri(&uri).map_err(|why| DialError::Uri {
        uri: uri.clone(),
        why,
    })?;
    Ok(uri)
}

/// An endpoint number as dialled: a SIP user name (letters, `-`, `_`, `.`,
/// no digits, so a number with a letter O for a zero is refused, not
/// dialled) as written, anything else as a number in its dialable form.
pub fn dial_user(number: &str, region: Option<&str>) -> Result<String, DialError> {
    let t = number.trim();
    if is_user_name(t) {
        return Ok(t.to_string());
    }
    dialable(t, region).map_err(|source| DialError::Number {
        text: number.to_string(),
        source,
    })
}

/// A SIP user name rather than a number: starts with a letter, and has
/// only ASCII letters, `-`, `_` and `.`.
pub fn is_user_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '_' | '.'))
}

/// A dial string template (`9{number}`, `0011 {number}`): its own
/// characters cleaned like a number's, the number put in.
fn fill_dial_string(template: &str, num: &str) -> Result<String, DialError> {
    let bad = |why: String| DialError::Template {
        text: template.to_string(),
        why,
    };
    let mut out = String::new();
    for (i, piece) in template.split("{number}").enumerate() {
        if i > 0 {
            out.push_str(num);
        }
        if piece.trim().is_empty() {
            continue;
        }
        let (plus, chars) = dial_chars(piece).map_err(|e| bad(e.to_string()))?;
        if plus && !(i == 0 && out.is_empty()) {
            return Err(bad(DialableError::Plus.to_string()));
        }
        if plus {
            out.push('+');
        }
        out.push_str(&chars);
    }
    if out.is_empty() {
        return Err(bad("it dials nothing".into()));
    }
    Ok(out)
}

/// Put the dial prefix in front of a URI template's user part.
fn with_prefix(uri: &str, prefix: &str) -> Result<String, DialError> {
    if prefix.is_empty() {
        return Ok(uri.to_string());
    }
    let Some(colon) = uri.find(':') else {
        return Err(DialError::PrefixWithoutUser { uri: uri.into() });
    };
    let (scheme, rest) = (&uri[..colon + 1], &uri[colon + 1..]);
    let tel = scheme.eq_ignore_ascii_case("tel:");
    // A sip: URI without '@' has no user part; in a tel: URI a prefix before
    // a global number's `+` would make it no number at all.
    if !(tel || rest.contains('@')) || (tel && rest.starts_with('+')) {
        return Err(DialError::PrefixWithoutUser { uri: uri.into() });
    }
    Ok(format!("{scheme}{prefix}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan<'a>(prefix: Option<&'a str>, template: Option<&'a str>) -> DialPlan<'a> {
        DialPlan {
            host: "pbx.eastside-refuge.org.au",
            prefix,
            template,
            region: Some("AU"),
        }
    }

    #[test]
    fn numbers_as_people_write_them_dial_clean() {
        let p = plan(None, None);
        for (written, uri) in [
            (
                "+61 3 9999 0000",
                "sip:+61399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "+61 (0)3 9999 0000",
                "sip:+61399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "+61 03 9999 0000",
                "sip:+61399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "+61-03-9999-0000",
                "sip:+61399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "(03) 9999 0000",
                "sip:0399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "0011 61 (0)3 9999 0000",
                "sip:001161399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "0061 (0)3 9999 0000",
                "sip:0061399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "+61\u{a0}3\u{a0}9999\u{a0}0000",
                "sip:+61399990000@pbx.eastside-refuge.org.au",
            ),
            (
                "+61 3 9999\u{2013}0000",
                "sip:+61399990000@pbx.eastside-refuge.org.au",
            ),
            ("4000", "sip:4000@pbx.eastside-refuge.org.au"),
            ("*12#", "sip:*12%23@pbx.eastside-refuge.org.au"),
            ("cidguard", "sip:cidguard@pbx.eastside-refuge.org.au"),
            // Italian numbers keep their 0 after the country code.
            (
                "+39 06 1234 5678",
                "sip:+390612345678@pbx.eastside-refuge.org.au",
            ),
        ] {
            assert_eq!(request_uri(&p, written).as_deref(), Ok(uri), "{written}");
        }
    }

    #[test]
    fn prefixes_and_templates() {
        let n = "+61 3 9999 0000";
        assert_eq!(
            request_uri(&plan(Some("1831"), None), n).unwrap(),
            "sip:1831+61399990000@pbx.eastside-refuge.org.au"
        );
        assert_eq!(
            request_uri(&plan(Some("*67"), Some("0 {number}")), "(03) 9999 0000").unwrap(),
            "sip:*6700399990000@pbx.eastside-refuge.org.au"
        );
        assert_eq!(
            request_uri(
                &plan(
                    Some("1831"),
                    Some("sip:{number}@sbc.example.org;user=phone")
                ),
                n
            )
            .unwrap(),
            "sip:1831+61399990000@sbc.example.org;user=phone"
        );
        assert_eq!(
            request_uri(&plan(None, Some("tel:{number}")), n).unwrap(),
            "tel:+61399990000"
        );
    }

    #[test]
    fn what_cant_be_dialled_names_its_setting() {
        assert!(matches!(
            request_uri(&plan(None, None), "+61 3 9999 OOOO"),
            Err(DialError::Number {
                source: DialableError::Letter('O'),
                ..
            })
        ));
        assert!(matches!(
            request_uri(&plan(None, None), "03 9999 0000 ext 12"),
            Err(DialError::Number { .. })
        ));
        assert!(matches!(
            request_uri(&plan(Some("18 31x"), None), "4000"),
            Err(DialError::Prefix { .. })
        ));
        assert!(matches!(
            request_uri(&plan(None, Some("9+{number}")), "4000"),
            Err(DialError::Template { .. })
        ));
        assert!(matches!(
            request_uri(&plan(None, Some("sip:{number}@sbc example.org")), "4000"),
            Err(DialError::Uri { .. })
        ));
        assert!(matches!(
            request_uri(&plan(None, Some("sip:{number}\u{1b}@sbc")), "4000"),
            Err(DialError::Uri { .. })
        ));
        assert!(matches!(
            request_uri(&plan(Some("1831"), Some("sip:sbc.example.org")), "4000"),
            Err(DialError::PrefixWithoutUser { .. })
        ));
        assert!(matches!(
            request_uri(&plan(None, Some("tel:{number}")), "4000"),
            Err(DialError::Uri { .. })
        ));
    }
}
