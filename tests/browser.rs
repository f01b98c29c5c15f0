//! The dashboard in a real browser: headless Chromium (Debian's package,
//! driven through chromedriver) against `cidguard demo` on loopback: the
//! demo PBX, the daemon, its endpoint and dashboard, all real.
//!
//! A person after a PBX change opens the dashboard, runs a check of the
//! leaking line with a label, watches it finish, opens the check and sees
//! the leaked number highlighted. Screenshots of the overview (desktop and
//! phone width) and of the check page are saved under the target
//! directory's tmp folder (the path is printed) so a person can look.
//!
//! Under CI (`CI=true`) a missing browser fails the test (install with
//! `.ci/install-web.sh`); elsewhere it is skipped with a notice.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::webdriver::Browser;
use crate::support::{lines_of, require_tool, Group};

const LABEL: &str = "after PBX firmware 17.0.3 upgrade";

/// The demo's leaking line, and the organisation number the demo PBX puts
/// in its P-Asserted-Identity.
const LEAKING_LINE: &str = "intake";
const LEAKED_NUMBER: &str = "+61370100142";

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

/// `cidguard demo` running until dropped; its dashboard URL and token.
struct Demo {
    _child: Group,
    _dir: tempfile::TempDir,
    url: String,
    token: String,
    _stdout: mpsc::Receiver<String>,
}

fn start_demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Group::spawn(
        Command::new(env!("CARGO_BIN_EXE_cidguard"))
            // Scheduled checks rarely: the test's own run is the one it reads.
            .args(["demo", "--every", "30s", "--for", "10m", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env("CIDGUARD_LOG", "warn"),
    )
    .unwrap();
    let rx = lines_of(child.take_stdout().unwrap());
    let mut seen = Vec::new();
    let (mut url, mut config) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while url.is_none()
        || config.is_none()
        || !seen.iter().any(|l: &String| l.contains("daemon ready"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the demo did not start:\n{}", seen.join("\n")));
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("dashboard") {
            url = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = t.strip_prefix("config") {
            config = Some(PathBuf::from(rest.trim()));
        }
        seen.push(l);
    }
    let config = config.unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let token = v["dashboard"]["token"].as_str().unwrap().to_string();
    Demo {
        _child: child,
        _dir: dir,
        url: url.unwrap().trim_end_matches('/').to_string(),
        token,
        _stdout: rx,
    }
}

/// Basic accessibility checks on the current page: a language, labelled
/// form fields, text contrast of at least 4.5:1 (WCAG AA) against the
/// nearest painted background, and state words next to state colours.
const A11Y: &str = r#"
const problems = [];
if (!document.documentElement.lang) problems.push("html has no lang");
if (!document.title) problems.push("page has no title");
for (const i of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
  if (!i.labels || i.labels.length === 0) problems.push("unlabelled field " + (i.name || i.id));
}
function rgb(s) {
  const m = s.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
  return m ? [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]] : null;
}
function lum(c) {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
}
function background(el) {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0.5) return c;
  }
  return [255, 255, 255, 1];
}
let checked = 0;
for (const el of document.querySelectorAll("body *")) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.getClientRects().length === 0) continue;
  const fg = rgb(getComputedStyle(el).color), bg = background(el);
  if (!fg) continue;
  const a = lum(fg), b = lum(bg);
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  checked++;
  if (ratio < 4.5) problems.push("contrast " + ratio.toFixed(2) + " for " + el.tagName + " '" + el.textContent.trim().slice(0, 30) + "'");
}
return { problems: problems, checked: checked };
"#;

fn accessibility(b: &Browser, page: &str) {
    let v = b.script(A11Y).unwrap();
    let problems: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        v["checked"].as_u64().unwrap() > 5,
        "{page}: nothing checked: {v}"
    );
    assert!(problems.is_empty(), "{page}: {problems:#?}");
}

/// Fill in and send the run-now form on the current page; `token` None
/// when signed in (the form then has no token field).
fn submit_run(b: &Browser, label: &str, token: Option<&str>) {
    let field = |name: &str| {
        b.find(&format!("form[action=\"/run\"] input[name={name}]"))
            .unwrap()
    };
    b.type_into(&field("label"), label).unwrap();
    match token {
        Some(t) => b.type_into(&field("token"), t).unwrap(),
        None => assert!(b
            .find_all("form[action=\"/run\"] input[name=token]")
            .unwrap()
            .is_empty()),
    }
    b.click(&b.find("form[action=\"/run\"] button[type=submit]").unwrap())
        .unwrap();
}

