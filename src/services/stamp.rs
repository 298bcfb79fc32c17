//! `stamp`: each message comes back as `[<time>] <message>`, the time in
//! ctime() form (`Fri Sep 30 16:26:40 2016`), local or UTC. Over a stream a
//! message is a line and so is the reply; over UDP each datagram gets one.

use std::io;
use std::net::SocketAddr;

use crate::lines::DEFAULT_MAX_LINE;
use crate::{Conn, DatagramService, Lines, Service};

/// The timestamp service.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// Stamp in UTC instead of local time.
    pub utc: bool,
    /// The longest message it takes over a stream (`--max-line`); a longer
    /// one gets an error line and the connection closes.
    pub max_line: usize,
}

impl Default for Stamp {
    fn default() -> Self {
        Stamp { utc: false, max_line: DEFAULT_MAX_LINE }
    }
}

impl Stamp {
    /// `[Fri Sep 30 16:26:40 2016] ` for now.
    pub fn prefix(&self) -> String {
        const CTIME: &str = "[%a %b %e %H:%M:%S %Y] ";
        if self.utc {
            chrono::Utc::now().format(CTIME).to_string()
        } else {
            chrono::Local::now().format(CTIME).to_string()
        }
    }
}

impl Service for Stamp {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let mut lines = Lines::new(conn).with_max(self.max_line);
        while let Some(msg) = lines.next().await? {
            lines.send_parts(&[self.prefix().as_bytes(), &msg]).await?;
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

impl DatagramService for Stamp {
    fn reply(&self, datagram: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>) -> bool {
        reply.extend_from_slice(self.prefix().as_bytes());
        reply.extend_from_slice(datagram);
        true
    }
}
