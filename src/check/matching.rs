//! Proving that the call that arrived at the endpoint is the call the line
//! placed. Caller ID can't be used (it is what is being withheld) and custom
//! headers don't survive the public network, so the proof comes from the
//! call itself:
//!
//! - **numbers**: each call in flight dials a different endpoint number, so
//!   the number dialled names the call; exactly one arrival may be seen on
//!   it during the window.
//! - **timing** (default): one number, one call at a time. The endpoint holds
//!   the call for a random hold chosen for this check, then rejects it; the
//!   line's final response must come back right after the endpoint sent its
//!   own (within a tolerance), and never before. An unrelated final response
//!   can't land in that short gap by chance, and a second arrival in the
//!   window makes the result ambiguous.
//! - **media**: the endpoint answers and the line sends a random token as
//!   RFC 4733 events; the endpoint must decode exactly that token.
//!
//! Everything here is pure: times are given, not read from a clock. Anything
//! short of a positive match is never a pass.

use std::time::{Duration, SystemTime};

use crate::config::Matching;

/// A call seen at the endpoint while a check's window was open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub call_id: String,
    pub received_at: SystemTime,
    /// When the endpoint's final response left, if it sent one.
    pub final_sent_at: Option<SystemTime>,
    pub final_status: Option<u16>,
    /// The token decoded from the media (media matching only).
    pub token: Option<String>,
}

/// What the line side saw of its own call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub invite_sent_at: SystemTime,
    pub final_received_at: Option<SystemTime>,
    pub final_status: Option<u16>,
}

/// The result of matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Positively matched: the arrival at this index is the line's call.
    Matched { index: usize, evidence: String },
    /// Nothing arrived in the window.
    NotArrived,
    /// More than one call arrived in the window: we can't tell which.
    Ambiguous { arrivals: usize },
    /// One call arrived but the proof doesn't hold.
    Mismatch { detail: String },
}

impl Match {
    /// Why this is not a match, in a sentence (None for a match).
    pub fn reason(&self) -> Option<String> {
        match self {
            Match::Matched { .. } => None,
            Match::NotArrived => Some("the test call never arrived at the endpoint".into()),
            Match::Ambiguous { arrivals } => Some(format!(
                "{arrivals} calls arrived at the endpoint during the check, so the line's own call can't be told apart (a stray call?)"
            )),
            Match::Mismatch { detail } => Some(format!("the call that arrived could not be proved to be the line's: {detail}")),
        }
    }
}

/// Clocks on one host can still disagree by scheduling noise.
const SLACK: Duration = Duration::from_millis(20);

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Signed difference `a - b` in milliseconds.
fn diff_ms(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    }
}

fn single<'a>(placed: &Placed, arrivals: &'a [Arrival]) -> Result<&'a Arrival, Match> {
    match arrivals.len() {
        0 => return Err(Match::NotArrived),
        1 => {}
        n => return Err(Match::Ambiguous { arrivals: n }),
    }
    let a = &arrivals[0];
    if a.received_at + SLACK < placed.invite_sent_at {
        return Err(Match::Mismatch {
            detail: format!(
                "it arrived {} ms before the line sent its INVITE",
                -diff_ms(a.received_at, placed.invite_sent_at)
            ),
        });
    }
    Ok(a)
}

/// Timing signature: the line's final response must follow the endpoint's
/// final response within `tolerance` (the return path), and not precede it.
pub fn by_timing(
    placed: &Placed,
    arrivals: &[Arrival],
    hold: Duration,
    tolerance: Duration,
) -> Match {
    let a = match single(placed, arrivals) {
        Ok(a) => a,
        Err(m) => return m,
    };
    let Some(sent) = a.final_sent_at else {
        return Match::Mismatch {
            detail: "the endpoint never sent its final response".into(),
        };
    };
    let Some(got) = placed.final_received_at else {
        return Match::Mismatch {
            detail: "the line never got a final response".into(),
        };
    };
    let delta = diff_ms(got, sent);
    if delta < -(SLACK.as_millis() as i128) {
        return Match::Mismatch {
            detail: format!(
                "the line's final response came {} ms before the endpoint released the call after its {} ms hold",
                -delta,
                ms(hold)
            ),
        };
    }
    if delta > tolerance.as_millis() as i128 {
        return Match::Mismatch {
            detail: format!(
                "the line's final response came {delta} ms after the endpoint released the call, more than the {} ms tolerance",
                ms(tolerance)
            ),
        };
    }
    Match::Matched {
        index: 0,
        evidence: format!(
            "the endpoint held the call {} ms and released it; the line's final response followed {} ms later",
            ms(hold),
            delta.max(0)
        ),
    }
}

/// Several numbers: the one arrival on the number this check dialled.
pub fn by_number(placed: &Placed, arrivals: &[Arrival], number: &str) -> Match {
    match single(placed, arrivals) {
        Ok(_) => Match::Matched {
            index: 0,
            evidence: format!("the only call to {number} during the check"),
        },
        Err(m) => m,
    }
}

