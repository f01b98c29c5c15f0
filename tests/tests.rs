//! The one integration-test binary: each module tests one area against real peers.
mod sip_ua;
