//! A real HTTP receiver on a loopback port, for the alert channels that
//! post to a URL (webhook, ntfy, Teams, Slack, Matrix): an axum server that
//! records every request (method, path, headers, body) and answers as the
//! test says (a status for the next N requests, then 200).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Request>,
    /// Answers still to give before the default, in order.
    script: Vec<(u16, String)>,
    /// The default answer (status, body).
    default: Option<(u16, String)>,
}

/// The receiver: runs on its own thread's runtime until dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn record(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    let (status, reply) = if s.script.is_empty() {
        s.default.clone().unwrap_or((200, "ok".into()))
    } else {
        s.script.remove(0)
    };
    s.requests.push(Request {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or(uri.path().to_string(), |p| p.to_string()),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        status,
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = (code, reply).into_response();
    if status == 429 || status == 503 {
        resp.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("0"));
    }
    resp
}

impl Receiver {
    /// Listen on 127.0.0.1 (a free port, or the one given, to come back
    /// up on the same address after an outage).
    pub fn start(port: u16) -> Result<Receiver> {
        Receiver::start_with(port, Arc::new(Mutex::new(Shared::default())))
    }

    fn start_with(port: u16, shared: Arc<Mutex<Shared>>) -> Result<Receiver> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the receiver did not start")?
            .map_err(anyhow::Error::msg)?;
        Ok(Receiver {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with these (status, body), in order.
    pub fn script(&self, answers: &[(u16, &str)]) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.script = answers.iter().map(|(c, b)| (*c, b.to_string())).collect();
    }

    /// Answer every request after the script with this.
    pub fn answer(&self, status: u16, body: &str) {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .default = Some((status, body.to_string()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }

    /// Requests to a path (prefix), answered 2xx.
    pub fn accepted(&self, path_prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(path_prefix) && (200..300).contains(&r.status))
            .collect()
    }

    /// Stop listening (an outage) but keep what was recorded; `restart`
    /// comes back on the same port.
    pub fn stop(mut self) -> Parked {
        self.shutdown();
        Parked {
            port: self.addr.port(),
            shared: self.shared.clone(),
        }
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A stopped receiver's port and records.
pub struct Parked {
    port: u16,
    shared: Arc<Mutex<Shared>>,
}

impl Parked {
    /// The port it listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Listen again on the same port, with the same records.
    pub fn restart(self) -> Result<Receiver> {
        Receiver::start_with(self.port, self.shared)
    }
}

/// An HTTPS receiver with a certificate from a test CA: a TLS listener
/// answering every request `200 OK` and recording it. Enough HTTP/1.1 for
/// one request per connection (what the channels send).
pub struct TlsReceiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsReceiver {
    pub fn start(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsReceiver> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let acceptor = cidguard::sip::transport::tls_acceptor(cert, key)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let recorded = requests.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                    };
                    let acceptor = acceptor.clone();
                    let recorded = recorded.clone();
                    tokio::spawn(async move {
                        let Ok(Ok(mut tls)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                        else {
                            return;
                        };
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        // Headers, then Content-Length bytes of body.
                        let (head_len, body_len) = loop {
                            let Ok(Ok(n)) = tokio::time::timeout(
                                Duration::from_secs(10),
                                tls.read(&mut chunk),
                            )
                            .await
                            else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..i]).to_string();
                                let len = head
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length")
                                            .then(|| v.trim().parse::<usize>().ok())
                                            .flatten()
                                    })
                                    .unwrap_or(0);
                                break (i + 4, len);
                            }
                        };
                        while buf.len() < head_len + body_len {
                            let Ok(Ok(n)) = tokio::time::timeout(
                                Duration::from_secs(10),
                                tls.read(&mut chunk),
                            )
                            .await
                            else {
                                return;
                            };
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let head = String::from_utf8_lossy(&buf[..head_len - 4]).to_string();
                        let mut lines = head.lines();
                        let start: Vec<&str> =
                            lines.next().unwrap_or("").split(' ').collect();
                        recorded.lock().unwrap_or_else(|e| e.into_inner()).push(Request {
                            method: start.first().unwrap_or(&"").to_string(),
                            path: start.get(1).unwrap_or(&"").to_string(),
                            headers: lines
                                .filter_map(|l| l.split_once(':'))
                                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                                .collect(),
                            body: buf[head_len..].to_vec(),
                            status: 200,
                        });
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
        });
        Ok(TlsReceiver {
            addr,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
