//! The token challenge–response that exec and files share.
//!
//! The server greets every connection with a fresh 32-byte nonce; a client
//! that holds the token answers HMAC-SHA256(token, context ‖ nonce), where
//! the context names the protocol, so a proof for one service is worthless
//! for another. The token never crosses the wire, and a recorded proof is
//! worthless against any other nonce. Failed proofs make the next attempt
//! from that address wait longer, whichever connection it comes on, and an
//! address has at most a few handshakes open at once ([`Throttle`]).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::frames::{FrameStream, Wire};
use crate::{Conn, Peer};

/// How long a client has to authenticate.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Hello flag: the client must prove it holds the token.
pub const FLAG_TOKEN: u8 = 1;

/// The handshake frames of a wire format. Exec and files encode them the
/// same way (types 1, 2, 3 and an error frame).
pub trait Handshake: Wire {
    /// Names the protocol inside every proof.
    const CONTEXT: &'static [u8];
    /// What the client expects to talk to, for messages ("a sockit exec server").
    const SERVER: &'static str;
    /// The server's greeting.
    fn hello(flags: u8, nonce: [u8; 32]) -> Self;
    /// The client's proof.
    fn auth(mac: [u8; 32]) -> Self;
    /// Authenticated.
    fn ready() -> Self;
    /// A refusal that ends the session.
    fn error(why: String) -> Self;
    /// Which handshake step this frame is.
    fn step(self) -> Step;
}

/// A handshake frame, seen from the handshake.
#[derive(Debug)]
pub enum Step {
    /// The greeting.
    Hello {
        /// Flags; [`FLAG_TOKEN`] and the protocol's own.
        flags: u8,
        /// The challenge.
        nonce: [u8; 32],
    },
    /// A proof.
    Auth([u8; 32]),
    /// Authenticated.
    Ready,
    /// Refused, and why.
    Error(String),
    /// Any other frame.
    Other,
}

/// The proof for `nonce` under `token` in protocol `context`.
pub fn proof(context: &[u8], token: &[u8], nonce: &[u8; 32]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(context);
    ctx.update(nonce);
    ctx.sign().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Checks a proof in constant time.
pub fn verify(context: &[u8], token: &[u8], nonce: &[u8; 32], mac: &[u8; 32]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
    let mut msg = Vec::with_capacity(context.len() + 32);
    msg.extend_from_slice(context);
    msg.extend_from_slice(nonce);
    ring::hmac::verify(&key, &msg, mac).is_ok()
}

/// Reads a token: from `file` (its last newline dropped), else from the
/// `SOCKIT_TOKEN` variable; `None` when neither is given.
pub fn read_token(file: Option<&Path>) -> Result<Option<Vec<u8>>, Error> {
    let token = match (file, std::env::var_os("SOCKIT_TOKEN")) {
        (Some(path), _) => {
            let mut text =
                std::fs::read(path).map_err(|e| Error::Usage(format!("--token-file {}: {e}", path.display())))?;
            while text.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                text.pop();
            }
            text
        }
        (None, Some(v)) => std::os::unix::ffi::OsStringExt::into_vec(v),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(Error::Usage("the token is empty".into()));
    }
    Ok(Some(token))
}

