//! `sockit get URL`: the tutorial's web-page client — the head to stderr,
//! the body to stdout or a file — done properly: HTTP/1.1 and HTTP/2,
//! TLS, redirects, decompression, resume, atomic files, exit codes that say
//! what failed.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use tokio::io::AsyncWriteExt;

use super::tls_args::TlsVerifyArgs;
use sockit::error::{Error, ExitCode};
use sockit::tls::ClientTls;
use sockit::units::{number_in, parse_duration};

/// What `--max-redirects` may be (curl's default is 50).
const MAX_REDIRECTS_RANGE: std::ops::RangeInclusive<u64> = 0..=100;

/// Arguments of `sockit get`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints the status line and headers on stderr and the body on stdout (or in
a file with -o/-O). A file is written as FILE.part and renamed when the
body is complete, so FILE is never a truncated download; an interrupted one
is resumed with -C, as is a partial FILE another program (curl, wget, a
browser) left. FILE.part is never written through a link: a symbolic or hard
link there, or a file of another user, is refused.

The head of the answer must arrive within --head-timeout (60s), redirects
included, however slowly it trickles in; the body may take as long as it
takes, unless --timeout. No Referer header is sent, on redirects either.

Examples:
  sockit get https://example.com/                    page to stdout, head to stderr
  sockit get -O https://host/files/big.iso            saves big.iso, progress bar
  sockit get -C -O https://host/files/big.iso         resumes big.iso.part
  sockit get -i http://127.0.0.1:8000/ | less         head, then body, on stdout
  sockit get -I https://example.com/                  HEAD: just the head
  sockit get --fail -s https://host/api -H 'Accept: application/json'

Exit codes: 0 done (any status, unless --fail), 2 bad URL or usage,
3 could not connect, 5 TLS failed, 7 host name not found, 8 timed out,
9 HTTP error status with --fail, 10 too many redirects or a redirect loop,
11 transfer broke off (body shorter than announced, write failed),
130 interrupted.")]
pub struct GetArgs {
    /// The URL (http:// is assumed when no scheme is given).
    #[arg(value_name = "URL")]
    pub url: String,

    /// Write the body to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE", conflicts_with = "remote_name")]
    pub output: Option<PathBuf>,

    /// Write the body to a file named like the URL's last path part.
    #[arg(short = 'O', long)]
    pub remote_name: bool,

    /// Put the status line and headers on stdout, before the body.
    #[arg(short, long, conflicts_with = "head")]
    pub include: bool,

    /// Send HEAD instead of GET and print the head on stdout.
    #[arg(short = 'I', long)]
    pub head: bool,

    /// Resume a partial download (FILE.part, or a partial FILE another
    /// program left) with a range request.
    #[arg(short = 'C', long = "continue")]
    pub resume: bool,

    /// Exit 9 with no body on an HTTP status of 400 or more.
    #[arg(short, long)]
    pub fail: bool,

    /// Print nothing on stderr but errors (no head, no progress bar).
    #[arg(short, long)]
    pub silent: bool,

    /// Add a request header; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// The User-Agent header.
    #[arg(short = 'A', long, value_name = "TEXT", default_value = concat!("sockit/", env!("CARGO_PKG_VERSION")))]
    pub user_agent: String,

    /// Ask for a compressed body (gzip, br, deflate) and decode it.
    #[arg(long)]
    pub compressed: bool,

    /// Follow at most this many redirects.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = number_in::<usize>(MAX_REDIRECTS_RANGE))]
    pub max_redirects: usize,

    /// Do not follow redirects: print the redirect itself.
    #[arg(long)]
    pub no_follow: bool,

    /// Give up on the whole request after this long [default: never].
    #[arg(short = 'm', long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Give up when no byte arrives for this long.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// Give up unless the whole head of the answer (status line and
    /// headers, redirects included) has come this long after the start;
    /// 0 for never.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_duration,
        long_help = "Give up unless the whole head of the answer (status line and headers, after any \
                     redirects) has come this long after the start; 0 for never. A server that \
                     trickles its headers a byte at a time, or sends `100 Continue` for ever, never \
                     trips --stall-timeout: this bounds it. The body is not limited by it (see --timeout)."
    )]
    pub head_timeout: Duration,

    #[command(flatten)]
    pub tls: TlsVerifyArgs,
}

