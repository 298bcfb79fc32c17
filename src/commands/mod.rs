//! One module per subcommand of the binary, plus what several share: the
//! shutdown signal, the stdin pump and the netcat pipe.

pub mod bench;
pub mod connect;
pub mod exec;
pub mod get;
pub mod listen;
pub mod pipe;
pub mod relay;
pub mod send;
pub mod serve;
pub mod tls_args;

use std::io::Write;

use clap::CommandFactory;
use sockit::error::ExitCode;

use crate::cli::{Cli, Command};

/// Runs a parsed command line; returns the process exit code: an
/// [`ExitCode`], except that `exec` exits with the remote command's status.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let code = match cli.command {
        Command::Exec(args) => return exec::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Connect(args) => connect::run(args).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Relay(args) => relay::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Cert(args) => tls_args::run_cert(args),
        Command::Send(args) => send::run(args).await,
        Command::Get(args) => get::run(args).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sockit", &mut out);
            print_stdout(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            print_stdout(&out)
        }
    };
    code.map(ExitCode::code)
}

/// Writes a command's output to stdout. A closed stdout (`sockit … | head`)
/// is how pipelines end, not a failure.
pub fn print_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::Ok),
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM, whichever comes first. The
/// handlers are installed by this call, not when the future is first polled:
/// call it before announcing readiness, so a signal sent as soon as the
/// `listening on` line appears is never missed.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = recv_signal(int.as_mut()) => {}
            _ = recv_signal(term.as_mut()) => {}
        }
    }
}

async fn recv_signal(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
