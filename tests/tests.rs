//! The one integration-test binary: each module tests one area.
mod alerts;
mod check_kamailio;
mod cli;
mod config_files;
mod daemon;
mod daemon_cli;
mod daemon_e2e;
mod demo;
mod deploy;
mod peers;
mod sip_ua;
mod store;
mod support;
mod verdict_corpus;
mod verdict_kamailio;
mod verdict_props;
mod web;
