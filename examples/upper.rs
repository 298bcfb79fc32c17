//! A custom line protocol in about twenty lines: every line comes back in
//! upper case. The server core does the rest — connection limits, idle
//! timeouts, the line-size limit, logging and graceful shutdown.
//!
//! Run:  cargo run --example upper            (prints `listening on …`)
//! Try:  echo hello | cargo run -- connect 127.0.0.1:7099   →  HELLO

use std::sync::Arc;

use sockit::{Conn, Endpoint, Limits, Lines, Server, Service};

struct Upper;

impl Service for Upper {
    async fn serve(&self, conn: Conn) -> std::io::Result<()> {
        let mut lines = Lines::new(conn);
        while let Some(line) = lines.next().await? {
            lines.send(&line.to_ascii_uppercase()).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint: Endpoint = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:7099").parse()?;
    let listener = endpoint.bind_stream().await?;
    let server = Server::new(Limits::default());
    // Prints `listening on tcp://127.0.0.1:7099 (upper)` once it serves.
    server.serve_stream(listener, "upper", Arc::new(Upper))?;
    server.run_until(tokio::signal::ctrl_c()).await;
    Ok(())
}
