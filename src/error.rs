//! The library's errors, each naming the address or input it is about and
//! what to do, and the stable exit codes the binary maps them to.

use std::io;

use crate::endpoint::{Endpoint, ParseEndpointError};

/// The exit codes of the `sockit` binary: one variant per code, each with
/// the line the README's tables say. They are part of the interface:
/// scripts rely on them, so a number never changes meaning. (`sockit exec`
/// exits with the remote command's status instead, unless it failed to
/// connect or log in; see [`crate::services::exec::wire::Exit::status`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Any failure without a more specific code (`sockit send`: something
    /// was not stored).
    Failure = 1,
    /// The command line was wrong (clap's own code).
    Usage = 2,
    /// Could not connect: refused, unreachable, timed out, name not found.
    Connect = 3,
    /// Could not listen: address in use, permission denied, not local.
    Bind = 4,
    /// The TLS handshake failed: certificate not trusted, fingerprint
    /// mismatch, or the peer does not speak TLS.
    Tls = 5,
    /// The server refused to admit us: wrong or missing token, or no
    /// acceptable client certificate.
    Auth = 6,
    /// A host name did not resolve (`sockit get`; elsewhere it is
    /// [`ExitCode::Connect`]).
    Dns = 7,
    /// No answer in time (`sockit get`: --timeout, --connect-timeout).
    Timeout = 8,
    /// The server answered with an HTTP error status (`sockit get --fail`).
    Http = 9,
    /// Redirects went past --max-redirects, or in a loop.
    Redirects = 10,
    /// The transfer broke off: a body shorter than announced, a connection
    /// lost mid-way, or a file that could not be written.
    Transfer = 11,
    /// Interrupted by Ctrl-C or SIGTERM before the work was done
    /// (`sockit send`, `sockit get`): 128 + SIGINT, as a shell says.
    Interrupted = 130,
}

impl ExitCode {
    /// Every code, in order: what the README's exit-code table lists.
    pub const ALL: [ExitCode; 13] = [
        ExitCode::Ok,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::Connect,
        ExitCode::Bind,
        ExitCode::Tls,
        ExitCode::Auth,
        ExitCode::Dns,
        ExitCode::Timeout,
        ExitCode::Http,
        ExitCode::Redirects,
        ExitCode::Transfer,
        ExitCode::Interrupted,
    ];

    /// The number the process exits with.
    ///
    /// ```
    /// assert_eq!(sockit::error::ExitCode::Auth.code(), 6);
    /// ```
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The code with this number, if it is one of ours.
    pub fn from_code(code: i32) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl From<ExitCode> for i32 {
    fn from(c: ExitCode) -> i32 {
        c.code()
    }
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
    /// A failure with its own exit code.
    #[error("{1}")]
    Exit(ExitCode, String),
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
    /// The exit code this error maps to.
    pub fn exit(&self) -> ExitCode {
        match self {
            Error::Parse(_) | Error::Usage(_) | Error::Unsupported { .. } => ExitCode::Usage,
            Error::Resolve { .. } | Error::Connect { .. } => ExitCode::Connect,
            Error::Bind { .. } => ExitCode::Bind,
            Error::Tls { .. } => ExitCode::Tls,
            Error::Auth(_) => ExitCode::Auth,
            Error::Login(e) => e.exit(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_stable_and_distinct() {
        let numbers: Vec<i32> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 130]);
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ExitCode::from_code(12), None);
    }
}
