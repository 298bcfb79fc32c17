//! `sockit connect ENDPOINT`: the netcat client.

use std::io;
use std::time::Duration;

use anyhow::Context;

use super::pipe::{MAX_DATAGRAM, PipeOpts, StdinPump, pipe, print_datagram};
use super::tls_args::{TlsClientArgs, WsArgs};
use sockit::endpoint::Endpoint;
use sockit::error::{Error, ExitCode};
use sockit::units::parse_duration;

/// How long a UDP client waits for replies after stdin EOF, unless `-q` says.
const UDP_LINGER: Duration = Duration::from_secs(1);

/// Arguments of `sockit connect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Close model: at stdin EOF the socket's write half is shut down, so the peer
sees EOF, and sockit keeps printing until the peer closes; when the peer closes
first, sockit exits at once. So `echo hi | sockit connect HOST:PORT` prints the
whole reply, and never hangs once the peer is done. --no-shutdown keeps the
write half open, -q SECS quits that long after stdin EOF.

UDP: each stdin line is one datagram; replies are printed as they come, until
1s (or -q) after stdin EOF.

Examples:
  echo michael | sockit connect localhost:7014
  sockit connect unix:///tmp/echo.sock < file > copy
  echo hello | sockit connect udp://127.0.0.1:7013
  sockit connect -w 2s example.internal:80
  sockit connect tls://127.0.0.1:9443 --tls-fingerprint AB:CD:…   pin a self-signed server

Exit codes: 0 done, 2 bad usage, 3 could not connect (refused, unreachable,
timed out, unknown host), 5 TLS handshake failed (untrusted certificate,
fingerprint mismatch, not a TLS server), 1 anything else.")]
pub struct ConnectArgs {
    /// Where to connect.
    #[arg(help = "Where to connect: HOST:PORT, [::1]:PORT, udp://HOST:PORT, unix:///path, tls://HOST:PORT")]
    pub endpoint: Endpoint,

    /// Give up connecting after this long (e.g. 5, 500ms).
    #[arg(short = 'w', long = "wait", value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,

    #[command(flatten)]
    pub pipe: PipeOpts,

    #[command(flatten)]
    pub tls: TlsClientArgs,

    #[command(flatten)]
    pub ws: WsArgs,
}

/// Runs `sockit connect`.
pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let mut stdin = if args.pipe.recv_only { StdinPump::idle() } else { StdinPump::start(args.endpoint.is_datagram()) };
    if args.endpoint.is_datagram() {
        return udp(&args, &mut stdin).await;
    }
    let tls = args.tls.client(&args.endpoint)?;
    let stream = args.endpoint.connect_ws(args.wait, tls.as_ref(), args.ws.config()).await?;
    pipe(stream, &args.pipe, &mut stdin).await.with_context(|| format!("connection to {}", args.endpoint))?;
    Ok(ExitCode::Ok)
}

async fn udp(args: &ConnectArgs, stdin: &mut StdinPump) -> anyhow::Result<ExitCode> {
    let socket = args.endpoint.connect_datagram().await?;
    let refused = |cause| Error::Connect { endpoint: args.endpoint.clone(), cause };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut linger: Option<tokio::time::Instant> = None;
    loop {
        let until_done = async {
            match linger {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = stdin.recv(), if linger.is_none() => match line {
                Some(line) => { socket.send(&line).await.map_err(refused)?; }
                None if args.pipe.send_only => return Ok(ExitCode::Ok),
                None => linger = Some(tokio::time::Instant::now() + args.pipe.quit_after.unwrap_or(UDP_LINGER)),
            },
            r = socket.recv(&mut buf), if !args.pipe.send_only => {
                let n = r.map_err(refused)?;
                match print_datagram(&buf[..n]).await {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::Ok),
                    r => r?,
                }
            }
            _ = until_done => return Ok(ExitCode::Ok),
        }
    }
}
