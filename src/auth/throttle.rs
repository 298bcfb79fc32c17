//! Token handshakes per address: spaced turns for proofs, and a cap on
//! handshakes open at once ([`Throttle`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Authentication attempts per address (an IPv6 address counts by its /64,
/// which one host usually holds whole).
///
/// - Checks are spaced: an address's next proof is checked no sooner than
///   250 ms after its previous turn, doubling with each failure (and each
///   proof still waiting, counted as if it will fail) up to 30 s; a turn
///   further off than that is refused at once with when to retry.
/// - At most [`DEFAULT_PENDING_PER_ADDRESS`] handshakes per address are open
///   at once: more are refused at once, so one address cannot hold the
///   server's connection slots waiting for turns.
/// - Forgotten 15 minutes after the last failure, or at a success.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<HashMap<IpAddr, Attempts>>,
    max_pending: u32,
}

/// Handshakes open at once from one address, by default.
pub const DEFAULT_PENDING_PER_ADDRESS: u32 = 8;
/// The longest wait between two checks for one address.
const MAX_WAIT: Duration = Duration::from_secs(30);
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most: past it, expired entries go, and if that
/// is not enough, the oldest half of those with nothing open.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug)]
struct Attempts {
    failures: u32,
    last_failure: Instant,
    /// When the last reserved turn is.
    last_turn: Option<Instant>,
    /// Turns reserved and not yet decided.
    waiting: u32,
    /// Handshakes open now.
    open: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(DEFAULT_PENDING_PER_ADDRESS)
    }
}

impl Throttle {
    /// A throttle admitting `max_pending` open handshakes per address.
    pub fn new(max_pending: u32) -> Self {
        Throttle { state: Mutex::default(), max_pending: max_pending.max(1) }
    }

    fn wait_for(count: u32) -> Duration {
        match count {
            0 => Duration::ZERO,
            n => (Duration::from_millis(250) * 2u32.saturating_pow(n - 1)).min(MAX_WAIT),
        }
    }

    /// Opens a handshake for `ip`, or refuses it (why, for the client)
    /// when the address has too many open.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Pending<'_>, String> {
        let key = ip.map(crate::acl::address_key);
        if let Some(key) = key {
            let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
            Self::make_room(&mut map);
            let a = map.entry(key).or_insert(Attempts {
                failures: 0,
                last_failure: Instant::now(),
                last_turn: None,
                waiting: 0,
                open: 0,
            });
            if a.open >= self.max_pending {
                return Err(format!(
                    "too many authentication attempts from your address at once (at most {}); try again later",
                    self.max_pending
                ));
            }
            a.open += 1;
        }
        Ok(Pending { throttle: self, key, waiting: false })
    }

    fn make_room(map: &mut HashMap<IpAddr, Attempts>) {
        if map.len() < MAX_REMEMBERED {
            return;
        }
        map.retain(|_, a| a.open > 0 || a.last_failure.elapsed() < FORGET_AFTER);
        if map.len() >= MAX_REMEMBERED {
            let mut times: Vec<Instant> = map.values().map(|a| a.last_failure).collect();
            times.sort();
            let median = times[times.len() / 2];
            map.retain(|_, a| a.open > 0 || a.last_failure >= median);
        }
    }

    fn with<R>(&self, key: IpAddr, f: impl FnOnce(&mut Attempts) -> R) -> Option<R> {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        map.get_mut(&key).map(f)
    }
}

/// One open handshake of an address (see [`Throttle`]); closes on drop.
#[derive(Debug)]
pub struct Pending<'a> {
    throttle: &'a Throttle,
    key: Option<IpAddr>,
    /// Holds a reserved turn not yet decided.
    waiting: bool,
}

