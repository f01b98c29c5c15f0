//! The HTTP channels end to end against a real HTTP receiver on loopback:
//! what each one posts (kind, line, findings, link), its signature or
//! token, retries through an outage, one delivery per notice however often
//! the sender restarts, one channel's outage never holding up another, and
//! numbers masked on every chat channel unless it says otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use cidguard::alert::channel::{self, hmac, Channel};
use cidguard::alert::{delivery_id, AlertPolicy, Notice, OutboxStore};
use cidguard::check::result::{EvidenceMessage, Trigger};
use cidguard::config::Config;
use cidguard::plan::Plan;
use cidguard::store::Store;

use super::receiver::{Receiver, Request};
use super::{
    enqueue, judged, leak_alert, row, runtime, start_sender, temp_store, Running, LEAKING_INVITE,
    ORG,
};
use crate::support::poll_until;

/// A config with the given `[[alerts.channel]]` entries and no email.
fn channel_config(dir: &Path, channels: &str) -> Result<(Plan, PathBuf)> {
    let text = format!(
        "{ORG}\n[alerts]\ndashboard_url = \"https://cidguard.example\"\nretry_initial = \"50ms\"\nretry_max = \"400ms\"\n{channels}\n"
    );
    let path = dir.join("cidguard.toml");
    std::fs::write(&path, &text)?;
    let cfg = Plan::load(&path)?;
    Ok((cfg, path))
}

fn channel_named(cfg: &Plan, path: &Path, name: &str) -> Result<Arc<dyn Channel>> {
    channel::from_config(cfg.config(), path)?
        .into_iter()
        .find(|c| c.name() == name)
        .with_context(|| format!("channel {name}"))
}

/// The leak notice of check 42 (confirming 41), queued for every channel.
fn queue_leak(store: &Store, cfg: &Plan, _path: &Path) -> Result<Notice> {
    let policy = AlertPolicy::from_plan(cfg);
    let n = leak_alert(cfg, &policy, 41);
    assert!(enqueue(store, cfg, &n)?);
    Ok(n)
}

fn wait_delivered(store: &Store, what: &str) -> Result<()> {
    poll_until(Duration::from_secs(30), what, || {
        Ok((store.pending()? == 0).then_some(()))
    })
}

/// Every form of the organisation's number that must not reach a masked
/// channel.
const FULL_NUMBER: [&str; 4] = ["370100142", "7010 0142", "03 7010 0142", "+61 3 7010 0142"];

fn assert_masked(what: &str, text: &str) {
    for form in FULL_NUMBER {
        assert!(!text.contains(form), "{what}: {form} visible in:\n{text}");
    }
}

/// Everything a request carried, headers and body, for searching.
fn all_of(r: &Request) -> String {
    let mut s = String::new();
    for (k, v) in &r.headers {
        s.push_str(&format!("{k}: {v}\n"));
    }
    s.push_str(&r.text());
    s
}

/// Restart the sender and prove the delivered notice is not sent again: a
/// second notice queued after the restart is delivered, and the first has
/// still one accepted request.
fn restart_delivers_nothing_twice(
    rt: &tokio::runtime::Runtime,
    store: &Arc<Store>,
    cfg: &Plan,
    ch: &Arc<dyn Channel>,
    rx: &Receiver,
    path: &str,
    first: &Notice,
) -> Result<()> {
    let s = start_sender(rt, store, ch);
    let mut second = first.clone();
    second.key = format!("{}:second", first.key);
    assert!(enqueue(store, cfg, &second)?);
    // The first again (a replayed result): nothing new is queued.
    assert!(!enqueue(store, cfg, first)?);
    wait_delivered(store, "the second notice")?;
    s.stop(rt);
    let id = delivery_id(&first.key, ch.name());
    let id2 = delivery_id(&second.key, ch.name());
    let got = rx.accepted(path);
    let count = |id: &str| {
        got.iter()
            .filter(|r| r.header("x-cidguard-delivery") == Some(id) || r.path.ends_with(id))
            .count()
    };
    assert_eq!(count(&id), 1, "the first notice exactly once: {got:#?}");
    assert_eq!(count(&id2), 1, "the second notice once");
    Ok(())
}

