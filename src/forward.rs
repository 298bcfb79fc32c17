//! Forwarding bytes both ways between two streams, keeping half-close: when
//! one side shuts its write half, the other side's write half is shut down
//! too, and the opposite direction goes on until it ends as well — a reply
//! that comes after one side has finished sending is never cut off.
//!
//! Between two plain sockets the bytes move with `splice(2)` through a pipe
//! per direction, never entering user space; [`Copy::Buffered`] uses
//! `tokio::io::copy_bidirectional` with large buffers instead (for streams
//! that are not plain sockets, and for comparison).

use std::io;

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::Interest;

use crate::conn::{Conn, Stream};

/// How much one splice moves at most, and the pipe size asked for.
const PIPE_SIZE: usize = 1024 * 1024;
/// Buffer per direction for [`Copy::Buffered`].
const COPY_BUF: usize = 256 * 1024;

/// How to move the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Copy {
    /// Zero-copy `splice(2)` between sockets.
    #[default]
    Splice,
    /// Read into a buffer, write from it (`copy_bidirectional`).
    Buffered,
}

/// Forwards `conn` ↔ `upstream` until both directions have ended, counting
/// bytes on the connection's meter as they move (so the server's idle
/// timeout sees a long transfer as activity). Returns the bytes moved each
/// way: client→upstream, upstream→client.
pub async fn forward(mut conn: Conn, mut upstream: Stream, how: Copy) -> io::Result<(u64, u64)> {
    match how {
        Copy::Splice => {
            let (client, meter) = conn.into_parts();
            let up = splice_half(&client, &upstream, |n| meter.add_read(n));
            let down = splice_half(&upstream, &client, |n| meter.add_written(n));
            tokio::try_join!(up, down)
        }
        Copy::Buffered => tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut upstream, COPY_BUF, COPY_BUF).await,
    }
}

/// One direction: socket → pipe → socket until EOF, then shut `to`'s write
/// half down.
async fn splice_half(from: &Stream, to: &Stream, count: impl Fn(usize)) -> io::Result<u64> {
    let (pipe_r, pipe_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    // Bigger pipes mean fewer system calls; the default (64 KiB) still works.
    let _ = fcntl_setpipe_size(&pipe_w, PIPE_SIZE);
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let n = match from.try_io(Interest::READABLE, || Ok(splice(from, None, &pipe_w, None, PIPE_SIZE, flags)?)) {
            Ok(0) => {
                // EOF: pass the half-close on; the other direction goes on.
                match to.shutdown_write() {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                    _ => return Ok(total),
                }
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        count(n);
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || Ok(splice(&pipe_r, None, to, None, left, flags)?)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}
