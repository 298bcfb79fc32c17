//! `greet`: `Welcome!` on connect, `Hello, X!` for each message X, and the
//! message `exit` closes the connection.

use std::io;

use crate::lines::DEFAULT_MAX_LINE;
use crate::{Conn, Lines, Service};

/// The greeting service.
#[derive(Clone, Copy, Debug)]
pub struct Greet {
    /// The longest name it takes (`--max-line`); a longer one gets an
    /// error line and the connection closes.
    pub max_line: usize,
}

impl Default for Greet {
    fn default() -> Self {
        Greet { max_line: DEFAULT_MAX_LINE }
    }
}

impl Service for Greet {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let mut lines = Lines::new(conn).with_max(self.max_line);
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

    fn line_limit(&self) -> Option<usize> {
        Some(self.max_line)
    }
}
