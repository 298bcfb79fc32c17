//! WebSocket endpoints: `ws://HOST:PORT/PATH` and `wss://HOST:PORT/PATH`.
//!
//! A WebSocket is one more kind of [`Stream`]: after the HTTP upgrade, a
//! [`Pump`] carries it through a local socket pair (see [`crate::bridge`]),
//! so no service knows it is on WebSocket. How bytes and messages map is the
//! [`WsConfig`]:
//!
//! - by default each read of the service's bytes goes out as one binary
//!   message, and each message that comes in is handed on as it is;
//! - for a line service ([`WsConfig::lines`]) each line goes out as one
//!   message, and a message that does not end in a newline is one line (a
//!   browser's `ws.send("hi")`); with [`WsConfig::text`] the messages are
//!   text, without their newline.
//!
//! The pump answers pings, sends one every [`WsConfig::ping`], closes with a
//! code and a reason (1009 and the limit when a message is over
//! [`WsConfig::max_message`]), and keeps half-close: when the peer closes
//! first, the service reads EOF and may still answer before the close is
//! returned, as on TCP.
//!
//! The same listener answers plain HTTP: `GET /health` is `200 ok`, and the
//! [`Page`]s it is given are served at their paths. Upgrades from a browser
//! page of another origin (cross-site WebSocket hijacking) are refused
//! unless [`WsServer::origins`] admits it.
//!
//! Built on `fastwebsockets`, whose split halves let the pump choose when to
//! answer the peer's close: the half-close above needs that, and its
//! frame-at-a-time reads keep a connection's memory at one frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bridge::{Carrier, Far, Pump, Verdict, bridge};
use crate::conn::Stream;

/// Default for [`WsConfig::max_message`] where no line limit applies.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// Default for [`WsConfig::ping`].
pub const DEFAULT_PING: Duration = Duration::from_secs(25);
/// The longest HTTP request or response head read before the upgrade.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long the HTTP part of the handshake may take.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a line's start waits for its end before it goes as a message.
const TAIL_WAIT: Duration = Duration::from_millis(20);
/// After its owner has dropped the stream, how long the pump may still
/// send what is left and wait for the peer's close.
const LINGER: Duration = Duration::from_secs(5);
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How bytes map to messages, and the limits of one connection.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// One line per message, and a message without a newline is a line.
    pub lines: bool,
    /// Text messages (lines without their newline) instead of binary.
    pub text: bool,
    /// The largest message taken, in bytes; a bigger one closes the
    /// connection with 1009 and this limit's name.
    pub max_message: usize,
    /// The flag that set `max_message`, for the close reason.
    pub limit_name: &'static str,
    /// Send a ping this often; `None` for never.
    pub ping: Option<Duration>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            lines: false,
            text: false,
            max_message: DEFAULT_MAX_MESSAGE,
            limit_name: "--ws-max-message",
            ping: Some(DEFAULT_PING),
        }
    }
}

impl WsConfig {
    /// For a line service whose longest line is `max_line` (`--max-line`):
    /// one line per message.
    pub fn lines(max_line: usize) -> Self {
        // Room for the line's own `\r\n`.
        WsConfig { lines: true, max_message: max_line + 2, limit_name: "--max-line", ..WsConfig::default() }
    }
}

/// A page the WebSocket listener serves over plain HTTP.
#[derive(Clone, Debug)]
pub struct Page {
    /// Where: `/`, `/app.js`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The bytes, usually embedded in the binary.
    pub body: &'static [u8],
}

/// The server side of a WebSocket listener: where it upgrades, how its
/// connections carry bytes, which origins may connect, and what else it
/// serves over HTTP.
#[derive(Clone, Debug)]
pub struct WsServer {
    /// The path the upgrade is taken on (`/` unless the endpoint names one).
    pub path: String,
    /// How connections carry bytes.
    pub config: WsConfig,
    /// Origins admitted besides the listener's own (`--web-origin`), as
    /// browsers write them: `https://chat.example.com`.
    pub origins: Vec<String>,
    /// Pages served at their paths.
    pub pages: Vec<Page>,
}

impl WsServer {
    /// Upgrades on `path`, bytes as binary messages, same-origin only.
    pub fn new(path: &str) -> Self {
        WsServer { path: path.to_string(), config: WsConfig::default(), origins: Vec::new(), pages: Vec::new() }
    }