/// Media token: exactly one arrival, whose decoded token is ours.
pub fn by_token(placed: &Placed, arrivals: &[Arrival], token: &str) -> Match {
    let a = match single(placed, arrivals) {
        Ok(a) => a,
        Err(m) => return m,
    };
    match a.token.as_deref() {
        Some(t) if t == token => Match::Matched {
            index: 0,
            evidence: format!("the endpoint decoded the line's token {token} from the media"),
        },
        Some(t) => Match::Mismatch {
            detail: format!(
                "the endpoint decoded token {t:?}, not the {}-digit token the line sent",
                token.len()
            ),
        },
        None => Match::Mismatch {
            detail: "no token was decoded from the media".into(),
        },
    }
}

/// Pick a hold in `[min, max]` that differs from each recent hold by at least
/// `gap`, so two checks never share a signature. `r` is a uniform random
/// number in [0, 1).
pub fn choose_hold(
    r: f64,
    min: Duration,
    max: Duration,
    recent: &[Duration],
    gap: Duration,
) -> Duration {
    let span = max.saturating_sub(min);
    let steps = (span.as_millis() / gap.as_millis().max(1)) as u64 + 1;
    let start = ((r.clamp(0.0, 1.0) * steps as f64) as u64).min(steps - 1);
    for k in 0..steps {
        let step = (start + k) % steps;
        let hold = min + gap * step as u32;
        let hold = hold.min(max);
        if recent.iter().all(|h| h.abs_diff(hold) >= gap) {
            return hold;
        }
    }
    min + span / 2
}

/// One way of matching, as one type: how many checks may be in flight, how
/// long the endpoint holds a call, whether it answers, and how the proof is
/// decided. [`mode`] gives the one for `endpoint.matching`.
pub trait MatchingMode: Send + Sync + std::fmt::Debug {
    /// Checks that may be in flight at once with `numbers` endpoint numbers.
    fn in_flight(&self, numbers: usize) -> usize;
    /// How long the endpoint holds this check's call, from the configured
    /// `[min, max]`, given the holds of recent checks, the smallest gap
    /// between two holds, and a uniform random number in [0, 1). The
    /// shortest, unless the hold is what tells calls apart.
    fn hold(
        &self,
        (min, _): (Duration, Duration),
        _recent: &[Duration],
        _gap: Duration,
        _random: f64,
    ) -> Duration {
        min
    }
    /// Whether the endpoint answers the call (and reads a token from its
    /// media) rather than rejecting it after the hold.
    fn answers(&self) -> bool;
    /// Whether `arrivals` hold the line's own call, and which.
    fn decide(&self, placed: &Placed, arrivals: &[Arrival], sent: &Sent<'_>) -> Match;
}

/// What a check did to be recognised, for [`MatchingMode::decide`].
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    /// How long the endpoint was asked to hold the call.
    pub hold: Duration,
    /// The endpoint number the line dialled.
    pub number: &'a str,
    /// The media token the line sent, when the mode answers.
    pub token: Option<&'a str>,
    /// How late the line's final response may come after the endpoint's
    /// (timing).
    pub tolerance: Duration,
}

/// One number, one call at a time, matched by a random hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing;

/// Several numbers, one per call in flight, matched by the number dialled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Numbers;

/// Answered, matched by a token sent as RFC 4733 events in the media.
#[derive(Debug, Clone, Copy, Default)]
pub struct Media;

impl MatchingMode for Timing {
    fn in_flight(&self, _numbers: usize) -> usize {
        1
    }
    fn hold(
        &self,
        (min, max): (Duration, Duration),
        recent: &[Duration],
        gap: Duration,
        random: f64,
    ) -> Duration {
        choose_hold(random, min, max, recent, gap)
    }
    fn answers(&self) -> bool {
        false
    }
    fn decide(&self, placed: &Placed, arrivals: &[Arrival], sent: &Sent<'_>) -> Match {
        by_timing(placed, arrivals, sent.hold, sent.tolerance)
    }
}

impl MatchingMode for Numbers {
    fn in_flight(&self, numbers: usize) -> usize {
        numbers.max(1)
    }
    fn answers(&self) -> bool {
        false
    }
    fn decide(&self, placed: &Placed, arrivals: &[Arrival], sent: &Sent<'_>) -> Match {
        by_number(placed, arrivals, sent.number)
    }
}

impl MatchingMode for Media {
    fn in_flight(&self, _numbers: usize) -> usize {
        1
    }
    fn answers(&self) -> bool {
        true
    }
    fn decide(&self, placed: &Placed, arrivals: &[Arrival], sent: &Sent<'_>) -> Match {
        match sent.token {
            Some(t) => by_token(placed, arrivals, t),
            None => Match::Mismatch {
                detail: "no token was chosen".into(),
            },
        }
    }
}

