//! Child processes and their pipes: knowing when a child has exited
//! without reaping it (a pidfd, Linux 5.3), killing its process group, and
//! reading exactly what a pipe holds now.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, Signal, kill_process_group, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Becomes ready when a process exits, without reaping it: until it is
/// reaped its pid, and so its process group id, cannot be reused, and the
/// group can be killed without hitting a stranger.
#[derive(Debug)]
pub struct ExitFd(AsyncFd<OwnedFd>);

impl ExitFd {
    /// A pidfd for `pid`, registered with the runtime (call it inside
    /// one); `None` where the kernel has no pidfds (before 5.3) or the
    /// process is gone.
    #[allow(unsafe_code)]
    pub fn open(pid: u32) -> Option<ExitFd> {
        let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
        let fd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
        // SAFETY: what AsyncFd asks is that the descriptor stays open, and
        // the same one, for as long as it is registered. It is an OwnedFd
        // that the AsyncFd owns and never hands out mutably.
        let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
        registered.ok().map(ExitFd)
    }

    /// Waits until the process has exited.
    pub async fn exited(&self) -> io::Result<()> {
        let _ready = self.0.readable().await?;
        Ok(())
    }
}

/// Sends SIGKILL to the process group `pgid`; one already gone is no error
/// worth reporting.
pub fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

/// Bytes a pipe (or socket) holds right now (`FIONREAD`); 0 when unknown.
pub fn readable_now(fd: impl AsFd) -> u64 {
    rustix::io::ioctl_fionread(fd).unwrap_or(0)
}

/// One read from a non-blocking descriptor, retried if a signal cut it:
/// the bytes read (0 at EOF), or `WouldBlock` when it holds nothing.
pub fn read_now(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = fd.as_fd();
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}