#[test]
fn webhook_is_signed_retried_through_503s_and_delivered_once() -> Result<()> {
    let rx = Receiver::start(0)?;
    rx.script(&[(503, "down for maintenance"), (503, "still down")]);
    let dir = tempfile::tempdir()?;
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"webhook-test-secret\"\n",
            rx.url("/hook")
        ),
    )?;
    let (_state, store) = temp_store()?;
    let rt = runtime();
    let ch = channel_named(&cfg, &path, "hook")?;
    let n = queue_leak(&store, &cfg, &path)?;
    let s = start_sender(&rt, &store, &ch);
    wait_delivered(&store, "the webhook to take the leak")?;
    s.stop(&rt);

    let reqs = rx.requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 200],
        "retried through the outage"
    );
    let d = row(&store, 1).context("the delivery")?;
    assert_eq!(d.attempts, 3);
    assert_eq!(d.answer.as_deref(), Some("200 OK: ok"));
    let id = delivery_id(&n.key, "hook");
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-cidguard-event"), Some("leak"));
        // The same id on every attempt, so a receiver can drop a copy.
        assert_eq!(r.header("x-cidguard-delivery"), Some(id.as_str()));
        assert_eq!(r.header("idempotency-key"), Some(id.as_str()));
        assert_eq!(r.body, reqs[0].body, "the body never changes");
        // The signature covers the timestamp and the exact body.
        let ts = r.header("x-cidguard-timestamp").context("timestamp")?;
        let mut signed = format!("{ts}.").into_bytes();
        signed.extend_from_slice(&r.body);
        let want = format!(
            "sha256={}",
            hmac::hex(&hmac::hmac_sha256(b"webhook-test-secret", &signed))
        );
        assert_eq!(r.header("x-cidguard-signature"), Some(want.as_str()));
        let age = chrono::Utc::now().timestamp() - ts.parse::<i64>()?;
        assert!((0..60).contains(&age), "a fresh timestamp: {age}s");
        assert!(!all_of(r).contains("webhook-test-secret"));
    }
    let body = reqs[2].json();
    assert_eq!(body["id"], "leak:reception:42");
    assert_eq!(body["delivery"], id.as_str());
    assert_eq!(body["kind"], "leak");
    assert_eq!(body["line"], "reception");
    assert_eq!(body["check_id"], 42);
    assert_eq!(body["outcome"], "fail");
    assert_eq!(body["organisation"], "Eastside Women's Refuge");
    assert_eq!(body["link"], "https://cidguard.example/checks/42");
    assert_eq!(body["expected"], "no number and no name (withheld)");
    assert_eq!(body["masked"], true);
    assert!(
        body["title"]
            .as_str()
            .unwrap_or("")
            .starts_with("PRIVACY LEAK on line \"reception\""),
        "{body}"
    );
    let findings = body["findings"].as_array().context("findings")?;
    assert!(findings.iter().any(|f| f["header"] == "From"
        && f["kind"] == "number"
        && f["shown"] == true
        && f["value"]
            .as_str()
            .is_some_and(|v| v.contains("+•••••••••42"))));
    assert!(findings.iter().any(|f| f["header"] == "X-Note"));
    assert_masked("webhook", &reqs[2].text());
    // Every field sent is documented (components.schemas.WebhookNotice).
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))?;
    let schema = doc
        .split("    WebhookNotice:")
        .nth(1)
        .and_then(|s| s.split("\npaths:").next())
        .context("WebhookNotice in docs/openapi.yaml")?;
    for key in body.as_object().context("an object")?.keys() {
        assert!(
            schema.contains(&format!("\n        {key}: "))
                || schema.contains(&format!("\n        {key}:\n")),
            "webhook field {key} is not in docs/openapi.yaml"
        );
    }
    for key in findings[0].as_object().context("a finding")?.keys() {
        assert!(
            schema.contains(&format!("\n              {key}: ")),
            "webhook finding field {key} is not in docs/openapi.yaml"
        );
    }

    restart_delivers_nothing_twice(&rt, &store, &cfg, &ch, &rx, "/hook", &n)
}