/// The server's side: greets with a nonce and `flags`, checks the proof
/// when there is a token, answers Ready. With `open`, a server without a
/// token admits anyone; otherwise only verified TLS clients. `Ok(false)` when the client left
/// before proving anything; an error (already told to the client) when it
/// is refused.
pub async fn accept<F: Handshake>(
    s: &mut FrameStream<Conn, F>,
    token: Option<&[u8]>,
    throttle: &Throttle,
    mut flags: u8,
    open: bool,
) -> io::Result<bool> {
    let peer = s.io_mut().peer();
    let by_cert = s.io_mut().client_verified();
    let ip = match peer {
        Peer::Ip(a) => Some(a.ip()),
        Peer::Unix => None,
    };
    // Held until the handshake ends: an address with too many open at once
    // is refused before it can take more of the server's connections.
    let mut pending = match token {
        Some(_) => match throttle.admit(ip) {
            Ok(p) => Some(p),
            Err(why) => return refuse(s, why).await,
        },
        None => None,
    };
    let mut nonce = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| io::Error::other("no randomness for a nonce"))?;
    match token {
        Some(_) => flags |= FLAG_TOKEN,
        None if by_cert || open => {}
        None => {
            return refuse(
                s,
                "this server admits TLS client certificates only: connect with tls:// and --tls-cert/--tls-key".into(),
            )
            .await;
        }
    }
    s.send(&F::hello(flags, nonce)).await?;
    if let (Some(token), Some(pending)) = (token, pending.as_mut()) {
        let mac = match tokio::time::timeout(AUTH_TIMEOUT, s.recv()).await {
            Ok(Ok(Some(f))) => match f.step() {
                Step::Auth(mac) => mac,
                _ => return refuse(s, "expected authentication first".into()).await,
            },
            Ok(Ok(None)) => return Ok(false),
            Ok(Err(e)) => return Err(e),
            Err(_) => return refuse(s, "authentication timed out".into()).await,
        };
        // Each proof from an address waits for its turn, spaced by that
        // address's failures (pending ones counted as failures), so
        // parallel guesses gain nothing over sequential ones.
        match pending.turn() {
            Ok(at) => tokio::time::sleep_until(at.into()).await,
            Err(retry) => {
                return refuse(
                    s,
                    format!("too many failed attempts from your address; try again in {}s", retry.as_secs() + 1),
                )
                .await;
            }
        }
        if !verify(F::CONTEXT, token, &nonce, &mac) {
            pending.failed();
            warn!(%peer, "authentication failed: wrong token");
            return refuse(s, "authentication failed: wrong token".into()).await;
        }
        pending.succeeded();
    }
    info!(by = if by_cert && token.is_none() { "certificate" } else { "token" }, "authenticated");
    s.send(&F::ready()).await?;
    Ok(true)
}

/// Tells the peer why, and ends the session with that reason.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin, F: Handshake, T>(
    s: &mut FrameStream<S, F>,
    why: String,
) -> io::Result<T> {
    let _ = s.send(&F::error(why.clone())).await;
    Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
}

/// The client's side: waits for the greeting, proves the token when asked
/// (from `token_file` or `SOCKIT_TOKEN`), waits for Ready. Returns the
/// server's flags. Refusals are [`Error::Auth`] (exit 6).
pub async fn login<S: AsyncRead + AsyncWrite + Unpin, F: Handshake>(
    s: &mut FrameStream<S, F>,
    endpoint: &Endpoint,
    token_file: Option<&Path>,
    wait: Duration,
) -> anyhow::Result<u8> {
    // The reason is the server's text, on its way to a terminal.
    let refused = |why: String| Error::Auth(format!("{endpoint} refused: {}", crate::text::clean(&why)));
    let silent = || anyhow::anyhow!("{endpoint} sent no greeting within {wait:?}: is it {}?", F::SERVER);
    let not_ours = |e: io::Error| anyhow::anyhow!("{endpoint}: {e}: is it {}?", F::SERVER);
    let hello = tokio::time::timeout(wait, s.recv()).await.map_err(|_| silent())?.map_err(not_ours)?;
    let flags = match hello.map(F::step) {
        Some(Step::Hello { flags, nonce }) => {
            if flags & FLAG_TOKEN != 0 {
                let Some(token) = read_token(token_file)? else {
                    return Err(Error::Usage(
                        "the server asks for its token: give --token-file FILE or set SOCKIT_TOKEN".into(),
                    )
                    .into());
                };
                s.send(&F::auth(proof(F::CONTEXT, &token, &nonce))).await?;
            }
            flags
        }
        Some(Step::Error(why)) => return Err(refused(why).into()),
        Some(_) => anyhow::bail!("{endpoint} is not {}", F::SERVER),
        None => anyhow::bail!("{endpoint} closed the connection at once: is it {}?", F::SERVER),
    };
    // The server may hold a wrong guess back for up to 30 s before it says so.
    let verdict = tokio::time::timeout(Duration::from_secs(40) + wait, s.recv()).await.map_err(|_| silent())?;
    match verdict?.map(F::step) {
        Some(Step::Ready) => Ok(flags),
        Some(Step::Error(why)) => Err(refused(why).into()),
        Some(_) => anyhow::bail!("protocol error: expected the server to accept or refuse"),
        None => Err(refused("it closed the connection".into()).into()),
    }
}

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

    #[test]
    fn proofs_bind_token_nonce_and_protocol() {
        let mac = proof(b"sockit-exec-v1", b"secret", &[1; 32]);
        assert!(verify(b"sockit-exec-v1", b"secret", &[1; 32], &mac));
        assert!(!verify(b"sockit-exec-v1", b"secret", &[2; 32], &mac), "a replayed proof fails on a fresh nonce");
        assert!(!verify(b"sockit-exec-v1", b"Secret", &[1; 32], &mac));
        assert!(!verify(b"sockit-files-v1", b"secret", &[1; 32], &mac), "not valid for another protocol");
    }
}
