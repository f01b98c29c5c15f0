//! Reading a STIR/SHAKEN PASSporT (RFC 8224 Identity header, RFC 8225 token,
//! RFC 8588 SHAKEN, RFC 8946 div, RFC 9795 rcd). We don't verify the
//! signature: we read the claims, because anyone who receives the call can.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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

/// The claims read from the payload as it is parsed, without building a
/// tree of it: `orig.tn`, `orig.uri`, `div.tn` (one or a list) and
/// `rcd.nam`, each a string or a number (written as JSON writes it).
/// Everything else is walked over (and so checked to be JSON). A key given
/// twice counts as given last, as in a JSON object read whole.
#[derive(Default)]
struct Payload {
    orig: Orig,
    div: Vec<String>,
    rcd_nam: Option<String>,
}

#[derive(Default)]
struct Orig {
    tn: Option<String>,
    uri: Option<String>,
}

/// Any JSON value, walked over and not kept. Read as any value is (not
/// skipped unread), so what is not JSON is refused in the same words as
/// anywhere else in the payload.
type Skip = Read<Nothing>;

#[derive(Default)]
struct Nothing;

impl Part for Nothing {
    const WHAT: &'static str = "any value";
}

/// A claim's value as text: a string or a number; None for anything else.
#[derive(Default)]
struct Text(Option<String>);

/// `div.tn`: a list of texts or one.
#[derive(Default)]
struct Texts(Vec<String>);

/// An object's key, compared without being kept.
#[derive(Clone, Copy)]
enum Key {
    Orig,
    Div,
    Rcd,
    Tn,
    Uri,
    Nam,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "orig" => Key::Orig,
                    "div" => Key::Div,
                    "rcd" => Key::Rcd,
                    "tn" => Key::Tn,
                    "uri" => Key::Uri,
                    "nam" => Key::Nam,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// How a part of the payload is read from each kind of JSON value. What
/// it doesn't read is walked over (and so checked to be JSON) and gives
/// the default.
trait Part: Default {
    const WHAT: &'static str;
    /// Whether a string or a number is read ([`Part::from_text`]).
    const TEXT: bool = false;
    /// A string, or a number as JSON writes it.
    fn from_text(_: String) -> Self {
        Self::default()
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Self::default())
    }
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Self::default())
    }
}

/// A [`Part`] as read from any JSON value.
struct Read<T>(T);

