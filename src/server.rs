//! The server core: accept loops, one task per connection or datagram
//! session, the limits every service shares, per-connection spans and
//! graceful shutdown.
//!
//! A service only speaks its protocol. Everything else lives here, once:
//! `--max-conns` (a connection past it is refused at once, after the
//! service's busy line), the open-file limit (each connection reserves the
//! descriptors it costs — one socket, three over TLS, six for a spliced
//! relay — so descriptors never run out under load and a client past the
//! limit is refused like one past `--max-conns`), `--idle-timeout` (no byte either way for that long
//! closes the connection), the `--max-line` limit handed to line framing, and
//! shutdown — on [`Server::run_until`]'s signal, listeners close, services see
//! their [`Conn::shutdown_token`] cancelled, and connections still open after
//! `--grace` are closed.
//!
//! Three kinds of listener share it: streams ([`Service`], through the one
//! accept step of [`Gate`], which `sockit listen` uses too), stateless
//! datagrams ([`DatagramService`]: a reply per datagram), and datagram
//! sessions ([`DatagramSession`]: an async handler per peer, held to the
//! same `--allow`/`--deny`, `--max-conns`, descriptors, idle timeout and
//! grace as a connection). Each prints its `listening on` line once ready;
//! background work goes under the same shutdown with [`Server::spawn`].

use std::future::{Future, pending};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::acl::Acl;
use crate::bridge::Verdict;
use crate::conn::{Conn, Meter};
use crate::endpoint::{Endpoint, Listener};
use crate::logging;

mod admission;
mod gate;
mod sessions;

pub use admission::{Descriptors, Reserved, Slot};
use admission::{Kind, Refusals, Refused};
pub use gate::{Admitted, Gate, Incoming};
pub use sessions::{DEFAULT_SESSION_QUEUE, DatagramSession, Datagrams};

/// Limits every connection of a server is held to. Each has a flag of the
/// same name in `sockit serve`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections (and datagram sessions) open at once; more are refused
    /// (`--max-conns`).
    pub max_conns: usize,
    /// Close a connection after this long with no byte either way; `None`
    /// for never (`--idle-timeout`). A datagram session has no close of its
    /// own, so it expires after [`DEFAULT_IDLE_TIMEOUT`] even with `None`.
    pub idle_timeout: Option<Duration>,
    /// How long live connections may finish after shutdown begins (`--grace`).
    pub grace: Duration,
    /// Which peer addresses may connect (`--allow`, `--deny`).
    pub acl: Acl,
}

/// Default for [`Limits::max_conns`].
pub const DEFAULT_MAX_CONNS: usize = 10_000;
/// Default for [`Limits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for [`Limits::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Descriptors kept back from connections: listeners, logs, the Redis
/// link, the files service's directories, a command's pipes.
pub const RESERVED_DESCRIPTORS: usize = 64;
/// Descriptors a TLS or WebSocket connection costs besides its socket: the
/// local socket pair its pump carries it through.
pub const TLS_DESCRIPTORS: usize = 2;
/// Refused connections are logged one per this interval with their peer;
/// the rest are counted and summed up once per interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: DEFAULT_MAX_CONNS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            grace: DEFAULT_GRACE,
            acl: Acl::default(),
        }
    }
}

/// A stream protocol: one call per connection, run to its end.
///
/// Implement it with an `async fn`; the future must be `Send`. Returning an
/// error ends the connection and logs the error in its span; it never stops
/// the server.
pub trait Service: Send + Sync + 'static {
    /// Serves one connection.
    fn serve(&self, conn: Conn) -> impl Future<Output = io::Result<()>> + Send;

    /// Written to a connection refused because the server is full, before it
    /// is closed. Line services return a line; the default is none.
    fn busy_message(&self) -> Option<&[u8]> {
        None
    }

    /// The most descriptors one connection holds at once, its own socket
    /// included (a relay also holds its upstream and splice pipes). The
    /// server reserves them before it serves the connection, so the
    /// process never runs out; the default is the socket alone.
    fn descriptors(&self) -> usize {
        1
    }

    /// For a line service, its longest line: on a WebSocket listener each
    /// line then goes out as one message, and a message without a newline
    /// is read as one line. The default, `None`, carries bytes as they
    /// come.
    fn line_limit(&self) -> Option<usize> {
        None
    }
}

