//! Big files: written to `.sockit-partial/<key>.part` as they arrive,
//! hashed on the way (a resumed file's earlier part too), fsynced and
//! renamed into place when the sender's BLAKE3 matches.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use tracing::{info, warn};

use super::super::wire::{Frame, Hash};
use super::super::{Busy, Head, KEY_WAIT, Opened, Session, WRITEBACK};
use super::{Disk, Refusal, Target, describe_disk_error, hash_at, set_meta, show, taken_over};

/// A big file being received.
pub(super) struct Incoming {
    head: Head,
    file: File,
    key: String,
    hasher: blake3::Hasher,
    parent: Arc<OwnedFd>,
    name: Vec<u8>,
    shown: Vec<u8>,
    replace: bool,
    resumed_from: u64,
    started: Instant,
    /// Bytes written since writeback was last started.
    unflushed: u64,
    _busy: BusyGuard,
}

/// Releases a partial file's key when its writer ends.
pub(super) struct BusyGuard {
    busy: Busy,
    key: String,
    session: Arc<Session>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if busy.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.session)) {
            busy.remove(&self.key);
        }
    }
}

/// How [`Disk::claim`] went.
enum Claim {
    /// This session is the file's one writer now; true if it had to wait
    /// (the file may be there now).
    Held(BusyGuard, bool),
    /// Another session kept it for all of [`KEY_WAIT`].
    Busy,
}

impl Disk {
    /// Where a big file goes, or the answer that it does not.
    fn target_big(&mut self, head: Head, proceed: bool) -> io::Result<Result<(Target, Head), Opened>> {
        match self.target(&head, proceed) {
            Err(Refusal(why)) => {
                self.reply(Frame::Refused(why))?;
                Ok(Err(Opened::Refused))
            }
            Ok(Err(hash)) => {
                self.pending = Some(head);
                self.reply(Frame::Exists(hash))?;
                Ok(Err(Opened::Exists))
            }
            Ok(Ok(t)) => Ok(Ok((t, head))),
        }
    }

