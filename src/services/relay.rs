//! The relay, as two services on the server core: [`Relay`] forwards each
//! stream connection to an upstream of its own, both ways, half-close kept;
//! [`UdpRelay`] gives each client address a datagram session with an
//! upstream socket of its own, so replies find their way back. The core
//! applies `--allow`/`--deny`, `--max-conns` (connections or sessions), the
//! open-file budget, `--idle-timeout` and `--grace` to both.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use crate::endpoint::Endpoint;
use crate::forward::{Copy, forward};
use crate::server::{DEFAULT_SESSION_QUEUE, DatagramSession, Datagrams, TLS_DESCRIPTORS};
use crate::tls::ClientTls;
use crate::ws::WsConfig;
use crate::{Conn, Service};

/// Room for the largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// The relay as a stream service: each connection gets its own connection
/// to `to`.
#[derive(Debug)]
pub struct Relay {
    /// Where each connection is forwarded.
    pub to: Endpoint,
    /// Connect timeout for `to`.
    pub connect_timeout: Duration,
    /// How bytes move.
    pub copy: Copy,
    /// TLS settings for a `tls://` or `wss://` TO.
    pub tls: Option<ClientTls>,
    /// How a `ws://` or `wss://` TO carries bytes.
    pub ws: WsConfig,
}

impl Service for Relay {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let upstream = self
            .to
            .connect_ws(Some(self.connect_timeout), self.tls.as_ref(), self.ws.clone())
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
        forward(conn, upstream, self.copy).await.map(|_| ())
    }

    /// The client's socket, the upstream's (three over TLS or WebSocket), and a pipe of
    /// two ends per direction when splicing.
    fn descriptors(&self) -> usize {
        let bridged = matches!(self.to, Endpoint::Tls(_) | Endpoint::Ws { .. });
        let upstream = if bridged { 1 + TLS_DESCRIPTORS } else { 1 };
        let pipes = if self.copy == Copy::Splice { 4 } else { 0 };
        1 + upstream + pipes
    }
}

/// The relay as a datagram-session service: each client address gets an
/// upstream socket connected to `to`; the client's datagrams go out
/// through it, and what comes back on it goes to that client.
#[derive(Debug)]
pub struct UdpRelay {
    /// Where each session's datagrams go (a `udp://` endpoint).
    pub to: Endpoint,
    /// Datagrams from a client that may wait to be forwarded.
    pub queue: usize,
}

impl UdpRelay {
    /// A relay to `to` with the default queue.
    pub fn new(to: Endpoint) -> Self {
        UdpRelay { to, queue: DEFAULT_SESSION_QUEUE }
    }
}

thread_local! {
    /// Where replies are received before they are copied out: one buffer
    /// per thread rather than 64 KiB held by every idle session.
    static REPLY: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

impl DatagramSession for UdpRelay {
    async fn serve(&self, mut client: Datagrams) -> io::Result<()> {
        let upstream = self
            .to
            .connect_datagram()
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
        loop {
            tokio::select! {
                datagram = client.recv() => match datagram {
                    Some(d) => {
                        if let Err(e) = upstream.send(&d).await {
                            debug!("forward failed: {e}");
                        }
                    }
                    // The server has stopped: nothing more will come.
                    None => return Ok(()),
                },
                ready = upstream.readable() => {
                    ready?;
                    match reply(&upstream) {
                        Ok(Some(d)) => {
                            if let Err(e) = client.send(&d).await {
                                debug!("reply failed: {e}");
                            }
                        }
                        Ok(None) => {}
                        // An ICMP error for an earlier datagram (nothing
                        // listening upstream, say) surfaces here.
                        Err(e) => debug!("upstream receive failed: {e}"),
                    }
                }
            }
        }
    }

    /// The session's upstream socket.
    fn descriptors(&self) -> usize {
        1
    }

    fn queue(&self) -> usize {
        self.queue
    }
}

/// The datagram waiting on `upstream`, if one is: `None` when readiness
/// was stale.
fn reply(upstream: &tokio::net::UdpSocket) -> io::Result<Option<Bytes>> {
    REPLY.with_borrow_mut(|buf| match upstream.try_recv(buf) {
        Ok(n) => Ok(Some(Bytes::copy_from_slice(&buf[..n]))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    })
}