fn fail(code: ExitCode, msg: impl Into<String>) -> anyhow::Error {
    Error::Exit(code, msg.into()).into()
}

/// The URL, with http:// when no scheme is given.
fn parse_url(s: &str) -> Result<Url, Error> {
    let text = if s.contains("://") { s.to_string() } else { format!("http://{s}") };
    let url = Url::parse(&text).map_err(|e| Error::Usage(format!("bad URL '{s}': {e}")))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "http" | "https" => Err(Error::Usage(format!("bad URL '{s}': no host"))),
        other => Err(Error::Usage(format!("bad URL '{s}': {other}:// is not supported; use http:// or https://"))),
    }
}

/// The file name `-O` takes from the URL.
fn remote_name(url: &Url) -> PathBuf {
    let last = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
    match last {
        "" | "." | ".." => PathBuf::from("index.html"),
        name => PathBuf::from(name),
    }
}

fn parse_headers(lines: &[String]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::new();
    for line in lines {
        let bad = |why: &str| Error::Usage(format!("-H '{line}': {why}; write it as 'Name: value'"));
        let (name, value) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("not a header name"))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("not a header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A host name that did not resolve: the system resolver's error, typed so
/// that [`classify`] knows it without reading words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotResolved(std::io::Error);

/// The system resolver (as reqwest's default), its failures [`NotResolved`].
struct SystemResolver;

impl reqwest::dns::Resolve for SystemResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => Ok(Box::new(addrs.collect::<Vec<_>>().into_iter()) as reqwest::dns::Addrs),
                Err(e) => Err(Box::new(NotResolved(e)) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// Whether `e` is, or wraps (inside an `io::Error`, at any depth), a
/// rustls error: the TLS handshake failed.
fn holds_rustls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.downcast_ref::<rustls::Error>().is_some() {
        return true;
    }
    // An io::Error's source skips the error it wraps: look inside.
    let inner = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
    inner.is_some_and(|i| holds_rustls_error(i)) || e.source().is_some_and(holds_rustls_error)
}

/// A reqwest error as a message and an exit code that say what failed.
fn classify(e: reqwest::Error, url: &Url) -> anyhow::Error {
    let mut chain = Vec::new();
    let (mut tls, mut dns) = (false, false);
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.iter().any(|c: &String| c.contains(&text)) {
            chain.push(text);
        }
        tls |= holds_rustls_error(s);
        dns |= s.downcast_ref::<NotResolved>().is_some();
        source = s.source();
    }
    let detail = if chain.is_empty() { e.to_string() } else { chain.join(": ") };
    let host = url.host_str().unwrap_or("");
    if e.is_timeout() {
        fail(
            ExitCode::Timeout,
            format!("{url}: timed out ({detail}); raise --timeout / --connect-timeout / --stall-timeout"),
        )
    } else if e.is_redirect() {
        fail(
            ExitCode::Redirects,
            format!("{url}: {detail}; see where it goes with --no-follow, or raise --max-redirects"),
        )
    } else if dns {
        fail(ExitCode::Dns, format!("cannot resolve '{host}': {detail}; check the name"))
    } else if tls {
        fail(
            ExitCode::Tls,
            format!(
                "TLS with {host}: {detail}; trust its CA with --tls-ca FILE, pin it with --tls-fingerprint, or (unsafe) --insecure"
            ),
        )
    } else if e.is_connect() {
        fail(ExitCode::Connect, format!("cannot connect to {url}: {detail}; is the server running, on that port?"))
    } else if e.is_body() || e.is_decode() {
        fail(ExitCode::Transfer, format!("{url}: the transfer broke off: {detail}"))
    } else if e.is_builder() {
        fail(ExitCode::Usage, format!("{url}: {detail}"))
    } else {
        fail(ExitCode::Failure, format!("{url}: {detail}"))
    }
}

/// The status line and headers, as the server sent them.
fn head_text(resp: &Response, eol: &str) -> String {
    let mut out = format!("{:?} {}{eol}", resp.version(), resp.status());
    for (name, value) in resp.headers() {
        // Header values may carry any byte past 0x7f: shown cleaned.
        out += &format!("{name}: {}{eol}", sockit::text::clean_bytes(value.as_bytes()));
    }
    out
}

/// Runs `sockit get`.
pub async fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let url = parse_url(&args.url)?;
    let output = match (&args.output, args.remote_name) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(remote_name(&url)),
        (None, false) => None,
    };
    if args.resume && output.is_none() {
        return Err(Error::Usage("-C resumes a file: give -o FILE or -O".into()).into());
    }
    let partial = output.as_ref().map(|p| part_path(p));
    // Refused before anything is asked for: a partial file that is not ours
    // to write, and with -C, what to resume.
    let resume = match (&output, &partial) {
        (Some(path), Some(partial)) => find_partial(path, partial, args.resume)?,
        _ => None,
    };
    let have = resume.as_ref().map_or(0, |r| r.have);
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(ClientTls::http(&args.tls.verify())?)
        .dns_resolver(SystemResolver)
        .user_agent(&args.user_agent)
        .default_headers(parse_headers(&args.headers)?)
        .connect_timeout(args.connect_timeout)
        .read_timeout(args.stall_timeout)
        // As curl: where a page came from (query string and all) is no
        // business of the site it redirects to.
        .referer(false)
        .gzip(args.compressed)
        .brotli(args.compressed)
        .deflate(args.compressed)
        .redirect(if args.no_follow {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::limited(args.max_redirects)
        });
    if let Some(t) = args.timeout {
        builder = builder.timeout(t);
    }
    let client = builder.build().map_err(|e| classify(e, &url))?;
    let mut request = if args.head { client.head(url.clone()) } else { client.get(url.clone()) };
    if have > 0 {
        request = request.header(header::RANGE, format!("bytes={have}-"));
    }
    let send = request.send();
    let resp = if args.head_timeout.is_zero() {
        send.await
    } else {
        tokio::time::timeout(args.head_timeout, send).await.map_err(|_| {
            fail(
                ExitCode::Timeout,
                format!(
                    "{url}: timed out: no complete response head within {} (--head-timeout); \
                     the server sends it too slowly or never ends it. Raise --head-timeout if it is just slow",
                    humantime::format_duration(args.head_timeout)
                ),
            )
        })?
    }
    .map_err(|e| classify(e, &url))?;
    let status = resp.status();
    if args.head || args.include {
        super::print_stdout(head_text(&resp, "\r\n").as_bytes())?;
        if args.include && !args.head {
            super::print_stdout(b"\r\n")?;
        }
    } else if !args.silent {
        eprint!("{}", head_text(&resp, "\n"));
    }
    if args.fail && (status.is_client_error() || status.is_server_error()) {
        return Err(fail(ExitCode::Http, format!("HTTP {status} from {}", resp.url())));
    }
    if args.head {
        return Ok(ExitCode::Ok);
    }
    match (output, partial) {
        (Some(path), Some(partial)) => to_file(resp, &args, &path, &partial, resume).await,
        _ => to_stdout(resp, &url).await,
    }
}

