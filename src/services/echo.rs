//! `echo`: every byte back, binary-safe, any size (TCP, Unix); each datagram
//! back to its sender (UDP). When the client half-closes, the echo finishes
//! and half-closes too.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::{Conn, DatagramService, Service};

/// Read size per system call. The buffer exists only while data flows: it is
/// allocated after the socket turns readable and dropped when it drains.
const CHUNK: usize = 64 * 1024;

/// The echo service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Service for Echo {
    async fn serve(&self, mut conn: Conn) -> io::Result<()> {
        loop {
            let mut buf = BytesMut::new();
            if conn.read_lazy(&mut buf, CHUNK).await? == 0 {
                return conn.shutdown().await;
            }
            // Keep the buffer while data keeps coming; drop it once drained.
            loop {
                conn.write_all(&buf).await?;
                buf.clear();
                match conn.try_read_more(&mut buf, CHUNK) {
                    Ok(0) => return conn.shutdown().await,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

impl DatagramService for Echo {
    fn reply(&self, datagram: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>) -> bool {
        reply.extend_from_slice(datagram);
        true
    }
}
