//! `sockit relay FROM TO`: parse the arguments and run the relay services
//! of [`sockit::services::relay`] on the server core — a stream [`Relay`]
//! for streams, a [`UdpRelay`] session per client for `udp://` on both
//! sides.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::serve::LimitArgs;
use super::tls_args::{TlsServerArgs, TlsVerifyArgs, WsArgs};
use sockit::endpoint::Endpoint;
use sockit::error::{Error, ExitCode};
use sockit::forward::Copy;
use sockit::server::{DEFAULT_SESSION_QUEUE, Server};
use sockit::services::{Relay, UdpRelay};
use sockit::units::{number_in, parse_duration};

/// What `--session-queue` may be: each queued datagram may be up to 64 KiB,
/// so the top holds at most 64 MiB for one client.
pub const SESSION_QUEUE_RANGE: RangeInclusive<u64> = 1..=1024;

/// Arguments of `sockit relay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each connection to FROM gets its own connection to TO; bytes flow both ways
until both sides are done. When one side finishes sending (half-close), the
other is told and can still answer: replies are never cut off. Between plain
sockets the bytes move with splice(2), never copied through user space.
UDP: each client address gets its own upstream socket (a session), closed
after --idle-timeout with no datagram either way (0 means the 5m default: a
UDP session has no close of its own); --max-conns caps sessions (so does the
open-file limit: each holds a socket), and --allow/--deny drop datagrams
from other addresses unanswered. One log line per closed connection or
session, with its bytes or datagrams each way.

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

    /// UDP: datagrams from one client that may wait to be forwarded; more
    /// are dropped (and counted in the session's closing line).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SESSION_QUEUE, hide_short_help = true,
          value_parser = number_in::<usize>(SESSION_QUEUE_RANGE))]
    pub session_queue: usize,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub tls_server: TlsServerArgs,

    #[command(flatten)]
    pub tls_client: TlsVerifyArgs,

    #[command(flatten)]
    pub ws: WsArgs,
}

/// Runs `sockit relay`.
pub async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    // Before the `listening on` line, so an early signal is not missed.
    let signal = super::shutdown_signal();
    sockit::sys::raise_open_file_limit();
    let server = Server::new(args.limits.limits());
    match (args.from.is_datagram(), args.to.is_datagram()) {
        (false, false) => {
            let mut listener = args.from.bind_listener(args.tls_server.server(&[&args.from])?).await?;
            args.ws.apply(&mut listener);
            let tls = args.tls_client.client(&args.to)?;
            let relay = Relay {
                to: args.to.clone(),
                connect_timeout: args.connect_timeout,
                copy: args.copy,
                tls,
                ws: args.ws.config(),
            };
            server
                .serve_stream(listener, "relay", Arc::new(relay))
                .with_context(|| format!("relaying {}", args.from))?;
        }
        (true, true) => {
            let socket = args.from.bind_datagram().await?;
            let relay = UdpRelay { to: args.to.clone(), queue: args.session_queue };
            server
                .serve_datagram_sessions(socket, "relay", Arc::new(relay))
                .with_context(|| format!("relaying {}", args.from))?;
        }
        _ => {
            return Err(Error::Usage(format!(
                "cannot relay between {} and {}: UDP relays only to UDP, streams only to streams",
                args.from, args.to
            ))
            .into());
        }
    }
    server.run_until(signal).await;
    Ok(ExitCode::Ok)
}
