//! One HTTP/1.1 request at a time, for the channels that post to a URL:
//! hyper's client connection over TCP (or TLS with rustls), a new
//! connection per request (alerts are rare; no pool to go stale), every
//! request bounded by one deadline covering resolving, connecting, the TLS
//! handshake, sending and reading the answer.
//!
//! URLs can be secrets (a Slack or Teams webhook URL is a credential, an
//! ntfy topic is a password): errors and descriptions name the scheme and
//! host only, never the path or query.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// How much of an answer's body is kept (to show and log).
const MAX_BODY: usize = 16 * 1024;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Url(String),
    #[error("{at}: can't resolve the host: {source}")]
    Resolve { at: String, source: std::io::Error },
    #[error("{at}: connect failed: {source}")]
    Connect { at: String, source: std::io::Error },
    #[error("{at}: TLS handshake failed: {source}")]
    Tls { at: String, source: std::io::Error },
    #[error("{at}: the request failed: {source}")]
    Exchange { at: String, source: hyper::Error },
    #[error("{at}: no answer within {}s", after.as_secs_f32())]
    Timeout { at: String, after: Duration },
    #[error("{at}: {message}")]
    Request { at: String, message: String },
}

/// Problems setting a client up (reported at start, with the field).
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("can't read {}: {source}", path.display())]
    CaFileRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no usable PEM certificate", path.display())]
    CaFileEmpty { path: std::path::PathBuf },
    #[error("{}: {message}", path.display())]
    CaFileParse {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// A parsed URL: where to connect and what to ask for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The whole URL as given (never shown: it may be a secret).
    uri: Uri,
    /// https or http.
    https: bool,
    /// Host name or address, without brackets.
    host: String,
    /// Port (default 443 or 80).
    port: u16,
}

impl Target {
    /// Parse an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Target, HttpError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| HttpError::Url(format!("not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(HttpError::Url("not an http:// or https:// URL".into())),
        };
        let host = uri
            .host()
            .ok_or_else(|| HttpError::Url("the URL names no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Target {
            uri,
            https,
            host,
            port,
        })
    }

    /// The same server, with `path` appended to the URL's own path (a
    /// homeserver may live under a prefix such as `/matrix`), e.g. for
    /// Matrix's API paths.
    pub fn join(&self, path: &str) -> Result<Target, HttpError> {
        let base = self.uri.path().trim_end_matches('/');
        let joined = format!("{base}/{}", path.trim_start_matches('/'));
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(
            joined
                .parse()
                .map_err(|e| HttpError::Url(format!("bad path: {e}")))?,
        );
        let uri = Uri::from_parts(parts).map_err(|e| HttpError::Url(format!("bad URL: {e}")))?;
        Ok(Target {
            uri,
            ..self.clone()
        })
    }

    /// `https://hooks.example.org`: where, without what (the path may be a
    /// secret).
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    /// The path, for tests and for channels whose path is not secret.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// Whether the URL is https.
    pub fn is_https(&self) -> bool {
        self.https
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// POST, PUT...
    pub method: Method,
    /// Where.
    pub target: Target,
    /// Headers beyond Host, Content-Length, Connection and User-Agent.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
}

/// The far end's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Its reason phrase (`OK`), as hyper knows it.
    pub reason: String,
    /// `Retry-After` in seconds, when given as a number.
    pub retry_after: Option<Duration>,
    /// The start of the body, as text.
    pub body: String,
}

impl Answer {
    /// `200 OK: {"id":"..."}` with the body cut short and escaped.
    pub fn summary(&self) -> String {
        let body = self.body.trim();
        if body.is_empty() {
            format!("{} {}", self.status, self.reason)
        } else {
            format!(
                "{} {}: {}",
                self.status,
                self.reason,
                crate::escape::clip(body, 300)
            )
        }
    }
}

