//! Endpoints: one way to write every address, one parser, one `Display`, and
//! the code that binds and connects each kind.
//!
//! | written as | kind |
//! |---|---|
//! | `HOST:PORT`, `[::1]:PORT`, `tcp://HOST:PORT` | TCP |
//! | `udp://HOST:PORT` | UDP |
//! | `unix:///path/to.sock` | Unix stream socket |
//! | `tls://HOST:PORT` | TLS over TCP |
//! | `ws://HOST[:PORT][/PATH]`, `wss://…` | WebSocket, over TCP or TLS ([`crate::ws`]) |
//!
//! A host is an IP address or a name that resolves (`localhost`); an empty
//! host (`:7007`) means 127.0.0.1, since servers bind to loopback unless told
//! otherwise.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

use crate::conn::{Peer, Stream};
use crate::error::{Error, Result};
use crate::tls::{ClientTls, ServerTls, Verify};
use crate::ws::{self, WsConfig, WsServer};

/// The listen backlog we ask for. The kernel caps it at `net.core.somaxconn`;
/// the usual default of 128 lets a burst of connects overflow the accept
/// queue, leaving clients that believe they are connected but never served.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Where to listen or connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(HostPort),
    /// A UDP address.
    Udp(HostPort),
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// TLS over TCP.
    Tls(HostPort),
    /// A WebSocket (`ws://`, or `wss://` over TLS when `tls`), upgraded on
    /// `path`.
    Ws {
        /// `wss://`: over TLS.
        tls: bool,
        /// Where.
        at: HostPort,
        /// The request path, from `/`.
        path: String,
    },
}

/// A host (IP address or name) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// An IP address (IPv6 without brackets) or a host name.
    pub host: String,
    /// The port; 0 asks the system to choose when binding.
    pub port: u16,
}

/// An endpoint string that could not be parsed; its message says how to
/// write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint '{input}': {reason}")]
pub struct ParseEndpointError {
    input: String,
    reason: String,
}

impl ParseEndpointError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        ParseEndpointError { input: input.to_string(), reason: reason.into() }
    }
}

const FORMS: &str = "HOST:PORT, [IPv6]:PORT, tcp://HOST:PORT, udp://HOST:PORT, unix:///path/to.sock, tls://HOST:PORT or ws://HOST:PORT/PATH";

impl FromStr for Endpoint {
    type Err = ParseEndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((scheme, rest)) = s.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "tcp" => Ok(Endpoint::Tcp(HostPort::parse(rest, s)?)),
                "udp" => Ok(Endpoint::Udp(HostPort::parse(rest, s)?)),
                "tls" => Ok(Endpoint::Tls(HostPort::parse(rest, s)?)),
                "ws" | "wss" => {
                    let tls = scheme.eq_ignore_ascii_case("wss");
                    let (authority, path) = match rest.find('/') {
                        Some(at) => (&rest[..at], &rest[at..]),
                        None => (rest, "/"),
                    };
                    if !path.bytes().all(|b| b.is_ascii_graphic()) || path.len() > 1024 {
                        return Err(ParseEndpointError::new(s, "the path must be printable ASCII, at most 1024 bytes"));
                    }
                    let has_port = authority.rsplit_once(']').map_or(authority, |(_, p)| p).contains(':');
                    let at = if has_port || authority.is_empty() {
                        HostPort::parse(authority, s)?
                    } else {
                        HostPort::parse(&format!("{authority}:{}", if tls { 443 } else { 80 }), s)?
                    };
                    Ok(Endpoint::Ws { tls, at, path: path.to_string() })
                }
                "unix" if rest.is_empty() => {
                    Err(ParseEndpointError::new(s, "missing path: write unix:///path/to.sock"))
                }
                "unix" => Ok(Endpoint::Unix(PathBuf::from(rest))),
                _ => Err(ParseEndpointError::new(
                    s,
                    format!("unknown scheme '{scheme}://': use tcp://, udp://, unix://, tls://, ws:// or wss://"),
                )),
            };
        }
        if s.starts_with('/') || s.starts_with("./") {
            return Err(ParseEndpointError::new(s, format!("a Unix socket is written unix://{s}")));
        }
        Ok(Endpoint::Tcp(HostPort::parse(s, s)?))
    }
}

