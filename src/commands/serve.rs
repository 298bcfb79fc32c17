//! `sockit serve [SERVICE…]`: run built-in services.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use tracing::warn;

use super::tls_args::{AclArgs, TlsServerArgs, WsArgs};
use sockit::endpoint::{Endpoint, LISTEN_BACKLOG};
use sockit::error::{Error, ExitCode};
use sockit::lines::DEFAULT_MAX_LINE;
use sockit::server::{DEFAULT_MAX_CONNS, Limits, Server};
use sockit::services::files::Policy;
use sockit::services::{
    Chargen, Chat, Discard, Echo, Exec, ExecConfig, Files, FilesConfig, Greet, RawBroker, Stamp, chat,
};
use sockit::units::{number_in, parse_duration, size_in, usize_size_in};
use sockit::ws::WsConfig;

/// What `--max-conns` may be: a million open connections already need a
/// million file descriptors and gigabytes of buffers.
pub const MAX_CONNS_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// What `--max-line` may be: a line is held whole in memory, per
/// connection, until its newline comes.
pub const MAX_LINE_RANGE: RangeInclusive<u64> = 1..=16 << 20;
/// What `--max-queue` may be: each chat room (and the raw broker) sets
/// aside this many slots up front, about 64 bytes each, so the top costs
/// 4 MiB a room.
pub const MAX_QUEUE_RANGE: RangeInclusive<u64> = 1..=65_536;
/// What `--quiet-above` may be: 0 (never any notices) up to the most
/// members a room can have, [`MAX_CONNS_RANGE`]'s top.
pub const QUIET_ABOVE_RANGE: RangeInclusive<u64> = 0..=1_000_000;
/// What `--rate` may be, in lines per second per client.
pub const RATE_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// What `--max-size` may be: 16 TiB, the largest file ext4 holds.
pub const MAX_SIZE_RANGE: RangeInclusive<u64> = 1..=16 << 40;
/// What `--max-transfers` may be: each holds a thread of the runtime's
/// blocking pool (512) while it writes.
pub const MAX_TRANSFERS_RANGE: RangeInclusive<u64> = 1..=256;
/// What `--max-dirs` may be: each costs up to 450 bytes for the session.
pub const MAX_DIRS_RANGE: RangeInclusive<u64> = 1..=10_000_000;
/// What `--max-handshakes` may be, per address.
pub const MAX_HANDSHAKES_RANGE: RangeInclusive<u64> = 1..=1024;
/// What `--max-output` may be: 0 (exit status only) up to 16 GiB a command.
pub const MAX_OUTPUT_RANGE: RangeInclusive<u64> = 0..=16 << 30;

/// The built-in services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServiceName {
    /// Every byte back (TCP, UDP, Unix); port 7007.
    Echo,
    /// `[Fri Sep 30 16:26:40 2016] message` per line or datagram; port 7013.
    Stamp,
    /// `Welcome!`, then `Hello, X!` per message until `exit`; port 7014.
    Greet,
    /// A line chat server with rooms, nicks and direct messages (--raw: a
    /// byte broker like ncat --broker); port 7070.
    Chat,
    /// Reads and drops everything (RFC 863), a sink for benchmarks; port 7009.
    Discard,
    /// Sends character lines until the client leaves (RFC 864), a source; port 7019.
    Chargen,
    /// Runs commands for clients that hold the token (`sockit exec`); port
    /// 7022. Never started unless named.
    Exec,
    /// Receives files and directories from `sockit send` into --dir,
    /// verified by BLAKE3, resumable; port 7080.
    Files,
}

