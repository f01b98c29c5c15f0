//! Name normalisation (work in progress).
pub fn normalise(s: &str) -> String {
    s.to_lowercase()
}
