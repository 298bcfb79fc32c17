//! `discard` (RFC 863) and `chargen` (RFC 864), inetd's sink and source:
//! what `sockit bench stream` sends to and reads from.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::{Conn, DatagramService, Service};

const CHUNK: usize = 256 * 1024;

/// Reads and drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Service for Discard {
    async fn serve(&self, mut conn: Conn) -> io::Result<()> {
        let mut buf = BytesMut::new();
        loop {
            buf.clear();
            if conn.read_lazy(&mut buf, CHUNK).await? == 0 {
                return Ok(());
            }
            // Drain what is ready with the same buffer, then let it go.
            loop {
                buf.clear();
                match conn.try_read_more(&mut buf, CHUNK) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            buf = BytesMut::new();
        }
    }
}

impl DatagramService for Discard {
    fn reply(&self, _: &[u8], _: SocketAddr, _: &mut Vec<u8>) -> bool {
        false
    }
}

/// Sends the classic rotating 72-column character lines until the client
/// goes away.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chargen;

impl Chargen {
    /// `len` bytes of chargen lines (one period of 95 lines, repeated).
    pub fn pattern(len: usize) -> Vec<u8> {
        let printable: Vec<u8> = (b' '..=b'~').collect();
        let mut out = Vec::with_capacity(len + 74);
        let mut line = 0;
        while out.len() < len {
            out.extend((0..72).map(|i| printable[(line + i) % printable.len()]));
            out.extend_from_slice(b"\r\n");
            line += 1;
        }
        out.truncate(len);
        out
    }
}

impl Service for Chargen {
    async fn serve(&self, mut conn: Conn) -> io::Result<()> {
        // 95 lines of 74 bytes is one period: chunks of whole periods keep
        // the stream seamless.
        let period = 95 * 74;
        let chunk = Chargen::pattern(period * (CHUNK / period));
        let stop = conn.shutdown_token().clone();
        loop {
            tokio::select! {
                r = conn.write_all(&chunk) => r?,
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }
}