impl ServiceName {
    /// The name used in logs and status lines.
    pub fn name(self) -> &'static str {
        match self {
            ServiceName::Echo => "echo",
            ServiceName::Stamp => "stamp",
            ServiceName::Greet => "greet",
            ServiceName::Chat => "chat",
            ServiceName::Discard => "discard",
            ServiceName::Chargen => "chargen",
            ServiceName::Exec => "exec",
            ServiceName::Files => "files",
        }
    }

    /// Where the service listens when no `--listen` names it.
    pub fn default_endpoints(self) -> Vec<Endpoint> {
        let at = |s: &str| s.parse().expect("built-in endpoint");
        match self {
            ServiceName::Echo => vec![at("tcp://127.0.0.1:7007"), at("udp://127.0.0.1:7007")],
            ServiceName::Stamp => vec![at("tcp://127.0.0.1:7013"), at("udp://127.0.0.1:7013")],
            ServiceName::Greet => vec![at("tcp://127.0.0.1:7014")],
            ServiceName::Chat => vec![at("tcp://127.0.0.1:7070")],
            ServiceName::Discard => vec![at("tcp://127.0.0.1:7009"), at("udp://127.0.0.1:7009")],
            ServiceName::Chargen => vec![at("tcp://127.0.0.1:7019")],
            ServiceName::Exec => vec![at("tcp://127.0.0.1:7022")],
            ServiceName::Files => vec![at("tcp://127.0.0.1:7080")],
        }
    }

    fn speaks_udp(self) -> bool {
        !matches!(
            self,
            ServiceName::Greet | ServiceName::Chargen | ServiceName::Chat | ServiceName::Exec | ServiceName::Files
        )
    }
}

/// The limits every server shares; also used by `relay`.
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    /// Connections open at once; more are refused at once (line services
    /// first send an error line).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNS, value_parser = number_in::<usize>(MAX_CONNS_RANGE))]
    pub max_conns: usize,

    /// Close a connection after this long with no byte either way; 0 for never.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// The longest line a line service accepts [default: 64KiB; chat 4KiB].
    /// A longer one gets an error line; stamp and greet then close the
    /// connection, chat drops the line and goes on.
    #[arg(long, value_name = "BYTES", value_parser = usize_size_in(MAX_LINE_RANGE))]
    pub max_line: Option<usize>,

    /// At Ctrl-C / SIGTERM, how long open connections may finish before
    /// they are closed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    #[command(flatten)]
    pub acl: AclArgs,
}

impl LimitArgs {
    /// The resolved limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_conns: self.max_conns,
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            grace: self.grace,
            acl: self.acl.acl(),
        }
    }
}

/// Arguments of `sockit serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sockit serve                                   all services on their default ports
  sockit serve greet --listen 127.0.0.1:0         port 0: the system picks; the status line tells
  sockit serve echo --listen udp://[::1]:0 --listen unix:///tmp/e.sock
  sockit serve echo stamp --listen echo=:9007 --listen stamp=udp://:9013
  sockit serve stamp --utc --idle-timeout 30s --max-conns 500

Each listener prints `listening on <endpoint> (<service>)` on stderr when ready.
Ctrl-C or SIGTERM stops accepting, gives open connections --grace, and exits 0.")]
pub struct ServeArgs {
    /// Services to run [default: echo stamp greet chat files].
    #[arg(value_enum, value_name = "SERVICE")]
    pub services: Vec<ServiceName>,

    /// Where to listen, instead of the defaults: ENDPOINT when one service is
    /// named, else SERVICE=ENDPOINT. Repeatable.
    #[arg(short, long, value_name = "[SERVICE=]ENDPOINT")]
    pub listen: Vec<String>,

    /// Chat: serve its page for browsers here (`GET /`, the WebSocket on
    /// `/ws`, `/health`), HOST:PORT or tls://HOST:PORT. Chat on its default
    /// endpoint serves it on 127.0.0.1:7071 unless this says otherwise; a
    /// chat given --listen serves a page only when asked.
    #[arg(long, value_name = "ENDPOINT")]
    pub web: Option<Endpoint>,

