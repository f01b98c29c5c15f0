//! SIP: the wire format, transports, transactions and the two user agents
//! cidguard plays, the line (UAC) and the endpoint (UAS).
//!
//! Nothing outside this module sees a third-party SIP type, and nothing in
//! it knows of lines, policies or verdicts: it owns its own types (the
//! transport, the account, the endpoint's settings, captured messages) and
//! the app's plan builds them.

pub mod account;
pub mod body;
pub mod build;
pub mod digest;
pub mod endpoint;
pub mod guard;
pub mod header;
pub mod hooks;
pub mod message;
pub mod transaction;
pub mod transport;
pub mod uac;
pub mod uri;

pub use account::Account;
pub use message::{parse, Header, Message, ParseError, StartLine};
pub use transport::Transport;
