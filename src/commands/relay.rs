//! `sockit relay FROM TO`: forward every connection to FROM on to TO, both
//! ways, half-close preserved; or, for `udp://` on both sides, every client's
//! datagrams through an upstream socket of its own that expires when idle.
//! The server core applies its limits to streams as to any service; the UDP
//! relay applies the same `--allow`/`--deny`, `--max-conns` (sessions) and
//! `--idle-timeout` itself.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::serve::LimitArgs;
use super::tls_args::{TlsServerArgs, TlsVerifyArgs};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::forward::{Copy, forward};
use crate::logging;
use crate::server::{DEFAULT_IDLE_TIMEOUT, Limits, Server};
use crate::tls::ClientTls;
use crate::units::parse_duration;
use crate::{Conn, Service};

/// Arguments of `sockit relay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each connection to FROM gets its own connection to TO; bytes flow both ways
until both sides are done. When one side finishes sending (half-close), the
other is told and can still answer: replies are never cut off. Between plain
sockets the bytes move with splice(2), never copied through user space.
UDP: each client address gets its own upstream socket (a session), closed
after --idle-timeout with no datagram either way (0 means the 5m default: a
UDP session has no close of its own); --max-conns caps sessions, and
--allow/--deny drop datagrams from other addresses unanswered. One log line
per closed connection or session.

Examples:
  sockit relay 127.0.0.1:8080 10.0.0.5:80
  sockit relay unix:///tmp/app.sock 127.0.0.1:7007
  sockit relay udp://127.0.0.1:5353 udp://127.0.0.1:53
  sockit relay tls://0.0.0.0:8443 127.0.0.1:8080      terminate TLS
  sockit relay 127.0.0.1:7007 tls://host:7007 --tls-ca ca.pem   originate TLS")]
pub struct RelayArgs {
    /// Where to listen.
    #[arg(help = "Where to listen: HOST:PORT, unix:///path, udp://HOST:PORT, tls://HOST:PORT")]
    pub from: Endpoint,

    /// Where to forward to.
    #[arg(help = "Where to forward to: HOST:PORT, unix:///path, udp://HOST:PORT, tls://HOST:PORT")]
    pub to: Endpoint,

    /// Give up connecting to TO after this long.
    #[arg(short = 'w', long = "wait", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How bytes move: splice (zero-copy) or buffered.
    #[arg(long, value_enum, default_value_t, hide_short_help = true)]
    pub copy: Copy,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub limits: LimitArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls_server: TlsServerArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls_client: TlsVerifyArgs,
}

/// The relay as a stream service.
#[derive(Debug)]
pub struct Relay {
    /// Where each connection is forwarded.
    pub to: Endpoint,
    /// Connect timeout for `to`.
    pub connect_timeout: Duration,
    /// How bytes move.
    pub copy: Copy,
    /// TLS settings for a `tls://` TO.
    pub tls: Option<ClientTls>,
}

impl Service for Relay {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let upstream = self
            .to
            .connect_with(Some(self.connect_timeout), self.tls.as_ref())
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
        forward(conn, upstream, self.copy).await.map(|_| ())
    }

    /// The client's socket, the upstream's (three over TLS), and a pipe of
    /// two ends per direction when splicing.
    fn descriptors(&self) -> usize {
        let upstream = if self.tls.is_some() { 1 + crate::server::TLS_DESCRIPTORS } else { 1 };
        let pipes = if self.copy == Copy::Splice { 4 } else { 0 };
        1 + upstream + pipes
    }
}

/// Runs `sockit relay`.
pub async fn run(args: RelayArgs) -> anyhow::Result<i32> {
    let signal = super::shutdown_signal();
    crate::sys::raise_open_file_limit();
    let limits = args.limits.limits();
    match (args.from.is_datagram(), args.to.is_datagram()) {
        (false, false) => {
            let listener = args.from.bind_listener(args.tls_server.server(&[&args.from])?).await?;
            let server = Server::new(limits);
            let tls = args.tls_client.client(&args.to)?;
            let relay = Relay { to: args.to.clone(), connect_timeout: args.connect_timeout, copy: args.copy, tls };
            logging::listening(&listener.local_endpoint()?, "relay");
            server.serve_stream(listener, "relay", Arc::new(relay));
            server.run_until(signal).await;
        }
        (true, true) => {
            let socket = args.from.bind_datagram().await?;
            logging::listening(&Endpoint::Udp(socket.local_addr()?.into()), "relay");
            udp_relay(Arc::new(socket), &args.to, &limits, signal).await;
        }
        _ => {
            return Err(Error::Usage(format!(
                "cannot relay between {} and {}: UDP relays only to UDP, streams only to streams",
                args.from, args.to
            ))
            .into());
        }
    }
    Ok(0)
}

