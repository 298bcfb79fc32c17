//! The library's errors, each naming the address or input it is about and
//! what to do, and the stable exit codes the binary maps them to.

use std::io;

use crate::endpoint::{Endpoint, ParseEndpointError};

/// Exit codes of the `sockit` binary. They are part of the interface: scripts
/// rely on them, so a code never changes meaning.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any failure without a more specific code.
    pub const FAILURE: i32 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: i32 = 2;
    /// Could not connect: refused, unreachable, timed out, name not found.
    pub const CONNECT: i32 = 3;
    /// Could not listen: address in use, permission denied, not local.
    pub const BIND: i32 = 4;
    /// The TLS handshake failed: certificate not trusted, fingerprint
    /// mismatch, or the peer does not speak TLS.
    pub const TLS: i32 = 5;
    /// The server refused to admit us: wrong or missing token, or no
    /// acceptable client certificate.
    pub const AUTH: i32 = 6;
    /// A host name did not resolve (`sockit get`; elsewhere it is
    /// [`CONNECT`]).
    pub const DNS: i32 = 7;
    /// No answer in time (`sockit get`: --timeout, --connect-timeout).
    pub const TIMEOUT: i32 = 8;
    /// The server answered with an HTTP error status (`sockit get --fail`).
    pub const HTTP: i32 = 9;
    /// Redirects went past --max-redirects, or in a loop.
    pub const REDIRECTS: i32 = 10;
    /// The transfer broke off: a body shorter than announced, a connection
    /// lost mid-way, or a file that could not be written.
    pub const TRANSFER: i32 = 11;
}

/// A sockit error. The operating system's error is part of the message
/// (not a separate cause), followed by what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint string could not be parsed.
    #[error(transparent)]
    Parse(#[from] ParseEndpointError),
    /// A host name did not resolve.
    #[error("cannot resolve '{host}': {cause}; check the name, or use an IP address")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        cause: io::Error,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {endpoint}: {cause}{}", bind_hint(cause))]
    Bind {
        /// Where we tried to listen.
        endpoint: Endpoint,
        /// The operating system's error.
        cause: io::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to {endpoint}: {cause}{}", connect_hint(cause))]
    Connect {
        /// Where we tried to connect.
        endpoint: Endpoint,
        /// The operating system's error, or a timeout.
        cause: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS with {endpoint}: {cause}")]
    Tls {
        /// The server.
        endpoint: Endpoint,
        /// What went wrong, and what to do.
        cause: String,
    },
    /// The server refused authentication.
    #[error("{0}")]
    Auth(String),
    /// The token handshake with a server failed (its own exit codes).
    #[error(transparent)]
    Login(#[from] crate::auth::LoginError),
    /// Arguments that parse but do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A failure with its own exit code (one of [`exit`]).
    #[error("{1}")]
    Exit(i32, String),
    /// An endpoint was used where its kind does not fit.
    #[error("{endpoint}: {reason}")]
    Unsupported {
        /// The endpoint.
        endpoint: Endpoint,
        /// Why it does not fit, and what to use instead.
        reason: String,
    },
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code this error maps to (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Parse(_) | Error::Usage(_) | Error::Unsupported { .. } => exit::USAGE,
            Error::Resolve { .. } | Error::Connect { .. } => exit::CONNECT,
            Error::Bind { .. } => exit::BIND,
            Error::Tls { .. } => exit::TLS,
            Error::Auth(_) => exit::AUTH,
            Error::Login(e) => e.exit_code(),
            Error::Exit(code, _) => *code,
        }
    }
}

fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            "; another program holds that address: stop it, or pick another port (port 0 lets the system choose)"
        }
        io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE, and a Unix socket needs a writable directory: pick a port of 1024 or more, or another path"
        }
        io::ErrorKind::AddrNotAvailable => {
            "; that address is not on this machine: use 127.0.0.1, ::1, or 0.0.0.0 for all interfaces"
        }
        _ => "",
    }
}

fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "; nothing is listening there: is the server running, on that port?",
        io::ErrorKind::TimedOut => "; no answer in time: check the address, or raise -w",
        io::ErrorKind::NotFound => "; no socket at that path: is the server running?",
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "; no route to that host: check the address and the network"
        }
        _ => "",
    }
}
