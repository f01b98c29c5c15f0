//! Reading a STIR/SHAKEN PASSporT (RFC 8224 Identity header, RFC 8225 token,
//! RFC 8588 SHAKEN, RFC 8946 div, RFC 9795 rcd). We don't verify the
//! signature: we read the claims, because anyone who receives the call can.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

/// The claims cidguard cares about.
#[derive(Debug, Default)]
pub struct Claims {
    pub orig_tn: Option<String>,
    pub orig_uri: Option<String>,
    pub div_tn: Vec<String>,
    pub rcd_nam: Option<String>,
    /// The decoded payload as text, for a free-text scan of everything else.
    pub payload_text: String,
}

#[derive(Debug)]
pub enum Decoded {
    /// `header..signature`: the payload was left out (RFC 8224 section 4.1).
    Compact,
    /// Not a three-part token (an RFC 4474 signature, say).
    Legacy,
    Unreadable(String),
    Claims(Claims),
}

fn b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    URL_SAFE_NO_PAD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| STANDARD.decode(s))
        .ok()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Decode the PASSporT in an Identity header value.
pub fn decode(value: &str) -> Decoded {
    let token = value.split(';').next().unwrap_or("").trim();
    let token = token.trim_matches(|c| c == '"' || c == '<' || c == '>');
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Decoded::Legacy;
    }
    if parts[1].is_empty() {
        return Decoded::Compact;
    }
    let Some(bytes) = b64(parts[1]) else {
        return Decoded::Unreadable("the payload is not base64url".into());
    };
    // A payload that is UTF-8 (as JSON must be) is parsed as text and kept
    // as it is; anything else is parsed as bytes (for the parser's own
    // error) and kept with U+FFFD for what is not UTF-8.
    let (json, payload_text) = match String::from_utf8(bytes) {
        Ok(text) => (serde_json::from_str::<Value>(&text), text),
        Err(e) => {
            let bytes = e.into_bytes();
            (
                serde_json::from_slice::<Value>(&bytes),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        }
    };
    let json = match json {
        Ok(v) => v,
        Err(e) => return Decoded::Unreadable(format!("the payload is not JSON: {e}")),
    };
    let mut c = Claims {
        payload_text,
        ..Default::default()
    };
    if let Some(orig) = json.get("orig") {
        c.orig_tn = orig.get("tn").and_then(text);
        c.orig_uri = orig.get("uri").and_then(text);
    }
    if let Some(div) = json.get("div") {
        match div.get("tn") {
            Some(Value::Array(a)) => c.div_tn.extend(a.iter().filter_map(text)),
            Some(v) => c.div_tn.extend(text(v)),
            None => {}
        }
    }
    if let Some(rcd) = json.get("rcd") {
        c.rcd_nam = rcd.get("nam").and_then(text);
    }
    Decoded::Claims(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claims() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"attest":"A","dest":{"tn":["15550100"]},"iat":1,"orig":{"tn":"61370100142"},"origid":"x","rcd":{"nam":"Eastside"}}"#);
        let v = format!("eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln;info=<https://cert.example/x.pem>;alg=ES256;ppt=shaken");
        match decode(&v) {
            Decoded::Claims(c) => {
                assert_eq!(c.orig_tn.as_deref(), Some("61370100142"));
                assert_eq!(c.rcd_nam.as_deref(), Some("Eastside"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode("eyJhbGciOiJFUzI1NiJ9..c2ln;info=<https://x>"),
            Decoded::Compact
        ));
        assert!(matches!(decode("eyJ.%%%.x"), Decoded::Unreadable(_)));
    }

    #[test]
    fn a_payload_that_is_not_json_is_reported_as_the_parser_words_it() {
        for payload in [
            &b"{\"orig\":"[..],
            b"{\"a\":\"\x01\"}",
            b"[1,2",
            b"{\"a\":\xff}",
            b"nul",
        ] {
            let want = match serde_json::from_slice::<Value>(payload) {
                Err(e) => format!("the payload is not JSON: {e}"),
                Ok(_) => unreachable!("not JSON"),
            };
            let v = format!(
                "eyJhbGciOiJFUzI1NiJ9.{}.c2ln",
                URL_SAFE_NO_PAD.encode(payload)
            );
            match decode(&v) {
                Decoded::Unreadable(why) => assert_eq!(why, want),
                other => panic!("{other:?}"),
            }
        }
        // Trailing whitespace is still JSON.
        let v = format!(
            "eyJhbGciOiJFUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(b"{\"iat\":1} ")
        );
        assert!(matches!(decode(&v), Decoded::Claims(_)));
    }
}
