//! A small W3C WebDriver client for driving Debian's headless Chromium
//! through chromedriver: enough to open pages, fill and submit forms, read
//! text, run a script and take screenshots. Blocking, one HTTP/1.1 request
//! per connection, every wait bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

/// The key WebDriver uses for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// chromedriver running on a free loopback port, and one browser session
/// in it. Both are ended when dropped, also when a test panics.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Start chromedriver and a headless Chromium with a fresh profile.
    /// The flags keep the browser off the network: no background fetches,
    /// updates, sync or first-run pages.
    pub fn start(chromium: &Path, chromedriver: &Path) -> Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let profile = tempfile::Builder::new().prefix("cg-chromium").tempdir()?;
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        // chromedriver answers /status once it listens.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if b.http("GET", "/status", None).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": chromium, "args": args },
            }}
        });
        let v = b.http("POST", "/session", Some(&caps))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {v}"))?
            .to_string();
        Ok(b)
    }

    /// One HTTP exchange with chromedriver; the WebDriver `value`, or the
    /// WebDriver error as an error.
    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes())?;
        // chromedriver keeps the connection open whatever the request
        // says: read exactly the answer its headers announce.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        let (split, head) = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break (i, String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase());
            }
            let n = s
                .read(&mut buf)
                .with_context(|| format!("{method} {path}"))?;
            if n == 0 {
                bail!("chromedriver closed the connection answering {method} {path}");
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let chunked = head.contains("transfer-encoding: chunked");
        let complete = |raw: &[u8]| -> bool {
            let body = &raw[split + 4..];
            match length {
                Some(n) => body.len() >= n,
                None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
                None => false,
            }
        };
        while !complete(&raw) {
            let n = s
                .read(&mut buf)
                .with_context(|| format!("{method} {path}"))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let rest = &raw[split + 4..];
        let payload = if chunked {
            dechunk(rest)?
        } else {
            rest[..length.unwrap_or(rest.len()).min(rest.len())].to_vec()
        };
        let payload = String::from_utf8_lossy(&payload);
        let v: Value = serde_json::from_str(&payload)
            .with_context(|| format!("chromedriver's answer to {method} {path}: {payload:.300}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if let Some(err) = value.get("error").and_then(Value::as_str) {
            bail!(
                "{method} {path}: {err}: {}",
                value["message"].as_str().unwrap_or("")
            );
        }
        Ok(value)
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value> {
        let path = format!("/session/{}{what}", self.session);
        self.http(method, &path, body.as_ref())
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    pub fn url(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/url", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub fn title(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/title", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub fn set_window(&self, width: u32, height: u32) -> Result<()> {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )?;
        Ok(())
    }

    /// Every element matching a CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<Element> {
        self.find_all(css)?.into_iter().next().ok_or_else(|| {
            anyhow!(
                "no element matches {css:?} on {}",
                self.url().unwrap_or_default()
            )
        })
    }

    /// Wait until an element matching `css` is on the page, reloading the
    /// page every `reload` (the pages refresh themselves; this doesn't rely
    /// on that timing).
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_all(css)?.into_iter().next() {
                return Ok(e);
            }
            if Instant::now() > deadline {
                bail!(
                    "no {css:?} within {timeout:?} on {}; page text:\n{}",
                    self.url().unwrap_or_default(),
                    self.text("body").unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
            self.cmd("POST", "/refresh", Some(json!({})))?;
        }
    }

    /// Wait until the current URL contains `part` (a click that submits a
    /// form may return before the browser has navigated).
    pub fn wait_for_url(&self, part: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let u = self.url()?;
            if u.contains(part) && self.script("return document.readyState")? == "complete" {
                return Ok(u);
            }
            if Instant::now() > deadline {
                bail!("still at {u} after {timeout:?}, waiting for {part:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn click(&self, e: &Element) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})))?;
        Ok(())
    }

    pub fn type_into(&self, e: &Element, text: &str) -> Result<()> {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    pub fn text_of(&self, e: &Element) -> Result<String> {
        Ok(self
            .cmd("GET", &format!("/element/{}/text", e.0), None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> Result<String> {
        let e = self.find(css)?;
        self.text_of(&e)
    }

    /// Run a script in the page and return its result.
    pub fn script(&self, body: &str) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": body, "args": [] })),
        )
    }

    /// Save a PNG of the whole page: the window is made as tall as the
    /// page (up to a limit) for the shot, then put back.
    pub fn screenshot(&self, path: &Path) -> Result<PathBuf> {
        let rect = self.cmd("GET", "/window/rect", None)?;
        let (w, h) = (
            rect["width"].as_u64().unwrap_or(1280),
            rect["height"].as_u64().unwrap_or(1000),
        );
        let page = self
            .script("return document.documentElement.scrollHeight")?
            .as_u64()
            .unwrap_or(h);
        // The window's frame takes some of its height from the page.
        let tall = (page + 150).clamp(h, 8000);
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": w, "height": tall })),
        )?;
        let shot = self.save_png("/screenshot", path);
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": w, "height": h })),
        )?;
        shot
    }

    /// Save a PNG of one element.
    pub fn screenshot_of(&self, e: &Element, path: &Path) -> Result<PathBuf> {
        self.save_png(&format!("/element/{}/screenshot", e.0), path)
    }

    fn save_png(&self, what: &str, path: &Path) -> Result<PathBuf> {
        let v = self.cmd("GET", what, None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .context("decoding the screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(path.to_path_buf())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Undo HTTP/1.1 chunked transfer coding.
fn dechunk(mut s: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = s
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size = String::from_utf8_lossy(&s[..eol]);
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        let rest = &s[eol + 2..];
        out.extend_from_slice(rest.get(..n).ok_or_else(|| anyhow!("short chunk"))?);
        s = rest.get(n + 2..).ok_or_else(|| anyhow!("short chunk"))?;
    }
}
