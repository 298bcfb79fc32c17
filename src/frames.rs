//! Typed frames over any byte stream, for the framed protocols (exec,
//! files): a wire format says how one frame is encoded and decoded, this
//! module does the buffering and the I/O.

use std::fmt::Display;
use std::io;
use std::marker::PhantomData;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A wire format: pure encode and decode, no I/O.
pub trait Wire: Sized {
    /// Why bytes are not a frame.
    type Error: Display;
    /// Takes one frame off the front of `buf`: `Ok(None)` until a whole
    /// frame is there. Must never panic, whatever the bytes, and must bound
    /// what it asks the caller to buffer.
    fn decode(buf: &mut BytesMut) -> Result<Option<Self>, Self::Error>;
    /// Appends the encoded frame to `out`.
    fn encode(&self, out: &mut BytesMut);
}

/// Frames of `F` over `io`: the server's side and the client's.
#[derive(Debug)]
pub struct FrameStream<S, F> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    wire: PhantomData<fn() -> F>,
}

impl<S: AsyncRead + AsyncWrite + Unpin, F: Wire> FrameStream<S, F> {
    /// Frames over `io`.
    pub fn new(io: S) -> Self {
        FrameStream { io, rbuf: BytesMut::new(), wbuf: BytesMut::new(), wire: PhantomData }
    }

    /// The next frame; `None` at a clean EOF between frames. Bytes that are
    /// not a frame, or an EOF inside one, are errors.
    pub async fn recv(&mut self) -> io::Result<Option<F>> {
        loop {
            if let Some(f) = F::decode(&mut self.rbuf).map_err(invalid)? {
                return Ok(Some(f));
            }
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a frame"))
                };
            }
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, f: &F) -> io::Result<()> {
        self.wbuf.clear();
        f.encode(&mut self.wbuf);
        self.io.write_all(&self.wbuf).await
    }

    /// The stream underneath, for bytes outside frames.
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The stream, and bytes already read from it that no frame took yet.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.rbuf)
    }
}

/// A wire error as an I/O error of kind `InvalidData`.
pub fn invalid(e: impl Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
