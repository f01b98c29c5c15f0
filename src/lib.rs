//! cidguard: caller-ID privacy regression tester.
pub mod config;
pub mod sip;
pub mod verdict;
