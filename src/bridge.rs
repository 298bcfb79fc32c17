//! Streams that a task carries: a TLS session or a WebSocket is read and
//! written by a [`Pump`] on one end of a local socket pair, and the service
//! gets the other end as a [`Stream::Bridged`]. A bridged stream is a real
//! socket, so readiness, zero-copy forwarding and half-close work on it as
//! on TCP, and no service knows what carries it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::net::UnixStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::conn::Stream;

/// What carries a bridged stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// A TLS session.
    Tls,
    /// A WebSocket, over TCP or TLS.
    WebSocket,
}

/// What a bridged [`Stream`] holds besides its socket: who the peer is,
/// whether it proved itself with a client certificate, and what carries it.
/// Dropping it tells the pump that its owner is gone.
#[derive(Debug)]
pub struct Link {
    _owner: DropGuard,
    peer: Option<SocketAddr>,
    client_verified: bool,
    carrier: Carrier,
}

impl Link {
    /// The TCP peer.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether the peer presented a certificate the server's
    /// `--tls-client-ca` verified.
    pub fn client_verified(&self) -> bool {
        self.client_verified
    }

    /// What carries the stream.
    pub fn carrier(&self) -> Carrier {
        self.carrier
    }
}

/// The task behind a bridged [`Stream`]: it moves bytes between the peer
/// and the stream's socket, and ends once both directions are done, or
/// soon after the stream is dropped. Nothing flows until it runs.
pub struct Pump(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for Pump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pump")
    }
}

/// What a connection's pump and its server tell each other: why the
/// server ended the connection, for a carrier that can say so (a
/// WebSocket's close frame: the server sets it before it drops the
/// service's stream, and the pump reads it when the stream ends); and that
/// the peer is alive though the service hears nothing (a WebSocket pong),
/// which counts against `--idle-timeout` like a byte.
#[derive(Clone, Debug, Default)]
pub struct Verdict(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    why: OnceLock<(u16, String)>,
    alive: AtomicU64,
}

impl Verdict {
    /// Records why (a WebSocket close code and a reason); the first call
    /// wins.
    pub fn set(&self, code: u16, reason: impl Into<String>) {
        let _ = self.0.why.set((code, reason.into()));
    }

    /// What was recorded, if anything.
    pub fn get(&self) -> Option<&(u16, String)> {
        self.0.why.get()
    }

    /// The peer showed it is alive (a pong).
    pub fn alive(&self) {
        self.0.alive.fetch_add(1, Ordering::Relaxed);
    }

    /// How often it did.
    pub fn signs_of_life(&self) -> u64 {
        self.0.alive.load(Ordering::Relaxed)
    }
}

/// Who is at the far end of a bridge, for its [`Link`], and where the
/// server's verdict on the connection will be.
#[derive(Clone, Debug)]
pub(crate) struct Far {
    pub peer: Option<SocketAddr>,
    pub client_verified: bool,
    pub carrier: Carrier,
    pub verdict: Verdict,
}

/// Makes the socket pair: the stream for the owner, and the pump that
/// `run` builds from our end and the token cancelled when the owner drops
/// the stream.
pub(crate) fn bridge<F, Fut>(far: Far, run: F) -> io::Result<(Stream, Pump)>
where
    F: FnOnce(UnixStream, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (ours, theirs) = UnixStream::pair()?;
    let owner = CancellationToken::new();
    let pump = Pump(Box::pin(run(ours, owner.clone())));
    let link =
        Link { _owner: owner.drop_guard(), peer: far.peer, client_verified: far.client_verified, carrier: far.carrier };
    Ok((Stream::Bridged(theirs, link), pump))
}
