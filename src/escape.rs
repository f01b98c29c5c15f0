//! Escaping text for HTML, shared by the dashboard's pages and the alert
//! emails' HTML part: every value that came from a SIP message is hostile.

/// Escape for HTML element content and double- or single-quoted attribute
/// values.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
