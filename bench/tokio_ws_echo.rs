//! A WebSocket reference: tokio-tungstenite's textbook echo, one task per
//! connection, default settings. `bench/compare` measures sockit's echo on
//! `ws://` against it, and against `fastws-echo`.
//!
//! Run: cargo run --release --example tokio-ws-echo -- 127.0.0.1:7201

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("listening on ws://{}/ (tokio-ws-echo)", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
            while let Some(Ok(msg)) = ws.next().await {
                // Pings are answered by tungstenite itself; a close ends the loop.
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}
