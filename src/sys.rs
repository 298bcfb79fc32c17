//! Process-level settings a server needs before it serves.

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
