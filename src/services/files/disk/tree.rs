//! The receiving directory as a confined tree: paths walked one directory
//! at a time without following a symlink, directories created within
//! `--max-dirs`, and the decision where a file entry goes (by the policy
//! and the sender's flag).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::{Dirs, FLAG_RENAME, Hash, Head, Meta, Policy, Refusal, SMALL, hash_at, refusal, set_meta, show, wire};
use crate::sys::fs::{self as sysfs, Kind};
use crate::units::format_size;

/// A name, checked: where a file is written.
pub(super) struct Target {
    /// The directory it goes in.
    pub(super) parent: Arc<OwnedFd>,
    /// Its name there.
    pub(super) name: Vec<u8>,
    /// Its path as the sender is told (a renamed one differs).
    pub(super) shown: Vec<u8>,
    /// A file of that name is replaced (`--overwrite`).
    pub(super) replace: bool,
}

/// Where a file entry goes.
pub(super) enum Where {
    /// There.
    To(Target),
    /// A file of the same size has the name, with this BLAKE3: the sender
    /// decides.
    Taken(Hash),
}

/// A directory files go in.
#[derive(Clone)]
struct Parent {
    fd: Arc<OwnedFd>,
    /// Made by this session.
    fresh: bool,
}

/// The receiving directory, as one session sees it.
pub(super) struct Tree {
    root: OwnedFd,
    /// Directories this session created: nothing was in them but what it
    /// put there, so a new name needs no look first; and they take the
    /// sender's modes and times at the end (no other directory does).
    dirs: Dirs<Meta>,
    /// The last directory a file went in: files of one directory come one
    /// after another.
    last: Option<(Vec<u8>, Parent)>,
    policy: Policy,
    max_size: u64,
}

impl Tree {
    /// The tree under `root`, remembering the directories it creates in
    /// `dirs` (its limit is `--max-dirs`).
    pub(super) fn new(root: OwnedFd, dirs: Dirs<Meta>, policy: Policy, max_size: u64) -> Tree {
        Tree { root, dirs, last: None, policy, max_size }
    }