/// A datagram protocol: each datagram may get one reply to its sender.
pub trait DatagramService: Send + Sync + 'static {
    /// Handles `datagram` from `peer`; write a reply into `reply` (it arrives
    /// empty) and return true to send it.
    fn reply(&self, datagram: &[u8], peer: SocketAddr, reply: &mut Vec<u8>) -> bool;
}

/// Runs services on listeners until told to stop.
#[derive(Debug)]
pub struct Server {
    limits: Limits,
    permits: Arc<Semaphore>,
    /// The open-file limit less [`RESERVED_DESCRIPTORS`].
    descriptors: Descriptors,
    budget: usize,
    open_files: Option<usize>,
    refusals: Arc<Refusals>,
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: connections still open close.
    force_close: CancellationToken,
    tracker: TaskTracker,
    next_id: Arc<AtomicU64>,
}

impl Server {
    /// A server with these limits; it serves nothing until given listeners.
    pub fn new(limits: Limits) -> Self {
        let open_files = crate::sys::open_file_limit();
        let budget = open_files.map_or(Semaphore::MAX_PERMITS, |n| n.saturating_sub(RESERVED_DESCRIPTORS));
        Server {
            permits: Arc::new(Semaphore::new(limits.max_conns.min(Semaphore::MAX_PERMITS))),
            descriptors: Descriptors(Some(Arc::new(Semaphore::new(budget.min(Semaphore::MAX_PERMITS))))),
            budget,
            open_files,
            refusals: Arc::new(Refusals::new(Kind::Connections)),
            limits,
            shutdown: CancellationToken::new(),
            force_close: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The token that starts shutdown; cancel it to stop the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Connections (and datagram sessions) open right now.
    pub fn open_connections(&self) -> usize {
        self.limits.max_conns.saturating_sub(self.permits.available_permits())
    }

    /// Serves `service` on `listener` (named `name` in logs) in a background
    /// task, until shutdown. Prints the `listening on <endpoint> (<name>)`
    /// status line and returns the endpoint bound (with port 0, the real
    /// port).
    pub fn serve_stream<S: Service>(
        &self,
        mut listener: Listener,
        name: &'static str,
        service: Arc<S>,
    ) -> io::Result<Endpoint> {
        if let Some(max) = service.line_limit() {
            listener.configure_ws(|w| {
                // Room for the line's own `\r\n`.
                (w.config.lines, w.config.max_message, w.config.limit_name) = (true, max + 2, "--max-line");
            });
        }
        let local = listener.local_endpoint()?;
        let cost = service.descriptors() + if listener.is_bridged() { TLS_DESCRIPTORS } else { 0 };
        self.warn_fit(name, cost, "connections", "connection");
        self.spawn_refusal_log();
        let gate = Gate::for_server(listener, name, self, cost);
        let acceptor = Acceptor {
            gate,
            service,
            limits: self.limits.clone(),
            shutdown: self.shutdown.clone(),
            force_close: self.force_close.clone(),
            tracker: self.tracker.clone(),
            next_id: self.next_id.clone(),
        };
        self.tracker.spawn(acceptor.run());
        logging::listening(&local, name);
        Ok(local)
    }

    /// Serves `service` on a UDP socket in background tasks, one per core,
    /// until shutdown: each datagram may get a reply, and no state is kept
    /// per peer. Prints the `listening on` line and returns the endpoint.
    pub fn serve_datagram<D: DatagramService>(
        &self,
        socket: UdpSocket,
        name: &'static str,
        service: Arc<D>,
    ) -> io::Result<Endpoint> {
        let local = Endpoint::Udp(socket.local_addr()?.into());
        let socket = Arc::new(socket);
        let acl = Arc::new(self.limits.acl.clone());
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        for _ in 0..workers {
            let (socket, service, token, acl) = (socket.clone(), service.clone(), self.shutdown.clone(), acl.clone());
            let span = info_span!("udp", service = name);
            self.tracker.spawn(datagram_loop(socket, service, acl, token).instrument(span));
        }
        logging::listening(&local, name);
        Ok(local)
    }

    /// Serves `service` on a UDP socket with a session per peer address: the
    /// first datagram from a peer opens a session — a task running
    /// [`DatagramSession::serve`] in a span of its own, counted against
    /// `--max-conns` with the descriptors it costs reserved — and later
    /// ones are queued to it. Datagrams from peers the ACL refuses are
    /// dropped. A session ends when its handler returns, after the idle
    /// timeout with no datagram either way, or at shutdown (with the grace
    /// period); its last log line counts the datagrams. Prints the
    /// `listening on` line and returns the endpoint.
    pub fn serve_datagram_sessions<D: DatagramSession>(
        &self,
        socket: UdpSocket,
        name: &'static str,
        service: Arc<D>,
    ) -> io::Result<Endpoint> {
        let local = Endpoint::Udp(socket.local_addr()?.into());
        let cost = service.descriptors();
        if cost > 0 {
            self.warn_fit(name, cost, "sessions", "session");
        }
        let dispatcher = sessions::Dispatcher::new(
            Arc::new(socket),
            name,
            service,
            sessions::Shared {
                limits: self.limits.clone(),
                permits: self.permits.clone(),
                descriptors: self.descriptors.clone(),
                cost,
                shutdown: self.shutdown.clone(),
                force_close: self.force_close.clone(),
                tracker: self.tracker.clone(),
                next_id: self.next_id.clone(),
            },
        );
        self.tracker.spawn(dispatcher.run().instrument(info_span!("udp", service = name)));
        logging::listening(&local, name);
        Ok(local)
    }

    /// Runs `task` in the background under the server's shutdown: it
    /// should watch [`Server::shutdown_token`] and finish when it is
    /// cancelled; [`Server::run_until`] waits for it within the grace
    /// period, and drops it when that is over.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.background().spawn(task);
    }

    fn background(&self) -> Background {
        Background { tracker: self.tracker.clone(), force_close: self.force_close.clone() }
    }

    /// Warns at start when the open-file limit, not `--max-conns`, bounds
    /// how many connections (of `cost` descriptors each) can be open.
    fn warn_fit(&self, name: &'static str, cost: usize, what: &str, each: &str) {
        let fit = self.budget / cost.max(1);
        if let Some(limit) = self.open_files
            && fit < self.limits.max_conns
        {
            warn!(
                service = name,
                "at most {fit} {what} at once, not --max-conns {}: the open-file limit is {limit} and each {each} costs {cost} descriptors; raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit) to serve more",
                self.limits.max_conns
            );
        }
    }

    /// Logs the refusals counted in each interval, once, until shutdown.
    fn spawn_refusal_log(&self) {
        if self.refusals.logging.swap(true, Ordering::Relaxed) {
            return;
        }
        let (refusals, shutdown) = (self.refusals.clone(), self.shutdown.clone());
        self.tracker.spawn(async move {
            let mut tick = tokio::time::interval(REFUSAL_LOG_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return refusals.summary(),
                    _ = tick.tick() => refusals.summary(),
                }
            }
        });
    }