#[test]
fn ntfy_sends_priority_tags_click_and_token_and_waits_out_an_outage() -> Result<()> {
    // The topic's server is down when the leak is queued.
    let parked = Receiver::start(0)?.stop();
    let port = parked.port();
    let dir = tempfile::tempdir()?;
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"phones\"\nkind = \"ntfy\"\nurl = \"http://127.0.0.1:{port}/cidguard-alerts\"\ntoken = \"tk_ntfytesttoken\"\npriority = {{ drift = 2 }}\n"
        ),
    )?;
    let (_state, store) = temp_store()?;
    let rt = runtime();
    let ch = channel_named(&cfg, &path, "phones")?;
    let n = queue_leak(&store, &cfg, &path)?;
    let s = start_sender(&rt, &store, &ch);
    poll_until(Duration::from_secs(20), "a failed attempt", || {
        Ok(row(&store, 1)
            .is_some_and(|d| d.attempts >= 1)
            .then_some(()))
    })?;
    let err = row(&store, 1)
        .and_then(|d| d.last_error)
        .unwrap_or_default();
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}")) && err.contains("connect"),
        "names the server and the step: {err}"
    );
    assert!(!err.contains("cidguard-alerts"), "never the topic: {err}");
    // Back up: delivered.
    let rx = parked.restart()?;
    wait_delivered(&store, "ntfy to take the leak")?;
    s.stop(&rt);
    let got = rx.accepted("/cidguard-alerts");
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("priority"), Some("5"));
    assert_eq!(r.header("authorization"), Some("Bearer tk_ntfytesttoken"));
    assert_eq!(
        r.header("click"),
        Some("https://cidguard.example/checks/42")
    );
    assert!(r
        .header("tags")
        .is_some_and(|t| t.starts_with("rotating_light,") && t.ends_with(",leak")));
    let title = r.header("title").context("title")?;
    assert!(
        title.starts_with("PRIVACY LEAK on line \"reception\""),
        "{title}"
    );
    let text = r.text();
    assert!(text.contains("Line: reception"), "{text}");
    assert!(text.contains("number leaked in From"), "{text}");
    assert!(
        text.contains("Must present: no number and no name (withheld)"),
        "{text}"
    );
    assert_masked("ntfy", &all_of(r));
    restart_delivers_nothing_twice(&rt, &store, &cfg, &ch, &rx, "/cidguard-alerts", &n)?;
    let _ = n;
    Ok(())
}