    /// Chat: keep the last N posts of each room; a member who joins gets
    /// them first, each line with its time, and `/since ID` gives a client
    /// that comes back what it missed. 0 keeps none. At most 256 KiB per
    /// room and 256 rooms, whatever N.
    #[arg(long, value_name = "N", default_value_t = chat::DEFAULT_HISTORY, value_parser = number_in::<usize>(0..=100_000))]
    pub history: usize,

    /// Stamp times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,

    /// Chat as a raw byte broker, like `ncat --broker`: bytes from any
    /// client go verbatim to all the others; no nicks, no commands.
    #[arg(long)]
    pub raw: bool,

    /// Chat: how many posts (a line, or one client's burst of lines, at
    /// most 16 KiB) a client may fall behind before it is disconnected; a
    /// slow reader never slows anyone else.
    #[arg(long, value_name = "POSTS", default_value_t = chat::DEFAULT_QUEUE, value_parser = number_in::<usize>(MAX_QUEUE_RANGE))]
    pub max_queue: usize,

    /// Chat: rooms with more members than this get no `* nick joined` and
    /// `* nick left` notices (a crowd arriving at once would bury every
    /// line under them).
    #[arg(long, value_name = "MEMBERS", default_value_t = chat::DEFAULT_QUIET_ABOVE, value_parser = number_in::<usize>(QUIET_ABOVE_RANGE))]
    pub quiet_above: usize,

    /// Chat: make every `sockit serve chat` on this Redis one chat (rooms,
    /// direct messages, /who and unique nicks across instances).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// Chat: lines per second a client may send (e.g. 10 or 10/s); more get
    /// `! slow down` and are dropped.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate: Option<u32>,

    #[command(flatten)]
    pub exec: ExecArgs,

    #[command(flatten)]
    pub files: FilesArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub tls: TlsServerArgs,

    #[command(flatten)]
    pub ws: WsArgs,
}

/// The files service's flags.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Files")]
pub struct FilesArgs {
    /// Files: where received files go (created when missing).
    #[arg(long, value_name = "DIR", default_value = "received")]
    pub dir: PathBuf,

    /// Files: replace a file of the same name that differs (identical
    /// ones are always skipped).
    #[arg(long, conflicts_with = "rename")]
    pub overwrite: bool,

    /// Files: store a file whose name is taken as `name (1).ext` (a sender
    /// may also ask for this with `sockit send --rename`).
    #[arg(long)]
    pub rename: bool,

    /// Files: the largest file accepted.
    #[arg(long, value_name = "BYTES", default_value = "16GiB", value_parser = size_in(MAX_SIZE_RANGE))]
    pub max_size: u64,

    /// Files: partial files of interrupted transfers are kept this long
    /// for a resume, then deleted.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub partial_ttl: Duration,

    /// Files: sessions receiving at once (each holds a disk thread from
    /// its first entry to its end); one more is told "server busy". A
    /// session that only connected does not count.
    #[arg(long, value_name = "N", default_value_t = sockit::services::files::DEFAULT_MAX_TRANSFERS,
          value_parser = number_in::<usize>(MAX_TRANSFERS_RANGE))]
    pub max_transfers: usize,

    /// Files: transfers one address (an IPv6 /64) may have at once, so that
    /// one peer cannot take every --max-transfers slot.
    #[arg(long, value_name = "N", default_value_t = sockit::services::files::DEFAULT_TRANSFERS_PER_ADDRESS,
          value_parser = number_in::<usize>(MAX_TRANSFERS_RANGE))]
    pub max_transfers_per_address: usize,

    /// Files: directories one session may create (each is remembered, in
    /// under 450 bytes, to set its mode and time at the end); entries that
    /// need more are refused, and a second run stores the rest.
    #[arg(long, value_name = "N", default_value_t = sockit::services::files::DEFAULT_MAX_DIRS,
          value_parser = number_in::<usize>(MAX_DIRS_RANGE))]
    pub max_dirs: usize,
}

