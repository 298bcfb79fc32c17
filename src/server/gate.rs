//! The accept step every stream listener shares: [`Server::serve_stream`]'s
//! accept loop and `sockit listen` alike go through a [`Gate`], so the
//! `--allow`/`--deny` check, the connection and descriptor limits, refusal
//! logging and the TLS handshake are written once.
//!
//! [`Server::serve_stream`]: super::Server::serve_stream

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{debug, error};

use super::{Background, Descriptors, Kind, REFUSAL_LOG_INTERVAL, Refusals, Server, Slot, is_fd_exhaustion};
use crate::acl::Acl;
use crate::bridge::Verdict;
use crate::conn::{Peer, Stream};
use crate::endpoint::Listener;
use crate::tls::ServerTls;
use crate::ws::WsServer;

/// How long accepting pauses when the process is out of descriptors:
/// trying again at once would spin.
const FD_EXHAUSTION_BACKOFF: Duration = Duration::from_millis(100);

/// The accept step of a stream listener: accept (backing off when the
/// process is out of descriptors), check the peer against `--allow` /
/// `--deny`, take a place under `--max-conns` and the descriptors the
/// connection costs. A refused peer is closed at once — one refused because
/// the server is full first gets the service's busy line — and refusals are
/// logged without flooding the log: the first in each interval with its
/// peer, the rest summed up. The TLS handshake is left to
/// [`Incoming::open`], so it runs in the connection's own task and a slow
/// handshake holds up no one else.
#[derive(Debug)]
pub struct Gate {
    listener: Listener,
    name: &'static str,
    acl: Acl,
    /// `--max-conns`; `None` counts no places.
    places: Option<Arc<Semaphore>>,
    descriptors: Descriptors,
    /// Descriptors each connection reserves.
    cost: usize,
    refusals: Arc<Refusals>,
    /// Sums the refusals up each interval, for a gate of its own; a
    /// [`Server`](super::Server)'s gates share a task that does it.
    summary: Option<Interval>,
    /// Where a TLS connection's pump runs: a server's gate runs it under
    /// the server's shutdown.
    background: Option<Background>,
}

/// A connection a [`Gate`] let in.
#[derive(Debug)]
pub struct Admitted {
    /// The connection, TLS handshake still to run.
    pub incoming: Incoming,
    /// Who connected.
    pub peer: Peer,
    /// Its place and descriptors: hold it as long as the connection.
    pub slot: Slot,
}

/// An accepted stream whose handshake, on a TLS or WebSocket listener, is
/// still to run.
#[derive(Debug)]
pub struct Incoming {
    stream: Stream,
    /// What the handshake needs; `None` on a plain listener.
    upgrade: Option<Box<Upgrade>>,
}

#[derive(Debug)]
struct Upgrade {
    tls: Option<Arc<ServerTls>>,
    ws: Option<Arc<WsServer>>,
    background: Option<Background>,
    verdict: Verdict,
}

impl Incoming {
    /// Where the server will say why it ended the connection, for a
    /// WebSocket's close frame.
    pub fn with_verdict(mut self, verdict: Verdict) -> Self {
        if let Some(u) = &mut self.upgrade {
            u.verdict = verdict;
        }
        self
    }

    /// The stream a service reads and writes: on a TLS listener once the
    /// handshake is done (within the TLS handshake timeout), on a WebSocket
    /// listener once upgraded. `None` when the connection was a plain HTTP
    /// request that has had its answer (`/health`, a page).
    pub async fn open(self) -> io::Result<Option<Stream>> {
        let (tcp, u) = match (self.stream, self.upgrade) {
            (Stream::Tcp(tcp), Some(u)) => (tcp, *u),
            (stream, _) => return Ok(Some(stream)),
        };
        let peer = tcp.peer_addr().ok();
        let bridged = match (u.tls, u.ws) {
            (Some(tls), None) => Some(tls.handshake(tcp).await?),
            (Some(tls), Some(ws)) => {
                let (session, verified) = tls.handshake_raw(tcp).await?;
                ws.accept(session, crate::ws::far(peer, verified, u.verdict)).await?
            }
            (None, Some(ws)) => ws.accept(tcp, crate::ws::far(peer, false, u.verdict)).await?,
            (None, None) => return Ok(Some(Stream::Tcp(tcp))),
        };
        let Some((stream, pump)) = bridged else { return Ok(None) };
        match u.background {
            Some(background) => background.spawn(pump),
            None => drop(tokio::spawn(pump)),
        }
        Ok(Some(stream))
    }