#[test]
fn teams_gets_an_adaptive_card_after_a_429() -> Result<()> {
    let rx = Receiver::start(0)?;
    rx.script(&[(429, "slow down")]);
    rx.answer(202, "");
    let dir = tempfile::tempdir()?;
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"it-team\"\nkind = \"teams\"\nurl = \"{}\"\n",
            rx.url("/workflows/abc/triggers/manual/paths/invoke?sig=teams-secret-sig")
        ),
    )?;
    let (_state, store) = temp_store()?;
    let rt = runtime();
    let ch = channel_named(&cfg, &path, "it-team")?;
    let n = queue_leak(&store, &cfg, &path)?;
    let s = start_sender(&rt, &store, &ch);
    wait_delivered(&store, "Teams to take the card")?;
    s.stop(&rt);
    let reqs = rx.requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 202]
    );
    let r = &reqs[1];
    assert!(r.path.ends_with("sig=teams-secret-sig"));
    let body = r.json();
    assert_eq!(body["type"], "message");
    let att = &body["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(
        card["actions"][0]["url"],
        "https://cidguard.example/checks/42"
    );
    let runs: Vec<String> = card["body"]
        .as_array()
        .context("body")?
        .iter()
        .flat_map(|b| b["inlines"].as_array().cloned().unwrap_or_default())
        .map(|i| {
            assert_eq!(i["type"], "TextRun", "wire text is never Markdown");
            i["text"].as_str().unwrap_or("").to_string()
        })
        .collect();
    let all = runs.join("\n");
    assert!(all.contains("PRIVACY LEAK on line \"reception\""), "{all}");
    assert!(all.contains("number leaked in From"), "{all}");
    assert!(
        all.contains("<script>alert('x')</script>"),
        "as text: {all}"
    );
    assert_masked("teams", &r.text());
    let d = row(&store, 1).context("delivery")?;
    assert_eq!(d.answer.as_deref(), Some("202 Accepted"));
    let _ = n;
    Ok(())
}

#[test]
fn slack_gets_text_and_blocks_with_wire_text_escaped() -> Result<()> {
    let rx = Receiver::start(0)?;
    rx.script(&[(500, "internal error")]);
    let dir = tempfile::tempdir()?;
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"slack-noc\"\nkind = \"slack\"\nurl = \"{}\"\nnotices = [\"leak\", \"resolved\"]\n",
            rx.url("/services/T000/B000/slacksecret")
        ),
    )?;
    let (_state, store) = temp_store()?;
    let rt = runtime();
    let ch = channel_named(&cfg, &path, "slack-noc")?;
    let n = queue_leak(&store, &cfg, &path)?;
    let s = start_sender(&rt, &store, &ch);
    wait_delivered(&store, "Slack to take the message")?;
    s.stop(&rt);
    let got = rx.accepted("/services/");
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    let text = body["text"].as_str().unwrap_or("");
    assert!(
        text.starts_with(":rotating_light: PRIVACY LEAK on line \"reception\""),
        "{text}"
    );
    let blocks = body["blocks"].as_array().context("blocks")?;
    assert_eq!(blocks[0]["type"], "header");
    let all = got[0].text();
    // Slack's control characters from the wire are escaped.
    assert!(!all.contains("<script>"), "{all}");
    assert!(all.contains("&lt;script&gt;"), "{all}");
    assert!(blocks.iter().any(|b| b["type"] == "actions"
        && b["elements"][0]["url"] == "https://cidguard.example/checks/42"));
    assert_masked("slack", &all);
    restart_delivers_nothing_twice(&rt, &store, &cfg, &ch, &rx, "/services/", &n)
}