    /// Creates a directory (and its parents), confined; it takes the
    /// sender's mode and time at the end only if this session created it.
    pub(super) fn make_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), Refusal> {
        let parts = wire::check_path(path).map_err(|e| refusal(path, e))?;
        walk(&self.root, Some(&mut self.dirs), path, &parts)?;
        self.dirs.set_meta(&parts, meta);
        Ok(())
    }

    /// Where a file entry goes, by the policy and the sender's flag (with
    /// `proceed`, the sender said to go on over a file of the same size),
    /// or why not.
    pub(super) fn target(&mut self, head: &Head, proceed: bool) -> Result<Where, Refusal> {
        let parts = wire::check_path(&head.path).map_err(|e| refusal(&head.path, e))?;
        if head.size > self.max_size {
            return Err(Refusal::other(format!(
                "{}: {} is over the server's --max-size {}",
                show(&head.path),
                crate::units::human_size(head.size),
                format_size(self.max_size)
            )));
        }
        let (dirs, name) = parts.split_at(parts.len() - 1);
        let Parent { fd: parent, fresh } = self.parent_dir(&head.path, dirs)?;
        let name = name[0].to_vec();
        // A small file's data is here already: in a directory this session
        // made, a name taken anyway (a path sent twice) is caught by the
        // link failing, not by a look first. A big one is looked for, to
        // spare sending it.
        let look = !fresh || head.size > SMALL || self.policy != Policy::Refuse || head.flags & FLAG_RENAME != 0;
        let existing = if look { sysfs::look_at(&*parent, &name).map_err(|e| refusal(&head.path, e))? } else { None };
        let Some((kind, size)) = existing else {
            return Ok(Where::To(Target { parent, name, shown: head.path.clone(), replace: false }));
        };
        match kind {
            Kind::File | Kind::Symlink => {}
            Kind::Dir => return Err(Refusal::other(format!("{}: is a directory on the server", show(&head.path)))),
            Kind::Special => {
                return Err(Refusal::other(format!(
                    "{}: is a device, FIFO or socket on the server; refusing to touch it",
                    show(&head.path)
                )));
            }
        }
        if !proceed && kind == Kind::File && size == head.size {
            let hash = hash_at(&parent, &name).map_err(|e| refusal(&head.path, e))?;
            return Ok(Where::Taken(hash));
        }
        if self.policy == Policy::Rename || head.flags & FLAG_RENAME != 0 {
            for n in 1..=9999 {
                let candidate = wire::numbered(&name, n);
                if let Ok(None) = sysfs::look_at(&*parent, &candidate) {
                    let mut shown = head.path[..head.path.len() - name.len()].to_vec();
                    shown.extend_from_slice(&candidate);
                    return Ok(Where::To(Target { parent, name: candidate, shown, replace: false }));
                }
            }
            return Err(Refusal::other(format!("{}: no free name left", show(&head.path))));
        }
        if self.policy == Policy::Overwrite {
            return Ok(Where::To(Target { parent, name, shown: head.path.clone(), replace: true }));
        }
        Err(Refusal::taken(&head.path))
    }

    /// The directory a file goes in, created when missing; the last one
    /// is kept, since files of one directory come one after another.
    fn parent_dir(&mut self, path: &[u8], dirs: &[&[u8]]) -> Result<Parent, Refusal> {
        let key = dirs.join(&b'/');
        if let Some((k, parent)) = &self.last
            && *k == key
        {
            return Ok(parent.clone());
        }
        let fd = Arc::new(walk(&self.root, Some(&mut self.dirs), path, dirs)?);
        let parent = Parent { fresh: self.dirs.created(dirs), fd };
        self.last = Some((key, parent.clone()));
        Ok(parent)
    }

    /// Sets the directories' modes and times last, deepest first, so that
    /// neither a read-only mode nor the files stored in them get in the way.
    /// Only directories this session created take the sender's metadata:
    /// one that was there keeps its own.
    pub(super) fn finish_dirs(&mut self) {
        let root = &self.root;
        self.dirs.drain_finished(|path, meta| {
            if let Ok(parts) = wire::check_path(path)
                && let Ok(fd) = walk(root, None, path, &parts)
            {
                let _ = set_meta(&std::fs::File::from(fd), &meta, true);
            }
        });
    }
}

/// Opens the directory `parts` names under `root`; with `create`, creates
/// missing ones (and remembers them there, within its limit). Never
/// follows a symlink.
fn walk(root: &OwnedFd, mut create: Option<&mut Dirs<Meta>>, path: &[u8], parts: &[&[u8]]) -> Result<OwnedFd, Refusal> {
    let mut cur = root.try_clone().map_err(|e| refusal(path, e))?;
    for (i, part) in parts.iter().enumerate() {
        let next = match (sysfs::open_dir_at(&cur, part), create.as_deref_mut()) {
            (Err(e), Some(dirs)) if e.kind() == std::io::ErrorKind::NotFound => {
                if dirs.room_for(&parts[..=i]).is_err() {
                    return Err(Refusal::other(format!(
                        "{}: this session made {} directories, the server's limit (--max-dirs); \
                         send again to store the rest",
                        show(path),
                        dirs.max()
                    )));
                }
                match sysfs::make_dir_at(&cur, part, 0o755) {
                    Ok(()) => dirs.record_created(&parts[..=i]).expect("room checked"),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(refusal(path, format!("cannot create a directory: {e}"))),
                }
                sysfs::open_dir_at(&cur, part)
            }
            (other, _) => other,
        };
        cur = next.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotADirectory => Refusal::other(format!(
                "{}: '{}' on the server is a symlink or not a directory; refusing to follow it",
                show(path),
                String::from_utf8_lossy(part)
            )),
            _ => refusal(path, e),
        })?;
    }
    Ok(cur)
}
