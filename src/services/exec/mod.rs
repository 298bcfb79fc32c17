//! `exec`: the tutorial's remote-command server, made safe.
//!
//! - Nobody runs anything without proving they hold the token (HMAC
//!   challenge–response over a fresh nonce; see [`wire`]) or a TLS client
//!   certificate the server's `--tls-client-ca` signed. Each failed proof
//!   makes the next attempt from that address wait longer.
//! - Commands are argv, run without a shell, unless the server allows shell
//!   lines (`--shell`); `--allow-cmd` limits what may run.
//! - Each run has a clean environment, its own process group (killed whole
//!   at `--timeout`, or when the client goes away), stdin from `/dev/null`,
//!   and output streamed back live, stdout and stderr apart, capped at
//!   `--max-output`.

pub mod wire;

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::info;

use self::wire::{Exit, FLAG_SHELL, Frame};
use crate::auth::{self, Throttle};
use crate::frames::FrameStream;
use crate::{Conn, Service};

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
        Exec { config, throttle: Throttle::default() }
    }
}

type Session = FrameStream<Conn, Frame>;

impl Service for Exec {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let mut s = Session::new(conn);
        let flags = if self.config.shell { FLAG_SHELL } else { 0 };
        if !auth::accept(&mut s, self.config.token.as_deref(), &self.throttle, flags, false).await? {
            return Ok(());
        }
        while let Some(frame) = s.recv().await? {
            let command = match frame {
                Frame::Run(argv) => self.argv_command(argv),
                Frame::Shell(line) if self.config.shell => Ok(self.shell_command(line)),
                Frame::Shell(_) => {
                    Err("this server runs commands as argv only (it was not started with --shell)".to_string())
                }
                other => return auth::refuse(&mut s, format!("unexpected {other:?} frame: expected a command")).await,
            };
            match command {
                Ok(cmd) => self.run(&mut s, cmd).await?,
                Err(why) => {
                    s.send(&Frame::Error(why)).await?;
                    s.send(&Frame::Exit(Exit::NotStarted(126))).await?;
                }
            }
        }
        Ok(())
    }
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
    async fn run(&self, s: &mut Session, mut cmd: Command) -> io::Result<()> {
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let code = if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
                s.send(&Frame::Error(format!("cannot run: {e}"))).await?;
                return s.send(&Frame::Exit(Exit::NotStarted(code))).await;
            }
        };
        // From here on, the whole group dies with this function, however it
        // ends: timeout, client gone, server shutting down.
        let group = Group(child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)));
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let (mut obuf, mut ebuf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let deadline = tokio::time::sleep(self.config.timeout);
        tokio::pin!(deadline);
        let mut sent = 0u64;
        let mut truncated = false;
        let mut probe = [0u8; 1];
        let status = loop {
            let piece = tokio::select! {
                r = read_some(&mut out, &mut obuf) => r.map(|n| (n, true)),
                r = read_some(&mut err, &mut ebuf) => r.map(|n| (n, false)),
                r = child.wait(), if out.is_none() && err.is_none() => break Some(r?),
                _ = &mut deadline => break None,
                // The client must wait for Exit: anything it sends now,
                // EOF included, means it is gone or confused.
                _ = s.io_mut().read(&mut probe) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client left while the command ran; killed it"));
                }
            };
            let (n, is_out) = piece?;
            if n == 0 {
                if is_out {
                    out = None
                } else {
                    err = None
                }
                continue;
            }
            if truncated {
                continue;
            }
            let room = self.config.max_output.saturating_sub(sent) as usize;
            let take = n.min(room);
            let data = Bytes::copy_from_slice(if is_out { &obuf[..take] } else { &ebuf[..take] });
            sent += take as u64;
            if take > 0 {
                s.send(&if is_out { Frame::Stdout(data) } else { Frame::Stderr(data) }).await?;
            }
            if take < n {
                truncated = true;
                let cap = crate::units::format_size(self.config.max_output);
                s.send(&Frame::Notice(format!("output truncated at {cap} (--max-output); the rest was dropped")))
                    .await?;
            }
        };
        let exit = match status {
            None => {
                drop(group);
                let _ = child.wait().await;
                info!(timeout_ms = self.config.timeout.as_millis() as u64, "timed out; process group killed");
                Exit::TimedOut
            }
            Some(st) => {
                use std::os::unix::process::ExitStatusExt;
                match (st.code(), st.signal()) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(sig)) => Exit::Signal(sig),
                    (None, None) => Exit::Code(-1),
                }
            }
        };
        info!(?exit, output_bytes = sent, "exited");
        s.send(&Frame::Exit(exit)).await
    }
}

/// Kills a process group when dropped.
struct Group(Option<rustix::process::Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Reads from an optional pipe; a closed (`None`) one never completes.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}