impl HostPort {
    /// Parses `HOST:PORT` or `[IPv6]:PORT`; `whole` is the full input, for
    /// the error message.
    fn parse(s: &str, whole: &str) -> Result<Self, ParseEndpointError> {
        let err = |reason: String| ParseEndpointError::new(whole, reason);
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| err("'[' without ']': write [::1]:PORT".into()))?;
            host.parse::<Ipv6Addr>().map_err(|_| err(format!("'{host}' is not an IPv6 address")))?;
            let port = after.strip_prefix(':').ok_or_else(|| err(format!("missing port: write [{host}]:PORT")))?;
            (host, port)
        } else {
            match s.rsplit_once(':') {
                None if s.is_empty() => return Err(err(format!("empty address: write {FORMS}"))),
                None => return Err(err(format!("missing port: write HOST:PORT, e.g. {s}:7007"))),
                Some((h, p)) if h.contains(':') => {
                    return Err(err(format!("an IPv6 address goes in brackets: [{h}]:{p}")));
                }
                Some(("", p)) => ("127.0.0.1", p),
                Some(hp) => hp,
            }
        };
        if port.is_empty() {
            return Err(err("missing port after ':'".into()));
        }
        let port = port.parse::<u16>().map_err(|_| err(format!("invalid port '{port}': a number from 0 to 65535")))?;
        let valid_name = |h: &str| {
            h.parse::<IpAddr>().is_ok()
                || h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        };
        if !valid_name(host) {
            return Err(err(format!("invalid host '{host}'")));
        }
        Ok(HostPort { host: host.to_string(), port })
    }

    /// Resolves to socket addresses (no lookup for an IP address).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let resolve_err = |cause| Error::Resolve { host: self.host.clone(), cause };
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((self.host.as_str(), self.port)).await.map_err(resolve_err)?.collect();
        if addrs.is_empty() {
            return Err(resolve_err(io::Error::new(io::ErrorKind::NotFound, "no addresses")));
        }
        Ok(addrs)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort { host: addr.ip().to_string(), port: addr.port() }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(hp) => write!(f, "tcp://{hp}"),
            Endpoint::Udp(hp) => write!(f, "udp://{hp}"),
            Endpoint::Tls(hp) => write!(f, "tls://{hp}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Ws { tls, at, path } => write!(f, "{}://{at}{path}", if *tls { "wss" } else { "ws" }),
        }
    }
}

/// A bound stream listener: TCP, Unix or TLS. Accepting yields a [`Stream`],
/// so a service cannot tell them apart.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A TCP listener whose connections speak TLS: [`Listener::accept`]
    /// yields the raw TCP stream, for [`ServerTls::accept`] to run the
    /// handshake in the connection's own task.
    Tls(TcpListener, Arc<ServerTls>),
    /// A Unix listener; the socket file is removed when it is dropped.
    Unix(UnixListener, UnixSocketFile),
    /// A TCP listener whose connections are WebSockets (over TLS with a
    /// certificate): [`Listener::accept`] yields the raw TCP stream, and
    /// the upgrade runs in the connection's own task.
    Ws(TcpListener, Option<Arc<ServerTls>>, Arc<WsServer>),
}

/// Removes a Unix socket file when the listener that made it goes away.
#[derive(Debug)]
pub struct UnixSocketFile(PathBuf);

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// Accepts one connection. TCP connections get TCP_NODELAY: Nagle's
    /// algorithm plus delayed ACKs adds tens of milliseconds to every
    /// request–reply exchange.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) | Listener::Tls(l, _) | Listener::Ws(l, _, _) => {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::Ip(addr)))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), Peer::Unix))
            }
        }
    }

    /// The endpoint actually bound: with port 0, it names the real port.
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        match self {
            Listener::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?.into())),
            Listener::Tls(l, _) => Ok(Endpoint::Tls(l.local_addr()?.into())),
            Listener::Unix(_, file) => Ok(Endpoint::Unix(file.0.clone())),
            Listener::Ws(l, tls, ws) => {
                Ok(Endpoint::Ws { tls: tls.is_some(), at: l.local_addr()?.into(), path: ws.path.clone() })
            }
        }
    }

    /// The TLS side, for a TLS listener.
    pub fn tls(&self) -> Option<&Arc<ServerTls>> {
        match self {
            Listener::Tls(_, tls) | Listener::Ws(_, Some(tls), _) => Some(tls),
            _ => None,
        }
    }

    /// The WebSocket side, for a WebSocket listener.
    pub fn ws(&self) -> Option<&Arc<WsServer>> {
        match self {
            Listener::Ws(_, _, ws) => Some(ws),
            _ => None,
        }
    }

    /// Whether its connections are carried by a pump (TLS, WebSocket), at
    /// the cost of a socket pair each.
    pub fn is_bridged(&self) -> bool {
        matches!(self, Listener::Tls(..) | Listener::Ws(..))
    }

    /// Sets how a WebSocket listener serves (line framing, origins, pages);
    /// other listeners ignore it. Its path stays the endpoint's.
    pub fn configure_ws(&mut self, f: impl FnOnce(&mut WsServer)) {
        if let Listener::Ws(_, _, ws) = self {
            f(Arc::make_mut(ws));
        }
    }
}

