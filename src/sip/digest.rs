//! Digest authentication as a SIP client (RFC 2617, RFC 7616, RFC 8760).
//!
//! A PBX challenges a line's REGISTER and INVITE with 401 (WWW-Authenticate,
//! answered in Authorization) or 407 (Proxy-Authenticate, answered in
//! Proxy-Authorization). A response may carry several challenges, for
//! several algorithms of the same realm (RFC 8760) or for several realms
//! (forking proxies): we answer each realm once, with the strongest
//! algorithm we support.
//!
//! Nothing here logs: the password and the computed credentials must never
//! reach a log line.

use std::collections::HashMap;
use std::fmt::Write as _;

use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};

use super::header::parse_auth_params;
use super::message::Message;

/// A hash function usable for Digest, weakest first so `Ord` ranks strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hash {
    Md5,
    Sha256,
    Sha512_256,
}

impl Hash {
    fn hex(self, data: &[u8]) -> String {
        match self {
            Hash::Md5 => to_hex(&Md5::digest(data)),
            Hash::Sha256 => to_hex(&Sha256::digest(data)),
            Hash::Sha512_256 => to_hex(&Sha512_256::digest(data)),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The quality of protection we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// RFC 2069 style: no qop, no cnonce, no nonce count.
    None,
    Auth,
    /// Integrity over the body as well.
    AuthInt,
}

/// One parsed Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// True when it came in Proxy-Authenticate (answer in Proxy-Authorization).
    pub proxy: bool,
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub hash: Hash,
    /// A `-sess` algorithm: HA1 also covers the nonce and cnonce.
    pub sess: bool,
    /// The algorithm token exactly as the server wrote it, echoed back;
    /// None when the challenge named none (MD5 implied, and none is echoed).
    pub algorithm: Option<String>,
    /// The qop values offered (lower-cased); empty for a legacy challenge.
    pub qop_offered: Vec<String>,
    pub stale: bool,
}

/// Why a challenge can't be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("the challenge scheme is {0:?}, not Digest")]
    NotDigest(String),
    #[error("the Digest challenge has no {0}")]
    Missing(&'static str),
    #[error("unsupported Digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("the Digest challenge offers only qop values we don't support: {0:?}")]
    UnsupportedQop(String),
    #[error("a -sess algorithm needs a qop, and the challenge offers none")]
    SessWithoutQop,
    #[error("the {0} response carries no Digest challenge we can answer")]
    NoUsableChallenge(u16),
}

impl Challenge {
    /// Parse one WWW-Authenticate / Proxy-Authenticate value.
    pub fn parse(value: &str, proxy: bool) -> Result<Challenge, DigestError> {
        let (scheme, params) = parse_auth_params(value);
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest(scheme));
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let realm = get("realm").ok_or(DigestError::Missing("realm"))?;
        let nonce = get("nonce").ok_or(DigestError::Missing("nonce"))?;
        let algorithm = get("algorithm").map(str::to_string);
        let (hash, sess) = match algorithm.as_deref() {
            None => (Hash::Md5, false),
            Some(a) => parse_algorithm(a)
                .ok_or_else(|| DigestError::UnsupportedAlgorithm(a.to_string()))?,
        };
        let qop_offered: Vec<String> = get("qop")
            .map(|q| {
                q.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let ch = Challenge {
            proxy,
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            opaque: get("opaque").map(str::to_string),
            hash,
            sess,
            algorithm,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            qop_offered,
        };
        // Reject now what `answer` could not do, so the picker skips it.
        ch.qop()?;
        Ok(ch)
    }

    /// The qop we will use: `auth` when offered (it doesn't tie the
    /// credentials to a body a proxy might rewrite), else `auth-int`.
    pub fn qop(&self) -> Result<Qop, DigestError> {
        if self.qop_offered.is_empty() {
            return if self.sess {
                Err(DigestError::SessWithoutQop)
            } else {
                Ok(Qop::None)
            };
        }
        if self.qop_offered.iter().any(|q| q == "auth") {
            Ok(Qop::Auth)
        } else if self.qop_offered.iter().any(|q| q == "auth-int") {
            Ok(Qop::AuthInt)
        } else {
            Err(DigestError::UnsupportedQop(self.qop_offered.join(",")))
        }
    }

    /// Name of the header that answers this challenge.
    pub fn answer_header(&self) -> &'static str {
        if self.proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        }
    }
}