    /// The stream at once when there is no handshake to run; else `self`
    /// back, for [`Incoming::open`].
    pub fn into_plain(self) -> Result<Stream, Incoming> {
        match self.upgrade {
            None => Ok(self.stream),
            Some(_) => Err(self),
        }
    }
}

impl Gate {
    /// A gate of its own, for a listener that serves one peer at a time
    /// (`sockit listen`): the ACL applies, places and descriptors are not
    /// counted, and the gate sums its refusals up itself while it accepts.
    pub fn new(listener: Listener, name: &'static str, acl: Acl) -> Self {
        let mut summary = tokio::time::interval(REFUSAL_LOG_INTERVAL);
        summary.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Gate {
            listener,
            name,
            acl,
            places: None,
            descriptors: Descriptors::unlimited(),
            cost: 0,
            refusals: Arc::new(Refusals::new(Kind::Connections)),
            summary: Some(summary),
            background: None,
        }
    }

    /// A server's gate: its ACL, places, descriptors (`cost` for each
    /// connection) and refusal log, with TLS pumps under its shutdown.
    pub(super) fn for_server(listener: Listener, name: &'static str, server: &Server, cost: usize) -> Self {
        Gate {
            listener,
            name,
            acl: server.limits.acl.clone(),
            places: Some(server.permits.clone()),
            descriptors: server.descriptors.clone(),
            cost,
            refusals: server.refusals.clone(),
            summary: None,
            background: Some(server.background()),
        }
    }

    /// The listener it accepts on.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// The service name it logs refusals under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The descriptor budget connections draw on.
    pub fn descriptors(&self) -> Descriptors {
        self.descriptors.clone()
    }

    /// Waits for the next connection the limits admit; `busy` is written to
    /// one refused because the server is full (plain listeners only: on TLS
    /// it would be garbage to the client). Accept errors are logged and
    /// skipped. Cancel-safe: a connection is only taken in its last,
    /// synchronous step.
    pub async fn accept(&mut self, busy: Option<&[u8]>) -> Admitted {
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                () = tick(&mut self.summary) => {
                    self.refusals.summary();
                    continue;
                }
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) if is_fd_exhaustion(&e) => {
                    error!(service = self.name, "accept failed: {e}; backing off (raise the open-file limit)");
                    tokio::time::sleep(FD_EXHAUSTION_BACKOFF).await;
                    continue;
                }
                Err(e) => {
                    debug!(service = self.name, "accept failed: {e}");
                    continue;
                }
            };
            if !self.acl.admits(peer) {
                self.refusals.refused(self.name, peer, super::Refused::Acl);
                continue;
            }
            match Slot::take(self.places.as_ref(), &self.descriptors, self.cost) {
                Ok(slot) => {
                    let (tls, ws) = (self.listener.tls().cloned(), self.listener.ws().cloned());
                    let upgrade = (tls.is_some() || ws.is_some()).then(|| {
                        Box::new(Upgrade { tls, ws, background: self.background.clone(), verdict: Verdict::default() })
                    });
                    let incoming = Incoming { stream, upgrade };
                    return Admitted { incoming, peer, slot };
                }
                Err(why) => {
                    self.refusals.refused(self.name, peer, why);
                    // A fresh socket's send buffer is empty: this does not block.
                    // On TLS the line would be garbage to the client; on a
                    // WebSocket it goes as an HTTP 503.
                    match (busy, self.listener.tls(), self.listener.ws()) {
                        (Some(msg), None, None) => drop(stream.try_write(msg)),
                        (Some(msg), None, Some(_)) => drop(stream.try_write(&crate::ws::busy_answer(msg))),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The next tick of `interval`; never, without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
