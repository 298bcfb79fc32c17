//! A WebSocket reference on the crate sockit uses: fastwebsockets' echo,
//! one task per connection, with the smallest HTTP upgrade that works.
//! `bench/compare` measures sockit's echo on `ws://` against it.
//!
//! Run: cargo run --release --example fastws-echo -- 127.0.0.1:7202

use base64::Engine as _;
use fastwebsockets::{OpCode, Role, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn upgrade(tcp: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let key = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_string())
    })?;
    let mut sha = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finish());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(answer.as_bytes()).await.ok()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("listening on ws://{}/ (fastws-echo)", listener.local_addr()?);
    loop {
        let (mut tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            if upgrade(&mut tcp).await.is_none() {
                return;
            }
            let mut ws = WebSocket::after_handshake(tcp, Role::Server);
            while let Ok(frame) = ws.read_frame().await {
                let echo = match frame.opcode {
                    OpCode::Close => return,
                    OpCode::Text | OpCode::Binary => frame,
                    _ => continue,
                };
                if ws.write_frame(echo).await.is_err() {
                    return;
                }
            }
        });
    }
}