/// A partial download to resume.
#[derive(Debug)]
struct Resume {
    /// Where it is: FILE.part, ours, or FILE, left by another program.
    from: PathBuf,
    /// Its length: the range asked for starts there.
    have: u64,
}

/// Checks `partial` is safe to write (absent, or a file of ours), and with
/// `resume`, finds what to resume: `partial`, else a partial `path` another
/// program left (taken over only if it is a plain file of ours).
fn find_partial(path: &Path, partial: &Path, resume: bool) -> anyhow::Result<Option<Resume>> {
    let ours = match std::fs::symlink_metadata(partial) {
        Ok(meta) => {
            check_ours(&meta, partial)?;
            Some(meta.len())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(ExitCode::Transfer, format!("cannot use {}: {e}", partial.display()))),
    };
    if !resume {
        return Ok(None);
    }
    if let Some(have) = ours.filter(|&n| n > 0) {
        return Ok(Some(Resume { from: partial.to_path_buf(), have }));
    }
    let left = std::fs::symlink_metadata(path).ok().filter(|m| check_ours(m, path).is_ok() && m.len() > 0);
    Ok(left.map(|m| Resume { from: path.to_path_buf(), have: m.len() }))
}

/// A file we may write into: a regular file (not a link to one), of ours,
/// with no other name. In a shared directory, anything else at FILE.part
/// may have been planted there to make us overwrite another file.
fn check_ours(meta: &std::fs::Metadata, path: &Path) -> anyhow::Result<()> {
    let why = if meta.file_type().is_symlink() {
        "it is a symbolic link".to_string()
    } else if !meta.file_type().is_file() {
        "it is not a regular file".to_string()
    } else if meta.uid() != sockit::sys::effective_uid() {
        format!("it belongs to another user (uid {})", meta.uid())
    } else if meta.nlink() > 1 {
        format!("it has {} other links (hard links) to it", meta.nlink() - 1)
    } else {
        return Ok(());
    };
    Err(fail(
        ExitCode::Transfer,
        format!(
            "refusing to write {}: {why}, so writing it could overwrite another file. \
             Remove it if it is yours, or save elsewhere with -o",
            path.display()
        ),
    ))
}