impl Pending<'_> {
    /// Reserves this handshake's turn to have its proof checked: when, or
    /// `Err(how long to wait)` when it is too far off.
    pub fn turn(&mut self) -> Result<Instant, Duration> {
        let Some(key) = self.key else { return Ok(Instant::now()) };
        let reserved = self.throttle.with(key, |a| {
            let now = Instant::now();
            if a.failures > 0 && a.last_failure.elapsed() >= FORGET_AFTER {
                a.failures = 0;
            }
            let behind = a.failures + a.waiting;
            let at = match a.last_turn {
                Some(last) if behind > 0 => (last + Throttle::wait_for(behind)).max(now),
                _ => now,
            };
            if at > now + MAX_WAIT {
                return Err(at - now);
            }
            a.last_turn = Some(at);
            a.waiting += 1;
            Ok(at)
        });
        let at = reserved.unwrap_or(Ok(Instant::now()))?;
        self.waiting = true;
        Ok(at)
    }

    /// The proof was wrong.
    pub fn failed(&mut self) {
        self.decide(|a| {
            a.failures = a.failures.saturating_add(1);
            a.last_failure = Instant::now();
        });
    }

    /// The proof was right: the address's failures are forgotten.
    pub fn succeeded(&mut self) {
        self.decide(|a| a.failures = 0);
    }

    fn decide(&mut self, f: impl FnOnce(&mut Attempts)) {
        if let Some(key) = self.key {
            let waiting = std::mem::take(&mut self.waiting);
            self.throttle.with(key, |a| {
                if waiting {
                    a.waiting -= 1;
                }
                f(a)
            });
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let waiting = self.waiting;
        let mut map = self.throttle.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = map.get_mut(&key) {
            a.open -= 1;
            if waiting {
                a.waiting -= 1;
            }
            if a.open == 0 && a.failures == 0 {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn turns_are_spaced_per_address_across_connections() {
        let t = Throttle::default();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let start = Instant::now();
        // Eight handshakes from a open at once; the ninth is refused.
        let mut open: Vec<Pending> = (0..8).map(|_| t.admit(a).unwrap()).collect();
        assert!(t.admit(a).unwrap_err().contains("at most 8"));
        // Their turns are spaced as if each before it failed: 0, 250 ms,
        // 500 ms more, 1 s more... and the eighth, over 30 s off, is refused.
        let turns: Vec<Instant> = open[..7].iter_mut().map(|p| p.turn().unwrap()).collect();
        let gaps: Vec<u128> = turns.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(gaps, [250, 500, 1000, 2000, 4000, 8000]);
        assert!(open[7].turn().unwrap_err() > Duration::from_secs(30));
        assert!(turns[0] - start < Duration::from_millis(50));
        // Another address is not held up at all.
        let mut other = t.admit(b).unwrap();
        assert!(other.turn().unwrap() - start < Duration::from_millis(50));
        other.succeeded();
        // The failures count; the next turn would be past 30 s: refused.
        for p in &mut open {
            p.failed();
        }
        drop(open);
        let mut next = t.admit(a).unwrap();
        assert!(next.turn().is_err(), "a turn over 30 s off is refused, with when to retry");
    }

    #[test]
    fn a_success_forgets_and_a_closed_handshake_frees_its_place() {
        let t = Throttle::default();
        let a = ip("10.0.0.1");
        {
            let mut p = t.admit(a).unwrap();
            p.turn().unwrap();
            p.failed();
        }
        let mut p = t.admit(a).unwrap();
        let wait = p.turn().unwrap().saturating_duration_since(Instant::now());
        assert!(wait > Duration::from_millis(150), "one failure earns a wait: {wait:?}");
        p.succeeded();
        drop(p);
        assert!(t.state.lock().unwrap().is_empty(), "forgotten after a success");
    }

    #[test]
    fn ipv6_counts_by_its_slash_64() {
        let t = Throttle::new(1);
        let _held = t.admit(ip("2001:db8::1")).unwrap();
        assert!(t.admit(ip("2001:db8::2")).is_err(), "same /64");
        assert!(t.admit(ip("2001:db8:0:1::1")).is_ok(), "another /64");
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_REMEMBERED as u32 + 10) {
            let mut p = t.admit(Some(IpAddr::from(i.to_be_bytes()))).unwrap();
            p.turn().unwrap();
            p.failed();
        }
        assert!(t.state.lock().unwrap().len() <= MAX_REMEMBERED);
    }
}
