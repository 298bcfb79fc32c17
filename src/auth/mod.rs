//! The token challenge–response that exec and files speak first: a small
//! protocol of its own ([`wire`]), after which the service's codec takes
//! the stream over, with whatever the handshake read past its last frame.
//!
//! The server greets every connection with a fresh 32-byte nonce; a client
//! that holds the token answers HMAC-SHA256(token, context ‖ nonce), where
//! the context names the protocol ([`Protocol::context`]), so a proof for
//! one service is worthless for another. The token never crosses the wire,
//! and a recorded proof is worthless against any other nonce. Failed proofs
//! make the next attempt from that address wait longer, whichever
//! connection it comes on, and an address has at most a few handshakes open
//! at once ([`Throttle`]).
//!
//! - [`wire`]: the four frames, pure encode and decode.
//! - [`accept`] (server) and [`login`] (client) speak them over a stream
//!   and hand back the bytes read past them, for
//!   [`FrameStream::from_parts`](crate::frames::FrameStream::from_parts).
//! - [`Throttle`]: turns and open handshakes per address.

mod throttle;
pub mod wire;

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

pub use self::throttle::{DEFAULT_PENDING_PER_ADDRESS, Pending, Throttle};
pub use self::wire::{FLAG_TOKEN, Frame, Protocol};
use crate::endpoint::Endpoint;
use crate::error::{Error, ExitCode};
use crate::{Conn, Peer};

/// How long a client has to authenticate.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for the verdict on its proof beyond `--wait`:
/// the server may hold a wrong guess back for up to 30 s before it says so.
const VERDICT_GRACE: Duration = Duration::from_secs(40);

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

/// A token as a file holds it: its trailing newlines (and carriage
/// returns) dropped, so `echo secret > token` works. Where the bytes come
/// from is the caller's business (the binary reads `--token-file` or
/// `SOCKIT_TOKEN`); an empty token is refused, since it would admit anyone
/// who guesses that it is empty.
///
/// ```
/// assert_eq!(sockit::auth::token_from(b"secret\r\n".to_vec()).unwrap(), b"secret");
/// assert!(sockit::auth::token_from(b"\n".to_vec()).is_err());
/// ```
pub fn token_from(mut text: Vec<u8>) -> Result<Vec<u8>, Error> {
    while text.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        text.pop();
    }
    match text.is_empty() {
        true => Err(Error::Usage("the token is empty".into())),
        false => Ok(text),
    }
}

/// What came where a handshake frame was due.
enum Next {
    Frame(Frame),
    /// A frame of the protocol that follows the handshake.
    Early,
    /// A clean EOF.
    Closed,
}

/// Handshake frames over a borrowed stream; what was read past the last
/// one is [`Handshake::rest`], for the protocol's codec.
struct Handshake<'a, S> {
    io: &'a mut S,
    protocol: &'a Protocol,
    buf: BytesMut,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Handshake<'a, S> {
    fn new(io: &'a mut S, protocol: &'a Protocol) -> Self {
        Handshake { io, protocol, buf: BytesMut::new() }
    }

    async fn next(&mut self) -> io::Result<Next> {
        let protocol = self.protocol;
        let got = crate::frames::read_frame(self.io, &mut self.buf, |buf| match protocol.decode(buf) {
            Err(wire::WireError::Early(_)) => Ok(Some(Next::Early)),
            other => other.map(|f| f.map(Next::Frame)),
        })
        .await?;
        Ok(got.unwrap_or(Next::Closed))
    }

    async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let mut out = BytesMut::new();
        self.protocol.encode(frame, &mut out);
        self.io.write_all(&out).await
    }

    /// Tells the peer why, and ends the handshake with that reason.
    async fn refuse<T>(&mut self, why: String) -> io::Result<T> {
        let _ = self.send(&Frame::Error(why.clone())).await;
        Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
    }

    /// Bytes read past the handshake's last frame.
    fn rest(self) -> BytesMut {
        self.buf
    }
}

