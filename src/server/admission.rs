//! What a server admits: the open-file budget every connection and
//! session reserves from ([`Descriptors`]), a connection's place under
//! `--max-conns` ([`Slot`]), and the log of those refused ([`Refusals`]),
//! which a flood cannot flood.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::REFUSAL_LOG_INTERVAL;

/// The server's budget of open files, shared by all its connections: each
/// connection reserves what it costs at accept ([`Service::descriptors`](super::Service::descriptors)),
/// and a service that opens more as it goes (a disk thread's files, say)
/// reserves them here first and refuses what does not fit — so the process
/// never runs out, and no listener stalls on `EMFILE`.
#[derive(Clone, Debug, Default)]
pub struct Descriptors(pub(super) Option<Arc<Semaphore>>);

/// Descriptors reserved from a [`Descriptors`] budget, given back on drop.
#[derive(Debug)]
pub struct Reserved(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);

impl Descriptors {
    /// No budget: every reservation succeeds (a connection made outside a
    /// [`Server`](super::Server)).
    pub fn unlimited() -> Self {
        Descriptors(None)
    }

    /// Reserves as many as fit of `want`, halving down to `least`: how
    /// many, or `None` when not even `least` fit now.
    pub fn reserve_up_to(&self, want: usize, least: usize) -> Option<(Reserved, usize)> {
        let least = least.max(1);
        let mut n = want;
        while n > least {
            if let Some(r) = self.reserve(n) {
                return Some((r, n));
            }
            n = (n / 2).max(least);
        }
        self.reserve(least).map(|r| (r, least))
    }

    /// Reserves `n` descriptors, or `None` when they do not fit now.
    pub fn reserve(&self, n: usize) -> Option<Reserved> {
        match &self.0 {
            None => Some(Reserved(None)),
            Some(sem) => sem.clone().try_acquire_many_owned(u32::try_from(n).ok()?).ok().map(|p| Reserved(Some(p))),
        }
    }
}

/// A connection's (or datagram session's) place under `--max-conns` and
/// the descriptors reserved for it, both given back when it is dropped.
#[derive(Debug, Default)]
pub struct Slot {
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
    _descriptors: Option<Reserved>,
}

impl Slot {
    /// Takes a place from `places` (if limited) and `cost` descriptors, or
    /// says which of them is exhausted.
    pub(super) fn take(
        places: Option<&Arc<Semaphore>>,
        descriptors: &Descriptors,
        cost: usize,
    ) -> Result<Slot, Refused> {
        let place = match places {
            None => None,
            Some(p) => Some(p.clone().try_acquire_owned().map_err(|_| Refused::MaxConns)?),
        };
        let reserved = descriptors.reserve(cost).ok_or(Refused::OpenFiles)?;
        Ok(Slot { _place: place, _descriptors: Some(reserved) })
    }
}

/// Why a connection was refused at accept, or a datagram dropped.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refused {
    Acl,
    MaxConns,
    OpenFiles,
}

impl Refused {
    pub(super) const ALL: [Refused; 3] = [Refused::Acl, Refused::MaxConns, Refused::OpenFiles];

    pub(super) fn why(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Refused::Acl, _) => "address not allowed (--allow/--deny)",
            (Refused::MaxConns, Kind::Connections) => "connection limit reached (--max-conns)",
            (Refused::MaxConns, Kind::Datagrams) => "session limit reached (--max-conns)",
            (Refused::OpenFiles, _) => "open-file limit reached (ulimit -n)",
        }
    }
}

/// What a [`Refusals`] counts, which sets how loudly it logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Refused connections: warnings, since a connection's peer is real.
    Connections,
    /// Dropped datagrams: debug only, since a datagram's source is
    /// trivially forged and a flood of them must not flood the log.
    Datagrams,
}

/// Refused connections (or dropped datagrams), logged so that a flood of
/// them cannot flood the log: the first in each [`REFUSAL_LOG_INTERVAL`] is
/// logged with its peer, the rest are counted, and the counts are logged
/// once per interval.
#[derive(Debug)]
pub(super) struct Refusals {
    kind: Kind,
    counts: [AtomicU64; 3],
    last_logged: std::sync::Mutex<Option<Instant>>,
    pub(super) logging: std::sync::atomic::AtomicBool,
}

impl Refusals {
    pub(super) fn new(kind: Kind) -> Self {
        Refusals { kind, counts: Default::default(), last_logged: Default::default(), logging: Default::default() }
    }

    pub(super) fn refused(&self, service: &'static str, peer: crate::Peer, why: Refused) {
        let now = Instant::now();
        {
            let mut last = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL) {
                *last = Some(now);
                drop(last);
                match self.kind {
                    Kind::Connections => warn!(service, %peer, "refused: {}", why.why(self.kind)),
                    Kind::Datagrams => debug!(service, %peer, "dropped: {}", why.why(self.kind)),
                }
                return;
            }
        }
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn summary(&self) {
        let counts = Refused::ALL.map(|r| (r, self.counts[r as usize].swap(0, Ordering::Relaxed)));
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        if total > 0 {
            let reasons: Vec<String> =
                counts.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{n} {}", r.why(self.kind))).collect();
            let reasons = reasons.join(", ");
            match self.kind {
                Kind::Connections => {
                    warn!("refused {total} more connections in the last {REFUSAL_LOG_INTERVAL:?}: {reasons}")
                }
                Kind::Datagrams => {
                    debug!("dropped {total} more datagrams in the last {REFUSAL_LOG_INTERVAL:?}: {reasons}")
                }
            }
        }
    }
}