/// One client's session: its own upstream socket, so replies find their
/// way back, and the time of its last datagram either way.
#[derive(Debug)]
struct Session {
    upstream: Arc<UdpSocket>,
    last_active: Mutex<Instant>,
    /// Datagrams from the client to the upstream.
    datagrams_in: AtomicU64,
}

impl Session {
    /// Datagrams either way keep a session alive.
    fn touch(&self) {
        *self.last_active.lock().unwrap() = Instant::now();
    }

    fn last_active(&self) -> Instant {
        *self.last_active.lock().unwrap()
    }
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

/// Relays datagrams: one upstream socket per client address, so replies go
/// back to the right client; a session ends after the idle timeout with no
/// datagram either way. Datagrams from addresses the ACL refuses are
/// dropped unanswered. Runs until `stop` completes, then ends every session.
async fn udp_relay(front: Arc<UdpSocket>, to: &Endpoint, limits: &Limits, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let token = CancellationToken::new();
    let sessions: Sessions = Arc::default();
    // With `--idle-timeout 0` a stream lives until it closes, but a UDP
    // session has no close: it still expires, after the default.
    let idle = limits.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let tasks = TaskTracker::new();
    let mut buf = vec![0u8; 65536];
    // Warned once each time the table fills, not per datagram: sources
    // are forgeable, and a flood must not flood the log.
    let mut full_warned = false;
    loop {
        let (n, client) = tokio::select! {
            _ = &mut stop => break,
            r = front.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here on Linux.
                Err(e) => { debug!("receive failed: {e}"); continue }
            },
        };
        if !limits.acl.allows(client.ip()) {
            // Debug, not warn: a datagram's source is trivially forged, and
            // a flood of them must not flood the log.
            debug!(%client, "dropped: address not allowed (--allow/--deny)");
            continue;
        }
        // Found and touched under the map's lock, which expiry takes too: a
        // session is never dropped between being found here and used.
        let existing = sessions.lock().unwrap().get(&client).inspect(|s| s.touch()).cloned();
        let session = match existing {
            Some(session) => session,
            None => {
                if sessions.lock().unwrap().len() >= limits.max_conns {
                    if !full_warned {
                        warn!(
                            max_conns = limits.max_conns,
                            "session limit reached (--max-conns): datagrams from new clients are dropped until a session expires"
                        );
                        full_warned = true;
                    }
                    debug!(%client, "dropped: session limit reached (--max-conns)");
                    continue;
                }
                full_warned = false;
                let upstream = match to.connect_datagram().await {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        // Debug: a datagram's source is easily forged, and a
                        // flood of them must not flood the log.
                        debug!(%client, "{e}");
                        continue;
                    }
                };
                let session = Arc::new(Session {
                    upstream,
                    last_active: Mutex::new(Instant::now()),
                    datagrams_in: AtomicU64::new(0),
                });
                sessions.lock().unwrap().insert(client, session.clone());
                let span = info_span!("udp", %client);
                let task = udp_session(front.clone(), session.clone(), client, sessions.clone(), idle, token.clone());
                tasks.spawn(task.instrument(span));
                session
            }
        };
        session.datagrams_in.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = session.upstream.send(&buf[..n]).await {
            debug!(%client, "forward failed: {e}");
        }
    }
    // Sessions end at once when told, each logging its close.
    token.cancel();
    tasks.close();
    tasks.wait().await;
}

/// Carries one client's replies back until the session is idle for `idle`
/// (no datagram either way) or the relay stops.
async fn udp_session(
    front: Arc<UdpSocket>,
    session: Arc<Session>,
    client: SocketAddr,
    sessions: Sessions,
    idle: Duration,
    token: CancellationToken,
) {
    info!("session opened");
    let mut buf = vec![0u8; 65536];
    let mut replies = 0u64;
    loop {
        let expiry = session.last_active() + idle;
        tokio::select! {
            _ = token.cancelled() => break,
            r = session.upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    session.touch();
                    replies += 1;
                    if let Err(e) = front.send_to(&buf[..n], client).await {
                        debug!("reply failed: {e}");
                    }
                }
                Err(e) => debug!("upstream receive failed: {e}"),
            },
            _ = tokio::time::sleep_until(expiry) => {
                // The client may have sent since the deadline was set; the
                // check and the removal share the lock the relay loop
                // finds sessions under.
                let mut map = sessions.lock().unwrap();
                if session.last_active().elapsed() >= idle {
                    map.remove(&client);
                    break;
                }
            }
        }
    }
    let datagrams_in = session.datagrams_in.load(Ordering::Relaxed);
    info!(datagrams_in, datagrams_out = replies, "session closed");
}