    /// Runs until `signal` completes (or the shutdown token is cancelled),
    /// then shuts down gracefully: stop accepting, give open connections the
    /// grace period, close what is left, and return.
    pub async fn run_until(self, signal: impl Future) {
        tokio::select! {
            _ = signal => {}
            _ = self.shutdown.cancelled() => {}
        }
        let open = self.open_connections();
        if open > 0 {
            info!(open, grace_ms = self.limits.grace.as_millis() as u64, "shutting down");
        }
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.limits.grace, self.tracker.wait()).await.is_err() {
            info!(open = self.open_connections(), "grace period over; closing what is left");
            self.force_close.cancel();
            // Closing is immediate unless a service blocks without awaiting.
            if tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await.is_err() {
                warn!("some connections did not close");
            }
        }
    }
}

/// Runs tasks under a server's shutdown: waited for within the grace
/// period, dropped when it is over.
#[derive(Clone, Debug)]
pub(crate) struct Background {
    tracker: TaskTracker,
    force_close: CancellationToken,
}

impl Background {
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let force_close = self.force_close.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = force_close.cancelled() => {}
            }
        });
    }
}

struct Acceptor<S> {
    gate: Gate,
    service: Arc<S>,
    limits: Limits,
    shutdown: CancellationToken,
    force_close: CancellationToken,
    tracker: TaskTracker,
    next_id: Arc<AtomicU64>,
}