impl FilesArgs {
    /// The files configuration.
    pub fn config(&self, token: Option<Vec<u8>>, handshakes_per_address: u32) -> FilesConfig {
        let policy = match (self.overwrite, self.rename) {
            (true, _) => Policy::Overwrite,
            (_, true) => Policy::Rename,
            _ => Policy::Refuse,
        };
        FilesConfig {
            dir: self.dir.clone(),
            token,
            policy,
            max_size: self.max_size,
            partial_ttl: self.partial_ttl,
            max_transfers: self.max_transfers,
            max_dirs: self.max_dirs,
            transfers_per_address: self.max_transfers_per_address,
            handshakes_per_address,
        }
    }
}

/// The exec service's flags.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Exec")]
pub struct ExecArgs {
    /// Exec and files: the secret clients must prove they hold, read from
    /// this file (or from the SOCKIT_TOKEN variable). It never crosses the
    /// wire. Exec requires one; files takes one if given.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Exec: let clients send shell lines (run by /bin/sh -c). Without it,
    /// commands are argv and `;`, `$(…)`, `|` are plain characters.
    #[arg(long)]
    pub shell: bool,

    /// Exec: a program clients may run (the command's first word exactly as sent, e.g. uptime or
    /// /usr/bin/df); repeatable. Without it, any program may run.
    #[arg(long, value_name = "PROGRAM")]
    pub allow_cmd: Vec<String>,

    /// Exec: working directory of commands [default: the server's].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Exec: pass this variable of the server's environment on to commands;
    /// repeatable. Commands otherwise get only PATH=/usr/local/bin:/usr/bin:/bin.
    #[arg(long, value_name = "NAME")]
    pub env: Vec<String>,

    /// Exec: kill a command, with its whole process group, after this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Exec: output (stdout and stderr together) sent back per command;
    /// past it, the rest is dropped and the client told.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = size_in(MAX_OUTPUT_RANGE))]
    pub max_output: u64,

    /// Exec and files: token handshakes one address (an IPv6 /64) may have
    /// open at once; more are refused at once. Each address's proofs are
    /// checked one at a time, spaced by its failures, whatever the number.
    #[arg(long, value_name = "N", default_value_t = sockit::auth::DEFAULT_PENDING_PER_ADDRESS,
          value_parser = number_in::<u32>(MAX_HANDSHAKES_RANGE))]
    pub max_handshakes: u32,

    /// Exec: allow listening on a non-loopback address without TLS, where
    /// anyone on the path reads commands and output.
    #[arg(long)]
    pub allow_plaintext: bool,
}

impl ExecArgs {
    /// The exec configuration, checked against where exec will listen.
    pub async fn config(&self, endpoints: &[&Endpoint], client_ca: bool) -> Result<ExecConfig, Error> {
        let token = crate::cli::read_token(self.token_file.as_deref())?;
        match &token {
            Some(t) if t.len() < 16 => warn!("the exec token is {} bytes: use at least 16 random ones", t.len()),
            _ => {}
        }
        if token.is_none() && !client_ca {
            return Err(Error::Usage(
                "exec runs commands for whoever it admits, so it needs a secret: --token-file FILE or SOCKIT_TOKEN \
                 (e.g. head -c 32 /dev/urandom | base64 > token), or TLS client certificates (--tls-client-ca)"
                    .into(),
            ));
        }
        if self.shell && !self.allow_cmd.is_empty() {
            return Err(Error::Usage("--allow-cmd cannot restrict shell lines: drop --shell, or --allow-cmd".into()));
        }
        for ep in endpoints {
            match ep {
                Endpoint::Tcp(hp) | Endpoint::Ws { tls: false, at: hp, .. }
                    if !self.allow_plaintext && !hp.resolve().await?.iter().all(|a| a.ip().is_loopback()) =>
                {
                    return Err(Error::Usage(format!(
                        "exec on {ep} would carry commands and output in the clear: listen on tls://{hp} \
                         instead, or pass --allow-plaintext"
                    )));
                }
                Endpoint::Tcp(_) | Endpoint::Unix(_) | Endpoint::Ws { tls: false, .. } if token.is_none() => {
                    return Err(Error::Usage(format!(
                        "exec on {ep} cannot check client certificates without TLS: give it a token too, or listen on tls://"
                    )));
                }
                _ => {}
            }
        }
        if let Some(dir) = &self.cwd
            && !dir.is_dir()
        {
            return Err(Error::Usage(format!("--cwd {}: not a directory", dir.display())));
        }
        Ok(ExecConfig {
            token,
            shell: self.shell,
            allow_cmd: self.allow_cmd.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            timeout: self.timeout,
            max_output: self.max_output,
            handshakes_per_address: self.max_handshakes,
        })
    }
}

