//! `cidguard check` asking a running daemon to run the checks, so results
//! land in the history, alerts and dashboard: a small HTTP/1.1 client for
//! the daemon's own API on its (loopback by default) dashboard address.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::check::result::CheckResult;
use crate::config::Config;

/// Why the daemon could not run the checks.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("dashboard.listen {0:?} is not an address and port")]
    Address(String),
    #[error("talking to the daemon at {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the daemon at {addr} answered {status} to {what}: {body}")]
    Status {
        addr: SocketAddr,
        what: String,
        status: u16,
        body: String,
    },
    #[error("the daemon's answer to {what} is not what was expected: {detail}")]
    Answer { what: String, detail: String },
    #[error("the daemon did not finish the checks within {0:?}")]
    Timeout(Duration),
    #[error("can't read dashboard.token: {0}")]
    Token(String),
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Reply, ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::new();
        // Bounded: an answer larger than this isn't the daemon's.
        (&mut s)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(io)?;
        Ok::<_, ClientError>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| ClientError::Timeout(Duration::from_secs(30)))??;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClientError::Answer {
            what: path.into(),
            detail: "no HTTP status line".into(),
        })?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let mut body = buf[head_end..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok(Reply { status, body })
}

/// Undo chunked transfer encoding (what hyper sends for bodies of unknown length).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || eol + 2 + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

fn json(r: &Reply, what: &str) -> Result<serde_json::Value, ClientError> {
    serde_json::from_slice(&r.body).map_err(|e| ClientError::Answer {
        what: what.into(),
        detail: e.to_string(),
    })
}

/// If a daemon for this config is running (its dashboard answers), have it
/// run the checks and wait for them. `Ok(None)`: no daemon is listening.
pub async fn check_via_daemon(
    cfg: &Config,
    lines: &[String],
    label: Option<String>,
    wait: Duration,
) -> Result<Option<Vec<CheckResult>>, ClientError> {
    let Some(d) = &cfg.dashboard else {
        return Ok(None);
    };
    let addr: SocketAddr = d
        .listen
        .parse()
        .map_err(|_| ClientError::Address(d.listen.clone()))?;
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        // Nothing listening: no daemon; the caller checks on its own.
        Ok(Err(_)) | Err(_) => return Ok(None),
    }
    let token = match &d.token {
        Some(t) => Some(t.reveal().map_err(ClientError::Token)?),
        None => None,
    };
    let body = serde_json::json!({ "lines": lines, "label": label }).to_string();
    let r = request(
        addr,
        "POST",
        "/api/v1/checks",
        token.as_deref(),
        Some(&body),
    )
    .await?;
    if r.status != 202 {
        return Err(ClientError::Status {
            addr,
            what: "POST /api/v1/checks".into(),
            status: r.status,
            body: String::from_utf8_lossy(&r.body).chars().take(300).collect(),
        });
    }
    let accepted = json(&r, "POST /api/v1/checks")?;
    let poll = accepted
        .get("poll")
        .and_then(|p| p.as_str())
        .map(str::to_string)
        .ok_or_else(|| ClientError::Answer {
            what: "POST /api/v1/checks".into(),
            detail: "no poll address".into(),
        })?;
    // The lines the daemon queued: every one must come back with a result,
    // or the run is not complete (a line missing is never a pass).
    let queued: Vec<String> = accepted
        .get("lines")
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    let ids: Vec<i64> = loop {
        let r = request(addr, "GET", &poll, token.as_deref(), None).await?;
        let v = json(&r, &poll)?;
        if v.get("done").and_then(|d| d.as_bool()) == Some(true) {
            let checks = v
                .get("checks")
                .and_then(|c| c.as_array())
                .cloned()
                .unwrap_or_default();
            let checked = |line: &str| {
                checks.iter().any(|c| {
                    c.get("line").and_then(|l| l.as_str()) == Some(line)
                        && c.get("check").and_then(|i| i.as_i64()).is_some()
                })
            };
            let missing: Vec<&str> = queued
                .iter()
                .map(String::as_str)
                .filter(|l| !checked(l))
                .collect();
            if !missing.is_empty() {
                return Err(ClientError::Answer {
                    what: poll.clone(),
                    detail: format!(
                        "the daemon finished without checking {} (was it restarted?); run the check again",
                        missing.join(", ")
                    ),
                });
            }
            break checks
                .iter()
                .filter_map(|c| c.get("check").and_then(|i| i.as_i64()))
                .collect();
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClientError::Timeout(wait));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut out = Vec::new();
    for id in ids {
        let path = format!("/api/v1/checks/{id}");
        let r = request(addr, "GET", &path, token.as_deref(), None).await?;
        let mut c: CheckResult =
            serde_json::from_slice(&r.body).map_err(|e| ClientError::Answer {
                what: path.clone(),
                detail: e.to_string(),
            })?;
        c.evidence.clear();
        c.evidence_ref = Some(format!(
            "check #{id} in the daemon's history (dashboard /checks/{id})"
        ));
        out.push(c);
    }
    Ok(Some(out))
}
