//! `greet`: `Welcome!` on connect, `Hello, X!` for each message X, and the
//! message `exit` closes the connection.

use std::io;

use crate::{Conn, Lines, Service};

/// The greeting service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Greet;

impl Service for Greet {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let mut lines = Lines::new(conn);
        lines.send(b"Welcome!").await?;
        while let Some(name) = lines.next().await? {
            if &name[..] == b"exit" {
                break;
            }
            lines.send_parts(&[b"Hello, ", &name, b"!"]).await?;
        }
        Ok(())
    }

    fn busy_message(&self) -> Option<&[u8]> {
        Some(super::BUSY_LINE)
    }
}
