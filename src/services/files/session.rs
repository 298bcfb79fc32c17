//! What the files service's sessions see of each other: which one is
//! writing each partial file (one writer per file), whether it is alive,
//! and how a new session takes a file over from one that stalled.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

/// A session receiving a file that nothing came from, and whose disk side
/// did nothing, for this long is taken over by a new session for the
/// same file: its sender was killed behind a NAT, or is stuck.
pub(super) const STALL: Duration = Duration::from_secs(3);
/// How long a session waits for another that is receiving the same file
/// (it then finds the file there, or resumes it).
pub(super) const KEY_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting session looks at the holder of the file again.
const CLAIM_POLL: Duration = Duration::from_millis(20);

/// What other sessions may see of a session, and tell it: a session that
/// wants the file this one is receiving stops it when it is dead or stuck.
#[derive(Debug, Default)]
pub(super) struct Session {
    /// Cancelled when another session takes over this one's file: this
    /// one ends.
    pub(super) stop: CancellationToken,
    /// When a frame or data last came from the sender, or the disk side
    /// last made progress ([`now_ms`]).
    active: AtomicU64,
    /// Nothing more will come from the sender: its connection ended.
    gone: AtomicBool,
    /// The disk side is inside a call that may take long (a write held up
    /// by writeback, a big file's fsync): busy, not stalled.
    in_disk: AtomicBool,
}

impl Session {
    /// A session active now.
    pub(super) fn new() -> Arc<Session> {
        let s = Arc::new(Session::default());
        s.touch();
        s
    }

    /// Something came from the sender, or the disk side moved on.
    pub(super) fn touch(&self) {
        self.active.store(now_ms(), Ordering::Relaxed);
    }

    /// Nothing more will come from the sender.
    pub(super) fn set_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    /// Runs a disk call that may take long; the session counts as busy
    /// meanwhile, whatever the clock says.
    pub(super) fn in_disk<R>(&self, f: impl FnOnce() -> R) -> R {
        self.in_disk.store(true, Ordering::Relaxed);
        let r = f();
        self.in_disk.store(false, Ordering::Relaxed);
        self.touch();
        r
    }

    /// Whether another session may take over from this one.
    fn stalled(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
            || (!self.in_disk.load(Ordering::Relaxed)
                && now_ms().saturating_sub(self.active.load(Ordering::Relaxed)) >= STALL.as_millis() as u64)
    }
}

/// Milliseconds on a clock of this process.
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Partial files being written, by key, with the session writing each.
#[derive(Clone, Debug, Default)]
pub(super) struct Writers(Arc<Mutex<HashMap<String, Arc<Session>>>>);

/// How [`Writers::claim`] went.
pub(super) enum Claim {
    /// This session is the file's one writer now; true if it had to wait
    /// (the file may be there now).
    Held(Writer, bool),
    /// Another session kept it for all of [`KEY_WAIT`].
    Busy,
}

/// The right to write one partial file; released when dropped.
pub(super) struct Writer {
    writers: Writers,
    key: String,
    session: Arc<Session>,
}

impl Writers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `session` the one writer of the partial file `key`. Another
    /// session writing it is waited for (bounded by [`KEY_WAIT`]): a
    /// sender run twice at once then finds the file there when the first
    /// is done. One whose sender is gone (killed, and its connection not
    /// yet wound down) or silent for [`STALL`] (killed behind a NAT,
    /// stuck) is told to stop, so that a run again at once resumes.
    pub(super) fn claim(&self, key: &str, session: &Arc<Session>) -> Claim {
        let deadline = Instant::now() + KEY_WAIT;
        let mut waited = false;
        loop {
            {
                let mut held = self.lock();
                match held.get(key) {
                    None => {
                        held.insert(key.to_string(), session.clone());
                        let writer = Writer { writers: self.clone(), key: key.to_string(), session: session.clone() };
                        return Claim::Held(writer, waited);
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
            std::thread::sleep(CLAIM_POLL);
        }
    }

    /// The keys being written now.
    pub(super) fn held(&self) -> HashSet<String> {
        self.lock().keys().cloned().collect()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut held = self.writers.lock();
        if held.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.session)) {
            held.remove(&self.key);
        }
    }
}