/// Opens the partial file, to write from its start or append, never
/// following a link at its name and never truncating a file that is not
/// ours: opened without O_TRUNC, checked, then truncated. Returns its
/// length.
fn open_partial(partial: &Path, append: bool) -> anyhow::Result<(std::fs::File, u64)> {
    let file = sockit::sys::fs::no_follow_no_block(std::fs::OpenOptions::new().write(true).append(append).create(true))
        .open(partial)
        .map_err(|e| {
            // Say why when something was planted there.
            let planted = std::fs::symlink_metadata(partial).ok().and_then(|m| check_ours(&m, partial).err());
            planted.unwrap_or_else(|| fail(ExitCode::Transfer, format!("cannot write {}: {e}", partial.display())))
        })?;
    let meta =
        file.metadata().map_err(|e| fail(ExitCode::Transfer, format!("cannot write {}: {e}", partial.display())))?;
    check_ours(&meta, partial)?;
    // Only a file that holds something is cut: on ext4, truncating even an
    // empty file marks it to be written out whole at close (auto_da_alloc),
    // which costs a big download a quarter of a second.
    if !append && meta.len() > 0 {
        file.set_len(0).map_err(|e| fail(ExitCode::Transfer, format!("cannot write {}: {e}", partial.display())))?;
    }
    Ok((file, if append { meta.len() } else { 0 }))
}

fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// The announced length of the body as it will be written, when known:
/// not when it is decoded on the way.
fn announced(resp: &Response) -> Option<u64> {
    let encoded = resp.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity");
    if encoded { None } else { resp.content_length() }
}

async fn to_stdout(mut resp: Response, url: &Url) -> anyhow::Result<ExitCode> {
    let expected = announced(&resp);
    let mut out = tokio::io::stdout();
    let mut got = 0u64;
    loop {
        let piece = match resp.chunk().await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                let _ = out.flush().await;
                return Err(short_or(e, url, got, expected));
            }
        };
        got += piece.len() as u64;
        match out.write_all(&piece).await {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::Ok),
            r => r?,
        }
    }
    out.flush().await.or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) })?;
    check_length(got, expected, url)?;
    Ok(ExitCode::Ok)
}

/// A body error: "cut short" when the length was known.
fn short_or(e: reqwest::Error, url: &Url, got: u64, expected: Option<u64>) -> anyhow::Error {
    match expected {
        Some(n) if got < n && !e.is_timeout() => fail(
            ExitCode::Transfer,
            format!("{url}: the body was cut short: got {got} of {n} bytes ({})", classify(e, url)),
        ),
        _ => classify(e, url),
    }
}

/// The same error, exit code kept, with a note after its message.
fn noted(e: anyhow::Error, note: &str) -> anyhow::Error {
    let code = e.chain().find_map(|c| c.downcast_ref::<Error>()).map_or(ExitCode::Failure, Error::exit);
    fail(code, format!("{e:#}; {note}"))
}

