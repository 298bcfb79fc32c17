//! `sockit relay FROM TO`: forward every connection to FROM on to TO, both
//! ways, half-close preserved; or, for `udp://` on both sides, every client's
//! datagrams through an upstream socket of its own that expires when idle.
//! The server core applies its limits as to any service.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn};

use super::serve::LimitArgs;
use super::tls_args::{TlsServerArgs, TlsVerifyArgs};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::forward::{Copy, forward};
use crate::logging;
use crate::server::{Limits, Server};
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
UDP: each client address gets its own upstream socket, closed after
--idle-timeout without traffic. One log line per closed connection.

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
            let token = CancellationToken::new();
            let relay = udp_relay(Arc::new(socket), args.to.clone(), limits, token.clone());
            tokio::select! {
                r = relay => r?,
                _ = signal => token.cancel(),
            }
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

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// Relays datagrams: one upstream socket per client address, so replies go
/// back to the right client; a session ends after the idle timeout.
async fn udp_relay(
    front: Arc<UdpSocket>,
    to: Endpoint,
    limits: Limits,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let sessions: Sessions = Arc::default();
    let idle = limits.idle_timeout.unwrap_or(Duration::from_secs(300));
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            r = front.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => { debug!("receive failed: {e}"); continue }
            },
        };
        let existing = sessions.lock().unwrap().get(&client).cloned();
        let upstream = match existing {
            Some(up) => up,
            None => {
                if sessions.lock().unwrap().len() >= limits.max_conns {
                    warn!(%client, "refused: session limit reached (--max-conns)");
                    continue;
                }
                let up = match to.connect_datagram().await {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        warn!(%client, "{e}");
                        continue;
                    }
                };
                sessions.lock().unwrap().insert(client, up.clone());
                let span = info_span!("udp", %client);
                let task = udp_session(front.clone(), up.clone(), client, sessions.clone(), idle, token.clone());
                tokio::spawn(tracing::Instrument::instrument(task, span));
                up
            }
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            debug!(%client, "forward failed: {e}");
        }
    }
}

async fn udp_session(
    front: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    sessions: Sessions,
    idle: Duration,
    token: CancellationToken,
) {
    info!("session opened");
    let mut buf = vec![0u8; 65536];
    let mut replies = 0u64;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            r = tokio::time::timeout(idle, upstream.recv(&mut buf)) => match r {
                Err(_) => break, // idle
                Ok(Ok(n)) => {
                    replies += 1;
                    let _ = front.send_to(&buf[..n], client).await;
                }
                Ok(Err(e)) => debug!("upstream receive failed: {e}"),
            },
        }
    }
    sessions.lock().unwrap().remove(&client);
    info!(replies, "session closed");
}