/// The server's side: greets with a nonce and `flags`, checks the proof
/// when there is a token, answers Ready. With `open`, a server without a
/// token admits anyone; otherwise only verified TLS clients.
///
/// Admitted: the bytes the client sent past its proof (it may send its
/// first frames without waiting for Ready), for the protocol's codec.
/// `Ok(None)` when the client left before proving anything; an error
/// (already told to the client) when it is refused.
pub async fn accept(
    conn: &mut Conn,
    protocol: &Protocol,
    token: Option<&[u8]>,
    throttle: &Throttle,
    mut flags: u8,
    open: bool,
) -> io::Result<Option<BytesMut>> {
    let peer = conn.peer();
    let by_cert = conn.client_verified();
    let ip = match peer {
        Peer::Ip(a) => Some(a.ip()),
        Peer::Unix => None,
    };
    let mut s = Handshake::new(conn, protocol);
    // Held until the handshake ends: an address with too many open at once
    // is refused before it can take more of the server's connections.
    let mut pending = match token {
        Some(_) => match throttle.admit(ip) {
            Ok(p) => Some(p),
            Err(why) => return s.refuse(why).await,
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
            return s
                .refuse(
                    "this server admits TLS client certificates only: connect with tls:// and --tls-cert/--tls-key"
                        .into(),
                )
                .await;
        }
    }
    s.send(&Frame::Hello { flags, nonce }).await?;
    if let (Some(token), Some(pending)) = (token, pending.as_mut()) {
        let mac = match tokio::time::timeout(AUTH_TIMEOUT, s.next()).await {
            Ok(Ok(Next::Frame(Frame::Auth { mac }))) => mac,
            Ok(Ok(Next::Frame(_) | Next::Early)) => return s.refuse("expected authentication first".into()).await,
            Ok(Ok(Next::Closed)) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(_) => return s.refuse("authentication timed out".into()).await,
        };
        // Each proof from an address waits for its turn, spaced by that
        // address's failures (pending ones counted as failures), so
        // parallel guesses gain nothing over sequential ones.
        match pending.turn() {
            Ok(at) => tokio::time::sleep_until(at.into()).await,
            Err(retry) => {
                return s
                    .refuse(format!(
                        "too many failed attempts from your address; try again in {}s",
                        retry.as_secs() + 1
                    ))
                    .await;
            }
        }
        if !verify(protocol.context, token, &nonce, &mac) {
            pending.failed();
            warn!(%peer, "authentication failed: wrong token");
            return s.refuse("authentication failed: wrong token".into()).await;
        }
        pending.succeeded();
    }
    info!(by = if by_cert && token.is_none() { "certificate" } else { "token" }, "authenticated");
    s.send(&Frame::Ready).await?;
    Ok(Some(s.rest()))
}

/// A client admitted by [`login`].
#[derive(Debug)]
pub struct LoggedIn {
    /// The server's Hello flags: [`FLAG_TOKEN`] and the protocol's own.
    pub flags: u8,
    /// Bytes the server sent past Ready, for the protocol's codec.
    pub rest: BytesMut,
}

/// Why [`login`] failed. Each names the server and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The server refused us (exit 6); `why` is its reason, made safe for
    /// a terminal.
    #[error("{endpoint} refused: {why}")]
    Refused {
        /// The server.
        endpoint: Endpoint,
        /// Its reason, cleaned.
        why: String,
    },
    /// The server asks for a token and none was given (exit 2).
    #[error("the server asks for its token: give --token-file FILE or set SOCKIT_TOKEN")]
    NoToken,
    /// Nothing came within the wait.
    #[error("{endpoint} sent no greeting within {wait:?}: is it a sockit {protocol} server?")]
    Silent {
        /// The server.
        endpoint: Endpoint,
        /// How long we waited.
        wait: Duration,
        /// The protocol we expected.
        protocol: &'static str,
    },
    /// The proof was sent and neither Ready nor a refusal came in time.
    #[error("{endpoint} neither admitted nor refused us within {wait:?}")]
    NoVerdict {
        /// The server.
        endpoint: Endpoint,
        /// How long we waited.
        wait: Duration,
    },
    /// Bytes that are not our handshake, or the connection failed while
    /// it was being read.
    #[error("{endpoint}: {cause}: is it a sockit {protocol} server?")]
    NotOurs {
        /// The server.
        endpoint: Endpoint,
        /// What was wrong.
        cause: io::Error,
        /// The protocol we expected.
        protocol: &'static str,
    },
    /// A well-formed frame, but not a greeting.
    #[error("{endpoint} is not a sockit {protocol} server")]
    NotServer {
        /// The server.
        endpoint: Endpoint,
        /// The protocol we expected.
        protocol: &'static str,
    },
    /// The server closed before it greeted us.
    #[error("{endpoint} closed the connection at once: is it a sockit {protocol} server?")]
    Closed {
        /// The server.
        endpoint: Endpoint,
        /// The protocol we expected.
        protocol: &'static str,
    },
    /// After our proof, a frame that neither admits nor refuses.
    #[error("protocol error: expected the server to accept or refuse")]
    Unexpected,
    /// Sending our proof, or reading the verdict, failed.
    #[error("{endpoint}: {cause}")]
    Lost {
        /// The server.
        endpoint: Endpoint,
        /// The I/O or wire error.
        cause: io::Error,
    },
}

impl LoginError {
    /// The process exit code this error maps to.
    pub fn exit(&self) -> ExitCode {
        match self {
            LoginError::Refused { .. } => ExitCode::Auth,
            LoginError::NoToken => ExitCode::Usage,
            _ => ExitCode::Failure,
        }
    }
}