fn check_length(got: u64, expected: Option<u64>, url: &Url) -> anyhow::Result<()> {
    match expected {
        Some(n) if got != n => {
            Err(fail(ExitCode::Transfer, format!("{url}: the body was cut short: got {got} of {n} bytes")))
        }
        _ => Ok(()),
    }
}

/// Writes the body to `partial`, then renames it to `path`.
async fn to_file(
    mut resp: Response,
    args: &GetArgs,
    path: &Path,
    partial: &Path,
    resume: Option<Resume>,
) -> anyhow::Result<ExitCode> {
    let url = resp.url().clone();
    let status = resp.status();
    let ioerr =
        |what: &str, p: &Path, e: std::io::Error| fail(ExitCode::Transfer, format!("{what} {}: {e}", p.display()));
    let mut start = 0;
    if let Some(Resume { from, have }) = &resume {
        let (from, have) = (from.as_path(), *have);
        let taken_over = from != partial;
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let at = content_range_start(resp.headers());
                if at != Some(have) {
                    return Err(fail(
                        ExitCode::Transfer,
                        format!(
                            "{url}: asked for bytes from {have}, got a range from {at:?}; delete {} to start over",
                            from.display()
                        ),
                    ));
                }
                start = have;
                if taken_over {
                    // Another program's partial FILE becomes ours: FILE is
                    // a whole download again only once it is one.
                    std::fs::rename(from, partial).map_err(|e| ioerr("cannot rename to", partial, e))?;
                }
                if !args.silent {
                    let whose = if taken_over { " (a partial file left there, continued as FILE.part)" } else { "" };
                    eprintln!("sockit: resuming {} at {}{whose}", path.display(), HumanBytes(have));
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if content_range_total(resp.headers()) == Some(have) => {
                if !taken_over {
                    std::fs::rename(partial, path).map_err(|e| ioerr("cannot rename to", path, e))?;
                }
                if !args.silent {
                    eprintln!("sockit: {} was already complete ({})", path.display(), HumanBytes(have));
                }
                return Ok(ExitCode::Ok);
            }
            s if s.is_success() => eprintln!(
                "sockit: the server ignored the range request (it answered {s}): downloading {} whole again",
                path.display()
            ),
            s => {
                return Err(fail(
                    if s.is_client_error() || s.is_server_error() { ExitCode::Http } else { ExitCode::Failure },
                    format!(
                        "HTTP {s} from {url} instead of the rest of the file; {} is kept as it was",
                        from.display()
                    ),
                ));
            }
        }
    }
    if !status.is_success() && !args.silent {
        eprintln!("sockit: warning: HTTP {status}: saving the server's answer anyway (--fail exits 9 instead)");
    }
    let (mut file, len) = open_partial(partial, start > 0)?;
    if len != start {
        // Changed between the look before the request and now.
        return Err(fail(
            ExitCode::Transfer,
            format!("{} changed during the request ({len} bytes, not {start}); run again", partial.display()),
        ));
    }
    let expected = announced(&resp).map(|n| n + start);
    let show = std::io::stderr().is_terminal() && !args.silent;
    let bar = ProgressBar::with_draw_target(
        expected,
        if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template("{msg:24!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(path.display().to_string());
    bar.set_position(start);
    bar.reset_eta();
    let began = Instant::now();
    let mut got = start;
    let interrupted = super::shutdown_signal();
    tokio::pin!(interrupted);
    let kept = |got: u64| format!("{} of it kept in {}: resume with -C", HumanBytes(got), partial.display());
    loop {
        let piece = tokio::select! {
            p = resp.chunk() => p,
            _ = &mut interrupted => {
                bar.abandon();
                let _ = file.flush();
                eprintln!("sockit: interrupted; {}", kept(got));
                return Ok(ExitCode::Interrupted);
            }
        };
        match piece {
            Ok(Some(p)) => {
                file.write_all(&p).map_err(|e| ioerr("cannot write", partial, e))?;
                got += p.len() as u64;
                bar.set_position(got);
            }
            Ok(None) => break,
            Err(e) => {
                bar.abandon();
                let _ = file.flush();
                return Err(noted(short_or(e, &url, got, expected), &kept(got)));
            }
        }
    }
    bar.finish_and_clear();
    file.flush().map_err(|e| ioerr("cannot write", partial, e))?;
    drop(file);
    if let Some(n) = expected
        && got != n
    {
        return Err(fail(
            ExitCode::Transfer,
            format!("{url}: the body was cut short: got {got} of {n} bytes; {}", kept(got)),
        ));
    }
    std::fs::rename(partial, path).map_err(|e| ioerr("cannot rename to", path, e))?;
    if !args.silent {
        let secs = began.elapsed().as_secs_f64();
        eprintln!(
            "saved {} ({}) in {secs:.2} s ({}/s)",
            path.display(),
            HumanBytes(got),
            HumanBytes(((got - start) as f64 / secs.max(1e-9)) as u64)
        );
    }
    Ok(ExitCode::Ok)
}

fn content_range(h: &HeaderMap) -> Option<&str> {
    h.get(header::CONTENT_RANGE)?.to_str().ok()?.strip_prefix("bytes ")
}

/// `N` of `Content-Range: bytes N-M/T`.
fn content_range_start(h: &HeaderMap) -> Option<u64> {
    content_range(h)?.split('-').next()?.trim().parse().ok()
}

/// `T` of `Content-Range: bytes */T`.
fn content_range_total(h: &HeaderMap) -> Option<u64> {
    content_range(h)?.rsplit('/').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver that knows no name, so no query leaves the machine.
    struct KnowsNone;

    impl reqwest::dns::Resolve for KnowsNone {
        fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
            Box::pin(async { Err(Box::new(NotResolved(std::io::Error::other("no such name"))) as _) })
        }
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_exit_7_by_type() {
        let tls = ClientTls::http(&sockit::tls::Verify::Insecure).unwrap();
        let client = reqwest::Client::builder().use_preconfigured_tls(tls).dns_resolver(KnowsNone).build().unwrap();
        let url = Url::parse("http://nowhere.test/").unwrap();
        let err = classify(client.get(url.clone()).send().await.unwrap_err(), &url);
        let ours = err.downcast_ref::<Error>().expect("a sockit error");
        assert_eq!(ours.exit(), ExitCode::Dns, "{err:#}");
        assert!(err.to_string().starts_with("cannot resolve 'nowhere.test': "), "{err:#}");
    }

    #[test]
    fn urls_and_names() {
        assert_eq!(parse_url("example.com/a").unwrap().as_str(), "http://example.com/a");
        assert!(parse_url("ftp://x/y").unwrap_err().to_string().contains("not supported"));
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://exa mple.com/").is_err());
        assert_eq!(remote_name(&parse_url("http://h/files/big.iso?x=1").unwrap()), PathBuf::from("big.iso"));
        assert_eq!(remote_name(&parse_url("http://h/").unwrap()), PathBuf::from("index.html"));
    }

    #[test]
    fn head_timeout_default_and_never() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let cli =
                crate::cli::Cli::try_parse_from([&["sockit", "get"], extra, &["http://127.0.0.1/"]].concat()).unwrap();
            let crate::cli::Command::Get(args) = cli.command else { unreachable!() };
            args.head_timeout
        };
        assert_eq!(parse(&[]), Duration::from_secs(60));
        assert_eq!(parse(&["--head-timeout", "0"]), Duration::ZERO);
        assert_eq!(parse(&["--head-timeout", "5s"]), Duration::from_secs(5));
    }

    #[test]
    fn headers_and_ranges() {
        let h = parse_headers(&["Accept: text/plain".into(), "X-A:1".into()]).unwrap();
        assert_eq!(h["accept"], "text/plain");
        assert_eq!(h["x-a"], "1");
        assert!(parse_headers(&["no colon".into()]).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("bytes 100-199/200"));
        assert_eq!((content_range_start(&h), content_range_total(&h)), (Some(100), Some(200)));
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("bytes */200"));
        assert_eq!(content_range_total(&h), Some(200));
    }
}
