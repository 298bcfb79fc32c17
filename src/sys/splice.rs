//! Zero-copy forwarding between sockets: `splice(2)` through a pipe, so
//! bulk bytes never enter user space (Linux).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};

/// A non-blocking pipe that bytes go through on their way from one socket
/// to another.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Every splice here: pages moved rather than copied where the kernel can,
/// and never a wait (readiness is the caller's, through tokio).
const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

impl Pipe {
    /// A pipe, asked to hold `size` bytes (`F_SETPIPE_SZ`); a smaller one
    /// (the default 64 KiB, or the `pipe-max-size` cap) still works, with
    /// more calls.
    pub fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let _ = fcntl_setpipe_size(&write, size);
        Ok(Pipe { read, write })
    }

    /// Moves at most `max` bytes from `from` into the pipe: the bytes
    /// moved, 0 at EOF, or `WouldBlock`.
    pub fn fill_from(&self, from: impl AsFd, max: usize) -> io::Result<usize> {
        Ok(splice(from, None, &self.write, None, max, FLAGS)?)
    }

    /// Moves at most `max` bytes from the pipe out to `to`: the bytes
    /// moved, or `WouldBlock`.
    pub fn drain_to(&self, to: impl AsFd, max: usize) -> io::Result<usize> {
        Ok(splice(&self.read, None, to, None, max, FLAGS)?)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn bytes_go_through_the_pipe_unchanged() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        let pipe = Pipe::new(1 << 20).unwrap();
        a.write_all(b"through").unwrap();
        assert_eq!(pipe.fill_from(&b, 1 << 20).unwrap(), 7);
        assert_eq!(pipe.drain_to(&c, 7).unwrap(), 7);
        let mut got = [0; 7];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through");
        b.set_nonblocking(true).unwrap();
        assert_eq!(pipe.fill_from(&b, 1 << 20).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(pipe.fill_from(&b, 1 << 20).unwrap(), 0, "EOF");
    }
}
