//! Small files between written and named: a batch is synced with one
//! `syncfs`, then each file is linked (or renamed) into place and its
//! directory synced, on a thread of its own, and every entry of the batch
//! is answered in order.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{AtFlags, RenameFlags};
use tokio::sync::mpsc;
use tracing::info;

use super::super::wire::{Frame, Hash};
use super::{differs, hash_at, io_with, random_hex, show};

/// What a small file's entry waits for: its sync and name, or (when it was
/// answered at once) only its turn, so answers keep the entries' order.
pub(super) enum Staged {
    File(StagedFile),
    Answer(Frame),
}

/// A small file written and waiting for the batch's sync.
pub(super) struct StagedFile {
    pub(super) tmp: Tmp,
    pub(super) parent: Arc<OwnedFd>,
    pub(super) name: Vec<u8>,
    pub(super) shown: Vec<u8>,
    pub(super) replace: bool,
    pub(super) size: u64,
    pub(super) hash: Hash,
}

/// Where a small file waits for its sync: an unnamed file in its target
/// directory (`O_TMPFILE`: it has no name until it is whole, and vanishes
/// in a crash), or, on filesystems without that, a named one in the
/// partial directory.
pub(super) enum Tmp {
    Unnamed(File),
    Named(String),
}

/// Syncs a batch of small files and names them, answering each entry in
/// order.
pub(super) fn commit(batch: Vec<Staged>, partial: &OwnedFd, replies: &mpsc::Sender<Vec<Frame>>) -> io::Result<()> {
    if batch.iter().any(|s| matches!(s, Staged::File(_))) {
        rustix::fs::syncfs(partial).map_err(|e| io_with(e, "sync failed"))?;
    }
    let mut synced: Vec<Arc<OwnedFd>> = Vec::new();
    let log = crate::logging::batch();
    let mut answers = Vec::with_capacity(batch.len());
    for s in batch {
        let s = match s {
            Staged::Answer(f) => {
                answers.push(f);
                continue;
            }
            Staged::File(s) => s,
        };
        match place(partial, &s) {
            Ok(()) => {
                if !synced.iter().any(|d| Arc::ptr_eq(d, &s.parent)) {
                    rustix::fs::fsync(&*s.parent).map_err(|e| io_with(e, "sync failed"))?;
                    synced.push(s.parent.clone());
                }
                info!(file = %show(&s.shown), bytes = s.size, "stored");
                answers.push(Frame::Stored(s.shown));
            }
            Err(e) => {
                discard(partial, &s.tmp);
                // Taken since it was looked at (or, in a directory this
                // session made, not looked at): the same file is fine.
                answers.push(match e {
                    rustix::io::Errno::EXIST if hash_at(&s.parent, &s.name).is_ok_and(|h| h == s.hash) => Frame::Same,
                    rustix::io::Errno::EXIST => Frame::Refused(differs(&s.shown)),
                    e => Frame::Refused(format!("{}: {}", show(&s.shown), io::Error::from(e))),
                });
            }
        }
    }
    drop(log); // the lines before the answers
    replies.blocking_send(answers).map_err(|_| io::Error::other("the connection closed"))
}

/// Gives a synced small file its name: never over an existing file unless
/// the policy replaces.
fn place(partial: &OwnedFd, s: &StagedFile) -> Result<(), rustix::io::Errno> {
    let noreplace = if s.replace { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
    match &s.tmp {
        Tmp::Named(tmp) => rustix::fs::renameat_with(partial, tmp.as_str(), &*s.parent, s.name.as_slice(), noreplace),
        Tmp::Unnamed(f) => {
            // An empty path names the open file itself (where the kernel
            // allows it: recent ones, or root); else through /proc.
            let link = |name: &[u8]| match rustix::fs::linkat(f, "", &*s.parent, name, AtFlags::EMPTY_PATH) {
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {
                    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f));
                    rustix::fs::linkat(rustix::fs::CWD, proc_path.as_str(), &*s.parent, name, AtFlags::SYMLINK_FOLLOW)
                }
                other => other,
            };
            if !s.replace {
                return link(&s.name);
            }
            // linkat never replaces: link under a hidden name, then rename
            // that over the old file.
            let hidden = format!(".sockit-tmp-{}", random_hex());
            link(hidden.as_bytes())?;
            rustix::fs::renameat(&*s.parent, hidden.as_str(), &*s.parent, s.name.as_slice()).inspect_err(|_| {
                let _ = rustix::fs::unlinkat(&*s.parent, hidden.as_str(), AtFlags::empty());
            })
        }
    }
}

/// Drops a small file's temporary data.
pub(super) fn discard(partial: &OwnedFd, tmp: &Tmp) {
    if let Tmp::Named(name) = tmp {
        let _ = rustix::fs::unlinkat(partial, name.as_str(), AtFlags::empty());
    }
}
