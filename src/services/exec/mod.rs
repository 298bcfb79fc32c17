//! `exec`: the tutorial's remote-command server, made safe.
//!
//! - Nobody runs anything without proving they hold the token (HMAC
//!   challenge–response over a fresh nonce; see [`crate::auth`]) or a TLS client
//!   certificate the server's `--tls-client-ca` signed. Each failed proof
//!   makes the next attempt from that address wait longer.
//! - Commands are argv, run without a shell, unless the server allows shell
//!   lines (`--shell`); `--allow-cmd` limits what may run.
//! - Each run has a clean environment, its own process group, stdin from
//!   `/dev/null`, and output streamed back live, stdout and stderr apart,
//!   capped at `--max-output`.
//! - A run ends when its command exits: the exit status is reported then,
//!   not when the output pipes close, and whatever the command left running
//!   in its process group is killed (output already in the pipes is still
//!   sent). The group is killed whole at `--timeout`, whatever the client
//!   does (even one that stops reading), and when the client goes away.
//! - A process that leaves the group (`setsid`, or `setpgid` to another
//!   group) is out of reach: it keeps running as the server's user, and
//!   only its output stops at the exit (writes then fail with `EPIPE`).
//!   Confine the server (a systemd unit, a cgroup, a PID namespace) or
//!   keep `setsid` and shells off `--allow-cmd` where that matters.

pub mod client;
pub mod wire;

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Sleep;
use tracing::info;

use self::wire::{Exit, FLAG_SHELL, Frame};
use crate::auth::{self, Throttle};
use crate::frames::FrameStream;
use crate::sys::process::ExitFd;
use crate::{Conn, Service};

/// The token handshake exec speaks first ([`crate::auth`]).
pub const HANDSHAKE: auth::Protocol = auth::Protocol {
    name: "exec",
    context: b"sockit-exec-v1",
    error_type: wire::ERROR_TYPE,
    last_type: wire::LAST_TYPE,
};

/// Default for [`ExecConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`ExecConfig::max_output`]: 16 MiB.
pub const DEFAULT_MAX_OUTPUT: u64 = 16 << 20;
/// The `PATH` commands get when `--env PATH` does not pass the server's on.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Output is read and sent in pieces of at most this much.
const CHUNK: usize = 64 * 1024;

/// How the exec service runs commands.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// The shared secret; `None` when clients authenticate by TLS
    /// certificate only.
    pub token: Option<Vec<u8>>,
    /// Whether clients may send shell lines.
    pub shell: bool,
    /// Programs that may run (argv\[0\] exactly); empty allows any.
    pub allow_cmd: Vec<String>,
    /// Working directory of commands.
    pub cwd: Option<PathBuf>,
    /// Variables passed through from the server's environment.
    pub env: Vec<String>,
    /// A run is killed, with its process group, after this long.
    pub timeout: Duration,
    /// Output (stdout and stderr together) sent back per run; the rest is
    /// dropped with a notice.
    pub max_output: u64,
    /// Token handshakes one address may have open at once
    /// ([`Throttle`]).
    pub handshakes_per_address: u32,
}

/// The exec service.
#[derive(Debug)]
pub struct Exec {
    config: ExecConfig,
    throttle: Throttle,
}

impl Exec {
    /// An exec service.
    pub fn new(config: ExecConfig) -> Self {
        Exec { throttle: Throttle::new(config.handshakes_per_address), config }
    }
}

type Session = FrameStream<Conn, Frame>;

impl Service for Exec {
    async fn serve(&self, mut conn: Conn) -> io::Result<()> {
        let flags = if self.config.shell { FLAG_SHELL } else { 0 };
        let token = self.config.token.as_deref();
        let Some(rest) = auth::accept(&mut conn, &HANDSHAKE, token, &self.throttle, flags, false).await? else {
            return Ok(());
        };
        // Commands the client sent without waiting for Ready are in `rest`.
        let mut s = Session::from_parts(conn, rest);
        while let Some(frame) = s.recv().await? {
            let command = match frame {
                Frame::Run(argv) => self.argv_command(argv),
                Frame::Shell(line) if self.config.shell => Ok(self.shell_command(line)),
                Frame::Shell(_) => {
                    Err("this server runs commands as argv only (it was not started with --shell)".to_string())
                }
                other => return refuse(&mut s, format!("unexpected {other:?} frame: expected a command")).await,
            };
            match command {
                Ok(cmd) => self.run(&mut s, cmd).await?,
                Err(why) => {
                    s.send(&Frame::Error(why)).await?;
                    s.send(&Frame::Exit(Exit::NotStarted(wire::CANNOT_EXECUTE))).await?;
                }
            }
        }
        Ok(())
    }

