//! Files and directories through directory handles: what the files
//! service needs to stay inside its directory (nothing here follows a
//! symlink), to keep a file nameless until it is whole, and to sync many
//! files with one call. Errors are `io::Error`s of the usual kinds
//! (`NotFound`, `AlreadyExists`, …); a symlink where a directory is wanted
//! reads as `NotADirectory`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// How a directory is opened: never through a symlink.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A symlink met where a directory was asked for (`ELOOP` with
/// `O_NOFOLLOW`) is reported like any other non-directory.
fn not_a_dir(e: Errno) -> io::Error {
    match e {
        Errno::LOOP => io::Error::new(io::ErrorKind::NotADirectory, "a symbolic link"),
        e => e.into(),
    }
}

/// Opens the directory `path` (not a symlink to one).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(path, dir_flags(), Mode::empty()).map_err(not_a_dir)
}

/// Opens the directory `name` in `dir`, never through a symlink.
pub fn open_dir_at(dir: impl AsFd, name: &[u8]) -> io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, dir_flags(), Mode::empty()).map_err(not_a_dir)
}

/// Creates the directory `name` in `dir` with `mode` (less the umask).
pub fn make_dir_at(dir: impl AsFd, name: &[u8], mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// What is at a name, as far as the files service cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A symbolic link (not followed).
    Symlink,
    /// A directory.
    Dir,
    /// A device, FIFO or socket.
    Special,
}

/// What `name` in `dir` is, and its size, without following a symlink;
/// `None` when nothing has that name.
pub fn look_at(dir: impl AsFd, name: &[u8]) -> io::Result<Option<(Kind, u64)>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let kind = match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Kind::File,
                FileType::Symlink => Kind::Symlink,
                FileType::Directory => Kind::Dir,
                _ => Kind::Special,
            };
            Ok(Some((kind, st.st_size as u64)))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens the regular file `name` in `dir` for reading, not through a
/// symlink.
///
/// Only a regular file is opened: a FIFO planted at the name would block
/// the open (and the thread) for ever, so the open does not wait, and
/// anything but a regular file is refused.
pub fn open_read_at(dir: impl AsFd, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let file = File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?);
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Opens `name` in `dir` to read and write, creating it with `mode` when
/// missing, not through a symlink.
pub fn open_rw_at(dir: impl AsFd, name: &[u8], mode: u32) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?))
}

/// Creates `name` in `dir` with `mode` for writing; fails if anything has
/// that name.
pub fn create_new_at(dir: impl AsFd, name: &[u8], mode: u32) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?))
}

/// A file without a name in `dir` (`O_TMPFILE`, Linux 3.11), with `mode`
/// (less the umask) from the start: it vanishes in a crash, and appears
/// only through [`link_unnamed`]. Fails on filesystems without it
/// (`EOPNOTSUPP`, `EISDIR` on old kernels): use a named temporary then.
pub fn create_unnamed_in(dir: impl AsFd, mode: u32) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(mode))?))
}

/// Gives a file made by [`create_unnamed_in`] the name `name` in `dir`;
/// never replaces anything (`AlreadyExists` then). An empty path names the
/// open file itself where the kernel allows it (Linux 6.10 for anyone,
/// earlier with `CAP_DAC_READ_SEARCH`); else through `/proc/self/fd`.
pub fn link_unnamed(file: &File, dir: impl AsFd, name: &[u8]) -> io::Result<()> {
    let dir = dir.as_fd();
    match rustix::fs::linkat(file, "", dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => {
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
            Ok(rustix::fs::linkat(rustix::fs::CWD, proc_path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)?)
        }
        other => Ok(other?),
    }
}

/// Renames `from` in `from_dir` to `to` in `to_dir`; over an existing file
/// only if `replace` (else `AlreadyExists`, atomically:
/// `RENAME_NOREPLACE`, Linux 3.15 on ext4, later on some filesystems).
pub fn rename_at(from_dir: impl AsFd, from: &[u8], to_dir: impl AsFd, to: &[u8], replace: bool) -> io::Result<()> {
    let flags = if replace { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
    Ok(rustix::fs::renameat_with(from_dir, from, to_dir, to, flags)?)
}

/// Removes the file `name` in `dir`.
pub fn remove_at(dir: impl AsFd, name: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Makes a directory's entries durable (`fsync` on it).
pub fn sync_dir(dir: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(dir)?)
}

/// Writes out everything dirty on the filesystem that holds `fd`
/// (`syncfs(2)`): one call for a whole batch of small files instead of an
/// `fsync` each.
pub fn sync_filesystem(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::syncfs(fd)?)
}

/// Starts writing `file`'s dirty pages to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later `fsync` has
/// little left and dirty memory stays bounded. Advisory: a failure only
/// means the `fsync` does all the work.
#[allow(unsafe_code)]
pub fn start_writeback(file: &File) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: sync_file_range takes only integers and touches no memory of
    // ours; `fd` stays open for the call, borrowed from `file`.
    unsafe {
        libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Bytes an unprivileged user may still write on the filesystem that
/// holds `fd`.
pub fn free_space(fd: impl AsFd) -> io::Result<u64> {
    let vfs = rustix::fs::fstatvfs(fd)?;
    Ok(vfs.f_bavail.saturating_mul(vfs.f_frsize))
}

/// Sets `O_NOFOLLOW | O_NONBLOCK` on an open: a symlink at the name fails
/// the open, and a FIFO planted there fails at once instead of blocking it
/// (`O_NONBLOCK` changes nothing for a regular file).
pub fn no_follow_no_block(opts: &mut OpenOptions) -> &mut OpenOptions {
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn an_unnamed_file_appears_whole_and_never_over_another() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        make_dir_at(&dir, b"sub", 0o755).unwrap();
        assert_eq!(make_dir_at(&dir, b"sub", 0o755).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::os::unix::fs::symlink(tmp.path().join("sub"), tmp.path().join("link")).unwrap();
        assert_eq!(open_dir_at(&dir, b"link").unwrap_err().kind(), io::ErrorKind::NotADirectory);
        assert!(matches!(look_at(&dir, b"link").unwrap(), Some((Kind::Symlink, _))));
        let sub = open_dir_at(&dir, b"sub").unwrap();
        let mut f = match create_unnamed_in(&sub, 0o644) {
            Ok(f) => f,
            Err(_) => return, // a filesystem without O_TMPFILE: nothing to check
        };
        f.write_all(b"whole").unwrap();
        assert_eq!(look_at(&sub, b"a").unwrap(), None, "no name until linked");
        link_unnamed(&f, &sub, b"a").unwrap();
        assert_eq!(link_unnamed(&f, &sub, b"a").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        let mut got = String::new();
        open_read_at(&sub, b"a").unwrap().read_to_string(&mut got).unwrap();
        assert_eq!((got.as_str(), look_at(&sub, b"a").unwrap()), ("whole", Some((Kind::File, 5))));
        create_new_at(&sub, b"b", 0o600).unwrap();
        assert_eq!(rename_at(&sub, b"b", &sub, b"a", false).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        rename_at(&sub, b"b", &sub, b"a", true).unwrap();
        remove_at(&sub, b"a").unwrap();
        sync_dir(&sub).unwrap();
        sync_filesystem(&sub).unwrap();
        start_writeback(&f);
        assert!(free_space(&sub).unwrap() > 0);
    }
}
