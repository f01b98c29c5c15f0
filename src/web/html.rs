//! HTML building blocks: escaping, highlighting, the page frame.

pub use crate::escape::html as esc;

/// Escape `text` and wrap every occurrence of any of `needles` in `<mark>`.
/// Ranges are found on the raw text and merged first, so escaping never
/// splits a mark and no raw text reaches the page.
pub fn highlight(text: &str, needles: &[&str]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for n in needles.iter().filter(|n| !n.is_empty()) {
        let mut from = 0;
        while let Some(i) = text[from..].find(n) {
            let start = from + i;
            ranges.push((start, start + n.len()));
            from = start + n.len();
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut at = 0;
    for (s, e) in merged {
        out.push_str(&esc(&text[at..s]));
        out.push_str("<mark>");
        out.push_str(&esc(&text[s..e]));
        out.push_str("</mark>");
        at = e;
    }
    out.push_str(&esc(&text[at..]));
    out
}

/// Word, icon and CSS class for a state: colour is never the only signal.
pub fn badge(state: &str) -> String {
    badge_or(state, "Not yet checked")
}

/// A device's badge: a device nobody has called in from is "Never tested"
/// (it is tested by a person calling, not checked on a schedule).
pub fn device_badge(state: &str) -> String {
    badge_or(state, "Never tested")
}

/// A state's badge, with `unchecked` for the word of the state with no
/// result yet.
fn badge_or(state: &str, unchecked: &str) -> String {
    let (icon, word) = match state {
        "pass" => ("✓", "Pass"),
        "fail" => ("✗", "FAIL"),
        "inconclusive" => ("?", "Inconclusive"),
        _ => ("–", unchecked),
    };
    format!(
        "<span class=\"badge {}\"><span aria-hidden=\"true\">{icon}</span> {word}</span>",
        esc(state)
    )
}

const CSS: &str = "
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#111;background:#fff}
header,main{padding:0.5rem 1rem;max-width:70rem;margin:auto}
header{border-bottom:1px solid #ccc}
a{color:#0645ad}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:0.3rem 0.5rem;border-bottom:1px solid #ddd;vertical-align:top}
.badge{display:inline-block;padding:0 0.4rem;border-radius:0.3rem;font-weight:bold;border:1px solid}
.pass{background:#e6f4ea;color:#0b5323}
.fail{background:#fde7e9;color:#8a0010}
.inconclusive{background:#fff4ce;color:#5c4400}
.unchecked{background:#eee;color:#333}
.bar{display:flex;gap:1px;flex-wrap:wrap}
.bar a{display:inline-block;width:0.7rem;height:1.2rem;text-decoration:none;font-size:0.6rem;text-align:center;border:1px solid #888}
pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;padding:0.5rem;font-size:0.85rem}
mark{background:#ffd400;color:#000;outline:2px solid #8a0010}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:1rem}
form{margin:1rem 0;padding:0.5rem;border:1px solid #ccc}
label{display:block;margin:0.3rem 0}
input,button{font:inherit;padding:0.3rem}
.notice{border:2px solid #0645ad;padding:0.5rem}
form.inline{border:0;padding:0;margin:0.5rem 0}
.scroll{overflow-x:auto}
.ladder{width:auto;min-width:100%}
.ladder td{white-space:nowrap}
.ladder td:first-child{text-align:right;font-variant-numeric:tabular-nums}
.ladder .to-r{text-align:left;border-left:2px solid #555}
.ladder .to-l{text-align:right;border-right:2px solid #555}
.ladder a{font-weight:bold}
caption{text-align:left;font-size:0.9rem;padding:0.3rem 0}
.findings li{margin-bottom:0.6rem}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:40rem){.wide{display:none}
.lines thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
.lines tr{display:block;border-bottom:2px solid #ccc;padding:0.3rem 0}
.lines td{display:block;border:0;padding:0.1rem 0.3rem}
.lines td[data-label]::before{content:attr(data-label) \": \";font-weight:bold}
header,main{padding:0.4rem}
th,td{padding:0.2rem 0.3rem}
.ladder{font-size:0.85rem}
.ladder td{white-space:normal}
pre{font-size:0.75rem}}
";

/// The page frame around `body`; `head_extra` goes in `<head>` (the
/// progress page's refresh).
pub fn page(title: &str, head_extra: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{head_extra}\
<title>{t} – cidguard</title><style>{CSS}</style></head><body>\
<header><a href=\"/\">cidguard</a> · caller-ID privacy checks</header><main>\
<h1>{t}</h1>{body}</main></body></html>\n",
        t = esc(title)
    )
}

/// The token field of a state-changing form on the page at `here`, or
/// nothing when the browser is signed in.
fn token_field(id: &str, here: &str, signed_in: bool) -> String {
    if signed_in {
        return String::new();
    }
    format!(
        "<label for=\"{id}\">Dashboard token (or <a href=\"/login?next={}\">sign in</a> once)</label>\
<input id=\"{id}\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>",
        esc(&super::percent_encode(here))
    )
}

/// The run-now form; `line` None checks every line.
pub fn run_form(line: Option<&str>, signed_in: bool) -> String {
    let hidden = line
        .map(|l| format!("<input type=\"hidden\" name=\"line\" value=\"{}\">", esc(l)))
        .unwrap_or_default();
    let what = match line {
        Some(l) => format!("Check {} now", esc(l)),
        None => "Check every line now".to_string(),
    };
    format!(
        "<form method=\"post\" action=\"/run\"><h2>{what}</h2>{hidden}\
<label for=\"label\">Why (kept with the result, e.g. \"after PBX upgrade\")</label>\
<input id=\"label\" name=\"label\" maxlength=\"200\">{}\
<p><button type=\"submit\">Run check</button></p></form>",
        token_field(
            "token",
            &line.map_or_else(|| "/".to_string(), |l| format!("/lines/{l}")),
            signed_in
        )
    )
}

/// "Signed in" and a sign-out button, for pages with forms.
pub fn signed_in_note(signed_in: bool) -> &'static str {
    if signed_in {
        "<form method=\"post\" action=\"/logout\" class=\"inline\"><p>Signed in. \
<button type=\"submit\">Sign out</button></p></form>"
    } else {
        ""
    }
}

/// `cidguard demo`'s switch for its PBX's caller-ID rules.
pub fn demo_form(line: &str, signed_in: bool) -> String {
    format!(
        "<form method=\"post\" action=\"/demo\"><h2>Demo: change the demo PBX</h2>\
<p>Make the demo PBX send {l}'s number and name, as a careless update might, \
then run a check (or wait for the next one) and watch it fail and the alert go out.</p>{}\
<p><button type=\"submit\" name=\"action\" value=\"leak\">Make {l} leak</button> \
<button type=\"submit\" name=\"action\" value=\"restore\">Put every rule back</button></p></form>",
        token_field("demo-token", "/", signed_in),
        l = esc(line)
    )
}

/// The sign-in form.
pub fn login_form(next: &str, wrong: bool) -> String {
    format!(
        "{}<form method=\"post\" action=\"/login\">\
<input type=\"hidden\" name=\"next\" value=\"{}\">\
<label for=\"login-token\">Dashboard token</label>\
<input id=\"login-token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
<p><button type=\"submit\">Sign in</button></p></form>\
<p>The token is <code>dashboard.token</code> in cidguard's configuration. Signing in \
lasts 12 hours, until you sign out, or until cidguard restarts.</p>",
        if wrong {
            "<p class=\"notice\" role=\"alert\">That token is not right.</p>"
        } else {
            ""
        },
        esc(next)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlights_inside_escaped_text() {
        let h = highlight("From: \"<script>\" <sip:+613@x>", &["<script>", "+613"]);
        assert_eq!(
            h,
            "From: &quot;<mark>&lt;script&gt;</mark>&quot; &lt;sip:<mark>+613</mark>@x&gt;"
        );
        // Overlapping needles make one mark.
        assert_eq!(highlight("abcd", &["abc", "bcd"]), "<mark>abcd</mark>");
    }
}
