//! The netcat pipe shared by `connect` and `listen`, and its one close model:
//!
//! - stdin → socket and socket → stdout run at once, binary-safe;
//! - at stdin EOF the socket's write half is shut down (the peer sees EOF)
//!   and the pipe keeps printing what the peer sends until the peer closes —
//!   so a reply is never cut off because stdin ended first;
//! - when the peer closes, the pipe ends, whatever stdin is doing;
//! - `--no-shutdown` keeps the write half open at stdin EOF; `-q SECS` ends
//!   the pipe that long after stdin EOF even if the peer stays;
//!   `--send-only` ends at stdin EOF; `--recv-only` never reads stdin.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use sockit::units::parse_duration;

/// Close-model flags shared by `connect` and `listen`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PipeOpts {
    /// Keep the socket's write half open at stdin EOF (default: shut it
    /// down, so the peer sees EOF, and wait for the peer to close).
    #[arg(long)]
    pub no_shutdown: bool,

    /// Quit this long after stdin EOF even if the peer has not closed
    /// (e.g. 0, 2, 500ms). For UDP the default is 1s.
    #[arg(short = 'q', long = "quit-after", value_name = "SECS", value_parser = parse_duration)]
    pub quit_after: Option<Duration>,

    /// Only send: do not read from the socket; end at stdin EOF.
    #[arg(long, conflicts_with = "recv_only")]
    pub send_only: bool,

    /// Only receive: do not read stdin.
    #[arg(long)]
    pub recv_only: bool,
}

/// The most a UDP datagram can carry.
pub const MAX_DATAGRAM: usize = 65_507;
const STDIN_CHUNK: usize = 64 * 1024;

/// Reads stdin in a background task, as chunks (streams) or lines (one
/// datagram each, split at [`MAX_DATAGRAM`]). The channel is small, so a
/// slow socket slows the reading of stdin rather than growing memory.
/// `recv` returns `None` at EOF, and keeps doing so.
#[derive(Debug)]
pub struct StdinPump {
    rx: Option<mpsc::Receiver<Bytes>>,
}

impl StdinPump {
    /// Starts reading stdin; `lines` splits it into lines.
    pub fn start(lines: bool) -> Self {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let _ = pump(&mut stdin, lines, &tx).await;
        });
        StdinPump { rx: Some(rx) }
    }

    /// A pump that never yields anything and never ends (`--recv-only`).
    pub fn idle() -> Self {
        StdinPump { rx: None }
    }

    /// The next chunk or line, or `None` at EOF.
    pub async fn recv(&mut self) -> Option<Bytes> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

async fn pump(input: &mut (impl AsyncRead + Unpin), lines: bool, tx: &mpsc::Sender<Bytes>) -> io::Result<()> {
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(STDIN_CHUNK);
        let n = input.read_buf(&mut buf).await?;
        if n == 0 {
            if !buf.is_empty() {
                let _ = tx.send(buf.split().freeze()).await;
            }
            return Ok(());
        }
        if !lines {
            if tx.send(buf.split().freeze()).await.is_err() {
                return Ok(());
            }
            continue;
        }
        while let Some(end) = line_end(&buf) {
            if tx.send(buf.split_to(end).freeze()).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Where the first datagram-sized line of `buf` ends: after its newline, or
/// at [`MAX_DATAGRAM`] bytes for a longer line.
fn line_end(buf: &[u8]) -> Option<usize> {
    let window = &buf[..buf.len().min(MAX_DATAGRAM)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Some(i + 1),
        None => (buf.len() >= MAX_DATAGRAM).then_some(MAX_DATAGRAM),
    }
}

/// Pipes a connected stream to stdin/stdout under the close model above.
/// A closed stdout (`| head`) ends the pipe quietly.
pub async fn pipe<S: AsyncRead + AsyncWrite>(stream: S, opts: &PipeOpts, stdin: &mut StdinPump) -> io::Result<()> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let upload = async {
        if opts.recv_only {
            return std::future::pending().await;
        }
        while let Some(chunk) = stdin.recv().await {
            wr.write_all(&chunk).await?;
        }
        if !opts.no_shutdown {
            wr.shutdown().await?;
        }
        Ok::<_, io::Error>(())
    };
    let download = async {
        if opts.send_only {
            return std::future::pending().await;
        }
        let mut out = tokio::io::stdout();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let written = async {
                out.write_all(&buf[..n]).await?;
                out.flush().await
            };
            match written.await {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                r => r?,
            }
        }
    };
    tokio::pin!(upload, download);
    tokio::select! {
        r = &mut download => r,
        r = &mut upload => {
            r?;
            if opts.send_only {
                return Ok(());
            }
            match opts.quit_after {
                Some(q) => tokio::time::timeout(q, download).await.unwrap_or(Ok(())),
                None => download.await,
            }
        }
    }
}

/// Writes one received datagram to stdout.
pub async fn print_datagram(data: &[u8]) -> io::Result<()> {
    let mut out = tokio::io::stdout();
    out.write_all(data).await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        let mut input: &[u8] = b"a\nbb\nlast";
        let (tx, mut rx) = mpsc::channel(16);
        pump(&mut input, true, &tx).await.unwrap();
        drop(tx);
        let mut got = vec![];
        while let Some(b) = rx.recv().await {
            got.push(b);
        }
        assert_eq!(got, vec![Bytes::from("a\n"), Bytes::from("bb\n"), Bytes::from("last")]);

        let big = vec![b'x'; MAX_DATAGRAM + 10];
        let (tx, mut rx) = mpsc::channel(16);
        pump(&mut &big[..], true, &tx).await.unwrap();
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().len(), MAX_DATAGRAM);
        assert_eq!(rx.recv().await.unwrap().len(), 10);
    }
}