    /// Becomes the one writer of the partial file `key`. Another session
    /// writing it is waited for (bounded by [`KEY_WAIT`]): a sender run
    /// twice at once then finds the file there when the first is done.
    /// One whose sender is gone (killed, and its connection not yet wound
    /// down) or silent for [`super::super::STALL`] (killed behind a NAT,
    /// stuck) is told to stop, so that a run again at once resumes.
    fn claim(&self, key: &str) -> Claim {
        let deadline = Instant::now() + KEY_WAIT;
        let mut waited = false;
        loop {
            {
                let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
                match busy.get(key) {
                    None => {
                        busy.insert(key.to_string(), self.session.clone());
                        let guard =
                            BusyGuard { busy: self.busy.clone(), key: key.to_string(), session: self.session.clone() };
                        return Claim::Held(guard, waited);
                    }
                    Some(holder) if holder.stalled() && !holder.stop.is_cancelled() => {
                        info!("taking over a file from a stalled session");
                        holder.stop.cancel();
                    }
                    Some(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Claim::Busy;
            }
            waited = true;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn open_big(&mut self, head: Head, proceed: bool) -> io::Result<Opened> {
        let (t, head) = match self.target_big(head, proceed)? {
            Ok(x) => x,
            Err(answer) => return Ok(answer),
        };
        let key = partial_key(&head);
        // Answers so far go out before a wait.
        self.send_replies()?;
        let (guard, t, head) = match self.claim(&key) {
            Claim::Busy => {
                self.reply(Frame::Refused(format!(
                    "{}: another connection has been receiving this file for over {} s and still is; \
                     try again when it is done",
                    show(&head.path),
                    KEY_WAIT.as_secs()
                )))?;
                return Ok(Opened::Refused);
            }
            Claim::Held(guard, false) => (guard, t, head),
            // Another session had it: it may be there now, whole.
            Claim::Held(guard, true) => match self.target_big(head, proceed)? {
                Ok((t, head)) => (guard, t, head),
                Err(answer) => return Ok(answer),
            },
        };
        let part = format!("{key}.part");
        let opened = (|| {
            let fd = rustix::fs::openat(
                &self.partial,
                part.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut file = File::from(fd);
            let mut have = file.metadata()?.len();
            if have > head.size {
                file.set_len(0)?;
                have = 0;
            }
            // What is already here counts toward the end-to-end hash. It
            // may be much: this session is busy, not stalled, meanwhile.
            let session = &self.session;
            let hasher = super::super::hash_prefix_with(&mut file, have, || {
                session.touch();
                if session.stop.is_cancelled() { Err(taken_over()) } else { Ok(()) }
            })?;
            io::Result::Ok((file, hasher, have))
        })();
        let (file, hasher, have) = match opened {
            Ok(x) => x,
            Err(_) if self.session.stop.is_cancelled() => return Err(taken_over()),
            Err(e) => return self.disk_error(&head.path, e).map(|()| Opened::Refused),
        };
        let need = head.size - have;
        if let Ok(vfs) = rustix::fs::fstatvfs(&file)
            && vfs.f_bavail.saturating_mul(vfs.f_frsize) < need
        {
            drop(file);
            let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
            self.reply(Frame::Refused(format!(
                "{}: not enough space on the server: {} needed, {} free",
                show(&head.path),
                indicatif::HumanBytes(need),
                indicatif::HumanBytes(vfs.f_bavail.saturating_mul(vfs.f_frsize))
            )))?;
            return Ok(Opened::Refused);
        }
        if have > 0 {
            info!(file = %show(&head.path), from = have, "resuming");
        }
        self.reply(Frame::Send(have))?;
        self.incoming = Some(Incoming {
            file,
            key,
            hasher,
            parent: t.parent,
            name: t.name,
            shown: t.shown,
            replace: t.replace,
            resumed_from: have,
            started: Instant::now(),
            unflushed: 0,
            _busy: guard,
            head,
        });
        Ok(Opened::Send(have))
    }

    pub(super) fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        if self.session.stop.is_cancelled() {
            return Err(taken_over());
        }
        self.session.touch();
        let inc = self.incoming.as_mut().ok_or_else(|| io::Error::other("file data outside a file"))?;
        inc.hasher.update(piece);
        if let Err(e) = self.session.in_disk(|| inc.file.write_all(piece)) {
            let inc = self.incoming.take().expect("checked");
            let _ = rustix::fs::unlinkat(&self.partial, format!("{}.part", inc.key).as_str(), AtFlags::empty());
            return Err(describe_disk_error(&inc.head.path, e, &self.dir));
        }
        inc.unflushed += piece.len() as u64;
        if inc.unflushed >= WRITEBACK {
            // Start writing what came so far to disk now, so the fsync at
            // the end has little left to do and dirty pages stay bounded.
            inc.unflushed = 0;
            // SAFETY: sync_file_range only reads its integer arguments; the
            // descriptor is open for as long as `inc.file` lives.
            unsafe {
                libc::sync_file_range(std::os::fd::AsRawFd::as_raw_fd(&inc.file), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        Ok(())
    }

    pub(super) fn finish_big(&mut self, hash: Hash) -> io::Result<()> {
        let inc = self.incoming.take().ok_or_else(|| io::Error::other("Done outside a file"))?;
        let part = format!("{}.part", inc.key);
        if *inc.hasher.finalize().as_bytes() != hash {
            let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
            warn!(file = %show(&inc.head.path), resumed_from = inc.resumed_from, "BLAKE3 mismatch; partial data dropped");
            return self.reply(Frame::Refused(format!(
                "{}: BLAKE3 mismatch{}: nothing was stored; send it again",
                show(&inc.head.path),
                if inc.resumed_from > 0 { " (the partial data on the server did not match)" } else { "" }
            )));
        }
        let flags = if inc.replace { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
        self.session.touch();
        let stored = self.session.in_disk(|| {
            set_meta(&inc.file, &inc.head.meta, true)?;
            inc.file.sync_all()?;
            rustix::fs::renameat_with(&self.partial, part.as_str(), &inc.parent, inc.name.as_slice(), flags)?;
            rustix::fs::fsync(&inc.parent)?;
            io::Result::Ok(())
        });
        match stored {
            Ok(()) => {
                let secs = inc.started.elapsed().as_secs_f64();
                info!(
                    file = %show(&inc.shown),
                    bytes = inc.head.size,
                    resumed_from = inc.resumed_from,
                    mib_per_s = ((inc.head.size - inc.resumed_from) as f64 / secs.max(1e-6) / 1048576.0) as u64,
                    "stored"
                );
                self.reply(Frame::Stored(inc.shown))
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {
                let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
                if hash_at(&inc.parent, &inc.name).is_ok_and(|h| h == hash) {
                    return self.reply(Frame::Same);
                }
                self.reply(Frame::Refused(format!(
                    "{}: appeared on the server meanwhile; send again",
                    show(&inc.shown)
                )))
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
                self.disk_error(&inc.head.path, e)
            }
        }
    }
}

/// The name of a big file's partial data: the same path, size and time
/// from the sender give the same key, so a second send finds it.
fn partial_key(head: &Head) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"sockit-partial-v1");
    h.update(&head.size.to_be_bytes());
    h.update(&head.meta.mtime.to_be_bytes());
    h.update(&head.meta.mtime_ns.to_be_bytes());
    h.update(&head.path);
    h.finalize().to_hex()[..32].to_string()
}
