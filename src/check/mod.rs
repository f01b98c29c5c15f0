//! `cidguard check`: a real test call from each line through the PBX, caught
//! at cidguard's own endpoint, matched to the call placed, and judged.
//!
//! This module holds the pure parts first: [`matching`] (proving an arrival
//! is the line's own call) and [`token`] (the RFC 4733 media token).

pub mod evidence;
pub mod matching;
pub mod result;
pub mod run;
pub mod token;
