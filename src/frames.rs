//! Typed frames over any byte stream, for the framed protocols (exec,
//! files, and the handshake both speak first): a wire format says how one
//! frame is encoded and decoded, pure over bytes; this module does the
//! buffering and the I/O, and hands what one codec buffered to the next
//! ([`FrameStream::into_parts`], [`FrameStream::from_parts`]).

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
    r: FrameReader<S, F>,
    wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin, F: Wire> FrameStream<S, F> {
    /// Frames over `io`.
    pub fn new(io: S) -> Self {
        FrameStream::from_parts(io, BytesMut::new())
    }

    /// Frames over `io`, after the bytes already read into `buf` (what an
    /// earlier codec on the same stream read past its last frame).
    pub fn from_parts(io: S, buf: BytesMut) -> Self {
        FrameStream { r: FrameReader::new(io, buf), wbuf: BytesMut::new() }
    }

    /// The next frame; see [`FrameReader::recv`].
    pub async fn recv(&mut self) -> io::Result<Option<F>> {
        self.r.recv().await
    }

    /// Sends one frame.
    pub async fn send(&mut self, f: &F) -> io::Result<()> {
        self.wbuf.clear();
        f.encode(&mut self.wbuf);
        self.r.io.write_all(&self.wbuf).await
    }

    /// The stream underneath, for bytes outside frames.
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.r.io
    }

    /// The stream, and bytes already read from it that no frame took yet.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.r.io, self.r.buf)
    }
}

/// The reading side of frames of `F`, for protocols that also carry raw
/// bytes between frames.
#[derive(Debug)]
pub struct FrameReader<R, F> {
    io: R,
    buf: BytesMut,
    wire: PhantomData<fn() -> F>,
}

impl<R: AsyncRead + Unpin, F: Wire> FrameReader<R, F> {
    /// Frames from `io`, after the bytes already read into `buf`.
    pub fn new(io: R, buf: BytesMut) -> Self {
        FrameReader { io, buf, wire: PhantomData }
    }

    /// The next frame; `None` at a clean EOF between frames. Bytes that are
    /// not a frame, or an EOF inside one, are errors.
    pub async fn recv(&mut self) -> io::Result<Option<F>> {
        read_frame(&mut self.io, &mut self.buf, F::decode).await
    }

    /// A frame already read in full, without reading more.
    pub fn buffered(&mut self) -> Result<Option<F>, F::Error> {
        F::decode(&mut self.buf)
    }

    /// The next frame; an EOF is an error too.
    pub async fn expect(&mut self) -> io::Result<F> {
        self.recv().await?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
    }

    /// Up to `max` raw bytes (at least one): what is buffered, else one read.
    pub async fn chunk(&mut self, max: usize) -> io::Result<bytes::Bytes> {
        if self.buf.is_empty() {
            self.buf.reserve(max.min(CHUNK));
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside file data"));
            }
        }
        let n = self.buf.len().min(max);
        Ok(self.buf.split_to(n).freeze())
    }

    /// Exactly `n` raw bytes.
    pub async fn exact(&mut self, n: usize) -> io::Result<bytes::Bytes> {
        while self.buf.len() < n {
            self.buf.reserve((n - self.buf.len()).max(READ_AHEAD));
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside file data"));
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }
}

/// Reads from `io` into `buf` until `decode` takes a frame off it; `None`
/// at a clean EOF between frames. A decode error, or an EOF inside a frame,
/// is an error. Whatever is read past the frame stays in `buf`.
pub async fn read_frame<R, T, E>(
    io: &mut R,
    buf: &mut BytesMut,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> io::Result<Option<T>>
where
    R: AsyncRead + Unpin,
    E: Display,
{
    loop {
        if let Some(f) = decode(buf).map_err(invalid)? {
            return Ok(Some(f));
        }
        buf.reserve(READ_AHEAD);
        if io.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a frame"))
            };
        }
    }
}

/// Frames and small payloads are read this much at a time, so a stream of
/// small ones costs few reads.
const READ_AHEAD: usize = 64 * 1024;
/// Raw bytes are read in pieces of at most this much.
const CHUNK: usize = 1 << 20;

