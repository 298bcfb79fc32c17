//! Datagram sessions: a UDP listener whose peers each get an async handler
//! of their own, held to the limits a stream connection is — the ACL per
//! datagram, a place under `--max-conns` and its descriptors per session,
//! the idle timeout, the grace period at shutdown, a span per session.
//!
//! One dispatcher task reads the shared socket and hands each datagram to
//! its peer's session through a small bounded queue (dropping it when the
//! queue is full: a slow session never stalls the others); the first
//! datagram from a new peer opens its session. Sessions send through the
//! shared socket, so replies come from the address the peer wrote to.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    DEFAULT_IDLE_TIMEOUT, Descriptors, Kind, Limits, REFUSAL_LOG_INTERVAL, Refusals, Refused, Slot, Watched, supervise,
};
use crate::conn::Peer;

/// Default for [`DatagramSession::queue`]: datagrams from a peer that may
/// wait for its session. With the largest datagrams, 2 MiB a session at
/// most; a session that keeps up (a relay does) holds next to nothing.
pub const DEFAULT_SESSION_QUEUE: usize = 32;
/// Room for the largest UDP payload.
const RECV_BUFFER: usize = 65_536;

/// A datagram protocol with a session per peer address: one call per
/// session, given the peer's datagrams, run to its end.
///
/// Implement it with an `async fn`; the future must be `Send`. The server
/// owns the socket, the ACL, the limits, the session's span and its end
/// (idle timeout, shutdown); returning an error ends the session and logs
/// the error in its span.
pub trait DatagramSession: Send + Sync + 'static {
    /// Serves one peer's session.
    fn serve(&self, datagrams: Datagrams) -> impl Future<Output = io::Result<()>> + Send;

    /// Descriptors one session holds besides the shared socket (a relay:
    /// its upstream socket). The server reserves them before it opens the
    /// session, so the process never runs out; the default is none.
    fn descriptors(&self) -> usize {
        0
    }

    /// How many datagrams from the peer may wait for the session; more are
    /// dropped (and counted in its closing line).
    fn queue(&self) -> usize {
        DEFAULT_SESSION_QUEUE
    }
}

/// One peer's side of a datagram session: what it sent, and a way to
/// answer it.
#[derive(Debug)]
pub struct Datagrams {
    queue: mpsc::Receiver<Bytes>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    meter: Arc<SessionMeter>,
    shutdown: CancellationToken,
}

impl Datagrams {
    /// The next datagram from the peer; `None` once the server has stopped
    /// taking datagrams (shutdown) and the queue is empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.queue.recv().await
    }

    /// Sends `datagram` to the peer, from the server's socket.
    pub async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let n = self.socket.send_to(datagram, self.peer).await?;
        self.meter.sent(n);
        Ok(())
    }

    /// The peer's address (as its datagrams say: it is easily forged).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Cancelled when the server begins a graceful shutdown; the session
    /// also sees [`Datagrams::recv`] end.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }
}

/// A session's counts, for its closing line and idle detection.
#[derive(Debug, Default)]
pub(super) struct SessionMeter {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Datagrams dropped because the session's queue was full.
    dropped: AtomicU64,
}