impl Endpoint {
    /// Binds a stream listener (TCP or Unix) with a large backlog and
    /// SO_REUSEADDR, so a restarted server does not wait out TIME_WAIT.
    pub async fn bind_stream(&self) -> Result<Listener> {
        self.bind_listener(None).await
    }

    /// Binds a stream listener; a `tls://` endpoint serves with `tls`, which
    /// it needs.
    pub async fn bind_listener(&self, tls: Option<Arc<ServerTls>>) -> Result<Listener> {
        let bind_err = |cause| Error::Bind { endpoint: self.clone(), cause };
        match self {
            Endpoint::Tcp(hp) => {
                let addr = hp.resolve().await?[0];
                bind_tcp(addr).map(Listener::Tcp).map_err(bind_err)
            }
            Endpoint::Tls(hp) => {
                let Some(tls) = tls else {
                    return Err(self.unsupported("a TLS listener needs a certificate; this command has none to give"));
                };
                let addr = hp.resolve().await?[0];
                bind_tcp(addr).map(|l| Listener::Tls(l, tls)).map_err(bind_err)
            }
            Endpoint::Unix(path) => {
                remove_stale_socket(path).await.map_err(bind_err)?;
                let l = UnixListener::bind(path).map_err(bind_err)?;
                Ok(Listener::Unix(l, UnixSocketFile(path.clone())))
            }
            Endpoint::Ws { tls: secure, at, path } => {
                let tls = match (secure, tls) {
                    (true, None) => {
                        return Err(
                            self.unsupported("a wss:// listener needs a certificate; this command has none to give")
                        );
                    }
                    (true, tls) => tls,
                    (false, _) => None,
                };
                let addr = at.resolve().await?[0];
                bind_tcp(addr).map(|l| Listener::Ws(l, tls, Arc::new(WsServer::new(path)))).map_err(bind_err)
            }
            Endpoint::Udp(_) => Err(self.unsupported("UDP carries datagrams, not streams; use tcp://")),
        }
    }

    /// Binds a UDP socket.
    pub async fn bind_datagram(&self) -> Result<UdpSocket> {
        let Endpoint::Udp(hp) = self else {
            return Err(self.unsupported("a datagram service needs a udp:// endpoint"));
        };
        let addr = hp.resolve().await?[0];
        UdpSocket::bind(addr).await.map_err(|cause| Error::Bind { endpoint: self.clone(), cause })
    }

    /// Connects a stream (TCP, Unix, or TLS verified against the system's
    /// roots), trying each resolved address in turn, all within `timeout` if
    /// one is given.
    pub async fn connect(&self, timeout: Option<Duration>) -> Result<Stream> {
        self.connect_with(timeout, None).await
    }

    /// Connects as [`Endpoint::connect`] does; a `tls://` endpoint uses
    /// `tls` (the system's roots when `None`).
    pub async fn connect_with(&self, timeout: Option<Duration>, tls: Option<&ClientTls>) -> Result<Stream> {
        self.connect_ws(timeout, tls, WsConfig::default()).await
    }

    /// Connects as [`Endpoint::connect_with`] does; a `ws://` or `wss://`
    /// endpoint carries bytes as `ws` says.
    pub async fn connect_ws(&self, timeout: Option<Duration>, tls: Option<&ClientTls>, ws: WsConfig) -> Result<Stream> {
        let secure = matches!(self, Endpoint::Tls(_) | Endpoint::Ws { tls: true, .. });
        let system = match tls {
            None if secure => Some(ClientTls::new(&Verify::System, None)?),
            _ => None,
        };
        let client_tls = || tls.or(system.as_ref()).ok_or_else(|| self.unsupported("no TLS settings"));
        let attempt = async {
            match self {
                Endpoint::Tcp(hp) => self.connect_tcp(hp).await.map(Stream::Tcp),
                Endpoint::Tls(hp) => {
                    let tls = client_tls()?;
                    let tcp = self.connect_tcp(hp).await?;
                    tls.connect(tcp, &hp.host).await.map_err(|e| self.tls_err(e))
                }
                Endpoint::Ws { tls: secure, at, path } => {
                    let tcp = self.connect_tcp(at).await?;
                    let far = ws::far(tcp.peer_addr().ok(), false, Default::default());
                    let host = at.to_string();
                    let bridged = if *secure {
                        let tls = client_tls()?.connect_raw(tcp, &at.host).await.map_err(|e| self.tls_err(e))?;
                        ws::connect(tls, &host, path, ws, far).await
                    } else {
                        ws::connect(tcp, &host, path, ws, far).await
                    };
                    let (stream, pump) = bridged.map_err(|e| self.connect_err(e))?;
                    tokio::spawn(pump);
                    Ok(stream)
                }
                Endpoint::Unix(path) => {
                    UnixStream::connect(path).await.map(Stream::Unix).map_err(|e| self.connect_err(e))
                }
                Endpoint::Udp(_) => Err(self.unsupported("UDP has no connections; use a datagram socket")),
            }
        };
        with_timeout(timeout, attempt, || self.connect_err(io::ErrorKind::TimedOut.into())).await
    }

