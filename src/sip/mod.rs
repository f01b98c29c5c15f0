//! SIP: the wire format, and (in later modules) transports, transactions and
//! the two user agents cidguard plays, the line (UAC) and the endpoint (UAS).
//!
//! Nothing outside this module sees a third-party SIP type.

pub mod header;
pub mod message;

pub use message::{parse, Header, Message, ParseError, StartLine};