impl<S: Service> Acceptor<S> {
    async fn run(mut self) {
        loop {
            let Admitted { incoming, peer, slot } = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                a = self.gate.accept(self.service.busy_message()) => a,
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let span = info_span!("conn", id, service = self.gate.name(), %peer);
            let meter = Arc::new(Meter::new());
            let service = self.service.clone();
            let descriptors = self.gate.descriptors();
            let verdict = Verdict::default();
            let incoming = incoming.with_verdict(verdict.clone());
            // The service runs as a task of its own, so its wake-ups poll
            // only its own future; the supervisor wakes only to end it.
            let serve = match incoming.into_plain() {
                Ok(stream) => {
                    let conn = Conn::with_meter(stream, meter.clone(), peer, self.shutdown.clone())
                        .with_descriptors(descriptors);
                    self.tracker.spawn(async move { service.serve(conn).await }.instrument(span.clone()))
                }
                Err(incoming) => {
                    let (shutdown, meter) = (self.shutdown.clone(), meter.clone());
                    let serve = async move {
                        let Some(stream) = incoming.open().await? else { return Ok(()) };
                        let conn = Conn::with_meter(stream, meter, peer, shutdown).with_descriptors(descriptors);
                        service.serve(conn).await
                    };
                    self.tracker.spawn(serve.instrument(span.clone()))
                }
            };
            let task = supervise(serve, meter, self.limits.idle_timeout, self.force_close.clone(), verdict);
            self.tracker.spawn(
                async move {
                    task.await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
    }
}

/// What [`supervise`] watches and logs: a connection's byte meter, or a
/// datagram session's.
trait Watched: Send + Sync + 'static {
    /// Changes whenever anything moves either way.
    fn activity(&self) -> u64;
    /// Logs the start.
    fn opened(&self);
    /// Logs the end, with the counts.
    fn closed(&self, outcome: io::Result<&'static str>, duration_ms: u64);
}

impl Watched for Meter {
    fn activity(&self) -> u64 {
        Meter::activity(self)
    }

    fn opened(&self) {
        info!("accepted");
    }

    fn closed(&self, outcome: io::Result<&'static str>, duration_ms: u64) {
        let (bytes_in, bytes_out) = (self.bytes_read(), self.bytes_written());
        match outcome {
            Ok(reason) => info!(bytes_in, bytes_out, duration_ms, reason, "closed"),
            Err(e) if is_disconnect(&e) => info!(bytes_in, bytes_out, duration_ms, reason = %e, "closed"),
            Err(e) => warn!(bytes_in, bytes_out, duration_ms, error = %e, "closed with error"),
        }
    }
}

/// Watches one connection's (or session's) service task: ends it at the
/// idle timeout or when the grace period is over, then logs how it ended.
/// Kept small: ten thousand of these live at once on a busy server.
async fn supervise<W: Watched>(
    mut serve: JoinHandle<io::Result<()>>,
    meter: Arc<W>,
    idle_timeout: Option<Duration>,
    force_close: CancellationToken,
    verdict: Verdict,
) {
    meter.opened();
    let started = Instant::now();
    let outcome = tokio::select! {
        biased;
        r = &mut serve => match r {
            Ok(r) => r.map(|()| "closed"),
            Err(e) => Err(io::Error::other(format!("service failed: {e}"))),
        },
        _ = idle(&*meter, &verdict, idle_timeout) => {
            let after = humantime::format_duration(idle_timeout.unwrap_or_default());
            verdict.set(1008, format!("idle for {after} (--idle-timeout)"));
            Ok("idle timeout")
        }
        _ = force_close.cancelled() => {
            verdict.set(1001, "server shutting down (--grace is over)");
            Ok("grace period over")
        }
    };
    // Dropping the service's future closes the connection.
    serve.abort();
    meter.closed(outcome, started.elapsed().as_millis() as u64);
}

/// Completes once nothing has moved for `timeout` (to within an eighth of
/// it): the meter's counts are sampled every `timeout / 8`, and the
/// connection is idle once they have not changed for `timeout`.
async fn idle<W: Watched + ?Sized>(meter: &W, verdict: &Verdict, timeout: Option<Duration>) {
    let activity = || meter.activity().wrapping_add(verdict.signs_of_life());
    let Some(timeout) = timeout else { return pending().await };
    // At least a millisecond: `--idle-timeout 1ns` must not spin.
    let step = (timeout / 8).max(Duration::from_millis(1));
    // tokio's clock, so tests can pause time.
    let (mut seen, mut since) = (activity(), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(step).await;
        let now = activity();
        if now != seen {
            (seen, since) = (now, tokio::time::Instant::now());
        } else if since.elapsed() >= timeout {
            return;
        }
    }
}

async fn datagram_loop<D: DatagramService>(
    socket: Arc<UdpSocket>,
    service: Arc<D>,
    acl: Arc<Acl>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    let mut reply = Vec::with_capacity(2048);
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here on Linux.
                Err(e) => { debug!("receive failed: {e}"); continue }
            },
        };
        if !acl.allows(peer.ip()) {
            // Debug, not warn: a datagram's source is trivially forged, and
            // a flood of them must not flood the log.
            debug!(%peer, "dropped: address not allowed (--allow/--deny)");
            continue;
        }
        reply.clear();
        if service.reply(&buf[..n], peer, &mut reply)
            && let Err(e) = socket.send_to(&reply, peer).await
        {
            debug!(%peer, "reply failed: {e}");
        }
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let code = e.raw_os_error();
    code == Some(Errno::MFILE.raw_os_error()) || code == Some(Errno::NFILE.raw_os_error())
}

/// Errors that mean the peer went away, which is how connections end.
pub fn is_disconnect(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Peer, Stream};

