//! The verdict engine (pure: no I/O, no async, no SIP-library types).
pub mod names;
pub mod numbers;