    /// Reads the HTTP request on a new connection and answers it: an
    /// upgrade on [`WsServer::path`] becomes a bridged [`Stream`] (with its
    /// pump to run), anything else gets its HTTP answer and `None`.
    pub(crate) async fn accept<S>(&self, mut io: S, far: Far) -> io::Result<Option<(Stream, Pump)>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(1024);
        let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut io, &mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no whole HTTP request within 10s"))?;
        let len = match head {
            Ok(len) => len,
            Err(e) => {
                let status = if e.kind() == io::ErrorKind::InvalidData { 431 } else { 400 };
                respond(&mut io, status, "text/plain", b"bad request\n").await;
                return Err(e);
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf[..len]).is_err() {
            respond(&mut io, 400, "text/plain", b"bad request\n").await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not an HTTP request"));
        }
        let method = req.method.unwrap_or("");
        let path = req.path.unwrap_or("/").split('?').next().unwrap_or("/");
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if method != "GET" && method != "HEAD" {
            respond(&mut io, 405, "text/plain", b"only GET\n").await;
            return Ok(None);
        }
        if path == self.path && upgrade {
            if let Some(origin) = header("origin")
                && !self.origin_allowed(origin, header("host").unwrap_or(""))
            {
                respond(&mut io, 403, "text/plain", b"origin not allowed (see --web-origin)\n").await;
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("WebSocket from origin {origin} refused: not this server's (--web-origin admits more)"),
                ));
            }
            if header("sec-websocket-version") != Some("13") {
                respond(&mut io, 426, "text/plain", b"WebSocket version 13 only\n").await;
                return Ok(None);
            }
            let Some(key) = header("sec-websocket-key").filter(|k| valid_key(k)) else {
                respond(&mut io, 400, "text/plain", b"missing or bad Sec-WebSocket-Key\n").await;
                return Ok(None);
            };
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            );
            io.write_all(answer.as_bytes()).await?;
            buf.advance(len);
            let (config, verdict) = (self.config.clone(), far.verdict.clone());
            let rest = buf.freeze();
            return bridge(far, move |ours, owner| pump(io, rest, ours, owner, Role::Server, config, verdict))
                .map(Some);
        }
        let found = self.pages.iter().find(|p| p.path == path);
        match (path, found) {
            ("/health", _) => respond(&mut io, 200, "text/plain", b"ok\n").await,
            (_, Some(page)) => respond(&mut io, 200, page.content_type, page.body).await,
            (p, None) if p == self.path => respond(&mut io, 426, "text/plain", b"a WebSocket endpoint\n").await,
            _ => respond(&mut io, 404, "text/plain", b"not found\n").await,
        }
        Ok(None)
    }

    /// A browser page may upgrade if its origin is listed (`--web-origin`),
    /// or is this server itself reached by address or as `localhost`. A
    /// page under some other name is refused even when the name points
    /// here: after DNS rebinding, an attacker's page has both Origin and
    /// Host under its own name.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        if self.origins.iter().any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
            return true;
        }
        let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let ours = name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost");
        ours && authority.eq_ignore_ascii_case(host)
    }
}

/// The client side: sends the upgrade for `path` to `host` (the `Host`
/// header) over `io`, checks the answer, and bridges the WebSocket.
pub(crate) async fn connect<S>(
    mut io: S,
    host: &str,
    path: &str,
    config: WsConfig,
    far: Far,
) -> io::Result<(Stream, Pump)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| io::Error::other("no random numbers for the WebSocket key"))?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: sockit/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    io.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let len = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut io, &mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no WebSocket handshake answer within 10s"))??;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&buf[..len]).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP answer ({e}): not a WebSocket server?"))
    })?;
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        let body = String::from_utf8_lossy(&buf[len..]).trim().to_string();
        let said = if body.is_empty() { String::new() } else { format!(": {}", crate::text::clean(&body)) };
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("WebSocket upgrade refused: HTTP {code} {}{said}", resp.reason.unwrap_or("")),
        ));
    }
    let accept = resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept")).map(|h| h.value);
    if accept != Some(accept_key(&key).as_bytes()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "WebSocket upgrade answered with a wrong Sec-WebSocket-Accept",
        ));
    }
    buf.advance(len);
    let rest = buf.freeze();
    let verdict = far.verdict.clone();
    bridge(far, move |ours, owner| pump(io, rest, ours, owner, Role::Client, config, verdict))
}

/// The bridge's far end for a WebSocket.
pub(crate) fn far(peer: Option<std::net::SocketAddr>, client_verified: bool, verdict: Verdict) -> Far {
    Far { peer, client_verified, carrier: Carrier::WebSocket, verdict }
}

/// Reads until the end of an HTTP head; returns its length. Refuses a head
/// over [`MAX_HEAD`] (`InvalidData`).
async fn read_head<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    let mut searched: usize = 0;
    loop {
        if let Some(at) = memchr::memmem::find(&buf[searched.saturating_sub(3)..], b"\r\n\r\n") {
            return Ok(searched.saturating_sub(3) + at + 4);
        }
        searched = buf.len();
        if buf.len() >= MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("HTTP head over {MAX_HEAD} bytes")));
        }
        buf.reserve(MAX_HEAD - buf.len());
        if io.read_buf(buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside the HTTP head"));
        }
    }
}

