//! `sockit exec ENDPOINT -- CMD ARGS…`: arguments, the prompt and the
//! exit status around the exec client ([`sockit::services::exec::client`]).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use super::pipe::StdinPump;
use super::tls_args::TlsClientArgs;
use sockit::auth;
use sockit::conn::Stream;
use sockit::endpoint::Endpoint;
use sockit::error::ExitCode;
use sockit::frames::FrameStream;
use sockit::services::exec::HANDSHAKE;
use sockit::services::exec::client::{self, ClientError};
use sockit::services::exec::wire::{Exit, FLAG_SHELL, Frame};
use sockit::units::parse_duration;

/// Arguments of `sockit exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Runs CMD on the server (`sockit serve exec`) and streams its stdout and
stderr here, apart, as they come; exits with the command's exit status
(128+N if signal N killed it, 124 if it ran past the server's --timeout,
126/127 if it could not start or was not allowed). With no command, reads
one command per line at a `cmd> ` prompt (shell lines if the server allows
them, else words split as a shell would, quotes kept).

The token comes from --token-file or SOCKIT_TOKEN and never crosses the
wire: the client answers the server's one-time challenge with an HMAC.

Examples:
  SOCKIT_TOKEN=$(cat token) sockit exec 127.0.0.1:7022 -- uname -a
  sockit exec --token-file token tls://host:7022 --tls-fingerprint AB:CD:… -- df -h
  sockit exec --token-file token 127.0.0.1:7022 --shell 'ls | wc -l'
  sockit exec --token-file token 127.0.0.1:7022            interactive

Exit codes of its own: 2 bad usage, 3 could not connect, 5 TLS failed,
6 authentication refused, 1 protocol or other errors.")]
pub struct ExecArgs {
    /// The exec server.
    #[arg(help = "The exec server: HOST:PORT, tls://HOST:PORT, unix:///path")]
    pub endpoint: Endpoint,

    /// Read the token from this file (else SOCKIT_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Send LINE to the server's shell (when it runs with --shell).
    #[arg(long, value_name = "LINE", conflicts_with = "command")]
    pub shell: Option<String>,

    /// Give up connecting, or waiting for the server's greeting, after
    /// this long.
    #[arg(short = 'w', long = "wait", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,

    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// The command and its arguments, sent as argv: no shell on either side.
    #[arg(value_name = "CMD", trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

type Client = client::Client<Stream>;

/// Runs one command, output to ours; says how it ended when a signal or
/// the timeout ended it. A closed stdout (`| head`) ends the process quietly.
async fn run_one(c: &mut Client, request: Frame) -> anyhow::Result<Exit> {
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    let exit = match c.run(request, &mut out, &mut err, |t| eprintln!("sockit: remote: {t}")).await {
        Err(ClientError::OutputClosed) => std::process::exit(ExitCode::Ok.code()),
        r => r?,
    };
    match exit {
        Exit::TimedOut => eprintln!("sockit: remote: timed out (the server's --timeout); its process group was killed"),
        Exit::Signal(s) => eprintln!("sockit: remote: killed by signal {s}"),
        _ => {}
    }
    Ok(exit)
}

/// Runs `sockit exec`.
pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let tls = args.tls.client(&args.endpoint)?;
    let mut stream = args.endpoint.connect_with(Some(args.wait), tls.as_ref()).await?;
    let token = crate::cli::read_token(args.token_file.as_deref())?;
    // Into the library's error, whose exit code main finds (6 for a refusal).
    let admitted = auth::login(&mut stream, &HANDSHAKE, &args.endpoint, token.as_deref(), args.wait)
        .await
        .map_err(sockit::Error::from)?;
    let flags = admitted.flags;
    let mut c = Client::new(FrameStream::from_parts(stream, admitted.rest));
    if let Some(line) = args.shell {
        return Ok(run_one(&mut c, Frame::Shell(line.into_bytes())).await?.status());
    }
    if !args.command.is_empty() {
        let argv = args.command.into_iter().map(OsString::into_vec).collect();
        return Ok(run_one(&mut c, Frame::Run(argv)).await?.status());
    }
    interactive(&mut c, flags & FLAG_SHELL != 0).await
}

/// One command per line at a `cmd> ` prompt (on stderr, so stdout carries
/// only the commands' output). Ends at EOF or `exit`; exits with the last
/// command's status.
async fn interactive(c: &mut Client, shell: bool) -> anyhow::Result<i32> {
    let mut stdin = StdinPump::start(true);
    let mut status = 0;
    if std::io::stdin().is_terminal() {
        let how = if shell { "shell lines" } else { "commands (no shell: words split, quotes kept)" };
        eprintln!("connected; type {how}, `exit` to leave");
    }
    loop {
        eprint!("cmd> ");
        let Some(line) = stdin.recv().await else { break };
        let line = String::from_utf8_lossy(&line).trim().to_string();
        if line.is_empty() {
            continue;
        }
        if line == "exit" || line == "quit" {
            break;
        }
        let request = if shell {
            Frame::Shell(line.into_bytes())
        } else {
            match split_words(&line) {
                Ok(words) => Frame::Run(words.into_iter().map(String::into_bytes).collect()),
                Err(e) => {
                    eprintln!("sockit: {e}");
                    continue;
                }
            }
        };
        status = run_one(c, request).await?.status();
    }
    Ok(status)
}

/// Splits a line into words as a shell would for a simple command: spaces
/// separate, '…' and "…" quote, \ escapes. Nothing is expanded or run.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let (mut words, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell_without_expanding() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("ls -l /tmp"), ["ls", "-l", "/tmp"]);
        assert_eq!(w("echo 'a b' \"c d\" e\\ f"), ["echo", "a b", "c d", "e f"]);
        assert_eq!(w("echo $(id); touch x"), ["echo", "$(id);", "touch", "x"]);
        assert_eq!(w("printf ''"), ["printf", ""]);
        assert_eq!(w("  "), Vec::<String>::new());
        assert!(split_words("echo 'open").is_err());
    }
}