#[test]
fn matrix_puts_with_the_delivery_id_as_transaction_and_a_bearer_token() -> Result<()> {
    let rx = Receiver::start(0)?;
    rx.script(&[(
        429,
        "{\"errcode\":\"M_LIMIT_EXCEEDED\",\"retry_after_ms\":100}",
    )]);
    rx.answer(200, "{\"event_id\":\"$abc\"}");
    let dir = tempfile::tempdir()?;
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"matrix-room\"\nkind = \"matrix\"\nhomeserver = \"{}\"\nroom_id = \"!ops:example.org\"\naccess_token = {{ file = \"{}\" }}\n",
            rx.url(""),
            dir.path().join("matrix-token").display()
        ),
    )?;
    std::fs::write(dir.path().join("matrix-token"), "syt_matrixtesttoken\n")?;
    let (_state, store) = temp_store()?;
    let rt = runtime();
    let ch = channel_named(&cfg, &path, "matrix-room")?;
    let n = queue_leak(&store, &cfg, &path)?;
    let s = start_sender(&rt, &store, &ch);
    wait_delivered(&store, "Matrix to take the message")?;
    s.stop(&rt);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let id = delivery_id(&n.key, "matrix-room");
    for r in &reqs {
        assert_eq!(r.method, "PUT");
        assert_eq!(
            r.path,
            format!("/_matrix/client/v3/rooms/%21ops%3Aexample.org/send/m.room.message/{id}"),
            "the same transaction id on the retry"
        );
        assert_eq!(
            r.header("authorization"),
            Some("Bearer syt_matrixtesttoken")
        );
    }
    let body = reqs[1].json();
    assert_eq!(body["msgtype"], "m.text");
    assert_eq!(body["format"], "org.matrix.custom.html");
    let plain = body["body"].as_str().unwrap_or("");
    let html = body["formatted_body"].as_str().unwrap_or("");
    assert!(
        plain.starts_with("PRIVACY LEAK on line \"reception\""),
        "{plain}"
    );
    assert!(
        plain.contains("Details: https://cidguard.example/checks/42"),
        "{plain}"
    );
    assert!(
        html.contains("<a href=\"https://cidguard.example/checks/42\">"),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;"),
        "{html}"
    );
    assert_masked("matrix", &reqs[1].text());
    restart_delivers_nothing_twice(&rt, &store, &cfg, &ch, &rx, "/_matrix/", &n)
}

/// A receiver that accepts connections and never answers: the worst kind
/// of outage (every attempt waits for its timeout).
struct BlackHole {
    addr: std::net::SocketAddr,
    _listener: std::net::TcpListener,
}

impl BlackHole {
    fn start() -> Result<BlackHole> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(BlackHole {
            addr: l.local_addr()?,
            _listener: l,
        })
    }
}

#[test]
fn a_hung_channel_never_delays_another() -> Result<()> {
    let hole = BlackHole::start()?;
    let rx = Receiver::start(0)?;
    let dir = tempfile::tempdir()?;
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"stuck\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\nsecret = \"s\"\ntimeout = \"30s\"\n\n[[alerts.channel]]\nname = \"fine\"\nkind = \"slack\"\nurl = \"{}\"\n",
            hole.addr,
            rx.url("/slack")
        ),
    )?;
    let (_state, store) = temp_store()?;
    let rt = runtime();
    let stuck = channel_named(&cfg, &path, "stuck")?;
    let fine = channel_named(&cfg, &path, "fine")?;
    let s1 = start_sender(&rt, &store, &stuck);
    let s2 = start_sender(&rt, &store, &fine);
    let started = Instant::now();
    let n = queue_leak(&store, &cfg, &path)?;
    // The senders are woken by their poll (50 ms); "fine" delivers while
    // "stuck" is still waiting for an answer that never comes.
    poll_until(
        Duration::from_secs(10),
        "the healthy channel's delivery",
        || Ok((!rx.accepted("/slack").is_empty()).then_some(())),
    )?;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let deliveries = store.deliveries(Some(&n.key), 10)?;
    let stuck_row = deliveries
        .iter()
        .find(|d| d.channel == "stuck")
        .context("stuck row")?;
    assert!(
        stuck_row.delivered_at_ms.is_none() && stuck_row.attempts == 0,
        "{stuck_row:?}"
    );
    poll_until(Duration::from_secs(5), "fine marked delivered", || {
        Ok(store
            .deliveries(Some(&n.key), 10)?
            .iter()
            .any(|d| d.channel == "fine" && d.delivered_at_ms.is_some())
            .then_some(()))
    })?;
    drop(hole);
    stop_all(&rt, [s1, s2]);
    Ok(())
}

fn stop_all<const N: usize>(rt: &tokio::runtime::Runtime, senders: [Running; N]) {
    for s in senders {
        s.stop(rt);
    }
}

