//! `sockit send PATH… --to ENDPOINT`: arguments, progress bars and the
//! summary around the files client ([`sockit::services::files::client`]).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::tls_args::TlsClientArgs;
use sockit::auth;
use sockit::endpoint::Endpoint;
use sockit::error::ExitCode;
use sockit::services::files::HANDSHAKE;
use sockit::services::files::client::{self, Event, Options, Progress};
use sockit::units::{parse_duration, size_in};

/// What `--limit-rate` may be, in bytes per second.
const LIMIT_RATE_RANGE: std::ops::RangeInclusive<u64> = 1..=1 << 40;

/// Arguments of `sockit send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Sends files and directory trees (recursively: relative paths, permissions
and modification times kept) to `sockit serve files`, which checks each
file's BLAKE3 end to end and stores it under its name only when it is
whole. Run the same command again after an interruption: big files resume
where they stopped, and files already there and identical are skipped.
Symlinks and device files inside directories are skipped, with a warning.

Examples:
  sockit send report.pdf photos/ --to 127.0.0.1:7080
  sockit send big.iso --to tls://host:7080 --tls-fingerprint AB:CD:… --token-file token
  sockit send notes.txt --to 127.0.0.1:7080 --rename      keep both if the name is taken
  sockit send dir/ --to 127.0.0.1:7080 --json              one JSON summary on stdout

Exit codes: 0 everything stored (or already there), 1 something was not,
2 bad usage, 3 could not connect, 5 TLS failed, 6 authentication refused.")]
pub struct SendArgs {
    /// Files and directories to send.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// The files server.
    #[arg(long, value_name = "ENDPOINT", default_value = "127.0.0.1:7080")]
    pub to: Endpoint,

    /// Read the token from this file (else SOCKIT_TOKEN), if the server
    /// asks for one.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// If a different file of the same name is on the server, store this
    /// one as `name (1).ext` instead of failing.
    #[arg(long)]
    pub rename: bool,

    /// Give up connecting, or waiting for the server's greeting, after this long.
    #[arg(short = 'w', long = "wait", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,

    /// Send at most this many bytes per second (e.g. 20MiB), to leave
    /// bandwidth for others.
    #[arg(long, value_name = "BYTES", value_parser = size_in(LIMIT_RATE_RANGE))]
    pub limit_rate: Option<u64>,

    /// Print one JSON object with the summary on stdout instead of prose.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// The progress bars: an overall one, and one per big file while it goes.
struct Bars {
    bars: MultiProgress,
    overall: ProgressBar,
    file: Option<ProgressBar>,
}

impl Progress for Bars {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Queued { name, size } => {
                self.overall.inc_length(size);
                self.overall.set_message(String::from_utf8_lossy(name).into_owned());
            }
            Event::Advanced(n) => self.overall.inc(n),
            Event::Rewound(n) => self.overall.set_position(self.overall.position().saturating_sub(n)),
            Event::Comparing => self.overall.set_message("comparing with the copy on the server"),
            Event::FileStarted { name, size, offset } => {
                let bar = self.bars.insert_before(&self.overall, ProgressBar::new(size));
                bar.set_style(style("  {msg:30!} [{bar:25}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"));
                bar.set_message(String::from_utf8_lossy(name).into_owned());
                if offset > 0 {
                    bar.set_position(offset);
                    bar.reset_eta();
                }
                self.file = Some(bar);
            }
            Event::FileAdvanced(n) => {
                if let Some(bar) = &self.file {
                    bar.inc(n);
                }
                self.overall.inc(n);
            }
            Event::FileFinished => {
                if let Some(bar) = self.file.take() {
                    bar.finish_and_clear();
                }
            }
            Event::Note(line) => self.bars.suspend(|| eprintln!("sockit: {line}")),
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.overall.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

/// Runs `sockit send`.
pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    // The walk goes on while connecting and while the first files are sent.
    let found = client::walk_paths(&args.paths)?;
    let tls = args.tls.client(&args.to)?;
    let mut stream = args.to.connect_with(Some(args.wait), tls.as_ref()).await?;
    let token = crate::cli::read_token(args.token_file.as_deref())?;
    // Into the library's error, whose exit code main finds (6 for a refusal).
    let rest = auth::login(&mut stream, &HANDSHAKE, &args.to, token.as_deref(), args.wait)
        .await
        .map_err(sockit::Error::from)?
        .rest;
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bars = MultiProgress::with_draw_target(target);
    let overall = bars.add(ProgressBar::new(0));
    overall.set_style(style("{msg:32!} [{bar:25}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"));
    let progress = Bars { bars, overall, file: None };
    let options = Options { rename: args.rename, limit_rate: args.limit_rate };
    let started = Instant::now();
    let interrupted = super::shutdown_signal();
    let (result, report) = tokio::select! {
        done = client::send(stream, rest, found, options, progress) => done,
        _ = interrupted => {
            eprintln!("\nsockit: interrupted; run the same command again to resume (big files go on where they stopped)");
            return Ok(ExitCode::Interrupted);
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let rate = report.bytes_sent as f64 / secs.max(1e-9);
    if args.json {
        let v = serde_json::json!({
            "ok": result.is_ok() && report.refused.is_empty(),
            "files": report.files,
            "dirs": report.dirs,
            "stored": report.stored,
            "same": report.same,
            "refused": report.refused.len(),
            "errors": report.refused.iter().cloned().chain(result.as_ref().err().map(|e| format!("{e:#}"))).collect::<Vec<_>>(),
            "renamed": report.renamed.iter().map(|(a, b)| serde_json::json!({"from": a, "to": b})).collect::<Vec<_>>(),
            "bytes_total": report.bytes_total,
            "bytes_sent": report.bytes_sent,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "bytes_per_sec": rate.round(),
            "warnings": report.warnings,
        });
        super::print_stdout(format!("{v}\n").as_bytes())?;
    }
    result?;
    if !args.json {
        let mut what = format!("{} stored", report.stored);
        if report.same > 0 {
            what += &format!(", {} already there (identical)", report.same);
        }
        if !report.refused.is_empty() {
            what += &format!(", {} not stored", report.refused.len());
        }
        eprintln!(
            "sent {} file{} ({what}){}: {} in {:.2} s ({}/s)",
            report.files,
            if report.files == 1 { "" } else { "s" },
            if report.dirs > 0 {
                format!(" in {} director{}", report.dirs, if report.dirs == 1 { "y" } else { "ies" })
            } else {
                String::new()
            },
            HumanBytes(report.bytes_sent),
            secs,
            HumanBytes(rate as u64)
        );
    }
    Ok(if report.refused.is_empty() { ExitCode::Ok } else { ExitCode::Failure })
}
