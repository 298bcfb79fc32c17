//! Big files: written to `.sockit-partial/<key>.part` as they arrive,
//! hashed on the way (a resumed file's earlier part too), handed to the
//! kernel's writeback as they grow, fsynced and renamed into place when the
//! sender's BLAKE3 matches.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::time::Instant;

use tracing::{info, warn};

use super::{Frame, Hash, Head, Target, hash_at, hash_prefix_with, set_meta, show};
use crate::sys::fs as sysfs;

/// A big file's data is handed to the disk's writeback every this many
/// bytes: the fsync at the end has little left to do, and dirty pages stay
/// bounded.
const WRITEBACK: u64 = 32 << 20;

/// A big file being received.
pub(super) struct Incoming {
    head: Head,
    file: File,
    /// Its name in the partial directory.
    part: String,
    hasher: blake3::Hasher,
    target: Target,
    resumed_from: u64,
    started: Instant,
    /// Bytes written since writeback was last started.
    unflushed: u64,
}

/// How opening went, when nothing failed.
pub(super) enum Opening {
    /// Ready for the data (a hasher is 2 KiB: boxed once here, not moved
    /// about).
    Ready(Box<Incoming>),
    /// Not stored, and why.
    Refused(String),
}

/// How a finished file went, when nothing failed.
pub(super) enum Finished {
    /// The answer for the sender.
    Answer(Frame),
    /// Storing it failed with this error, and the partial data is gone.
    Failed(io::Error),
}

/// The name of a big file's partial data: the same path, size and time
/// from the sender give the same key, so a second send finds it.
pub(super) fn partial_key(head: &Head) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"sockit-partial-v1");
    h.update(&head.size.to_be_bytes());
    h.update(&head.meta.mtime.to_be_bytes());
    h.update(&head.meta.mtime_ns.to_be_bytes());
    h.update(&head.path);
    h.finalize().to_hex()[..32].to_string()
}

impl Incoming {
    /// Opens (or reopens, to resume) the partial file `key` in `partial`
    /// for `head`, going to `target`. What is already there is hashed,
    /// calling `tick` every MiB (it may stop the work with an error). A
    /// file that would not fit in the space left is refused, and its
    /// partial data dropped.
    pub(super) fn open(
        partial: &OwnedFd,
        key: &str,
        head: Head,
        target: Target,
        tick: impl FnMut() -> io::Result<()>,
    ) -> io::Result<Opening> {
        let part = format!("{key}.part");
        let mut file = sysfs::open_rw_at(partial, part.as_bytes(), 0o600)?;
        let mut have = file.metadata()?.len();
        if have > head.size {
            file.set_len(0)?;
            have = 0;
        }
        // What is already here counts toward the end-to-end hash.
        let hasher = hash_prefix_with(&mut file, have, tick)?;
        let need = head.size - have;
        if let Ok(free) = sysfs::free_space(&file)
            && free < need
        {
            drop(file);
            let _ = sysfs::remove_at(partial, part.as_bytes());
            return Ok(Opening::Refused(format!(
                "{}: not enough space on the server: {} needed, {} free",
                show(&head.path),
                crate::units::human_size(need),
                crate::units::human_size(free)
            )));
        }
        if have > 0 {
            info!(file = %show(&head.path), from = have, "resuming");
        }
        let started = Instant::now();
        Ok(Opening::Ready(Box::new(Incoming {
            head,
            file,
            part,
            hasher,
            target,
            resumed_from: have,
            started,
            unflushed: 0,
        })))
    }

    /// Where the sender is to resume from.
    pub(super) fn offset(&self) -> u64 {
        self.resumed_from
    }

    /// The path the sender gave.
    pub(super) fn path(&self) -> &[u8] {
        &self.head.path
    }

    /// Writes the next piece; the caller drops the file on an error.
    pub(super) fn write(&mut self, piece: &[u8]) -> io::Result<()> {
        self.hasher.update(piece);
        self.file.write_all(piece)?;
        self.unflushed += piece.len() as u64;
        if self.unflushed >= WRITEBACK {
            self.unflushed = 0;
            sysfs::start_writeback(&self.file);
        }
        Ok(())
    }

    /// Drops the partial data.
    pub(super) fn discard(self, partial: &OwnedFd) {
        let _ = sysfs::remove_at(partial, self.part.as_bytes());
    }

    /// Ends the file on the sender's BLAKE3: stored under its name (with
    /// `store`, which runs the calls that may take long: fsyncs, the
    /// rename), or refused; the partial data is gone either way.
    pub(super) fn finish(
        self,
        partial: &OwnedFd,
        hash: Hash,
        store: impl FnOnce(&mut dyn FnMut() -> io::Result<()>) -> io::Result<()>,
    ) -> Finished {
        let path = &self.head.path;
        if *self.hasher.finalize().as_bytes() != hash {
            let _ = sysfs::remove_at(partial, self.part.as_bytes());
            warn!(file = %show(path), resumed_from = self.resumed_from, "BLAKE3 mismatch; partial data dropped");
            return Finished::Answer(Frame::Refused(
                super::wire::Reason::Mismatch,
                format!(
                    "{}: BLAKE3 mismatch{}: nothing was stored; send it again",
                    show(path),
                    if self.resumed_from > 0 { " (the partial data on the server did not match)" } else { "" }
                ),
            ));
        }
        let t = &self.target;
        let stored = store(&mut || {
            set_meta(&self.file, &self.head.meta, true)?;
            self.file.sync_all()?;
            sysfs::rename_at(partial, self.part.as_bytes(), &*t.parent, &t.name, t.replace)?;
            sysfs::sync_dir(&*t.parent)
        });
        match stored {
            Ok(()) => {
                let secs = self.started.elapsed().as_secs_f64();
                let size = self.head.size;
                info!(
                    file = %show(&t.shown),
                    bytes = size,
                    resumed_from = self.resumed_from,
                    mib_per_s = ((size - self.resumed_from) as f64 / secs.max(1e-6) / 1048576.0) as u64,
                    "stored"
                );
                Finished::Answer(Frame::Stored(self.target.shown))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = sysfs::remove_at(partial, self.part.as_bytes());
                if hash_at(&t.parent, &t.name).is_ok_and(|h| h == hash) {
                    return Finished::Answer(Frame::Same);
                }
                Finished::Answer(Frame::refused(format!(
                    "{}: appeared on the server meanwhile; send again",
                    show(&t.shown)
                )))
            }
            Err(e) => {
                let _ = sysfs::remove_at(partial, self.part.as_bytes());
                Finished::Failed(e)
            }
        }
    }
}
