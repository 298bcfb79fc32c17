//! Forwarding bytes both ways between two streams, keeping half-close: when
//! one side shuts its write half, the other side's write half is shut down
//! too, and the opposite direction goes on until it ends as well — a reply
//! that comes after one side has finished sending is never cut off.
//!
//! Between two plain sockets, bulk flows move with `splice(2)` through a
//! pipe per direction, never entering user space; small messages (a read that
//! does not fill [`SMALL`]) are copied through a buffer, because two splices
//! cost more than a read and a write. Each direction switches by itself as
//! its traffic changes. [`Copy::Buffered`] uses tokio's `copy_bidirectional`
//! with large buffers instead (for streams that are not plain sockets, and
//! for comparison).

use std::cell::RefCell;
use std::io;

use tokio::io::Interest;

use crate::conn::{Conn, Stream};
use crate::sys::splice::Pipe;

/// How much one splice moves at most, and the pipe size asked for: bigger
/// pipes mean fewer system calls.
const PIPE_SIZE: usize = 1024 * 1024;
/// Reads of this much or more switch a direction to splice; smaller ones
/// switch it back to copying.
pub const SMALL: usize = 16 * 1024;
/// The size of [`copy_ready`]'s per-thread scratch buffer: the most one
/// call moves.
pub const SCRATCH: usize = 64 * 1024;
/// Buffer per direction for [`Copy::Buffered`].
const COPY_BUF: usize = 256 * 1024;

/// How to move the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Copy {
    /// Zero-copy `splice(2)` for bulk flows, plain copies for small messages.
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

/// One direction until EOF, then shut `to`'s write half down: small reads
/// are copied, and once a read fills [`SMALL`] the bytes go socket → pipe →
/// socket until reads get small again.
async fn splice_half(from: &Stream, to: &Stream, count: impl Fn(usize)) -> io::Result<u64> {
    let mut pipe: Option<Pipe> = None;
    let mut bulk = false;
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let moved = if bulk {
            let pipe = match &pipe {
                Some(p) => p,
                None => pipe.insert(Pipe::new(PIPE_SIZE)?),
            };
            splice_once(from, to, pipe).await
        } else {
            copy_ready(from, to).await
        };
        let n = match moved {
            Ok(0) => {
                // EOF: pass the half-close on; the other direction goes on.
                return match to.shutdown_write() {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                    _ => Ok(total),
                };
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        count(n);
        total += n as u64;
        bulk = n >= SMALL;
    }
}

/// Moves what is ready on `from` (at most [`SCRATCH`] bytes) to `to`:
/// returns the bytes moved, 0 at EOF, or `WouldBlock` when nothing was
/// ready. The read and, as a rule, the write happen at once through a
/// per-thread scratch buffer, so a connection holds no buffer of its own;
/// only what `to` does not take at once is copied out and awaited. `from`
/// and `to` may be the same stream (echo).
pub async fn copy_ready(from: &Stream, to: &Stream) -> io::Result<usize> {
    thread_local! {
        static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
    }
    let (n, rest) = BUF.with_borrow_mut(|buf| -> io::Result<_> {
        let n = from.try_read(buf)?;
        let mut off = 0;
        while off < n {
            match to.try_write(&buf[off..n]) {
                Ok(m) => off += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok((n, buf[off..n].to_vec()))
    })?;
    write_all(to, &rest).await?;
    Ok(n)
}

/// Splices what is ready into the pipe, then all of it out to `to`.
async fn splice_once(from: &Stream, to: &Stream, pipe: &Pipe) -> io::Result<usize> {
    let n = from.try_io(Interest::READABLE, || pipe.fill_from(from, PIPE_SIZE))?;
    let mut left = n;
    while left > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || pipe.drain_to(to, left)) {
            Ok(m) => left -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

async fn write_all(to: &Stream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match to.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
