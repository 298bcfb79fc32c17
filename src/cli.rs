//! The command-line definition: global flags and one subcommand per job.
//! Each bigger subcommand's arguments live beside its code in
//! [`commands`](crate::commands).

use std::path::Path;

use clap::{Parser, Subcommand};

use crate::commands::{bench::BenchArgs, connect::ConnectArgs, listen::ListenArgs, relay::RelayArgs, serve::ServeArgs};
use sockit::error::Error;
use sockit::logging::LogFormat;

/// The variable a token is read from when no `--token-file` is given.
pub const TOKEN_VAR: &str = "SOCKIT_TOKEN";

/// Reads the token of exec and files: from `file` (`--token-file`), else
/// from the [`TOKEN_VAR`] variable, checked by
/// [`auth::token_from`](sockit::auth::token_from); `None` when neither is
/// given.
pub fn read_token(file: Option<&Path>) -> Result<Option<Vec<u8>>, Error> {
    let text = match (file, std::env::var_os(TOKEN_VAR)) {
        (Some(path), _) => {
            std::fs::read(path).map_err(|e| Error::Usage(format!("--token-file {}: {e}", path.display())))?
        }
        (None, Some(v)) => std::os::unix::ffi::OsStringExt::into_vec(v),
        (None, None) => return Ok(None),
    };
    sockit::auth::token_from(text).map(Some)
}

const EXAMPLES: &str = "\
Examples:
  sockit serve                          echo, stamp, greet, chat and files on 127.0.0.1
  sockit serve echo --listen 127.0.0.1:0 --listen unix:///tmp/echo.sock
  sockit connect localhost:7014         talk to the greet service
  echo hi | sockit connect udp://127.0.0.1:7013
  sockit listen 127.0.0.1:9000          wait for one peer, then pipe stdin/stdout
  sockit send photos/ --to 127.0.0.1:7080
                                        send a tree to the files service, verified
  sockit get -O https://example.com/f   download to ./f (resume with -C)

Endpoints: HOST:PORT, [::1]:PORT, tcp://HOST:PORT, udp://HOST:PORT,
unix:///path/to.sock, tls://HOST:PORT. Servers bind to 127.0.0.1 by default.";

/// sockit — the socket toolkit: echo, timestamp and greeting servers, and a
/// netcat that closes cleanly.
#[derive(Debug, Parser)]
#[command(name = "sockit", version, about, long_about = None, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// More log output: -v shows every connection, -vv debug detail.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less log output: errors only. (In connect and listen, -q is netcat's
    /// quit-after-EOF, so this one is long only.)
    #[arg(long, global = true)]
    pub quiet: bool,

    /// Log format: text, or one JSON object per event for scripts.
    #[arg(long, value_enum, default_value_t, global = true, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log level for [`sockit::logging::init`], from `-v`/`-q`:
    /// warnings by default, connection events (accepted, closed with bytes
    /// and duration) with `-v`. The relay logs each closed connection by
    /// default, and so does `--log-format json`, so scripts see every event.
    pub fn log_level(&self) -> &'static str {
        let base = i8::from(matches!(self.command, Command::Relay(_))) + i8::from(self.log_format == LogFormat::Json);
        match base + self.verbose.min(3) as i8 - i8::from(self.quiet) {
            i8::MIN..=-1 => "error",
            // The files service logs each file it stores even when quiet-ish.
            0 => "warn,sockit::services::files=info",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run built-in services (default: echo, stamp, greet, chat, files on 127.0.0.1).
    Serve(ServeArgs),
    /// Netcat client: stdin to the socket, the socket to stdout.
    #[command(visible_alias = "c")]
    Connect(ConnectArgs),
    /// Netcat server: accept a peer, then pipe stdin/stdout both ways.
    #[command(visible_alias = "l")]
    Listen(ListenArgs),
    /// Forward every connection (or UDP session) from FROM to TO.
    Relay(RelayArgs),
    /// Load generator: throughput and latency percentiles, for any server.
    Bench(BenchArgs),
    /// Run a command on a `sockit serve exec` server, output streamed back.
    Exec(crate::commands::exec::ExecArgs),
    /// Send files and directories to a `sockit serve files` server:
    /// verified end to end, resumable.
    Send(crate::commands::send::SendArgs),
    /// HTTP(S) GET: the head to stderr, the body to stdout or a file
    /// (redirects, resume, atomic files).
    Get(crate::commands::get::GetArgs),
    /// Write a self-signed TLS certificate and key, and print its fingerprint.
    Cert(crate::commands::tls_args::CertArgs),
    /// Print a shell completion script (e.g. `sockit completions bash > /etc/bash_completion.d/sockit`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `sockit man | man -l -`.
    Man,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = Cli::try_parse_from(["sockit", "serve", "-vv", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_level(), "trace", "-vv, and json's one more");
        assert_eq!(cli.log_format, LogFormat::Json);
        let level = |args: &[&str]| Cli::try_parse_from(args).unwrap().log_level();
        assert_eq!(level(&["sockit", "--quiet", "serve"]), "error");
        assert_eq!(level(&["sockit", "serve"]), "warn,sockit::services::files=info");
        assert_eq!(level(&["sockit", "relay", ":1", ":2"]), "info", "the relay logs each connection");
    }

    /// Every flag that takes a number, a size or a duration, in every
    /// subcommand (so also the ones added later), refuses an absurd value
    /// with a usage error that names its range.
    #[test]
    fn every_numeric_flag_has_a_named_range() {
        use std::any::TypeId;
        use std::time::Duration;
        let numeric = [
            TypeId::of::<usize>(),
            TypeId::of::<u64>(),
            TypeId::of::<u32>(),
            TypeId::of::<u16>(),
            TypeId::of::<i64>(),
            TypeId::of::<i32>(),
            TypeId::of::<f64>(),
            TypeId::of::<Duration>(),
        ];
        fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Arg)>) {
            for arg in cmd.get_arguments() {
                out.push((path.clone(), arg.clone()));
            }
            for sub in cmd.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut args = Vec::new();
        walk(&Cli::command(), "sockit".into(), &mut args);
        let mut checked = 0;
        let mut unchecked = Vec::new();
        for (path, arg) in args {
            let typed = arg.get_value_parser().type_id();
            let (Some(long), true) = (arg.get_long(), numeric.iter().any(|t| typed == *t)) else { continue };
            if !arg.get_action().takes_values() {
                continue;
            }
            checked += 1;
            // 1e17: past every count's range, every size's (88 PiB) and
            // every duration's (3 billion years), yet within u64.
            let alone = clap::Command::new("t").no_binary_name(true).arg(arg.clone().required(false));
            let flag = format!("--{long}=99999999999999999");
            match alone.try_get_matches_from([&flag]) {
                Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation && e.to_string().contains(" to ") => {}
                Err(e) => unchecked.push(format!("{path} --{long}: {e}")),
                Ok(_) => unchecked.push(format!("{path} --{long}: accepted")),
            }
        }
        assert!(checked >= 30, "only {checked} numeric flags found: is the type list stale?");
        assert!(unchecked.is_empty(), "numeric flags without a named range:\n{}", unchecked.join("\n"));
    }

    #[test]
    fn bad_endpoint_is_a_usage_error() {
        let err = Cli::try_parse_from(["sockit", "connect", "localhost"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("missing port"), "{err}");
    }
}