    /// The socket, the command's three pipes and the pidfd that watches it.
    fn descriptors(&self) -> usize {
        5
    }
}

/// Tells the client why, and ends the session with that reason.
async fn refuse<T>(s: &mut Session, why: String) -> io::Result<T> {
    let _ = s.send(&Frame::Error(why.clone())).await;
    Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
}

impl Exec {
    fn argv_command(&self, argv: Vec<Vec<u8>>) -> Result<Command, String> {
        let mut argv = argv.into_iter().map(OsString::from_vec);
        let program = argv.next().ok_or("empty command")?;
        let name = program.to_string_lossy().into_owned();
        if name.is_empty() || name.contains('\0') {
            return Err("invalid program name".into());
        }
        if !self.config.allow_cmd.is_empty() && !self.config.allow_cmd.contains(&name) {
            return Err(format!("'{name}' is not allowed here (allowed: {})", self.config.allow_cmd.join(", ")));
        }
        let mut cmd = self.base_command(program);
        cmd.args(argv);
        info!(program = %name, "run");
        Ok(cmd)
    }

    fn shell_command(&self, line: Vec<u8>) -> Command {
        info!(line = %String::from_utf8_lossy(&line), "run shell line");
        let mut cmd = self.base_command("/bin/sh".into());
        cmd.arg("-c").arg(OsString::from_vec(line));
        cmd
    }

    fn base_command(&self, program: OsString) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear().env("PATH", DEFAULT_PATH);
        for name in &self.config.env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some(dir) = &self.config.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        cmd
    }

    /// Runs one command to its end, streaming its output.
    ///
    /// The run ends when the command (the process it started) exits, not
    /// when its output pipes close: the rest of its process group is killed
    /// then, and what the pipes held at that moment is still sent. At
    /// `--timeout` the group is killed whatever the client does, even while
    /// a send waits for a client that reads nothing.
    async fn run(&self, s: &mut Session, mut cmd: Command) -> io::Result<()> {
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let code = if e.kind() == io::ErrorKind::NotFound { wire::NOT_FOUND } else { wire::CANNOT_EXECUTE };
                s.send(&Frame::Error(format!("cannot run: {e}"))).await?;
                return s.send(&Frame::Exit(Exit::NotStarted(code))).await;
            }
        };
        // From here on, the whole group dies with this function, however it
        // ends: timeout, client gone, server shutting down.
        let pid = child.id();
        let mut group = Group(pid);
        let exit_watch = ExitWatch::new(pid);
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let (mut obuf, mut ebuf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let deadline = tokio::time::sleep(self.config.timeout);
        tokio::pin!(deadline);
        let mut budget = Budget { max: self.config.max_output, sent: 0, truncated: false };
        let mut probe = [0u8; 1];
        let (mut status, mut timed_out) = (None, false);
        while status.is_none() && !timed_out {
            let (n, is_out) = tokio::select! {
                r = read_some(&mut out, &mut obuf) => (r?, true),
                r = read_some(&mut err, &mut ebuf) => (r?, false),
                r = exit_watch.wait(&mut child, &mut group) => {
                    status = Some(r?);
                    continue;
                }
                _ = &mut deadline => {
                    timed_out = true;
                    continue;
                }
                // The client must wait for Exit: anything it sends now,
                // EOF included, means it is gone or confused.
                _ = s.io_mut().read(&mut probe) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client left while the command ran; killed it"));
                }
            };
            if n == 0 {
                if is_out {
                    out = None
                } else {
                    err = None
                }
                continue;
            }
            let data = if is_out { &obuf[..n] } else { &ebuf[..n] };
            timed_out = forward(s, &mut budget, data, is_out, &mut deadline, &group).await?;
        }
        let exit = match status {
            Some(st) => {
                // The group is dead, so nothing of the run writes any more
                // but a process that left the group (setsid): send what the
                // pipes hold now, and stop there rather than wait for it.
                let (d, g) = (&mut deadline, &group);
                if !drain(s, &mut budget, &mut out, &mut obuf, true, d, g).await? {
                    drain(s, &mut budget, &mut err, &mut ebuf, false, d, g).await?;
                }
                use std::os::unix::process::ExitStatusExt;
                match (st.code(), st.signal()) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(sig)) => Exit::Signal(sig),
                    (None, None) => Exit::Code(-1),
                }
            }
            None => {
                group.kill();
                let _ = child.wait().await;
                group.forget();
                info!(timeout_ms = self.config.timeout.as_millis() as u64, "timed out; process group killed");
                Exit::TimedOut
            }
        };
        // Closing the pipes now makes a leftover writer outside the group
        // fail (EPIPE, SIGPIPE) instead of filling a pipe nobody reads.
        drop((out, err));
        info!(?exit, output_bytes = budget.sent, "exited");
        s.send(&Frame::Exit(exit)).await
    }
}

