//! The reference the runtime allows: a minimal tokio echo server, TCP and
//! UDP, one task per connection with a 4 KiB buffer — the textbook shape.
//! `bench/compare` measures sockit's echo against it.
//!
//! Run: cargo run --release --example tokio-echo -- 127.0.0.1:7200
//! (prints `listening on tcp://…` and `listening on udp://…` like sockit)

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let udp = UdpSocket::bind(local).await?;
    eprintln!("listening on tcp://{local} (tokio-echo)");
    eprintln!("listening on udp://{} (tokio-echo)", udp.local_addr()?);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], peer).await;
        }
    });
    loop {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