impl ServeArgs {
    /// Which service listens where, checked before anything is bound.
    pub fn plan(&self) -> Result<Vec<(ServiceName, Endpoint)>, Error> {
        let usage = |msg: String| Err(Error::Usage(msg));
        let services = if self.services.is_empty() {
            vec![ServiceName::Echo, ServiceName::Stamp, ServiceName::Greet, ServiceName::Chat, ServiceName::Files]
        } else {
            self.services.clone()
        };
        let mut plan = Vec::new();
        for spec in &self.listen {
            let (service, endpoint) = match spec.split_once('=') {
                Some((name, ep)) => {
                    let Ok(service) = ServiceName::from_str(name, true) else {
                        return usage(format!("--listen {spec}: unknown service '{name}'"));
                    };
                    if !services.contains(&service) {
                        return usage(format!("--listen {spec}: {name} is not among the services to run; name it too"));
                    }
                    (service, ep)
                }
                None if services.len() == 1 => (services[0], spec.as_str()),
                None => return usage(format!("--listen {spec}: with several services, write SERVICE=ENDPOINT")),
            };
            plan.push((service, endpoint.parse::<Endpoint>()?));
        }
        for &service in &services {
            if !plan.iter().any(|(s, _)| *s == service) {
                plan.extend(service.default_endpoints().into_iter().map(|ep| (service, ep)));
            }
        }
        for (service, ep) in &plan {
            if ep.is_datagram() && !service.speaks_udp() {
                return usage(format!("{} speaks TCP and Unix streams, not UDP: drop {ep}", service.name()));
            }
        }
        Ok(plan)
    }
}

/// `10` or `10/s` lines per second, within [`RATE_RANGE`].
fn parse_rate(s: &str) -> Result<u32, String> {
    number_in::<u32>(RATE_RANGE)(s.trim().trim_end_matches("/s"))
        .map_err(|e| format!("invalid rate '{s}': {e}; give lines per second, e.g. 10/s"))
}

