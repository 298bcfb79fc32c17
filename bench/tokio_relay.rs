//! The reference relay: tokio's `copy_bidirectional` with 256 KiB buffers,
//! one task per connection. `bench/compare` measures `sockit relay` against it.
//!
//! Run: cargo run --release --example tokio-relay -- 127.0.0.1:7201 127.0.0.1:7007

use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let from = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let to = args.next().expect("usage: tokio-relay FROM TO");
    let listener = TcpListener::bind(&from).await?;
    eprintln!("listening on tcp://{} (tokio-relay)", listener.local_addr()?);
    loop {
        let (mut client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        let to = to.clone();
        tokio::spawn(async move {
            if let Ok(mut upstream) = TcpStream::connect(&to).await {
                let _ = upstream.set_nodelay(true);
                let _ =
                    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 256 << 10, 256 << 10).await;
            }
        });
    }
}
