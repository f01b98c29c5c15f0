//! A SIP account: what a user agent needs to register and place calls as
//! one extension on a PBX (or as the endpoint at a provider). The app's
//! plan builds these from the config; the SIP stack knows nothing of lines.

use std::time::Duration;

use crate::secret::Secret;

use super::transport::Transport;

/// One account on a registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The PBX (registrar and proxy), as a SIP URI or `host[:port]`:
    /// `sip:pbx.example.org:5060`.
    pub registrar: String,
    /// Send requests here instead of to the registrar (an SBC, say).
    pub outbound_proxy: Option<String>,
    /// How requests reach the registrar (or the outbound proxy).
    pub transport: Transport,
    /// The extension / account name (the user part of the AOR).
    pub username: String,
    /// Digest username when it differs from `username`.
    pub auth_username: Option<String>,
    /// The Digest password, read when a line is set up.
    pub password: Secret,
    /// From user part, when the PBX wants something other than `username`.
    pub from_user: Option<String>,
    /// From host, when the PBX wants something other than the registrar host.
    pub from_domain: Option<String>,
    /// Register before calling (some PBXs refuse calls from unregistered lines).
    pub register: bool,
    /// Requested registration lifetime.
    pub register_expiry: Duration,
    /// Give up (CANCEL) when nothing final arrives within this time.
    pub ring_timeout: Duration,
}