/// Runs `sockit serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    let signal = super::shutdown_signal();
    sockit::sys::raise_open_file_limit();
    if let Some(cap) = sockit::sys::somaxconn().filter(|&c| c < 1024) {
        warn!(
            "net.core.somaxconn is {cap}: bursts of connects may overflow the accept queue; raise it (sysctl -w net.core.somaxconn={LISTEN_BACKLOG})"
        );
    }
    let server = Server::new(args.limits.limits());
    let max_line = args.limits.max_line.unwrap_or(DEFAULT_MAX_LINE);
    let stamp = Arc::new(Stamp { utc: args.utc, max_line });
    let config = chat::ChatConfig {
        max_line: args.limits.max_line.unwrap_or(chat::DEFAULT_MAX_LINE),
        queue: args.max_queue,
        rate: args.rate,
        quiet_above: args.quiet_above,
        history: args.history,
    };
    let runs_chat = plan.iter().any(|(s, _)| *s == ServiceName::Chat);
    let chat = Arc::new(match args.redis.as_deref().filter(|_| runs_chat) {
        Some(url) => {
            let (chat, link) = Chat::with_redis(url, config, server.shutdown_token()).map_err(Error::Usage)?;
            // Under the server's shutdown: at exit it gives the nicks up
            // before the process ends.
            server.spawn(link);
            chat
        }
        None => Chat::new(config),
    });
    // The raw broker sets aside its whole queue up front: only for --raw.
    let raw = (runs_chat && args.raw).then(|| Arc::new(RawBroker::new(args.max_queue)));
    let web = web_endpoint(&args, runs_chat)?;
    let tls = args.tls.server(&plan.iter().map(|(_, ep)| ep).chain(&web).collect::<Vec<_>>())?;
    let exec_eps: Vec<&Endpoint> = plan.iter().filter(|(s, _)| *s == ServiceName::Exec).map(|(_, ep)| ep).collect();
    let exec = match exec_eps.is_empty() {
        true => None,
        false => Some(Arc::new(Exec::new(args.exec.config(&exec_eps, args.tls.tls_client_ca.is_some()).await?))),
    };
    let files = match plan.iter().any(|(s, _)| *s == ServiceName::Files) {
        true => {
            let token = crate::cli::read_token(args.exec.token_file.as_deref())?;
            Some(Arc::new(Files::new(args.files.config(token, args.exec.max_handshakes))))
        }
        false => None,
    };
    if let Some(web) = web {
        let mut listener = web.bind_listener(tls.clone()).await?;
        listener.configure_ws(|w| {
            w.config = WsConfig { text: true, ..args.ws.config() };
            w.origins = args.ws.web_origin.clone();
            w.pages = chat::web::PAGES.to_vec();
        });
        let served = match raw.clone() {
            Some(raw) => server.serve_stream(listener, "web", raw),
            None => server.serve_stream(listener, "web", chat.clone()),
        };
        let at = served.with_context(|| format!("serving the chat page on {web}"))?;
        if let Endpoint::Ws { tls, at, .. } = at {
            eprintln!("chat page: {}://{at}/", if tls { "https" } else { "http" });
        }
    }
    // The core prints each listener's `listening on` line once it serves.
    for (service, endpoint) in plan {
        let name = service.name();
        let context = || format!("serving {name} on {endpoint}");
        if endpoint.is_datagram() {
            let socket = endpoint.bind_datagram().await?;
            match service {
                ServiceName::Echo => server.serve_datagram(socket, name, Arc::new(Echo)),
                ServiceName::Stamp => server.serve_datagram(socket, name, stamp.clone()),
                ServiceName::Discard => server.serve_datagram(socket, name, Arc::new(Discard)),
                ServiceName::Greet
                | ServiceName::Chargen
                | ServiceName::Chat
                | ServiceName::Exec
                | ServiceName::Files => {
                    unreachable!("checked by plan()")
                }
            }
            .with_context(context)?;
        } else {
            let mut listener = endpoint.bind_listener(tls.clone()).await?;
            args.ws.apply(&mut listener);
            match service {
                ServiceName::Echo => server.serve_stream(listener, name, Arc::new(Echo)),
                ServiceName::Stamp => server.serve_stream(listener, name, stamp.clone()),
                ServiceName::Greet => server.serve_stream(listener, name, Arc::new(Greet { max_line })),
                ServiceName::Discard => server.serve_stream(listener, name, Arc::new(Discard)),
                ServiceName::Chargen => server.serve_stream(listener, name, Arc::new(Chargen)),
                ServiceName::Chat if args.raw => {
                    server.serve_stream(listener, name, raw.clone().expect("made for chat --raw"))
                }
                ServiceName::Chat => server.serve_stream(listener, name, chat.clone()),
                ServiceName::Exec => server.serve_stream(listener, name, exec.clone().expect("made for exec")),
                ServiceName::Files => server.serve_stream(listener, name, files.clone().expect("made for files")),
            }
            .with_context(context)?;
        }
    }
    server.run_until(signal).await;
    Ok(ExitCode::Ok)
}