impl SessionMeter {
    fn received(&self, n: usize) {
        self.datagrams_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn sent(&self, n: usize) {
        self.datagrams_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl Watched for SessionMeter {
    /// A datagram either way, even one dropped, shows the session in use.
    fn activity(&self) -> u64 {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        n(&self.datagrams_in).wrapping_add(n(&self.datagrams_out)).wrapping_add(n(&self.dropped))
    }

    fn opened(&self) {
        info!("session opened");
    }

    fn closed(&self, outcome: io::Result<&'static str>, duration_ms: u64) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (datagrams_in, datagrams_out, dropped) = (n(&self.datagrams_in), n(&self.datagrams_out), n(&self.dropped));
        let (bytes_in, bytes_out) = (n(&self.bytes_in), n(&self.bytes_out));
        // Info even for an error: a session's peer is easily forged, and
        // forged ones must not flood the log with warnings.
        match outcome {
            Ok(reason) => {
                info!(datagrams_in, datagrams_out, dropped, bytes_in, bytes_out, duration_ms, reason, "session closed")
            }
            Err(e) => info!(
                datagrams_in,
                datagrams_out,
                dropped,
                bytes_in,
                bytes_out,
                duration_ms,
                error = %e,
                "session closed"
            ),
        }
    }
}

/// What a dispatcher takes from its [`Server`](super::Server).
pub(super) struct Shared {
    pub limits: Limits,
    pub permits: Arc<Semaphore>,
    pub descriptors: Descriptors,
    /// Descriptors each session reserves.
    pub cost: usize,
    pub shutdown: CancellationToken,
    pub force_close: CancellationToken,
    pub tracker: TaskTracker,
    pub next_id: Arc<AtomicU64>,
}

/// A live session, as the dispatcher finds it.
struct Entry {
    /// Tells this session's entry from a later one for the same peer.
    id: u64,
    queue: mpsc::Sender<Bytes>,
    meter: Arc<SessionMeter>,
}

/// Sessions by peer. A session takes itself out when it ends.
type Table = Arc<Mutex<HashMap<SocketAddr, Entry>>>;

/// Reads the socket and hands each datagram to its peer's session.
pub(super) struct Dispatcher<D> {
    socket: Arc<UdpSocket>,
    name: &'static str,
    service: Arc<D>,
    shared: Shared,
    table: Table,
    refusals: Refusals,
    /// A session has no close of its own: with `--idle-timeout 0` it still
    /// expires, after the default.
    idle: Duration,
}

impl<D: DatagramSession> Dispatcher<D> {
    pub(super) fn new(socket: Arc<UdpSocket>, name: &'static str, service: Arc<D>, shared: Shared) -> Self {
        let idle = shared.limits.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
        Dispatcher {
            socket,
            name,
            service,
            shared,
            table: Arc::default(),
            refusals: Refusals::new(Kind::Datagrams),
            idle,
        }
    }

    /// Runs until shutdown, then lets every session see its queue end.
    pub(super) async fn run(self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut summary = tokio::time::interval(REFUSAL_LOG_INTERVAL);
        summary.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Warned once each time sessions run out, not per datagram.
        let mut full_warned = false;
        loop {
            let (n, peer) = tokio::select! {
                _ = self.shared.shutdown.cancelled() => break,
                _ = summary.tick() => {
                    self.refusals.summary();
                    continue;
                }
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    // ICMP errors from earlier sends surface here on Linux.
                    Err(e) => {
                        debug!("receive failed: {e}");
                        continue;
                    }
                },
            };
            if !self.shared.limits.acl.allows(peer.ip()) {
                self.refusals.refused(self.name, Peer::Ip(peer), Refused::Acl);
                continue;
            }
            let Some(datagram) = self.deliver(peer, Bytes::copy_from_slice(&buf[..n])) else { continue };
            match Slot::take(Some(&self.shared.permits), &self.shared.descriptors, self.shared.cost) {
                Ok(slot) => {
                    full_warned = false;
                    self.open(peer, slot, datagram);
                }
                Err(why) => {
                    if !full_warned {
                        warn!(
                            service = self.name,
                            "{}: datagrams from new peers are dropped until a session ends",
                            why.why(Kind::Datagrams)
                        );
                        full_warned = true;
                    }
                    self.refusals.refused(self.name, Peer::Ip(peer), why);
                }
            }
        }
        // Dropping the queues' senders ends each session's `recv` once it
        // has taken what was queued.
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.refusals.summary();
    }

    /// Queues `datagram` to `peer`'s session, or drops it when the queue is
    /// full; gives it back when `peer` has no live session.
    fn deliver(&self, peer: SocketAddr, datagram: Bytes) -> Option<Bytes> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = table.get(&peer) else { return Some(datagram) };
        let n = datagram.len();
        match entry.queue.try_send(datagram) {
            Ok(()) => entry.meter.received(n),
            Err(TrySendError::Full(_)) => entry.meter.dropped(),
            // Ended, and not yet out of the table: a new session replaces it.
            Err(TrySendError::Closed(datagram)) => return Some(datagram),
        }
        None
    }

    /// Opens `peer`'s session with its first datagram.
    fn open(&self, peer: SocketAddr, slot: Slot, first: Bytes) {
        let (tx, rx) = mpsc::channel(self.service.queue().max(1));
        let meter = Arc::new(SessionMeter::default());
        meter.received(first.len());
        // An empty queue of at least one place takes it.
        let _ = tx.try_send(first);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry { id, queue: tx, meter: meter.clone() };
        self.table.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, entry);
        // A root span, like a connection's, not a child of the dispatcher's.
        let span = info_span!(parent: None, "session", id, service = self.name, %peer);
        let datagrams = Datagrams {
            queue: rx,
            socket: self.socket.clone(),
            peer,
            meter: meter.clone(),
            shutdown: self.shared.shutdown.clone(),
        };
        let service = self.service.clone();
        let serve = self.shared.tracker.spawn(async move { service.serve(datagrams).await }.instrument(span.clone()));
        let task = supervise(serve, meter, Some(self.idle), self.shared.force_close.clone(), Default::default());
        let table = self.table.clone();
        self.shared.tracker.spawn(
            async move {
                task.await;
                // Out of the table before its place is given back, and only
                // if a newer session has not taken the peer's entry.
                let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
                if table.get(&peer).is_some_and(|e| e.id == id) {
                    table.remove(&peer);
                }
                drop(table);
                drop(slot);
            }
            .instrument(span),
        );
    }
}
