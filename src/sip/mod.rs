//! SIP: the wire format, transports, transactions and the two user agents
//! cidguard plays, the line (UAC) and the endpoint (UAS).
//!
//! Nothing outside this module sees a third-party SIP type.

pub mod build;
pub mod dial;
pub mod digest;
pub mod endpoint;
pub mod guard;
pub mod header;
pub mod hooks;
pub mod message;
pub mod transaction;
pub mod transport;
pub mod uac;

pub use message::{parse, Header, Message, ParseError, StartLine};