/// The organisation's number in every form, the evidence, and an unmasked
/// channel: what each chat channel may and may not show.
#[test]
fn chat_channels_mask_numbers_by_default_and_never_carry_evidence() -> Result<()> {
    let rx = Receiver::start(0)?;
    let dir = tempfile::tempdir()?;
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"n\"\nkind = \"ntfy\"\nurl = \"{ntfy}\"\n\n\
             [[alerts.channel]]\nname = \"t\"\nkind = \"teams\"\nurl = \"{teams}\"\n\n\
             [[alerts.channel]]\nname = \"s\"\nkind = \"slack\"\nurl = \"{slack}\"\n\n\
             [[alerts.channel]]\nname = \"m\"\nkind = \"matrix\"\nhomeserver = \"{hs}\"\nroom_id = \"!r:x.org\"\naccess_token = \"t\"\n\n\
             [[alerts.channel]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"{hook}\"\nsecret = \"k\"\n\n\
             [[alerts.channel]]\nname = \"open\"\nkind = \"webhook\"\nurl = \"{open}\"\nsecret = \"k\"\nmask_numbers = false\n",
            ntfy = rx.url("/ntfy/topic"),
            teams = rx.url("/teams"),
            slack = rx.url("/slack"),
            hs = rx.url("/mx"),
            hook = rx.url("/hook"),
            open = rx.url("/open"),
        ),
    )?;
    // A leak whose result carries evidence (as a real check's does).
    let policy = AlertPolicy::from_plan(&cfg);
    let now = chrono::Utc::now();
    let mut fail = judged(&cfg, LEAKING_INVITE, Trigger::Schedule);
    let mut confirm = judged(&cfg, LEAKING_INVITE, Trigger::Confirm);
    for r in [&mut fail, &mut confirm] {
        r.evidence.push(EvidenceMessage {
            side: "endpoint".into(),
            direction: "received".into(),
            at_ms: 1,
            flow: "udp 127.0.0.1:5060 -> 127.0.0.1:5080".into(),
            text: format!("{LEAKING_INVITE}X-Evidence-Marker: captured-message-7f3a\r\n"),
        });
    }
    let (s, _) = cidguard::alert::on_result(&Default::default(), &fail, 41, now, &policy, false);
    let (_, d) = cidguard::alert::on_result(&s, &confirm, 42, now, &policy, false);
    let [cidguard::alert::Decision::Notify(n)] = d.as_slice() else {
        panic!("one notice: {d:?}")
    };
    let (_state, store) = temp_store()?;
    assert!(enqueue(&store, &cfg, n)?);
    let rt = runtime();
    let senders: Vec<Running> = channel::from_config(cfg.config(), &path)?
        .iter()
        .map(|c| start_sender(&rt, &store, c))
        .collect();
    wait_delivered(&store, "every channel to take the leak")?;
    for s in senders {
        s.stop(&rt);
    }
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 6, "{reqs:#?}");
    for r in &reqs {
        let all = all_of(r);
        assert!(
            !all.contains("captured-message-7f3a"),
            "{}: evidence in:\n{all}",
            r.path
        );
        assert!(
            !all.contains("a84b4c76e66710"),
            "{}: the Call-ID in:\n{all}",
            r.path
        );
        if r.path == "/open" {
            // Unmasked only because this channel says so.
            assert!(all.contains("+61370100142"), "{all}");
        } else {
            assert_masked(&r.path, &all);
            assert!(all.contains("42"), "the last two digits stay: {all}");
        }
    }
    Ok(())
}

