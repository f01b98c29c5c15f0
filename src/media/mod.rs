//! Media for the call-in self-test: what a caller hears.
//!
//! - [`g711`]: µ-law and A-law companding (ITU-T G.711).
//! - [`wav`]: reading and writing 8 kHz mono 16-bit PCM WAV files.
//! - [`rtp`]: cutting audio into 20 ms RTP packets (RFC 3550 headers).
//! - [`sdp`]: reading a caller's SDP offer and writing the answer (RFC 3264).
//! - [`prompts`]: the spoken prompts (built in, or an organisation's own
//!   recordings) and the sequence of clips said for each result.
//! - [`stream`]: sending the packets to the caller, paced in real time (the
//!   only part that does I/O, with tokio).
//!
//! Everything but [`stream`] is pure: no sockets, no clocks, no async.

pub mod g711;
pub mod prompts;
pub mod rtp;
pub mod sdp;
pub mod stream;
pub mod wav;

use std::sync::Arc;
use std::time::Duration;

/// Audio to play to a caller: 8 kHz 16-bit linear samples, shared (one
/// rendering serves many calls). `Debug` shows its length, not thousands
/// of samples.
#[derive(Clone)]
pub struct Audio(Arc<[i16]>);

impl Audio {
    pub fn new(samples: Vec<i16>) -> Audio {
        Audio(samples.into())
    }

    pub fn samples(&self) -> &[i16] {
        &self.0
    }

    /// How long it plays.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.0.len() as u64 * 1000 / wav::SAMPLE_RATE as u64)
    }
}

impl std::fmt::Debug for Audio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Audio({:.2} s)", self.duration().as_secs_f64())
    }
}

impl PartialEq for Audio {
    fn eq(&self, other: &Audio) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Audio {}