/// The client's side: waits for the greeting, proves `token` when asked
/// ([`LoginError::NoToken`] if it is `None` then), waits for Ready. Returns the
/// server's flags and what it sent past Ready. Refusals are
/// [`LoginError::Refused`] (exit 6).
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    protocol: &Protocol,
    endpoint: &Endpoint,
    token: Option<&[u8]>,
    wait: Duration,
) -> Result<LoggedIn, LoginError> {
    let name = protocol.name;
    // The reason is the server's text, on its way to a terminal.
    let refused =
        |why: &str| LoginError::Refused { endpoint: endpoint.clone(), why: crate::text::clean(why).into_owned() };
    let mut s = Handshake::new(io, protocol);
    let hello = tokio::time::timeout(wait, s.next())
        .await
        .map_err(|_| LoginError::Silent { endpoint: endpoint.clone(), wait, protocol: name })?
        .map_err(|cause| LoginError::NotOurs { endpoint: endpoint.clone(), cause, protocol: name })?;
    let flags = match hello {
        Next::Frame(Frame::Hello { flags, nonce }) => {
            if flags & FLAG_TOKEN != 0 {
                let mac = proof(protocol.context, token.ok_or(LoginError::NoToken)?, &nonce);
                s.send(&Frame::Auth { mac })
                    .await
                    .map_err(|cause| LoginError::Lost { endpoint: endpoint.clone(), cause })?;
            }
            flags
        }
        Next::Frame(Frame::Error(why)) => return Err(refused(&why)),
        Next::Frame(_) | Next::Early => {
            return Err(LoginError::NotServer { endpoint: endpoint.clone(), protocol: name });
        }
        Next::Closed => return Err(LoginError::Closed { endpoint: endpoint.clone(), protocol: name }),
    };
    let verdict = tokio::time::timeout(VERDICT_GRACE + wait, s.next())
        .await
        .map_err(|_| LoginError::NoVerdict { endpoint: endpoint.clone(), wait: VERDICT_GRACE + wait })?
        .map_err(|cause| LoginError::Lost { endpoint: endpoint.clone(), cause })?;
    match verdict {
        Next::Frame(Frame::Ready) => Ok(LoggedIn { flags, rest: s.rest() }),
        Next::Frame(Frame::Error(why)) => Err(refused(&why)),
        Next::Frame(_) | Next::Early => Err(LoginError::Unexpected),
        Next::Closed => Err(refused("it closed the connection")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::FrameStream;
    use crate::services::exec::{HANDSHAKE as EXEC, wire as exec};
    use tokio::net::UnixStream;

    const TOKEN: &[u8] = b"secret";
    /// Bounds every wait: a lost frame fails a test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(5);

    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(WAIT, f).await.expect("no answer in time")
    }

    /// A server's connection and the client's end of it.
    fn pair() -> (Conn, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        let conn = Conn::new(crate::Stream::Unix(server), Peer::Unix, Default::default());
        (conn, client)
    }

    fn encode(frames: &[Frame], then: &[exec::Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frames.iter().for_each(|f| EXEC.encode(f, &mut out));
        then.iter().for_each(|f| f.encode(&mut out));
        out.to_vec()
    }

    async fn read_handshake(c: &mut UnixStream, buf: &mut BytesMut) -> Frame {
        crate::frames::read_frame(c, buf, |b| EXEC.decode(b)).await.unwrap().unwrap()
    }

    fn endpoint() -> Endpoint {
        "127.0.0.1:9".parse().unwrap()
    }

    /// A client may send its command right behind its proof: the bytes the
    /// handshake read past Auth reach the protocol's codec.
    #[tokio::test]
    async fn frames_sent_behind_the_proof_reach_the_protocol() {
        let (mut conn, mut client) = pair();
        let throttle = Throttle::default();
        let server = async {
            let rest = accept(&mut conn, &EXEC, Some(TOKEN), &throttle, exec::FLAG_SHELL, false).await.unwrap();
            let mut s = FrameStream::<_, exec::Frame>::from_parts(conn, rest.expect("admitted"));
            s.recv().await.unwrap()
        };
        let client = async {
            let mut buf = BytesMut::new();
            let Frame::Hello { flags, nonce } = read_handshake(&mut client, &mut buf).await else { panic!("no hello") };
            assert_eq!(flags, FLAG_TOKEN | exec::FLAG_SHELL);
            let run = exec::Frame::Run(vec![b"true".to_vec()]);
            client
                .write_all(&encode(&[Frame::Auth { mac: proof(EXEC.context, TOKEN, &nonce) }], &[run]))
                .await
                .unwrap();
            assert_eq!(read_handshake(&mut client, &mut buf).await, Frame::Ready);
            client
        };
        let (got, _client) = bounded(async { tokio::join!(server, client) }).await;
        assert_eq!(got, Some(exec::Frame::Run(vec![b"true".to_vec()])));
    }

    /// What the server sends right behind Ready reaches the client's codec.
    #[tokio::test]
    async fn frames_sent_behind_ready_reach_the_protocol() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let out = exec::Frame::Stdout(bytes::Bytes::from_static(b"hi"));
        let greeting = encode(&[Frame::Hello { flags: 0, nonce: [1; 32] }, Frame::Ready], std::slice::from_ref(&out));
        server.write_all(&greeting).await.unwrap();
        let admitted = login(&mut client, &EXEC, &endpoint(), None, WAIT).await.unwrap();
        assert_eq!(admitted.flags, 0);
        let mut s = FrameStream::<_, exec::Frame>::from_parts(client, admitted.rest);
        assert_eq!(bounded(s.recv()).await.unwrap(), Some(out));
    }

    /// A command instead of a proof is refused from its type byte, with a
    /// reason the client can read.
    #[tokio::test]
    async fn a_command_before_the_proof_is_refused() {
        let (mut conn, mut client) = pair();
        let throttle = Throttle::default();
        let mut buf = BytesMut::new();
        let server = accept(&mut conn, &EXEC, Some(TOKEN), &throttle, 0, false);
        let client = async {
            assert!(matches!(read_handshake(&mut client, &mut buf).await, Frame::Hello { .. }));
            // Only the header: the payload it announces never has to come.
            client.write_all(&[4, 0, 0x0f, 0, 0]).await.unwrap();
            read_handshake(&mut client, &mut buf).await
        };
        let (refused, told) = bounded(async { tokio::join!(server, client) }).await;
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(told, Frame::Error("expected authentication first".into()));
    }

    /// A wrong token: the server says so, and login's error carries exit 6.
    #[tokio::test]
    async fn a_wrong_token_is_a_refusal_with_exit_6() {
        let (mut conn, mut client) = pair();
        let throttle = Throttle::default();
        let server = accept(&mut conn, &EXEC, Some(TOKEN), &throttle, 0, false);
        let ep = endpoint();
        let client = login(&mut client, &EXEC, &ep, Some(b"guess"), WAIT);
        let (refused, err) = bounded(async { tokio::join!(server, client) }).await;
        assert!(refused.is_err());
        let err = err.unwrap_err();
        assert_eq!(err.exit(), ExitCode::Auth);
        assert_eq!(crate::Error::from(err).exit(), ExitCode::Auth, "through the library's error");
    }

    /// No token, no TLS client certificate, not open: refused before Hello.
    #[tokio::test]
    async fn without_a_token_only_certificates_are_admitted() {
        let (mut conn, mut client) = pair();
        let throttle = Throttle::default();
        let server = accept(&mut conn, &EXEC, None, &throttle, 0, false);
        let ep = endpoint();
        let client = login(&mut client, &EXEC, &ep, None, WAIT);
        let (refused, err) = bounded(async { tokio::join!(server, client) }).await;
        assert!(refused.is_err());
        let err = err.unwrap_err().to_string();
        assert!(err.contains("refused: this server admits TLS client certificates only"), "{err}");
    }

    /// The server's reason reaches the terminal without its controls.
    #[tokio::test]
    async fn refusal_text_is_cleaned() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        server.write_all(&encode(&[Frame::Error("\x1b]0;pwned\x07\rno \x1b[2Kway".into())], &[])).await.unwrap();
        let err = login(&mut client, &EXEC, &endpoint(), None, WAIT).await.unwrap_err();
        assert!(matches!(err, LoginError::Refused { .. }), "{err:?}");
        let text = err.to_string();
        assert!(!text.contains(['\x1b', '\r', '\x07']) && text.contains("no ") && text.ends_with("way"), "{text:?}");
    }

    /// A client of another protocol, or none, is told what is wrong.
    #[tokio::test]
    async fn a_server_that_is_not_ours_is_named() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        server.write_all(b"220 smtp.example ESMTP\r\n").await.unwrap();
        let err = login(&mut client, &EXEC, &endpoint(), None, WAIT).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown frame type 50") && text.contains("is it a sockit exec server?"), "{text}");
        drop(server);
        let (server, mut client) = UnixStream::pair().unwrap();
        drop(server);
        let err = login(&mut client, &EXEC, &endpoint(), None, WAIT).await.unwrap_err();
        assert!(matches!(err, LoginError::Closed { .. }), "{err:?}");
        // A server that says nothing, and keeps the connection open.
        let (_server, mut client) = UnixStream::pair().unwrap();
        let err = login(&mut client, &EXEC, &endpoint(), None, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, LoginError::Silent { .. }), "{err:?}");
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