    async fn connect_tcp(&self, hp: &HostPort) -> Result<TcpStream> {
        let mut last = None;
        for addr in hp.resolve().await? {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(self.connect_err(last.unwrap_or_else(|| io::ErrorKind::NotFound.into())))
    }

    /// Opens a UDP socket connected to this endpoint (datagrams go there, and
    /// only its replies are received).
    pub async fn connect_datagram(&self) -> Result<UdpSocket> {
        let Endpoint::Udp(hp) = self else {
            return Err(self.unsupported("a datagram socket needs a udp:// endpoint"));
        };
        let addr = hp.resolve().await?[0];
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(local).await.map_err(|e| self.connect_err(e))?;
        sock.connect(addr).await.map_err(|e| self.connect_err(e))?;
        Ok(sock)
    }

    /// Where a `tls://` or `wss://` endpoint's TLS session goes: the
    /// address its certificate must name.
    pub fn tls_at(&self) -> Option<&HostPort> {
        match self {
            Endpoint::Tls(hp) | Endpoint::Ws { tls: true, at: hp, .. } => Some(hp),
            _ => None,
        }
    }

    /// Whether this endpoint carries datagrams.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Endpoint::Udp(_))
    }

    fn tls_err(&self, e: io::Error) -> Error {
        Error::Tls { endpoint: self.clone(), cause: e.to_string() }
    }

    fn connect_err(&self, cause: io::Error) -> Error {
        Error::Connect { endpoint: self.clone(), cause }
    }

    fn unsupported(&self, reason: &str) -> Error {
        Error::Unsupported { endpoint: self.clone(), reason: reason.to_string() }
    }
}

/// Runs `fut` under an optional timeout; `on_timeout` builds the error.
pub(crate) async fn with_timeout<T>(
    timeout: Option<Duration>,
    fut: impl Future<Output = Result<T>>,
    on_timeout: impl FnOnce() -> Error,
) -> Result<T> {
    match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| Err(on_timeout())),
        None => fut.await,
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// A socket file left by a server that died is removed; one that a live
/// server answers on is reported as in use.
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => Err(io::ErrorKind::AddrInUse.into()),
            Err(_) => std::fs::remove_file(path),
        },
        Ok(_) => Err(io::Error::new(io::ErrorKind::AlreadyExists, "a file that is not a socket is in the way")),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort { host: host.into(), port }
    }

    #[test]
    fn parses_every_form() {
        let cases = [
            ("localhost:7007", Endpoint::Tcp(hp("localhost", 7007))),
            ("tcp://127.0.0.1:0", Endpoint::Tcp(hp("127.0.0.1", 0))),
            ("[::1]:80", Endpoint::Tcp(hp("::1", 80))),
            ("udp://[::1]:53", Endpoint::Udp(hp("::1", 53))),
            ("tls://example.com:443", Endpoint::Tls(hp("example.com", 443))),
            ("unix:///tmp/e.sock", Endpoint::Unix("/tmp/e.sock".into())),
            (":7007", Endpoint::Tcp(hp("127.0.0.1", 7007))),
            ("UDP://1.2.3.4:9", Endpoint::Udp(hp("1.2.3.4", 9))),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Endpoint>().unwrap(), want, "{input}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["tcp://127.0.0.1:7007", "udp://[::1]:0", "unix:///tmp/e.sock", "tls://h:1"] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn errors_say_how_to_write_it() {
        let cases = [
            ("localhost", "missing port: write HOST:PORT"),
            ("::1:80", "in brackets: [::1]:80"),
            ("host:99999", "invalid port '99999'"),
            ("ftp://h:1", "unknown scheme 'ftp://'"),
            ("unix://", "missing path"),
            ("/tmp/x.sock", "unix:///tmp/x.sock"),
            ("[::1", "without ']'"),
            ("[nothost]:1", "not an IPv6 address"),
            ("", "empty address"),
            ("h:", "missing port after ':'"),
            ("bad host:1", "invalid host"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