/// Why bytes are not a frame of a `type:u8 length:u32 payload` format;
/// [`split_frame`] refuses the first two from the header alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A type byte no frame has.
    #[error("unknown frame type {0} (not a sockit peer of this protocol?)")]
    UnknownType(u8),
    /// A length over the format's limit.
    #[error("frame of {0} bytes is over the protocol's limit")]
    TooLarge(usize),
    /// A payload that does not fit its type.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

/// Bytes before the payload of a `type:u8 length:u32` frame.
pub const HEADER: usize = 5;

/// Takes one `type:u8 length:u32 (big-endian) payload` frame off the front
/// of `buf`: `Ok(None)` until it is whole. Types outside `kinds` and
/// lengths over `max` are refused from the header alone, so a peer can
/// never make the reader buffer more than one frame.
pub fn split_frame(
    buf: &mut BytesMut,
    kinds: std::ops::RangeInclusive<u8>,
    max: usize,
) -> Result<Option<(u8, bytes::Bytes)>, WireError> {
    use bytes::Buf;
    if buf.len() < HEADER {
        return Ok(None);
    }
    let kind = buf[0];
    if !kinds.contains(&kind) {
        return Err(WireError::UnknownType(kind));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max {
        return Err(WireError::TooLarge(len));
    }
    if buf.len() < HEADER + len {
        buf.reserve(HEADER + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER);
    Ok(Some((kind, buf.split_to(len).freeze())))
}

/// Starts a frame of `kind` in `out`; returns where, for [`end_frame`].
pub fn begin_frame(out: &mut BytesMut, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[kind, 0, 0, 0, 0]);
    start
}

/// Writes the length of the frame begun at `start`.
pub fn end_frame(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - HEADER) as u32;
    out[start + 1..start + HEADER].copy_from_slice(&len.to_be_bytes());
}

/// A wire error as an I/O error of kind `InvalidData`.
pub fn invalid(e: impl Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Property checks every wire format's decoder must pass, for a [`Wire`]
/// type or for any pair of decode and encode functions (a codec that
/// needs a value, such as the handshake's).
#[cfg(test)]
pub(crate) mod checks {
    use super::*;

    /// Frames encoded back to back decode to the same frames, whatever
    /// point the bytes are cut at between two reads.
    pub fn decode_in_any_split<F: Wire + PartialEq + std::fmt::Debug>(frames: &[F], cut: usize) {
        decode_in_any_split_with(frames, cut, F::decode, F::encode);
    }

    /// Arbitrary bytes never panic the decoder nor make it buffer more than
    /// one frame of at most `max` bytes.
    pub fn arbitrary_bytes<F: Wire>(bytes: &[u8], max: usize) {
        arbitrary_bytes_with(bytes, max, F::decode);
    }

    /// [`decode_in_any_split`] for the codec `decode`/`encode`.
    pub fn decode_in_any_split_with<F: PartialEq + std::fmt::Debug, E: Display>(
        frames: &[F],
        cut: usize,
        decode: impl Fn(&mut BytesMut) -> Result<Option<F>, E>,
        encode: impl Fn(&F, &mut BytesMut),
    ) {
        let mut wire = BytesMut::new();
        frames.iter().for_each(|f| encode(f, &mut wire));
        let cut = cut % (wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(f) = decode(&mut buf).unwrap_or_else(|e| panic!("valid frames: {e}")) {
            got.push(f);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(f) = decode(&mut buf).unwrap_or_else(|e| panic!("valid frames: {e}")) {
            got.push(f);
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    /// [`arbitrary_bytes`] for the decoder `decode`.
    pub fn arbitrary_bytes_with<F, E>(
        bytes: &[u8],
        max: usize,
        decode: impl Fn(&mut BytesMut) -> Result<Option<F>, E>,
    ) {
        let mut buf = BytesMut::from(bytes);
        while let Ok(Some(_)) = decode(&mut buf) {}
        assert!(buf.capacity() <= max + HEADER + bytes.len());
    }
}
