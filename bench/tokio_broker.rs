//! The reference broker: a minimal tokio broadcast broker, like
//! `ncat --broker` — bytes from any client to all the others — with one
//! `tokio::sync::broadcast` channel and a task per client. `bench/compare`
//! measures sockit chat against it.
//!
//! Run: cargo run --release --example tokio-broker -- 127.0.0.1:7202

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("listening on tcp://{} (tokio-broker)", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<(u64, bytes::Bytes)>(1024);
    let mut next = 0u64;
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        next += 1;
        let (id, tx, mut rx) = (next, tx.clone(), tx.subscribe());
        tokio::spawn(async move {
            let (mut rd, mut wr) = socket.into_split();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = tx.send((id, bytes::Bytes::copy_from_slice(&buf[..n])));
                }
            });
            while let Ok((from, data)) = rx.recv().await {
                if from != id && wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            reader.abort();
        });
    }
}