    /// Ten thousand of these live at once on a busy server: keep the
    /// per-connection futures small (one was 1.2 KB before they were split).
    #[tokio::test]
    async fn per_connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let conn = Conn::new(Stream::Tcp(c), Peer::Unix, CancellationToken::new());
        let (meter, svc) = (conn.meter(), Arc::new(crate::services::Echo));
        let serve = async move { svc.serve(conn).await };
        assert!(std::mem::size_of_val(&serve) <= 640, "echo's future is {} bytes", std::mem::size_of_val(&serve));
        let f = supervise(tokio::spawn(serve), meter, None, CancellationToken::new(), Verdict::default());
        assert!(std::mem::size_of_val(&f) <= 512, "supervise future is {} bytes", std::mem::size_of_val(&f));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_a_quiet_period() {
        let meter = Meter::new();
        let t = Duration::from_secs(80);
        let started = tokio::time::Instant::now();
        let verdict = Verdict::default();
        let watch = idle(&meter, &verdict, Some(t));
        tokio::pin!(watch);
        // Activity at 50s and 100s pushes the deadline out.
        for at in [50, 100] {
            tokio::select! {
                _ = &mut watch => panic!("idle too early"),
                _ = tokio::time::sleep_until(started + Duration::from_secs(at)) => meter.add_read(1),
            }
        }
        watch.await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(180) && waited <= Duration::from_secs(200), "{waited:?}");
    }
}
