//! `cidguard check`: a real test call from each line through the PBX, caught
//! at cidguard's own endpoint, matched to the call placed, and judged.
//!
//! The pure parts first: [`matching`] (proving an arrival is the line's own
//! call, one type per matching mode) and [`token`] (the RFC 4733 media
//! token); then [`result`] (what a check found), [`run`] (placing and
//! judging calls), [`evidence`] (evidence files) and [`request`] (asking
//! the daemon for checks now).

pub mod evidence;
pub mod matching;
pub mod request;
pub mod result;
pub mod run;
pub mod token;

pub use request::RunRequest;