#[test]
fn channel_settings_are_checked_naming_the_field() {
    let problems = |channels: &str| -> Vec<String> {
        let text = format!("{ORG}\n[alerts]\n{channels}\n");
        let cfg: Config = toml::from_str(&text).unwrap();
        cidguard::plan::problems(&cfg)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    };
    let cases: [(&str, &str); 9] = [
        (
            "[[alerts.channel]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/x\"\n[[alerts.channel]]\nname = \"b\"\nkind = \"ntfy\"\nurl = \"https://ntfy.sh/t\"\n[[alerts.channel]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://hooks.example.org/x\"\nsecret = \"k\"",
            "alerts.channel[2] (oncall).url: is plain http to hooks.example.org",
        ),
        (
            "[[alerts.channel]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"https://x.example/h\"",
            "alerts.channel[0] (w).secret: a webhook needs a secret",
        ),
        (
            "[[alerts.channel]]\nname = \"w\"\nkind = \"slack\"\nurl = \"https://x.example/h\"\nnotices = [\"leek\"]",
            "alerts.channel[0] (w).notices[0]: \"leek\" is not a notice",
        ),
        (
            "[[alerts.channel]]\nname = \"w\"\nkind = \"slack\"\nurl = \"https://x.example/h\"\n[[alerts.channel]]\nname = \"w\"\nkind = \"teams\"\nurl = \"https://x.example/t\"",
            "alerts.channel[1] (w).name: another channel is already called \"w\"",
        ),
        (
            "[[alerts.channel]]\nname = \"m\"\nkind = \"matrix\"\nhomeserver = \"https://m.example\"\nroom_id = \"#ops:m.example\"\naccess_token = \"t\"",
            "alerts.channel[0] (m).room_id: \"#ops:m.example\" is not a room id",
        ),
        (
            "[[alerts.channel]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://x.example/h\"\nsecret = \"k\"",
            "alerts.channel[0] (s).secret: does not apply to a slack channel",
        ),
        (
            "[[alerts.channel]]\nname = \"n\"\nkind = \"ntfy\"\nurl = \"https://ntfy.sh/\"",
            "alerts.channel[0] (n).url: names no topic",
        ),
        (
            "[[alerts.channel]]\nname = \"n\"\nkind = \"ntfy\"\nurl = \"https://ntfy.sh/t\"\npriority = { leak = 9 }",
            "alerts.channel[0] (n).priority.leak: must be 1 (min) to 5",
        ),
        (
            "[[alerts.channel]]\nname = \"bad name\"\nkind = \"slack\"\nurl = \"https://x.example/h\"",
            "alerts.channel[0].name: \"bad name\" is not a channel name",
        ),
    ];
    for (channels, want) in cases {
        let p = problems(channels);
        assert!(
            p.iter().any(|p| p.starts_with(want)),
            "{channels}\nexpected {want}\ngot {p:#?}"
        );
    }
    // Channels alone are a complete [alerts]; http to this host is fine;
    // a URL from the environment is checked when the channel starts.
    let ok = problems(
        "[[alerts.channel]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\nsecret = { env = \"HOOK_SECRET\" }\n[[alerts.channel]]\nname = \"s\"\nkind = \"slack\"\nurl = { env = \"SLACK_URL\" }",
    );
    assert!(ok.is_empty(), "{ok:#?}");
    // Unknown settings are refused when the file is read.
    let text = format!("{ORG}\n[alerts]\n[[alerts.channel]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://x.example/h\"\nchanel = \"#ops\"\n");
    assert!(toml::from_str::<Config>(&text).is_err());
}

fn cidguard(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cidguard"))
        .args(args)
        .output()
        .expect("run cidguard")
}