fn parse_algorithm(a: &str) -> Option<(Hash, bool)> {
    let lower = a.to_ascii_lowercase();
    let (base, sess) = match lower.strip_suffix("-sess") {
        Some(b) => (b, true),
        None => (lower.as_str(), false),
    };
    let hash = match base {
        "md5" => Hash::Md5,
        "sha-256" => Hash::Sha256,
        "sha-512-256" => Hash::Sha512_256,
        _ => return None,
    };
    Some((hash, sess))
}

/// Every Digest challenge in a 401 or 407 we can answer: per (header kind,
/// realm), the strongest supported algorithm, in the order realms appeared.
pub fn challenges(response: &Message) -> Result<Vec<Challenge>, DigestError> {
    let mut best: Vec<Challenge> = Vec::new();
    for (name, proxy) in [("WWW-Authenticate", false), ("Proxy-Authenticate", true)] {
        for h in response.headers_named(name) {
            // One header line may hold several challenges separated by
            // commas; splitting before each scheme token keeps their params.
            for one in split_challenges(&h.value) {
                let Ok(ch) = Challenge::parse(one, proxy) else {
                    continue;
                };
                match best
                    .iter_mut()
                    .find(|b| b.proxy == ch.proxy && b.realm == ch.realm)
                {
                    Some(b) if (ch.hash, !ch.sess) > (b.hash, !b.sess) => *b = ch,
                    Some(_) => {}
                    None => best.push(ch),
                }
            }
        }
    }
    if best.is_empty() {
        return Err(DigestError::NoUsableChallenge(
            response.status().unwrap_or_default(),
        ));
    }
    Ok(best)
}