async fn respond<S: AsyncWrite + Unpin>(io: &mut S, status: u16, content_type: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\nReferrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'\r\n{}\r\n",
        body.len(),
        if status == 426 { "Sec-WebSocket-Version: 13\r\n" } else { "" }
    );
    let _ = io.write_all(head.as_bytes()).await;
    let _ = io.write_all(body).await;
    let _ = io.shutdown().await;
}

/// What a refused connection is told on a WebSocket listener at
/// `--max-conns`: `line` as an HTTP 503.
pub fn busy_answer(line: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        line.len()
    )
    .into_bytes();
    out.extend_from_slice(line);
    out
}

fn valid_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// A reader that first yields bytes read before the handover.
struct Prefixed<R> {
    prefix: Bytes,
    inner: R,
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// What the reading half asks the writing half to send.
enum Control {
    Pong(Vec<u8>),
    /// We close: a limit or a protocol error.
    Close(u16, String),
    /// The peer closed with this code; ours follows once the owner is done.
    PeerClosed(u16),
}

/// Carries one WebSocket: messages from the peer to the owner's socket,
/// the owner's bytes out as messages, pings and the close handshake.
async fn pump<S>(
    io: S,
    rest: Bytes,
    ours: UnixStream,
    owner: CancellationToken,
    role: Role,
    config: WsConfig,
    verdict: Verdict,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (mut ws_in, mut ws_out) = fastwebsockets::after_handshake_split(Prefixed { prefix: rest, inner: r }, w, role);
    ws_in.set_auto_close(false);
    ws_in.set_auto_pong(false);
    // The crate refuses a frame whose length reaches this.
    ws_in.set_max_message_size(config.max_message + 1);
    let (mut from_owner, mut to_owner) = ours.into_split();
    let (control, mut controls) = mpsc::channel::<Control>(4);
    let max = config.max_message;
    let (lines, text, limit_name) = (config.lines, config.text, config.limit_name);
    let alive = verdict.clone();

    let incoming = async move {
        let mut size = 0usize;
        let mut last = b'\n';
        loop {
            let frame = match ws_in.read_frame(&mut |_| std::future::ready(Ok::<(), io::Error>(()))).await {
                Ok(frame) => frame,
                Err(WebSocketError::FrameTooLarge) => {
                    let _ =
                        control.send(Control::Close(1009, format!("message over {max} bytes ({limit_name})"))).await;
                    break;
                }
                Err(WebSocketError::InvalidUTF8) => {
                    let _ = control.send(Control::Close(1007, "text message not UTF-8".into())).await;
                    break;
                }
                Err(WebSocketError::UnexpectedEOF | WebSocketError::IoError(_)) => break,
                Err(e) => {
                    let _ = control.send(Control::Close(1002, format!("protocol error: {e}"))).await;
                    break;
                }
            };
            match frame.opcode {
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    size += frame.payload.len();
                    if size > max {
                        let _ = control
                            .send(Control::Close(1009, format!("message over {max} bytes ({limit_name})")))
                            .await;
                        break;
                    }
                    if let Some(&b) = frame.payload.last() {
                        last = b;
                    }
                    if to_owner.write_all(&frame.payload).await.is_err() {
                        break;
                    }
                    if frame.fin {
                        if lines && last != b'\n' && to_owner.write_all(b"\n").await.is_err() {
                            break;
                        }
                        (size, last) = (0, b'\n');
                    }
                }
                OpCode::Ping => {
                    let _ = control.send(Control::Pong(frame.payload.to_vec())).await;
                }
                // The answer to our keepalive: the peer is there, though
                // the service may hear nothing from it for a long while.
                OpCode::Pong => alive.alive(),
                OpCode::Close => {
                    let code = match &frame.payload[..] {
                        [a, b, ..] => u16::from_be_bytes([*a, *b]),
                        _ => 1000,
                    };
                    let _ = control.send(Control::PeerClosed(code)).await;
                    break;
                }
            }
        }
        let _ = to_owner.shutdown().await;
    };

