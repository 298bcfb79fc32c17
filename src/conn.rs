//! The connection a service is handed: one [`Stream`] type for TCP and Unix,
//! metered (bytes each way, last activity) so the server can log and enforce
//! idle timeouts without the service's help.
//!
//! [`Conn::read_lazy`] waits for readiness *before* it reserves buffer space:
//! an idle connection then holds no buffer at all, which is what lets one
//! process keep tens of thousands of them open in a few megabytes.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::bridge::Link;
use crate::server::Descriptors;

/// A byte stream: TCP, Unix, TLS or WebSocket. Services see only this type.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
    /// A TLS session or a WebSocket, read and written as plain bytes
    /// through a local socket that a pump carries (see [`crate::bridge`]).
    Bridged(UnixStream, Link),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::Bridged($s, _) => $e,
        }
    };
}

impl Stream {
    /// Waits until the stream is readable, without reserving any buffer.
    ///
    /// Through `poll_read_ready`, which keeps one waker in a slot of its own,
    /// rather than tokio's `readable()`, which queues a waiter under a lock:
    /// it measurably speeds up small messages. The cost is that only one
    /// task may wait to read a stream at a time — true of every user here.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| each!(self, s => s.poll_read_ready(cx))).await
    }

    /// Reads what is ready into `buf` without waiting; `WouldBlock` if none.
    pub fn try_read_buf<B: bytes::BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        each!(self, s => s.try_read_buf(buf))
    }

    /// Reads what is ready into `buf` without waiting; `WouldBlock` if none.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.try_read(buf))
    }

    /// Writes what the socket takes now, without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.try_write(buf))
    }

    /// Waits until the socket is writable (one waiting task at a time, as
    /// with [`Stream::readable`]).
    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| each!(self, s => s.poll_write_ready(cx))).await
    }

    /// Runs a non-blocking system call on the socket under `interest`,
    /// clearing readiness when it returns `WouldBlock` (tokio's `try_io`).
    pub fn try_io<R>(&self, interest: tokio::io::Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        each!(self, s => s.try_io(interest, f))
    }

    /// Shuts the write half down: the peer reads EOF.
    pub fn shutdown_write(&self) -> io::Result<()> {
        crate::sys::shutdown_write(self)
    }

    /// The remote address, for TCP and TLS.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
            Stream::Bridged(_, link) => link.peer_addr(),
        }
    }

    /// What carries a TLS or WebSocket stream, and its peer's details.
    pub fn link(&self) -> Option<&Link> {
        match self {
            Stream::Bridged(_, link) => Some(link),
            _ => None,
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        each!(self, s => s.as_fd())
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored())
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Who is on the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// An IP peer.
    Ip(SocketAddr),
    /// A Unix socket peer (they are unnamed as a rule).
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(a) => a.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// Byte counts of one connection, shared between the connection and the
/// server task that watches it. Counting is two relaxed atomic adds; no
/// clock is read on the I/O path — the idle watcher notices activity by the
/// counts changing.
#[derive(Debug, Default)]
pub struct Meter {
    read: AtomicU64,
    written: AtomicU64,
}

impl Meter {
    /// A meter at zero.
    pub fn new() -> Self {
        Meter::default()
    }
    /// Counts `n` bytes received; for services that move bytes on the raw
    /// stream (see [`Conn::into_parts`]).
    pub fn add_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Counts `n` bytes sent.
    pub fn add_written(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Bytes received from the peer.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
    /// Bytes sent to the peer.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    /// Bytes moved either way: it changes whenever there is activity.
    pub fn activity(&self) -> u64 {
        self.bytes_read().wrapping_add(self.bytes_written())
    }
}

/// One accepted connection, as a service sees it: read and write it like any
/// tokio stream; [`Conn::shutdown_token`] tells when the server is stopping.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    meter: Arc<Meter>,
    peer: Peer,
    shutdown: CancellationToken,
    descriptors: Descriptors,
}

impl Conn {
    /// Wraps a stream. Servers do this; tests and custom servers may too.
    pub fn new(stream: Stream, peer: Peer, shutdown: CancellationToken) -> Self {
        Conn::with_meter(stream, Arc::new(Meter::new()), peer, shutdown)
    }

    /// Wraps a stream, counting on a meter made beforehand.
    pub fn with_meter(stream: Stream, meter: Arc<Meter>, peer: Peer, shutdown: CancellationToken) -> Self {
        Conn { stream, meter, peer, shutdown, descriptors: Descriptors::unlimited() }
    }

    /// Draws on `budget` for [`Conn::descriptors`]; servers do this.
    pub fn with_descriptors(mut self, budget: Descriptors) -> Self {
        self.descriptors = budget;
        self
    }

    /// The server's open-file budget: reserve from it before opening
    /// descriptors beyond the connection's own.
    pub fn descriptors(&self) -> Descriptors {
        self.descriptors.clone()
    }

    /// Whether the peer proved who it is with a TLS client certificate that
    /// the server's `--tls-client-ca` verified.
    pub fn client_verified(&self) -> bool {
        self.stream.link().is_some_and(|t| t.client_verified())
    }

    /// The remote peer.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Cancelled when the server begins a graceful shutdown. A long-lived
    /// service selects on it to say goodbye; the server closes the connection
    /// anyway once the grace period is over.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The meter the server reads for logs and idle detection.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    /// Waits until data (or EOF) is ready, then reads up to `hint` bytes into
    /// `buf`. No buffer space is reserved while waiting. Returns 0 at EOF.
    /// Cancel-safe: nothing is read until the final, synchronous step.
    pub async fn read_lazy(&mut self, buf: &mut BytesMut, hint: usize) -> io::Result<usize> {
        loop {
            self.stream.readable().await?;
            match self.try_read_more(buf, hint) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Readiness was stale: give the space back before waiting
                    // again, or every idle connection would keep a buffer.
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                r => return r,
            }
        }
    }

    /// Reads what is ready into `buf` without waiting, at most `hint` bytes
    /// (whatever spare room `buf` has, so callers can bound what they hold);
    /// `WouldBlock` when nothing is.
    pub fn try_read_more(&mut self, buf: &mut BytesMut, hint: usize) -> io::Result<usize> {
        use bytes::BufMut;
        buf.reserve(hint);
        let n = self.stream.try_read_buf(&mut (&mut *buf).limit(hint))?;
        self.meter.add_read(n);
        Ok(n)
    }

    /// The stream and its meter, for protocols that turn raw (a relay, say):
    /// whoever moves bytes on the stream counts them on the meter, so logs
    /// and the idle timeout stay right.
    pub fn into_parts(self) -> (Stream, Arc<Meter>) {
        (self.stream, self.meter)
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.meter.add_read(buf.filled().len() - before);
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.meter.add_written(n);
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.meter.add_written(n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
