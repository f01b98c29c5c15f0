//! Many patterns looked for at once: a multi-pattern automaton (a DFA from
//! the `aho-corasick` crate) compiled once per config and walked by hand
//! from the few places a match may start (a word's start for names, a
//! token's end, backwards, for hosts). Walking it directly costs nothing
//! per search beyond the bytes walked, which matters here: a message is
//! some sixty short texts, and most walks stop at their first byte.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind, StartKind};

/// Patterns compiled for anchored searches.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// How they are searched.
    how: How,
    /// Bit b set: some pattern starts with byte b (either ASCII case when
    /// case is ignored). Walks from any other byte are not begun.
    first: [u64; 4],
}

#[derive(Debug, Clone)]
enum How {
    /// The automaton and its anchored start state.
    Dfa(Box<DFA>, StateID),
    /// The patterns as given, compared one by one: only if the automaton
    /// could not be built (far more patterns than any config has), so the
    /// search is slower but never misses anything.
    Plain {
        /// The patterns.
        patterns: Vec<Vec<u8>>,
        /// Whether ASCII case is ignored.
        fold_case: bool,
    },
}

impl Patterns {
    /// Compile `patterns` (empty ones never match); `fold_case` ignores
    /// ASCII case.
    pub fn new<P: AsRef<[u8]>>(patterns: &[P], fold_case: bool) -> Patterns {
        let mut first = [0u64; 4];
        for p in patterns {
            if let Some(&b) = p.as_ref().first() {
                for b in [b, b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                    if fold_case || b == p.as_ref()[0] {
                        first[usize::from(b >> 6)] |= 1 << (b & 63);
                    }
                }
            }
        }
        // Standard semantics keep every pattern a walk spells, so
        // overlapping patterns ("eastside" in "eastside refuge") are all
        // seen.
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Anchored)
            .ascii_case_insensitive(fold_case)
            .prefilter(false)
            .build(patterns);
        let start = dfa
            .as_ref()
            .ok()
            .and_then(|d| d.start_state(Anchored::Yes).ok());
        let how = match (dfa, start) {
            (Ok(dfa), Some(start)) => How::Dfa(Box::new(dfa), start),
            _ => How::Plain {
                patterns: patterns.iter().map(|p| p.as_ref().to_vec()).collect(),
                fold_case,
            },
        };
        Patterns { how, first }
    }

    /// Could a pattern start with this byte?
    pub fn may_start(&self, b: u8) -> bool {
        self.first[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    /// `found(n, pattern)` for every pattern that is exactly the first n
    /// bytes of `bytes` (`pattern` is its index in the list given to
    /// [`Patterns::new`]).
    pub fn prefixes(&self, bytes: &[u8], found: impl FnMut(usize, usize)) {
        self.walk(bytes.iter().copied(), found);
    }

    /// The same for the patterns that are exactly the last n bytes of
    /// `bytes`, for an automaton compiled from reversed patterns.
    pub fn suffixes_reversed(&self, bytes: &[u8], found: impl FnMut(usize, usize)) {
        self.walk(bytes.iter().rev().copied(), found);
    }

    fn walk(&self, bytes: impl Iterator<Item = u8> + Clone, mut found: impl FnMut(usize, usize)) {
        match &self.how {
            How::Dfa(dfa, start) => {
                let mut sid = *start;
                for (k, b) in bytes.enumerate() {
                    sid = dfa.next_state(Anchored::Yes, sid, b);
                    if !dfa.is_special(sid) {
                        continue;
                    }
                    if dfa.is_dead(sid) {
                        return;
                    }
                    if dfa.is_match(sid) {
                        for i in 0..dfa.match_len(sid) {
                            let pid = dfa.match_pattern(sid, i);
                            // A state also holds the patterns that end here
                            // but began after the anchor.
                            if dfa.pattern_len(pid) == k + 1 {
                                found(k + 1, pid.as_usize());
                            }
                        }
                    }
                }
            }
            How::Plain {
                patterns,
                fold_case,
            } => {
                for (pid, p) in patterns.iter().enumerate() {
                    let mut it = bytes.clone();
                    let spelled = !p.is_empty()
                        && p.iter().all(|c| {
                            it.next().is_some_and(|b| {
                                b == *c || (*fold_case && b.eq_ignore_ascii_case(c))
                            })
                        });
                    if spelled {
                        found(p.len(), pid);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(p: &Patterns, hay: &str) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        p.prefixes(hay.as_bytes(), |n, i| v.push((n, i)));
        v.sort_unstable();
        v
    }

    #[test]
    fn every_pattern_spelled_from_the_anchor_and_the_fallback_agrees() {
        let pats = ["eastside", "eastside refuge", "refuge", "side", "east"];
        let dfa = Patterns::new(&pats, false);
        assert!(matches!(dfa.how, How::Dfa(..)));
        let plain = Patterns {
            how: How::Plain {
                patterns: pats.iter().map(|p| p.as_bytes().to_vec()).collect(),
                fold_case: false,
            },
            first: dfa.first,
        };
        for hay in [
            "eastside refuge west",
            "eastsid",
            "refuge",
            "x eastside",
            "",
        ] {
            assert_eq!(prefixes(&dfa, hay), prefixes(&plain, hay), "{hay}");
        }
        assert_eq!(
            prefixes(&dfa, "eastside refuge west"),
            vec![(4, 4), (8, 0), (15, 1)]
        );
        assert!(prefixes(&dfa, "westside").is_empty());
        assert!(dfa.may_start(b'e') && dfa.may_start(b'r') && !dfa.may_start(b'E'));
        let ci = Patterns::new(&["ua.gro.elpmaxe"], true);
        let mut v = Vec::new();
        ci.suffixes_reversed(b"PBX.Example.ORG.AU", |n, i| v.push((n, i)));
        assert_eq!(v, vec![(14, 0)]);
        assert!(ci.may_start(b'U') && ci.may_start(b'u'));
    }
}
