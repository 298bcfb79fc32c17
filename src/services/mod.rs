//! The built-in services of `sockit serve` and `sockit relay`, one module
//! each, every one written against the public [`Service`](crate::Service) /
//! [`DatagramService`](crate::DatagramService) /
//! [`DatagramSession`](crate::DatagramSession) API and holding only its
//! protocol.

pub mod chat;
pub mod discard;
pub mod echo;
pub mod exec;
pub mod files;
pub mod greet;
pub mod relay;
pub mod stamp;

pub use chat::{Chat, RawBroker};
pub use discard::{Chargen, Discard};
pub use echo::Echo;
pub use exec::{Exec, ExecConfig};
pub use files::{Files, FilesConfig};
pub use greet::Greet;
pub use relay::{Relay, UdpRelay};
pub use stamp::Stamp;

/// The line a line service writes to a connection refused at `--max-conns`.
pub const BUSY_LINE: &[u8] = b"! server busy: too many connections, try again later\n";