#[test]
fn cli_alert_test_names_a_channel_and_shows_the_answer() -> Result<()> {
    let rx = Receiver::start(0)?;
    rx.answer(200, "{\"accepted\":true}");
    let dir = tempfile::tempdir()?;
    let mail = dir.path().join("mail");
    let text = format!(
        "{ORG}\n[alerts]\nrecipients = [\"noc@example.org\"]\nfrom = \"cidguard <cidguard@example.org>\"\n[alerts.file]\ndir = \"{}\"\n\n[[alerts.channel]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"cli-hook-secret\"\n",
        mail.display(),
        rx.url("/oncall")
    );
    let path = dir.path().join("cidguard.toml");
    std::fs::write(&path, text)?;
    let cfg = path.to_str().context("utf-8 path")?;

    let out = cidguard(&["alert", "test", "--config", cfg, "--channel", "oncall"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout
            .contains("Sending a test notice to channel \"oncall\" via webhook http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("POST http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("200 OK: {\"accepted\":true}"), "{stdout}");
    assert!(
        !stdout.contains("/oncall") && !stdout.contains("cli-hook-secret"),
        "{stdout}"
    );
    let got = rx.accepted("/oncall");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["kind"], "test");
    assert!(!mail.exists(), "only the channel asked for");

    // Every channel when none is named: the email too.
    let out = cidguard(&["alert", "test", "--config", cfg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Sending a test email to noc@example.org"),
        "{stdout}"
    );
    assert!(stdout.contains("written to"), "{stdout}");

    // The far end refuses: 1, with its answer.
    rx.answer(500, "receiver broke");
    let out = cidguard(&["alert", "test", "--config", cfg, "--channel", "oncall"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("500 Internal Server Error: receiver broke"),
        "{stdout}"
    );
    assert!(stdout.contains("FAILED"), "{stdout}");

    // No such channel: 2, naming the ones there are.
    let out = cidguard(&["alert", "test", "--config", cfg, "--channel", "pager"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no alert channel named \"pager\"") && stderr.contains("email, oncall"),
        "{stderr}"
    );
    Ok(())
}

/// https to a receiver whose certificate comes from a private CA: trusted
/// with the channel's `ca_file`, refused (and nothing sent) without it.
#[test]
fn https_channels_trust_their_ca_file_and_no_other_private_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = crate::support::tls::TestCa::generate()?;
    let (ca_pem, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca_pem, ca.ca_pem())?;
    std::fs::write(&cert, &ca.server_cert_pem)?;
    std::fs::write(&key, &ca.server_key_pem)?;
    let rx = super::receiver::TlsReceiver::start(&cert, &key)?;
    let url = format!("https://127.0.0.1:{}/hook", rx.addr.port());
    let (cfg, path) = channel_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"trusted\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"k\"\nca_file = \"{}\"\n\n\
             [[alerts.channel]]\nname = \"untrusted\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"k\"\n",
            ca_pem.display()
        ),
    )?;
    let run = |name: &str| {
        runtime().block_on(cidguard::alert::send_test_notices(
            &cfg,
            &path,
            Some(name),
            chrono::Utc::now(),
        ))
    };
    let ok = run("trusted")?;
    assert!(ok[0].accepted(), "{}", ok[0].human());
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(rx.requests()[0].path, "/hook");
    assert_eq!(rx.requests()[0].json()["kind"], "test");
    let refused = run("untrusted")?;
    let err = refused[0]
        .result
        .as_ref()
        .expect_err("an untrusted certificate");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    assert!(err.is_server_level());
    assert_eq!(rx.requests().len(), 1, "nothing sent without trust");
    Ok(())
}

/// The channel examples in config/example.toml (commented out there), once
/// uncommented, are a valid config: the documentation can't rot.
#[test]
fn example_channels_are_valid() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap();
    let start = example
        .find("# [[alerts.channel]]")
        .expect("channel examples in config/example.toml");
    let end = start
        + example[start..]
            .find("\n\n")
            .unwrap_or(example.len() - start);
    let uncommented: Vec<&str> = example[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
        })
        .collect();
    let text = format!(
        "{ORG}\n[alerts]\nrecipients = [\"noc@example.org\"]\nfrom = \"cidguard <cidguard@example.org>\"\n\
         [alerts.file]\ndir = \"/tmp/unused\"\n{}\n",
        uncommented.join("\n")
    );
    let cfg = Config::from_toml(&text, Path::new("example.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let a = cfg.alerts.unwrap();
    let kinds: Vec<&str> = a.channels.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["webhook", "ntfy", "teams", "slack", "matrix", "email"]
    );
}