/// The mode `endpoint.matching` names.
pub fn mode(m: Matching) -> &'static dyn MatchingMode {
    match m {
        Matching::Timing => &Timing,
        Matching::Numbers => &Numbers,
        Matching::Media => &Media,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
    }

    fn arrival(at: u64, final_at: u64) -> Arrival {
        Arrival {
            call_id: "a".into(),
            received_at: t(at),
            final_sent_at: Some(t(final_at)),
            final_status: Some(486),
            token: None,
        }
    }

    fn placed(final_at: u64) -> Placed {
        Placed {
            invite_sent_at: t(0),
            final_received_at: Some(t(final_at)),
            final_status: Some(486),
        }
    }

    const HOLD: Duration = Duration::from_millis(3000);
    const TOL: Duration = Duration::from_millis(500);

    #[test]
    fn timing_match() {
        assert!(matches!(
            by_timing(&placed(3010), &[arrival(5, 3005)], HOLD, TOL),
            Match::Matched { .. }
        ));
    }

    #[test]
    fn final_before_release_is_not_a_match() {
        // The line's call was rejected elsewhere, while a stray call sat in
        // the endpoint's hold.
        let m = by_timing(&placed(1200), &[arrival(5, 3005)], HOLD, TOL);
        assert!(matches!(m, Match::Mismatch { .. }), "{m:?}");
    }

    #[test]
    fn final_long_after_release_is_not_a_match() {
        let m = by_timing(&placed(6000), &[arrival(5, 3005)], HOLD, TOL);
        assert!(matches!(m, Match::Mismatch { .. }), "{m:?}");
    }

    #[test]
    fn two_arrivals_are_ambiguous_and_none_is_not_arrived() {
        assert_eq!(
            by_timing(
                &placed(3010),
                &[arrival(5, 3005), arrival(7, 3007)],
                HOLD,
                TOL
            ),
            Match::Ambiguous { arrivals: 2 }
        );
        assert_eq!(by_timing(&placed(3010), &[], HOLD, TOL), Match::NotArrived);
        assert_eq!(by_number(&placed(3010), &[], "1"), Match::NotArrived);
    }

    #[test]
    fn arrival_before_the_invite_is_not_ours() {
        let mut a = arrival(0, 3005);
        a.received_at = t(0) - Duration::from_millis(500);
        assert!(matches!(
            by_number(&placed(3010), &[a], "1"),
            Match::Mismatch { .. }
        ));
    }

    #[test]
    fn tokens() {
        let mut a = arrival(5, 3005);
        a.token = Some("4821".into());
        assert!(matches!(
            by_token(&placed(3010), &[a.clone()], "4821"),
            Match::Matched { .. }
        ));
        assert!(matches!(
            by_token(&placed(3010), &[a], "4822"),
            Match::Mismatch { .. }
        ));
    }

    /// Each mode answers the four questions the checker asks of it.
    #[test]
    fn each_mode_says_how_many_in_flight_how_long_how_to_answer_and_decides() {
        let range = (Duration::from_millis(1500), Duration::from_millis(6000));
        let gap = Duration::from_millis(250);
        assert_eq!(mode(Matching::Timing).in_flight(3), 1);
        assert_eq!(mode(Matching::Numbers).in_flight(3), 3);
        assert_eq!(mode(Matching::Numbers).in_flight(0), 1);
        assert_eq!(mode(Matching::Media).in_flight(3), 1);
        // Timing picks a hold clear of the recent ones; the others hold the
        // shortest time.
        let recent = [Duration::from_millis(1500)];
        let h = mode(Matching::Timing).hold(range, &recent, gap, 0.0);
        assert!(h >= range.0 + gap && h <= range.1, "{h:?}");
        assert_eq!(
            mode(Matching::Numbers).hold(range, &recent, gap, 0.9),
            range.0
        );
        assert_eq!(
            mode(Matching::Media).hold(range, &recent, gap, 0.9),
            range.0
        );
        assert!(mode(Matching::Media).answers());
        assert!(!mode(Matching::Timing).answers() && !mode(Matching::Numbers).answers());
        // Each decides by its own proof.
        let mut a = arrival(5, 3005);
        a.token = Some("4821".into());
        let sent = |token| Sent {
            hold: Duration::from_millis(3000),
            number: "4000",
            token,
            tolerance: Duration::from_millis(1500),
        };
        let arrivals = [a];
        for m in [Matching::Timing, Matching::Numbers, Matching::Media] {
            assert!(
                matches!(
                    mode(m).decide(&placed(3010), &arrivals, &sent(Some("4821"))),
                    Match::Matched { .. }
                ),
                "{m:?}"
            );
        }
        assert!(matches!(
            mode(Matching::Media).decide(&placed(3010), &arrivals, &sent(None)),
            Match::Mismatch { .. }
        ));
        assert!(matches!(
            mode(Matching::Media).decide(&placed(3010), &arrivals, &sent(Some("4822"))),
            Match::Mismatch { .. }
        ));
    }

    #[test]
    fn holds_are_distinct() {
        let min = Duration::from_millis(1500);
        let max = Duration::from_millis(6000);
        let gap = Duration::from_millis(250);
        let mut recent = Vec::new();
        for i in 0..10 {
            let h = choose_hold((i as f64 * 0.37) % 1.0, min, max, &recent, gap);
            assert!(h >= min && h <= max);
            assert!(
                recent.iter().all(|r: &Duration| r.abs_diff(h) >= gap),
                "{h:?} vs {recent:?}"
            );
            recent.push(h);
        }
    }
}
