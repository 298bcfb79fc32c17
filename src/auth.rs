//! The token challenge–response that exec and files share.
//!
//! The server greets every connection with a fresh 32-byte nonce; a client
//! that holds the token answers HMAC-SHA256(token, context ‖ nonce), where
//! the context names the protocol, so a proof for one service is worthless
//! for another. The token never crosses the wire, and a recorded proof is
//! worthless against any other nonce. Failed proofs make the next attempt
//! from that address wait longer ([`Throttle`]).

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
    if let Some(token) = token {
        let mac = match tokio::time::timeout(AUTH_TIMEOUT, s.recv()).await {
            Ok(Ok(Some(f))) => match f.step() {
                Step::Auth(mac) => mac,
                _ => return refuse(s, "expected authentication first".into()).await,
            },
            Ok(Ok(None)) => return Ok(false),
            Ok(Err(e)) => return Err(e),
            Err(_) => return refuse(s, "authentication timed out".into()).await,
        };
        let ip = match peer {
            Peer::Ip(a) => Some(a.ip().to_canonical()),
            Peer::Unix => None,
        };
        // Earlier failures from this address make every attempt wait, so
        // parallel guesses gain nothing.
        tokio::time::sleep(throttle.penalty(ip)).await;
        if !verify(F::CONTEXT, token, &nonce, &mac) {
            let wait = throttle.failed(ip);
            warn!(%peer, next_wait_ms = wait.as_millis() as u64, "authentication failed: wrong token");
            tokio::time::sleep(wait).await;
            return refuse(s, "authentication failed: wrong token".into()).await;
        }
        throttle.succeeded(ip);
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

/// Failed authentications per address, and the wait they earn: 250 ms
/// after the first, doubling to at most 30 s; forgotten 15 minutes after
/// the last failure, or at the first success.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most: past it, expired entries go, and if that
/// is not enough, the oldest half.
const MAX_REMEMBERED: usize = 10_000;

impl Throttle {
    fn wait_for(count: u32) -> Duration {
        match count {
            0 => Duration::ZERO,
            n => (Duration::from_millis(250) * 2u32.saturating_pow(n - 1)).min(Duration::from_secs(30)),
        }
    }

    /// The wait an attempt from `ip` serves before it is checked.
    fn penalty(&self, ip: Option<IpAddr>) -> Duration {
        let Some(ip) = ip else { return Duration::ZERO };
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&ip) {
            Some(&(n, at)) if at.elapsed() < FORGET_AFTER => Self::wait_for(n),
            _ => Duration::ZERO,
        }
    }

    /// Records a failure; returns the wait it earns.
    fn failed(&self, ip: Option<IpAddr>) -> Duration {
        let Some(ip) = ip else { return Self::wait_for(1) };
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
            if map.len() >= MAX_REMEMBERED {
                let mut times: Vec<Instant> = map.values().map(|(_, at)| *at).collect();
                times.sort();
                let median = times[times.len() / 2];
                map.retain(|_, (_, at)| *at >= median);
            }
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
        Self::wait_for(entry.0)
    }

    fn succeeded(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_per_address_and_reset() {
        let t = Throttle::default();
        let a: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let b: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        assert_eq!(t.penalty(a), Duration::ZERO);
        let waits: Vec<_> = (0..9).map(|_| t.failed(a)).collect();
        assert_eq!(waits[0], Duration::from_millis(250));
        assert_eq!(waits[1], Duration::from_millis(500));
        assert_eq!(waits[8], Duration::from_secs(30), "capped");
        assert_eq!(t.penalty(a), Duration::from_secs(30));
        assert_eq!(t.penalty(b), Duration::ZERO, "per address");
        t.succeeded(a);
        assert_eq!(t.penalty(a), Duration::ZERO);
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_REMEMBERED as u32 + 10) {
            t.failed(Some(IpAddr::from(i.to_be_bytes())));
        }
        assert!(t.failures.lock().unwrap().len() <= MAX_REMEMBERED);
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