/// Where chat's page goes: `--web` as a WebSocket endpoint on `/ws`, or
/// 127.0.0.1:7071 for a chat on its default endpoint.
fn web_endpoint(args: &ServeArgs, runs_chat: bool) -> Result<Option<Endpoint>, Error> {
    let web = match &args.web {
        Some(_) if !runs_chat => return Err(Error::Usage("--web serves the chat's page: run chat too".into())),
        Some(_) if args.raw => {
            return Err(Error::Usage("--web serves the line chat's page; chat --raw is a byte broker".into()));
        }
        None if args.raw => return Ok(None),
        Some(web) => web.clone(),
        None if runs_chat && args.listen.is_empty() => "127.0.0.1:7071".parse().expect("a valid endpoint"),
        None => return Ok(None),
    };
    let path = chat::web::PATH.to_string();
    match web {
        Endpoint::Tcp(at) => Ok(Some(Endpoint::Ws { tls: false, at, path })),
        Endpoint::Tls(at) => Ok(Some(Endpoint::Ws { tls: true, at, path })),
        Endpoint::Ws { tls, at, .. } => Ok(Some(Endpoint::Ws { tls, at, path })),
        other => Err(Error::Usage(format!("--web {other}: give HOST:PORT or tls://HOST:PORT"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn plan(args: &[&str]) -> anyhow::Result<Vec<(ServiceName, String)>> {
        let cli = Cli::try_parse_from(["sockit", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(serve) = cli.command else { unreachable!() };
        Ok(serve.plan()?.into_iter().map(|(s, e)| (s, e.to_string())).collect())
    }

    #[test]
    fn default_set() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.len(), 7);
        assert!(p.contains(&(ServiceName::Files, "tcp://127.0.0.1:7080".into())));
        assert!(p.contains(&(ServiceName::Chat, "tcp://127.0.0.1:7070".into())));
        assert!(p.contains(&(ServiceName::Greet, "tcp://127.0.0.1:7014".into())));
        assert!(p.contains(&(ServiceName::Stamp, "udp://127.0.0.1:7013".into())));
    }

    #[test]
    fn listen_replaces_defaults() {
        let p = plan(&["echo", "--listen", "udp://[::1]:0", "--listen", "unix:///tmp/e.sock"]).unwrap();
        assert_eq!(
            p,
            vec![(ServiceName::Echo, "udp://[::1]:0".into()), (ServiceName::Echo, "unix:///tmp/e.sock".into())]
        );
        let p = plan(&["echo", "greet", "--listen", "greet=:0"]).unwrap();
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn bad_plans_say_why() {
        let err = |a: &[&str]| plan(a).unwrap_err().to_string();
        assert!(err(&["greet", "--listen", "udp://:0"]).contains("not UDP"));
        assert!(err(&["echo", "greet", "--listen", ":0"]).contains("SERVICE=ENDPOINT"));
        assert!(err(&["echo", "--listen", "greet=:0"]).contains("name it too"));
        assert!(err(&["echo", "--listen", "localhost"]).contains("missing port"));
    }

    #[test]
    fn limit_flags() {
        let cli = Cli::try_parse_from(["sockit", "serve", "--idle-timeout", "0", "--max-line", "1k"]).unwrap();
        let Command::Serve(serve) = cli.command else { unreachable!() };
        let l = serve.limits.limits();
        assert_eq!((l.idle_timeout, serve.limits.max_line, l.max_conns), (None, Some(1024), 10_000));
        let cli = Cli::try_parse_from(["sockit", "serve", "chat", "--rate", "10/s", "--max-queue", "8"]).unwrap();
        let Command::Serve(serve) = cli.command else { unreachable!() };
        assert_eq!((serve.rate, serve.max_queue, serve.limits.max_line), (Some(10), 8, None));
        assert!(Cli::try_parse_from(["sockit", "serve", "--rate", "fast"]).is_err());
    }
}