    let outgoing = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        let (mut owner_done, mut sent_close, mut peer_closed, mut reader_gone) = (false, false, None, false);
        let mut flush_at = tokio::time::Instant::now();
        let mut ping = config.ping.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
        loop {
            tokio::select! {
                r = from_owner.read(&mut buf), if !owner_done => {
                    let n = r.unwrap_or(0);
                    if n == 0 {
                        owner_done = true;
                        if !tail.is_empty() && send_line(&mut ws_out, &std::mem::take(&mut tail), text).await.is_err() {
                            break;
                        }
                        if !sent_close {
                            sent_close = true;
                            let (code, reason) = match (verdict.get(), peer_closed) {
                                (Some((code, reason)), _) => (*code, reason.as_str()),
                                (None, peer) => (echoable(peer.unwrap_or(1000)), ""),
                            };
                            if ws_out.write_frame(Frame::close(code, reason.as_bytes())).await.is_err() {
                                break;
                            }
                        }
                        if peer_closed.is_some() || reader_gone {
                            break;
                        }
                        continue;
                    }
                    let sent = if lines {
                        tail.extend_from_slice(&buf[..n]);
                        flush_at = tokio::time::Instant::now() + TAIL_WAIT;
                        send_lines(&mut ws_out, &mut tail, text, max).await
                    } else if text {
                        ws_out.write_frame(Frame::text(Payload::Owned(String::from_utf8_lossy(&buf[..n]).into_owned().into_bytes()))).await
                    } else {
                        ws_out.write_frame(Frame::binary(Payload::Borrowed(&buf[..n]))).await
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                c = controls.recv(), if !reader_gone => match c {
                    Some(Control::Pong(p)) => {
                        if ws_out.write_frame(Frame::pong(Payload::Owned(p))).await.is_err() {
                            break;
                        }
                    }
                    Some(Control::Close(code, reason)) => {
                        if !sent_close {
                            let _ = ws_out.write_frame(Frame::close(code, reason.as_bytes())).await;
                        }
                        break;
                    }
                    Some(Control::PeerClosed(code)) => {
                        peer_closed = Some(code);
                        if owner_done {
                            break;
                        }
                    }
                    None => {
                        reader_gone = true;
                        if owner_done {
                            break;
                        }
                    }
                },
                // A line's end that has not come goes as it is, once the
                // service has been quiet a moment (a prompt without a newline).
                _ = tokio::time::sleep_until(flush_at), if !tail.is_empty() => {
                    if send_line(&mut ws_out, &std::mem::take(&mut tail), text).await.is_err() {
                        break;
                    }
                }
                _ = tick(&mut ping) => {
                    let frame = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b""));
                    if ws_out.write_frame(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_out.flush().await;
    };
    let lingered = async {
        owner.cancelled().await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::select! {
        _ = async { tokio::join!(incoming, outgoing) } => {}
        _ = lingered => {}
    }
}

/// A close code we may send back: the peer's, unless it is one only
/// allowed on the wire's receiving side.
fn echoable(code: u16) -> u16 {
    match code {
        1000..=1003 | 1007..=1011 | 3000..=4999 => code,
        _ => 1000,
    }
}

async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends each whole line in `pending` as a message; what is left waits for
/// its newline, unless it has reached `max` bytes (then it goes as one
/// message, so the wait never holds more than that).
async fn send_lines<W: AsyncWrite + Unpin>(
    ws: &mut fastwebsockets::WebSocketWrite<W>,
    pending: &mut Vec<u8>,
    text: bool,
    max: usize,
) -> Result<(), WebSocketError> {
    let mut start = 0;
    while let Some(at) = memchr::memchr(b'\n', &pending[start..]) {
        let end = start + at + 1;
        send_line(ws, &pending[start..end], text).await?;
        start = end;
    }
    pending.drain(..start);
    if pending.len() >= max {
        send_line(ws, &std::mem::take(pending), text).await?;
    }
    Ok(())
}

/// One line as one message: binary with its newline, or text without it.
async fn send_line<W: AsyncWrite + Unpin>(
    ws: &mut fastwebsockets::WebSocketWrite<W>,
    line: &[u8],
    text: bool,
) -> Result<(), WebSocketError> {
    if !text {
        return ws.write_frame(Frame::binary(Payload::Borrowed(line))).await;
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line).into_owned();
    ws.write_frame(Frame::text(Payload::Owned(text.into_bytes()))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("c2hvcnQ="));
    }

    #[test]
    fn same_origin_or_listed() {
        let mut s = WsServer::new("/");
        assert!(s.origin_allowed("http://127.0.0.1:7071", "127.0.0.1:7071"));
        assert!(s.origin_allowed("http://localhost:7071", "localhost:7071"));
        assert!(s.origin_allowed("http://[::1]:7071", "[::1]:7071"));
        assert!(!s.origin_allowed("http://evil.example", "127.0.0.1:7071"));
        // DNS rebinding: the attacker's name in both headers.
        assert!(!s.origin_allowed("http://evil.example:7071", "evil.example:7071"));
        s.origins.push("http://evil.example".into());
        assert!(s.origin_allowed("http://evil.example", "127.0.0.1:7071"));
    }
}