/// Split `Digest a=1, b=2, Digest c=3` into one string per challenge: a new
/// challenge starts after a comma (outside quotes) with a token followed by
/// whitespace and then something other than `=`.
fn split_challenges(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        if b == b'"' {
            in_quotes = true;
        } else if b == b',' {
            let rest = value[i + 1..].trim_start();
            let tok_len = rest
                .find(|c: char| c.is_whitespace() || c == '=' || c == ',')
                .unwrap_or(rest.len());
            let after = rest[tok_len..].trim_start();
            if tok_len > 0
                && rest[tok_len..].starts_with(char::is_whitespace)
                && !after.starts_with('=')
                && !after.starts_with(',')
                && !after.is_empty()
            {
                out.push(value[start..i].trim());
                start = value.len() - rest.len();
            }
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The inputs of one answer that aren't in the challenge.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The digest-uri: the Request-URI of the request being authorised.
    pub uri: &'a str,
    /// The body, for `auth-int`.
    pub body: &'a [u8],
}

/// Compute the credentials header value for a challenge.
/// `cnonce` and `nc` are ignored for a legacy (no-qop) challenge.
pub fn answer(
    ch: &Challenge,
    username: &str,
    password: &str,
    req: Request<'_>,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestError> {
    let qop = ch.qop()?;
    let h = ch.hash;
    let nc_hex = format!("{nc:08x}");
    let mut ha1 = h.hex(format!("{username}:{}:{password}", ch.realm).as_bytes());
    if ch.sess {
        ha1 = h.hex(format!("{ha1}:{}:{cnonce}", ch.nonce).as_bytes());
    }
    let ha2 = match qop {
        Qop::AuthInt => h.hex(format!("{}:{}:{}", req.method, req.uri, h.hex(req.body)).as_bytes()),
        _ => h.hex(format!("{}:{}", req.method, req.uri).as_bytes()),
    };
    let response = match qop {
        Qop::None => h.hex(format!("{ha1}:{}:{ha2}", ch.nonce).as_bytes()),
        Qop::Auth | Qop::AuthInt => {
            let q = if qop == Qop::Auth { "auth" } else { "auth-int" };
            h.hex(format!("{ha1}:{}:{nc_hex}:{cnonce}:{q}:{ha2}", ch.nonce).as_bytes())
        }
    };
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\"",
        quote(username),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(req.uri)
    );
    if let Some(a) = &ch.algorithm {
        let _ = write!(v, ", algorithm={a}");
    }
    match qop {
        Qop::None => {}
        Qop::Auth => {
            let _ = write!(v, ", qop=auth, nc={nc_hex}, cnonce=\"{}\"", quote(cnonce));
        }
        Qop::AuthInt => {
            let _ = write!(
                v,
                ", qop=auth-int, nc={nc_hex}, cnonce=\"{}\"",
                quote(cnonce)
            );
        }
    }
    if let Some(o) = &ch.opaque {
        let _ = write!(v, ", opaque=\"{}\"", quote(o));
    }
    Ok(v)
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A fresh client nonce: 128 random bits in hex, unpredictable so a server
/// can't choose a plaintext for us.
pub fn new_cnonce() -> String {
    let bytes: [u8; 16] = rand::random();
    to_hex(&bytes)
}

/// Client-side state across requests: the nonce count per nonce, and the
/// challenges currently being answered.
#[derive(Debug, Default)]
pub struct Session {
    counts: HashMap<String, u32>,
}

/// Most nonces remembered: a server that sends a new nonce every time must
/// not grow this without bound.
const MAX_NONCES: usize = 64;

impl Session {
    /// The next nonce count for this nonce (1 for a nonce not seen before).
    pub fn next_nc(&mut self, nonce: &str) -> u32 {
        if self.counts.len() >= MAX_NONCES && !self.counts.contains_key(nonce) {
            self.counts.clear();
        }
        let n = self.counts.entry(nonce.to_string()).or_insert(0);
        *n = n.wrapping_add(1).max(1);
        *n
    }

    /// The header (name, value) pairs answering these challenges.
    pub fn authorize(
        &mut self,
        challenges: &[Challenge],
        username: &str,
        password: &str,
        req: Request<'_>,
    ) -> Result<Vec<(&'static str, String)>, DigestError> {
        challenges
            .iter()
            .map(|ch| {
                let nc = self.next_nc(&ch.nonce);
                answer(ch, username, password, req, &new_cnonce(), nc)
                    .map(|v| (ch.answer_header(), v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn rfc7616(alg: &str) -> Challenge {
        Challenge::parse(
            &format!(
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}""#
            ),
            false,
        )
        .unwrap()
    }

    fn response_of(v: &str) -> String {
        let (_, p) = parse_auth_params(v);
        p.into_iter().find(|(k, _)| k == "response").unwrap().1
    }

    const GET: Request<'static> = Request {
        method: "GET",
        uri: "/dir/index.html",
        body: b"",
    };

    #[test]
    fn rfc7616_md5() {
        let v = answer(
            &rfc7616("MD5"),
            "Mufasa",
            "Circle of Life",
            GET,
            RFC7616_CNONCE,
            1,
        )
        .unwrap();
        assert_eq!(response_of(&v), "8ca523f5e9506fed4657c9700eebdbec");
        assert!(v.contains("qop=auth, nc=00000001"));
        assert!(v.contains(&format!("opaque=\"{RFC7616_OPAQUE}\"")));
        assert!(v.contains("algorithm=MD5"));
    }

    #[test]
    fn rfc7616_sha256() {
        let v = answer(
            &rfc7616("SHA-256"),
            "Mufasa",
            "Circle of Life",
            GET,
            RFC7616_CNONCE,
            1,
        )
        .unwrap();
        assert_eq!(
            response_of(&v),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn auth_int_vectors() {
        // Values for the RFC 7616 example with auth-int over an INVITE body,
        // cross-checked against an independent implementation.
        let mut ch = rfc7616("MD5");
        ch.qop_offered = vec!["auth-int".into()];
        let req = Request {
            method: "INVITE",
            uri: "sip:bob@example.org",
            body: b"v=0\r\n",
        };
        let v = answer(&ch, "Mufasa", "Circle of Life", req, RFC7616_CNONCE, 2).unwrap();
        assert_eq!(response_of(&v), "3dbb0971468cf612bdccd7dff696c5e6");
        let mut ch = rfc7616("SHA-256");
        ch.qop_offered = vec!["auth-int".into()];
        let v = answer(&ch, "Mufasa", "Circle of Life", req, RFC7616_CNONCE, 2).unwrap();
        assert_eq!(
            response_of(&v),
            "21468b02aafd4fe0a3d84bfddaf3618cc087adff4bb3c92d0a5f99c3035fcb9a"
        );
    }

    #[test]
    fn rfc2617_example() {
        let ch = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
            false,
        )
        .unwrap();
        let v = answer(&ch, "Mufasa", "Circle Of Life", GET, "0a4f113b", 1).unwrap();
        assert_eq!(response_of(&v), "6629fae49393a05397450978507c4ef1");
        // No algorithm in the challenge: none echoed.
        assert!(!v.contains("algorithm"));
    }

    #[test]
    fn legacy_no_qop() {
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n""#, false).unwrap();
        let v = answer(&ch, "u", "p", GET, "ignored", 7).unwrap();
        let ha1 = Hash::Md5.hex(b"u:r:p");
        let ha2 = Hash::Md5.hex(b"GET:/dir/index.html");
        assert_eq!(
            response_of(&v),
            Hash::Md5.hex(format!("{ha1}:n:{ha2}").as_bytes())
        );
        assert!(!v.contains("cnonce") && !v.contains("nc="));
    }

    #[test]
    fn sess_variant() {
        let ch = Challenge::parse(
            r#"Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess"#,
            false,
        )
        .unwrap();
        assert!(ch.sess);
        let v = answer(&ch, "u", "p", GET, "c", 1).unwrap();
        let ha1 = Hash::Md5.hex(format!("{}:n:c", Hash::Md5.hex(b"u:r:p")).as_bytes());
        let ha2 = Hash::Md5.hex(b"GET:/dir/index.html");
        assert_eq!(
            response_of(&v),
            Hash::Md5.hex(format!("{ha1}:n:00000001:c:auth:{ha2}").as_bytes())
        );
        assert_eq!(
            Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=MD5-sess"#, false),
            Err(DigestError::SessWithoutQop)
        );
    }

    #[test]
    fn strongest_of_several_and_per_realm() {
        let raw = "SIP/2.0 407 Proxy Authentication Required\r\n\
            Proxy-Authenticate: Digest realm=\"a\", nonce=\"1\", algorithm=MD5, qop=\"auth\"\r\n\
            Proxy-Authenticate: Digest realm=\"a\", nonce=\"2\", algorithm=SHA-256, qop=\"auth\", \
            Digest realm=\"a\", nonce=\"3\", algorithm=SHA-512-256, qop=\"auth\"\r\n\
            Proxy-Authenticate: Digest realm=\"a\", nonce=\"4\", algorithm=AKAv1-MD5\r\n\
            WWW-Authenticate: Basic realm=\"b\"\r\n\
            WWW-Authenticate: Digest realm=\"c\", nonce=\"5\"\r\n\
            Content-Length: 0\r\n\r\n";
        let m = crate::sip::parse(raw.as_bytes()).unwrap();
        let chs = challenges(&m).unwrap();
        assert_eq!(chs.len(), 2);
        assert_eq!(chs[0].nonce, "5");
        assert!(!chs[0].proxy);
        assert_eq!(
            (chs[1].nonce.as_str(), chs[1].hash),
            ("3", Hash::Sha512_256)
        );
        assert_eq!(chs[1].answer_header(), "Proxy-Authorization");
    }

    #[test]
    fn nonce_count_per_nonce_and_stale() {
        let mut s = Session::default();
        assert_eq!(s.next_nc("a"), 1);
        assert_eq!(s.next_nc("a"), 2);
        assert_eq!(s.next_nc("b"), 1);
        let ch = Challenge::parse(
            r#"Digest realm="r", nonce="n", stale=TRUE, qop="auth-int""#,
            true,
        )
        .unwrap();
        assert!(ch.stale);
        assert_eq!(ch.qop(), Ok(Qop::AuthInt));
        let hs = s
            .authorize(std::slice::from_ref(&ch), "u", "p", GET)
            .unwrap();
        assert_eq!(hs[0].0, "Proxy-Authorization");
        assert!(hs[0].1.contains("nc=00000001"));
        let hs = s.authorize(&[ch], "u", "p", GET).unwrap();
        assert!(hs[0].1.contains("nc=00000002"));
    }

    #[test]
    fn quoting_and_unsupported() {
        let ch = Challenge::parse(r#"Digest realm="r\"x", nonce="n""#, false).unwrap();
        assert_eq!(ch.realm, "r\"x");
        let v = answer(&ch, "a\"b", "p", GET, "c", 1).unwrap();
        assert!(v.contains(r#"username="a\"b""#) && v.contains(r#"realm="r\"x""#));
        assert!(matches!(
            Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-conf""#, false),
            Err(DigestError::UnsupportedQop(_))
        ));
        assert!(matches!(
            Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-1"#, false),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }
}
