//! `sockit listen ENDPOINT`: the netcat server.

use std::io;
use std::net::SocketAddr;

use tracing::{debug, info, warn};

use super::pipe::{MAX_DATAGRAM, PipeOpts, StdinPump, pipe, print_datagram};
use super::tls_args::{AclArgs, TlsServerArgs, WsArgs};
use sockit::endpoint::Endpoint;
use sockit::error::ExitCode;
use sockit::logging;
use sockit::server::{Admitted, Gate};

/// Arguments of `sockit listen`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Accepts one connection and pipes stdin/stdout both ways under the same close
model as `connect` (see `sockit connect --help`); with -k it then accepts the
next one, serving connections one after another. Over UDP it never locks onto
the first sender: stdin lines go to the peer heard from last.

Examples:
  sockit listen 127.0.0.1:9000              the tutorial's two-way chat
  sockit listen -k :9000 > log.txt          collect from one client after another
  sockit listen udp://127.0.0.1:9000
  sockit listen unix:///tmp/s.sock
  sockit listen tls://127.0.0.1:9443        prints the certificate fingerprint to pin")]
pub struct ListenArgs {
    /// Where to listen.
    #[arg(help = "Where to listen: HOST:PORT, [::1]:PORT, udp://HOST:PORT, unix:///path, tls://HOST:PORT")]
    pub endpoint: Endpoint,

    /// Keep listening: after a connection ends, accept the next.
    #[arg(short = 'k', long)]
    pub keep_open: bool,

    #[command(flatten)]
    pub pipe: PipeOpts,

    #[command(flatten)]
    pub tls: TlsServerArgs,

    #[command(flatten)]
    pub acl: AclArgs,

    #[command(flatten)]
    pub ws: WsArgs,
}

/// Runs `sockit listen`.
pub async fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let mut stdin = if args.pipe.recv_only { StdinPump::idle() } else { StdinPump::start(args.endpoint.is_datagram()) };
    if args.endpoint.is_datagram() {
        return udp(&args, &mut stdin).await;
    }
    let signal = super::shutdown_signal();
    tokio::pin!(signal);
    let mut listener = args.endpoint.bind_listener(args.tls.server(&[&args.endpoint])?).await?;
    args.ws.apply(&mut listener);
    logging::listening(&listener.local_endpoint()?, "listen");
    // The server core's accept step: the ACL, refusals summed up rather
    // than logged one by one, the TLS handshake under its timeout.
    let mut gate = Gate::new(listener, "listen", args.acl.acl());
    loop {
        let Admitted { incoming, peer, slot: _slot } = tokio::select! {
            a = gate.accept(None) => a,
            _ = &mut signal => return Ok(ExitCode::Ok),
        };
        let stream = tokio::select! {
            r = incoming.open() => match r {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%peer, "{e}");
                    continue;
                }
            },
            _ = &mut signal => return Ok(ExitCode::Ok),
        };
        info!(%peer, "connected");
        tokio::select! {
            r = pipe(stream, &args.pipe, &mut stdin) => match r {
                Ok(()) => info!(%peer, "closed"),
                Err(e) if !args.keep_open => return Err(anyhow::Error::new(e).context(format!("connection from {peer}"))),
                Err(e) => warn!(%peer, "connection failed: {e}"),
            },
            _ = &mut signal => return Ok(ExitCode::Ok),
        }
        if !args.keep_open {
            return Ok(ExitCode::Ok);
        }
    }
}

async fn udp(args: &ListenArgs, stdin: &mut StdinPump) -> anyhow::Result<ExitCode> {
    let signal = super::shutdown_signal();
    tokio::pin!(signal);
    let socket = args.endpoint.bind_datagram().await?;
    logging::listening(&Endpoint::Udp(socket.local_addr()?.into()), "listen");
    let acl = args.acl.acl();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_peer: Option<SocketAddr> = None;
    let mut stdin_open = true;
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) if !acl.allows(peer.ip()) => {
                    // Debug, as in the server core: a datagram's source is
                    // trivially forged, and a flood must not flood the log.
                    debug!(%peer, "dropped {n} bytes: address not allowed (--allow/--deny)");
                }
                Ok((n, peer)) => {
                    last_peer = Some(peer);
                    if !args.pipe.send_only {
                        match print_datagram(&buf[..n]).await {
                            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::Ok),
                            r => r?,
                        }
                    }
                }
                Err(e) => info!("receive failed: {e}"),
            },
            // Stdin is read only once there is a peer to send to, so nothing
            // typed before the first datagram is lost.
            line = stdin.recv(), if stdin_open && last_peer.is_some() => match (line, last_peer) {
                (Some(line), Some(peer)) => { let _ = socket.send_to(&line, peer).await; }
                _ => {
                    stdin_open = false;
                    if let Some(q) = args.pipe.quit_after {
                        tokio::time::sleep(q).await;
                        return Ok(ExitCode::Ok);
                    }
                }
            },
            _ = &mut signal => return Ok(ExitCode::Ok),
        }
    }
}