impl<'de, T: Part> Deserialize<'de> for Read<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Part> Visitor<'de> for V<T> {
            type Value = Read<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(T::WHAT)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Read(T::default()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Read(T::default()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Read(text(v, |v| v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Read(text(v, |v| v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Read(
                    serde_json::Number::from_f64(v)
                        .map(|n| text(n, |n| n.to_string()))
                        .unwrap_or_default(),
                ))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Read(text(v, str::to_owned)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                T::from_seq(seq).map(Read)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::from_map(map).map(Read)
            }
        }
        /// `T` from a value written as text, when `T` reads text (the
        /// text is made only then).
        fn text<T: Part, V>(v: V, write: impl FnOnce(V) -> String) -> T {
            if T::TEXT {
                T::from_text(write(v))
            } else {
                T::default()
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Part for Text {
    const WHAT: &'static str = "a claim";
    const TEXT: bool = true;
    fn from_text(s: String) -> Self {
        Text(Some(s))
    }
}

impl Part for Texts {
    const WHAT: &'static str = "a claim or a list of claims";
    const TEXT: bool = true;
    fn from_text(s: String) -> Self {
        Texts(vec![s])
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut out = Vec::new();
        while let Some(Read(Text(t))) = seq.next_element::<Read<Text>>()? {
            out.extend(t);
        }
        Ok(Texts(out))
    }
}

/// An object's entries: each key handed to `read` with the map, which
/// reads the value if it wants that key (saying so); the rest are walked
/// over.
fn entries<'de, A: MapAccess<'de>>(
    mut map: A,
    mut read: impl FnMut(Key, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    while let Some(k) = map.next_key::<Key>()? {
        if !read(k, &mut map)? {
            map.next_value::<Skip>()?;
        }
    }
    Ok(())
}

/// The next entry's value, as `T` reads it.
fn value<'de, T: Part, A: MapAccess<'de>>(map: &mut A) -> Result<T, A::Error> {
    Ok(map.next_value::<Read<T>>()?.0)
}

/// The `orig` claim's object.
impl Part for Orig {
    const WHAT: &'static str = "the orig claim";
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut o = Orig::default();
        entries(map, |k, map| {
            match k {
                Key::Tn => o.tn = value::<Text, _>(map)?.0,
                Key::Uri => o.uri = value::<Text, _>(map)?.0,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(o)
    }
}

/// An object read for one key's value (`K`, a [`Key`]): the `div`
/// claim's `tn`, the `rcd` claim's `nam`.
#[derive(Default)]
struct Field<T, const K: u8>(T);

impl<T: Part, const K: u8> Part for Field<T, K> {
    const WHAT: &'static str = "a claim's object";
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut field = Field::default();
        entries(map, |k, map| {
            if k as u8 != K {
                return Ok(false);
            }
            field.0 = value(map)?;
            Ok(true)
        })?;
        Ok(field)
    }
}

impl Part for Payload {
    const WHAT: &'static str = "a PASSporT payload";
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut p = Payload::default();
        entries(map, |k, map| {
            match k {
                Key::Orig => p.orig = value(map)?,
                Key::Div => p.div = value::<Field<Texts, { Key::Tn as u8 }>, _>(map)?.0 .0,
                Key::Rcd => p.rcd_nam = value::<Field<Text, { Key::Nam as u8 }>, _>(map)?.0 .0,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(p)
    }
}

/// Decode the PASSporT in an Identity header value.
pub fn decode(value: &str) -> Decoded {
    let token = value.split(';').next().unwrap_or("").trim();
    let token = token.trim_matches(|c| c == '"' || c == '<' || c == '>');
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Decoded::Legacy;
    };
    if payload.is_empty() {
        return Decoded::Compact;
    }
    let Some(bytes) = b64(payload) else {
        return Decoded::Unreadable("the payload is not base64url".into());
    };
    // A payload that is UTF-8 (as JSON must be) is parsed as text and kept
    // as it is; anything else is parsed as bytes (for the parser's own
    // error) and kept with U+FFFD for what is not UTF-8.
    let (json, payload_text) = match String::from_utf8(bytes) {
        Ok(text) => (serde_json::from_str::<Read<Payload>>(&text), text),
        Err(e) => {
            let bytes = e.into_bytes();
            (
                serde_json::from_slice::<Read<Payload>>(&bytes),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        }
    };
    let json = match json {
        Ok(Read(v)) => v,
        Err(e) => return Decoded::Unreadable(format!("the payload is not JSON: {e}")),
    };
    let c = Claims {
        orig_tn: json.orig.tn,
        orig_uri: json.orig.uri,
        div_tn: json.div,
        rcd_nam: json.rcd_nam,
        payload_text,
    };
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
            let want = match serde_json::from_slice::<serde_json::Value>(payload) {
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

    type Read4 = (Option<String>, Option<String>, Vec<String>, Option<String>);

    /// The claims as read from a whole JSON tree (how they were read
    /// before the payload was walked instead).
    fn claims_from_tree(payload: &[u8]) -> Option<Read4> {
        use serde_json::Value;
        fn text(v: &Value) -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        }
        let json: Value = serde_json::from_slice(payload).ok()?;
        let orig = json.get("orig");
        let div_tn = match json.get("div").and_then(|d| d.get("tn")) {
            Some(Value::Array(a)) => a.iter().filter_map(text).collect(),
            Some(v) => text(v).into_iter().collect(),
            None => Vec::new(),
        };
        Some((
            orig.and_then(|o| o.get("tn")).and_then(text),
            orig.and_then(|o| o.get("uri")).and_then(text),
            div_tn,
            json.get("rcd").and_then(|r| r.get("nam")).and_then(text),
        ))
    }

    #[test]
    fn claims_read_as_from_the_whole_tree() {
        let values = [
            r#""61370100142""#,
            "61370100142",
            "-61370100142",
            "6.137e10",
            "1e3",
            "123456789012345678901234567890",
            "0.1",
            "true",
            "null",
            r#"["61370100142", 5, null, {"a":1}, ["x"]]"#,
            "[]",
            r#"{"tn":"1"}"#,
            r#""\u0036\u0031 3 7010 0142""#,
            r#""caf\u00e9 \ud83d\ude00""#,
        ];
        let mut payloads: Vec<String> = Vec::new();
        for v in values {
            payloads.push(format!(
                r#"{{"orig":{{"tn":{v},"uri":{v}}},"div":{{"tn":{v}}},"rcd":{{"nam":{v}}}}}"#
            ));
            payloads.push(format!(r#"{{"orig":{v},"div":{v},"rcd":{v}}}"#));
            payloads.push(format!(
                r#"{{"orig":{{"tn":"1"}},"orig":{{"uri":{v}}},"div":{{"tn":{v},"tn":"2"}}}}"#
            ));
            payloads.push(format!(r#"{{"or\u0069g":{{"t\u006e":{v}}},"rcd":{{"nam":{v},"nam":{v}}},"x":{{"orig":{{"tn":"9"}}}}}}"#));
            payloads.push(format!("[{v}]"));
            payloads.push(v.to_string());
            payloads.push(format!(
                r#"{{"div":{{"tn":[{v},{v}]}},"orig":{{"tn":{v}}},"orig":7}}"#
            ));
        }
        for p in &payloads {
            let want = claims_from_tree(p.as_bytes()).unwrap_or_else(|| panic!("{p}"));
            let v = format!("eyJhbGciOiJFUzI1NiJ9.{}.c2ln", URL_SAFE_NO_PAD.encode(p));
            match decode(&v) {
                Decoded::Claims(c) => {
                    assert_eq!((c.orig_tn, c.orig_uri, c.div_tn, c.rcd_nam), want, "{p}");
                }
                other => panic!("{p}: {other:?}"),
            }
        }
        // What isn't JSON is refused with the parser's own words, as a
        // tree would be.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for p in [
            r#"{"orig":{"tn":}}"#,
            r#"{"orig":[1,}"#,
            r#"{"div":{"tn":"1"}"#,
            "{\"a\":\"\x01\"}",
            "{\"\x01\":1}",
            "{\"orig\":{\"tn\":\"a\x02\"}}",
            r#"{"x":{"y":"\u00zz"}}"#,
            r#"{"x":{"y":1e999}}"#,
            r#"{"orig":{"tn":"1"}} x"#,
            &deep,
        ] {
            let want = serde_json::from_str::<serde_json::Value>(p)
                .err()
                .map(|e| format!("the payload is not JSON: {e}"));
            let v = format!("eyJhbGciOiJFUzI1NiJ9.{}.c2ln", URL_SAFE_NO_PAD.encode(p));
            match decode(&v) {
                Decoded::Unreadable(why) => assert_eq!(Some(why), want, "{p}"),
                other => panic!("{p}: {other:?}"),
            }
        }
    }
}
