//! Everything sockit asks of the operating system that std and tokio do not
//! ask for it: small safe functions, one place to port.
//!
//! # Platforms
//!
//! **Linux only** (x86_64 and aarch64 are tested; any Linux target builds).
//! Building for anything else stops here with a `compile_error!`, rather
//! than with a hundred missing-symbol errors further down. What ties sockit
//! to Linux, and the oldest kernel each part needs:
//!
//! | call | used by | Linux | when missing |
//! |---|---|---|---|
//! | `splice(2)`, `F_SETPIPE_SZ` ([`splice`]) | relay, `forward` | 2.6.17 | — |
//! | `O_TMPFILE`, `linkat(AT_EMPTY_PATH)` ([`fs`]) | files (small files) | 3.11 | a named temporary |
//! | `renameat2(RENAME_NOREPLACE)` ([`fs`]) | files | 3.15 | — |
//! | `syncfs(2)`, `sync_file_range(2)` ([`fs`]) | files (batches, writeback) | 2.6.39 | — |
//! | `pidfd_open(2)` ([`process`]) | exec | 5.3 | the group is killed after the reap |
//! | `/proc/self/status`, `/proc/sys/net/core/somaxconn`, `/proc/self/fd` | files, serve, bench | any | defaults |
//!
//! The rest (`getrlimit`, `openat`, `shutdown`, `kill`, `FIONREAD`, …) is
//! POSIX and would port as it is. Nothing outside this module names `libc`
//! or `rustix`, reads `/proc`, or uses `unsafe`: the crate denies
//! `unsafe_code`, and the two functions here that need it allow it one at a
//! time, each with the reason it is sound.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "sockit runs on Linux only: it uses splice, O_TMPFILE, syncfs, sync_file_range, pidfd_open and /proc \
     (see src/sys.rs and the README's Platforms paragraph)"
);

pub mod fs;
pub mod process;
pub mod splice;

use std::io;
use std::os::fd::AsFd;

use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises the open-file soft limit to the hard limit, so ten thousand
/// connections need no `ulimit -n` ritual. Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if setrlimit(Resource::Nofile, lim).is_err() {
            return getrlimit(Resource::Nofile).current;
        }
    }
    lim.current
}

/// The open-file limit in force (the soft limit), or `None` when there is
/// none.
pub fn open_file_limit() -> Option<usize> {
    getrlimit(Resource::Nofile).current.map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// The kernel's cap on a listen backlog (`net.core.somaxconn`), if readable.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// The process's umask, read once from `/proc/self/status` (asking
/// `umask(2)` would change it for a moment, under every other thread); all
/// bits when unknown, which makes callers set modes explicitly.
pub fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
            .unwrap_or(0o777)
    })
}

/// The resident memory of process `pid` in bytes (`VmRSS`), if it can be
/// read.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// This machine's host name (`uname(2)`), if it is UTF-8.
pub fn hostname() -> Option<String> {
    rustix::system::uname().nodename().to_str().ok().map(str::to_string)
}

/// Shuts the write half of a socket down: the peer reads EOF, and can
/// still send.
pub fn shutdown_write(socket: impl AsFd) -> io::Result<()> {
    Ok(rustix::net::shutdown(socket, rustix::net::Shutdown::Write)?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Files outside `sys` that may still name a platform crate, and why.
    /// `server.rs` tells EMFILE/ENFILE apart (POSIX) through rustix's
    /// `Errno`; it moves here when that file is next open for edits.
    const ALLOWED: &[&str] = &["server.rs"];

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The rule of this module, checked: platform calls, `/proc` and
    /// `unsafe` live here and nowhere else in the library.
    #[test]
    fn platform_calls_stay_in_sys() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut found = Vec::new();
        for path in files {
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            if rel == "sys.rs" || rel.starts_with("sys/") || ALLOWED.contains(&rel.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let hit = ["libc::", "rustix::", "\"/proc", "unsafe {", "unsafe fn", "unsafe impl"]
                    .iter()
                    .any(|p| code.contains(p));
                if hit {
                    found.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(found.is_empty(), "platform calls outside src/sys.rs:\n{}", found.join("\n"));
    }
}
