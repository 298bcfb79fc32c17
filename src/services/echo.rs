//! `echo`: every byte back, binary-safe, any size (TCP, Unix); each datagram
//! back to its sender (UDP). When the client half-closes, the echo finishes
//! and half-closes too.

use std::io;
use std::net::SocketAddr;

use crate::forward::copy_ready;
use crate::{Conn, DatagramService, Service};

/// The echo service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Service for Echo {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        // The raw stream, so bytes go back through the relay's scratch
        // buffer: an idle echo connection holds no buffer, a busy one
        // allocates none.
        let (stream, meter) = conn.into_parts();
        loop {
            stream.readable().await?;
            match copy_ready(&stream, &stream).await {
                Ok(0) => return stream.shutdown_write(),
                Ok(n) => {
                    meter.add_read(n);
                    meter.add_written(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
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