#[test]
fn a_person_runs_a_labelled_check_in_the_browser_and_sees_the_leak() {
    let (Some(chromium), Some(driver)) = (
        require_tool("chromium", "chromium", ".ci/install-web.sh"),
        require_tool("chromedriver", "chromium-driver", ".ci/install-web.sh"),
    ) else {
        return;
    };
    let demo = start_demo();
    let b = Browser::start(&chromium, &driver).unwrap();
    let shots = screenshots();

    // The overview lists every line of the demo.
    b.goto(&format!("{}/", demo.url)).unwrap();
    assert!(b.title().unwrap().contains("Overview"));
    for line in ["reception", "outreach", LEAKING_LINE] {
        b.find(&format!("a[href=\"/lines/{line}\"]")).unwrap();
    }
    accessibility(&b, "overview");

    // The leaking line's page: run a check now, with a label.
    let link = b
        .find(&format!("a[href=\"/lines/{LEAKING_LINE}\"]"))
        .unwrap();
    b.click(&link).unwrap();
    assert!(b
        .url()
        .unwrap()
        .ends_with(&format!("/lines/{LEAKING_LINE}")));
    accessibility(&b, "line page");
    submit_run(&b, LABEL, Some(&demo.token));

    // The run's progress page, until the result is in.
    let run_url = b.wait_for_url("/runs/", Duration::from_secs(10)).unwrap();
    assert!(
        run_url.contains("/runs/"),
        "{run_url}: {}",
        b.text("body").unwrap_or_default()
    );
    assert!(b.text("body").unwrap().contains(LABEL));
    let result = b
        .wait_for("a[href^=\"/checks/\"]", Duration::from_secs(60))
        .unwrap();
    accessibility(&b, "run progress");
    b.click(&result).unwrap();
    b.wait_for_url("/checks/", Duration::from_secs(10)).unwrap();

    // The check page: failed, run for our label, the leak highlighted in
    // the received message.
    let check_url = b.url().unwrap();
    assert!(check_url.contains("/checks/"), "{check_url}");
    let body = b.text("body").unwrap();
    assert!(
        body.contains(LABEL),
        "the label is on the check page:\n{body}"
    );
    assert!(body.contains("FAIL"), "{body}");
    assert!(body.contains("P-Asserted-Identity"), "{body}");
    let marks: Vec<String> = b
        .find_all("pre mark")
        .unwrap()
        .iter()
        .map(|m| b.text_of(m).unwrap())
        .collect();
    assert!(
        marks.iter().any(|m| m == LEAKED_NUMBER),
        "the leaked number itself is highlighted: {marks:?}"
    );
    // Only in what arrived at the endpoint: the line's own INVITE is not
    // evidence of a leak.
    let line_side = b
        .script(
            "return [...document.querySelectorAll('h3')].filter(h => h.textContent.includes('line sent') \
             && h.nextElementSibling.querySelector('mark')).length",
        )
        .unwrap();
    assert_eq!(line_side, serde_json::json!(0));
    accessibility(&b, "check page");
    let check_shot = b.screenshot(&shots.join("check-page.png")).unwrap();
    let leak = b.find("pre:has(mark)").unwrap();
    let leak_shot = b
        .screenshot_of(&leak, &shots.join("check-page-leak.png"))
        .unwrap();

    // Back on the overview the line is failing, listed first.
    b.goto(&format!("{}/", demo.url)).unwrap();
    let first = b.text("tbody tr").unwrap();
    assert!(
        first.contains(LEAKING_LINE) && first.contains("FAIL"),
        "failing line first: {first}"
    );
    let overview_shot = b.screenshot(&shots.join("overview.png")).unwrap();

    // Signing in once, through the link next to the token field, brings
    // the browser back to the page it was on, and the forms no longer ask
    // for the token.
    b.click(
        &b.find("form[action=\"/demo\"] a[href^=\"/login\"]")
            .unwrap(),
    )
    .unwrap();
    b.wait_for_url("/login", Duration::from_secs(10)).unwrap();
    accessibility(&b, "sign-in page");
    b.type_into(&b.find("#login-token").unwrap(), &demo.token)
        .unwrap();
    b.click(
        &b.find("form[action=\"/login\"] button[type=submit]")
            .unwrap(),
    )
    .unwrap();
    b.wait_for("form[action=\"/logout\"]", Duration::from_secs(10))
        .unwrap();
    assert!(b.url().unwrap().ends_with(&format!("{}/", demo.url)));

    // The demo's switch on the overview makes the withheld line leak; a
    // check run from its page then fails.
    b.click(&b.find("form[action=\"/demo\"] button[value=leak]").unwrap())
        .unwrap();
    b.wait_for_url("demo=leak", Duration::from_secs(10))
        .unwrap();
    assert!(b
        .text("[role=status]")
        .unwrap()
        .contains("now sends reception"));
    b.goto(&format!("{}/lines/reception", demo.url)).unwrap();
    submit_run(&b, "demo switch", None);
    b.wait_for_url("/runs/", Duration::from_secs(10)).unwrap();
    let result = b
        .wait_for("a[href^=\"/checks/\"]", Duration::from_secs(60))
        .unwrap();
    b.click(&result).unwrap();
    b.wait_for_url("/checks/", Duration::from_secs(10)).unwrap();
    let body = b.text("body").unwrap();
    assert!(
        body.contains("reception") && body.contains("FAIL"),
        "{body}"
    );

    // On a phone's width the overview still fits the screen.
    b.set_window(390, 844).unwrap();
    b.goto(&format!("{}/", demo.url)).unwrap();
    let fits = b
        .script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .unwrap();
    let phone_shot = b.screenshot(&shots.join("overview-phone.png")).unwrap();
    assert_eq!(
        fits,
        serde_json::Value::Bool(true),
        "overview scrolls sideways on a phone"
    );

    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "screenshots: {}, {}, {}, {}",
        overview_shot.display(),
        leak_shot.display(),
        phone_shot.display(),
        check_shot.display()
    );
}