/// What may still be sent of a run's output (`--max-output`).
struct Budget {
    max: u64,
    sent: u64,
    truncated: bool,
}

/// Sends one piece of output, and the truncation notice once the budget is
/// spent, watching the deadline. Returns whether it passed (the process
/// group is killed by then).
async fn forward(
    s: &mut Session,
    budget: &mut Budget,
    data: &[u8],
    is_out: bool,
    deadline: &mut Pin<&mut Sleep>,
    group: &Group,
) -> io::Result<bool> {
    if budget.truncated {
        return Ok(false);
    }
    let take = data.len().min(budget.max.saturating_sub(budget.sent) as usize);
    budget.sent += take as u64;
    if take > 0 {
        let piece = Bytes::copy_from_slice(&data[..take]);
        if send_watched(s, &if is_out { Frame::Stdout(piece) } else { Frame::Stderr(piece) }, deadline, group).await? {
            return Ok(true);
        }
    }
    if take < data.len() {
        budget.truncated = true;
        let cap = crate::units::format_size(budget.max);
        let notice = Frame::Notice(format!("output truncated at {cap} (--max-output); the rest was dropped"));
        return send_watched(s, &notice, deadline, group).await;
    }
    Ok(false)
}

/// Sends what `pipe` holds now, without waiting for more. Returns whether
/// the deadline passed meanwhile.
async fn drain<R: AsFd>(
    s: &mut Session,
    budget: &mut Budget,
    pipe: &mut Option<R>,
    buf: &mut [u8],
    is_out: bool,
    deadline: &mut Pin<&mut Sleep>,
    group: &Group,
) -> io::Result<bool> {
    // Only what is there now: a writer outside the group could go on
    // writing for ever.
    let mut left = pipe.as_ref().map_or(0, crate::sys::process::readable_now);
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = read_now(pipe, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        if forward(s, budget, &buf[..n], is_out, deadline, group).await? {
            return Ok(true);
        }
        left -= n as u64;
    }
    Ok(false)
}

/// Sends a frame; if the deadline passes while the client is not taking
/// it, kills the group at once. Returns whether the deadline passed.
async fn send_watched(
    s: &mut Session,
    frame: &Frame,
    deadline: &mut Pin<&mut Sleep>,
    group: &Group,
) -> io::Result<bool> {
    let send = s.send(frame);
    tokio::pin!(send);
    tokio::select! {
        biased;
        r = &mut send => r.map(|()| false),
        _ = deadline => {
            group.kill();
            // The frame begun must be finished before any other can follow
            // it; a client that takes nothing is closed by the server's
            // --idle-timeout.
            send.await.map(|()| true)
        }
    }
}

/// Tells when a command has exited.
struct ExitWatch(Option<ExitFd>);

impl ExitWatch {
    /// A pidfd tells of the exit without reaping the process, so the
    /// group can be killed before its id may be reused ([`ExitFd`]).
    /// Without pidfds (Linux before 5.3), the group is killed just after
    /// the reap; with sequential pids, a reuse in between is very unlikely.
    fn new(pid: Option<u32>) -> Self {
        ExitWatch(pid.and_then(ExitFd::open))
    }

    /// Waits for the command to exit, kills the rest of its group, and
    /// reaps it.
    async fn wait(&self, child: &mut Child, group: &mut Group) -> io::Result<ExitStatus> {
        if let Some(fd) = &self.0 {
            fd.exited().await?;
            group.kill();
        }
        let status = child.wait().await?;
        group.kill();
        group.forget();
        Ok(status)
    }
}

/// Kills a process group when dropped, unless forgotten first.
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            crate::sys::process::kill_group(pid);
        }
    }

    /// Once its leader is reaped, the group id may be reused: no more kills.
    fn forget(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads what a pipe holds now, without waiting: 0 when it is empty, or at
/// EOF (then it is closed).
fn read_now<R: AsFd>(pipe: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    let Some(p) = pipe else { return Ok(0) };
    match crate::sys::process::read_now(&*p, buf) {
        Ok(0) => {
            *pipe = None;
            Ok(0)
        }
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Reads from an optional pipe; a closed (`None`) one never completes.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}