/// Sends requests with one TLS setup and one deadline.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// Trust the bundled public roots, and the certificates in `ca_file`
    /// too when given.
    pub fn new(
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Client, ClientSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientSetupError::CaFileRead {
                path: path.to_path_buf(),
                source,
            })?;
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| ClientSetupError::CaFileParse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ClientSetupError::CaFileEmpty {
                    path: path.to_path_buf(),
                });
            }
            for c in certs {
                roots.add(c)?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(cfg)),
            timeout,
        })
    }

    /// Send one request and read the answer (any status: the caller
    /// decides what it means).
    pub async fn send(&self, req: Outgoing) -> Result<Answer, HttpError> {
        let at = req.target.origin();
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                at,
                after: self.timeout,
            }),
        }
    }

    async fn exchange(&self, req: Outgoing) -> Result<Answer, HttpError> {
        let t = &req.target;
        let at = t.origin();
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|source| HttpError::Resolve {
                at: at.clone(),
                source,
            })?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| HttpError::Connect {
            at: at.clone(),
            source: last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
            }),
        })?;
        let _ = tcp.set_nodelay(true);
        if t.https {
            let name = ServerName::try_from(t.host.clone()).map_err(|e| {
                HttpError::Url(format!(
                    "{} can't be checked against a certificate: {e}",
                    t.host
                ))
            })?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|source| HttpError::Tls {
                    at: at.clone(),
                    source,
                })?;
            exchange_on(tls, &req, &at).await
        } else {
            exchange_on(tcp, &req, &at).await
        }
    }
}

async fn exchange_on<S>(io: S, req: &Outgoing, at: &str) -> Result<Answer, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|source| HttpError::Exchange {
            at: at.to_string(),
            source,
        })?;
    let t = &req.target;
    let path = t
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    // Host: the origin without its scheme (the port only when not the
    // scheme's default).
    let origin = t.origin();
    let host = origin.split_once("://").map_or("", |(_, h)| h).to_string();
    let mut builder = Request::builder()
        .method(req.method.clone())
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "close")
        .header(
            hyper::header::USER_AGENT,
            concat!("cidguard/", env!("CARGO_PKG_VERSION")),
        )
        .header(hyper::header::CONTENT_LENGTH, req.body.len());
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| HttpError::Request {
            at: at.to_string(),
            message: e.to_string(),
        })?;
    let work = async move {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|source| HttpError::Exchange {
                at: at.to_string(),
                source,
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = resp.into_body();
        let mut kept: Vec<u8> = Vec::new();
        // Keep the start of the body; a huge answer is cut, not read.
        while kept.len() < MAX_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        let room = MAX_BODY - kept.len();
                        kept.extend_from_slice(&d[..d.len().min(room)]);
                    }
                }
                // The status is what counts; a broken body after it is not
                // a failed delivery.
                Some(Err(_)) | None => break,
            }
        }
        Ok::<Answer, HttpError>(Answer {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
            retry_after,
            body: crate::escape::bytes(&kept, MAX_BODY),
        })
    };
    // The connection is driven alongside the request; it ends when the
    // request is done (its sender dropped) or the deadline drops both.
    let (answer, _conn) = tokio::join!(work, conn);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_never_show_the_path() {
        let t = Target::parse("https://hooks.slack.com/services/T000/B000/XXXXSECRET").unwrap();
        assert_eq!(t.origin(), "https://hooks.slack.com");
        let t = Target::parse("http://127.0.0.1:8080/topic?x=1").unwrap();
        assert_eq!(t.origin(), "http://127.0.0.1:8080");
        let t = Target::parse("http://[::1]:9/x").unwrap();
        assert_eq!(t.origin(), "http://[::1]:9");
        assert!(Target::parse("ftp://x/y").is_err());
        let m = Target::parse("https://matrix.example.org")
            .unwrap()
            .join("/_matrix/client/v3/rooms/%21a%3Ab/send/m.room.message/abc")
            .unwrap();
        assert_eq!(
            m.path(),
            "/_matrix/client/v3/rooms/%21a%3Ab/send/m.room.message/abc"
        );
        let m = Target::parse("https://example.org/matrix/")
            .unwrap()
            .join("/_matrix/client/v3/x")
            .unwrap();
        assert_eq!(m.path(), "/matrix/_matrix/client/v3/x");
    }
}
