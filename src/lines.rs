//! Newline framing for line services, with a hard size limit.
//!
//! A message ends at `\n`; a `\r` before it is dropped. Classic tutorial
//! clients send no newline at all (`send(b'michael')`, then `recv(1024)`), and
//! are served unchanged: bytes that arrive without a newline, with nothing more
//! pending, count as one message — as long as the client has never sent a
//! newline. Once it has, a partial line waits for the rest of its line, so a
//! line split across TCP segments is never cut in two. At EOF, whatever is
//! left is the last message.
//!
//! Memory is bounded by `max_line`: a line that grows past it is an error,
//! reading stops once more than `max_line` bytes wait to be handled, however
//! many lines they hold (a client that sends and never reads fills its own
//! socket, not the server), and the buffer is released whenever it is empty,
//! so an idle connection holds none. One connection buffers at most
//! `max_line` + [`READ_CHUNK`] bytes.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::conn::Conn;

/// The longest line [`Lines::new`] accepts unless told otherwise
/// ([`Lines::with_max`]): 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// How much to read per system call.
pub const READ_CHUNK: usize = 8 * 1024;

/// The framing state: pure over bytes, no I/O.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: BytesMut,
    max: usize,
    saw_newline: bool,
    /// Dropping the rest of a line that was too long, up to its newline.
    discarding: bool,
}

/// A line longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl LineBuf {
    /// A frame buffer accepting lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        LineBuf { buf: BytesMut::new(), max, saw_newline: false, discarding: false }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into (for zero-copy reads).
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next message, if one is complete. `drained` says that nothing more
    /// is pending on the connection right now.
    pub fn next_message(&mut self, drained: bool) -> Result<Option<Bytes>, TooLong> {
        if self.discarding {
            match memchr(&self.buf) {
                Some(i) => {
                    let _ = self.buf.split_to(i + 1);
                    self.discarding = false;
                }
                None => {
                    self.buf.clear();
                    return Ok(None);
                }
            }
        }
        let msg = match memchr(&self.buf) {
            Some(i) if i > self.max => return Err(TooLong(self.max)),
            Some(i) => {
                self.saw_newline = true;
                let mut line = self.buf.split_to(i + 1);
                line.truncate(i);
                Some(line)
            }
            None if self.buf.len() > self.max => return Err(TooLong(self.max)),
            None if drained && !self.saw_newline && !self.buf.is_empty() => Some(self.buf.split()),
            None => None,
        };
        Ok(msg.map(|m| self.finish(m)))
    }

    /// After [`TooLong`]: drop the long line (through its newline, however
    /// far away) and go on with the next one.
    pub fn skip_long_line(&mut self) {
        self.saw_newline = true;
        match memchr(&self.buf) {
            Some(i) => {
                let _ = self.buf.split_to(i + 1);
            }
            None => {
                self.buf.clear();
                self.discarding = true;
            }
        }
    }

    /// At EOF: what is left, if anything, is the last message.
    pub fn last_message(&mut self) -> Option<Bytes> {
        if self.discarding {
            return None;
        }
        (!self.buf.is_empty()).then(|| {
            let m = self.buf.split();
            self.finish(m)
        })
    }

    /// Whether more than `max` bytes are buffered: read no more until
    /// they are handled (a line over the limit is an error then).
    pub fn full(&self) -> bool {
        self.buf.len() > self.max
    }

    fn finish(&mut self, mut msg: BytesMut) -> Bytes {
        if msg.last() == Some(&b'\r') {
            msg.truncate(msg.len() - 1);
        }
        if self.buf.is_empty() {
            // Release the allocation: an idle connection holds no buffer.
            self.buf = BytesMut::new();
        }
        msg.freeze()
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// A connection read and written as lines.
///
/// ```no_run
/// # async fn f(conn: sockit::Conn) -> std::io::Result<()> {
/// let mut lines = sockit::Lines::new(conn);
/// lines.send(b"Welcome!").await?;
/// while let Some(line) = lines.next().await? {
///     lines.send(&line).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Lines {
    conn: Conn,
    frames: LineBuf,
    eof: bool,
    skip_long: bool,
}

impl Lines {
    /// Frames `conn`, taking lines up to [`DEFAULT_MAX_LINE`] bytes.
    pub fn new(conn: Conn) -> Self {
        Lines { conn, frames: LineBuf::new(DEFAULT_MAX_LINE), eof: false, skip_long: false }
    }

    /// Uses `max` as the longest line (a service's `--max-line`).
    pub fn with_max(mut self, max: usize) -> Self {
        self.frames.max = max;
        self
    }

    /// On a line over the limit, answer `! line too long (max N bytes)`,
    /// drop that line and go on, instead of ending the connection.
    pub fn skip_long_lines(mut self) -> Self {
        self.skip_long = true;
        self
    }

    /// The next message, or `None` at EOF. A line over the limit is answered
    /// with `! line too long (max N bytes)` and returned as an
    /// `InvalidData` error, so the service ends and the server logs why.
    /// Cancel-safe: partial input stays buffered.
    pub async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            match self.frames.next_message(true) {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) if self.eof => return Ok(self.frames.last_message()),
                Ok(None) => {}
                Err(TooLong(max)) => {
                    let msg = format!("! line too long (max {max} bytes)");
                    if self.skip_long {
                        self.frames.skip_long_line();
                        self.send(msg.as_bytes()).await?;
                        continue;
                    }
                    let _ = self.send(msg.as_bytes()).await;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, &msg[2..]));
                }
            }
            self.fill().await?;
        }
    }

    /// The next message if it is already buffered, without reading: lets a
    /// caller handle a burst of lines together.
    pub fn next_buffered(&mut self) -> Option<Bytes> {
        self.frames.next_message(true).ok().flatten()
    }

    /// Reads everything that is ready (after waiting for the first byte), so
    /// that a message without a newline is known to be complete — but never
    /// past the limit: a peer that pours in lines waits for them to be
    /// handled, and the wait is its socket's.
    async fn fill(&mut self) -> io::Result<()> {
        if self.conn.read_lazy(self.frames.buf_mut(), READ_CHUNK).await? == 0 {
            self.eof = true;
            return Ok(());
        }
        while !self.frames.full() {
            match self.conn.try_read_more(self.frames.buf_mut(), READ_CHUNK) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `line` and a newline.
    pub async fn send(&mut self, line: &[u8]) -> io::Result<()> {
        self.send_parts(&[line]).await
    }

    /// Writes the concatenation of `parts` and a newline, in one write when
    /// the socket allows.
    pub async fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        let mut out = Vec::with_capacity(len);
        for p in parts {
            out.extend_from_slice(p);
        }
        out.push(b'\n');
        self.conn.write_all(&out).await
    }

    /// The connection underneath.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(chunks: &[&[u8]], max: usize) -> Vec<Result<String, TooLong>> {
        let mut lb = LineBuf::new(max);
        let mut out = vec![];
        for c in chunks {
            lb.extend(c);
            loop {
                match lb.next_message(true) {
                    Ok(Some(m)) => out.push(Ok(String::from_utf8_lossy(&m).into_owned())),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out.extend(lb.last_message().map(|m| Ok(String::from_utf8_lossy(&m).into_owned())));
        out
    }

    fn ok(v: &[&str]) -> Vec<Result<String, TooLong>> {
        v.iter().map(|s| Ok(s.to_string())).collect()
    }

    #[test]
    fn newline_and_crlf() {
        assert_eq!(messages(&[b"a\r\nb\n"], 64), ok(&["a", "b"]));
    }

    #[test]
    fn no_newline_client_gets_a_message_per_burst() {
        assert_eq!(messages(&[b"michael", b"tracy", b"exit"], 64), ok(&["michael", "tracy", "exit"]));
    }

    #[test]
    fn after_a_newline_partial_lines_wait() {
        assert_eq!(messages(&[b"ab\ncd", b"ef\n"], 64), ok(&["ab", "cdef"]));
    }

    #[test]
    fn last_partial_line_at_eof() {
        assert_eq!(messages(&[b"a\nrest"], 64), ok(&["a", "rest"]));
    }

    #[test]
    fn too_long_with_and_without_newline() {
        assert_eq!(messages(&[b"12345\n"], 4), vec![Err(TooLong(4))]);
        assert_eq!(messages(&[b"1234\n"], 4), ok(&["1234"]));
        let mut lb = LineBuf::new(4);
        lb.saw_newline = true;
        lb.extend(b"12345");
        assert!(lb.full());
        assert_eq!(lb.next_message(true), Err(TooLong(4)));
    }

    #[test]
    fn a_long_line_can_be_skipped() {
        let mut lb = LineBuf::new(4);
        lb.extend(b"toolong");
        assert_eq!(lb.next_message(true), Err(TooLong(4)));
        lb.skip_long_line();
        lb.extend(b"still long\nok\n");
        assert_eq!(&lb.next_message(true).unwrap().unwrap()[..], b"ok");
        lb.extend(b"x\n123456\ny\n");
        assert_eq!(&lb.next_message(true).unwrap().unwrap()[..], b"x");
        assert_eq!(lb.next_message(true), Err(TooLong(4)));
        lb.skip_long_line();
        assert_eq!(&lb.next_message(true).unwrap().unwrap()[..], b"y");
    }

    #[test]
    fn invalid_utf8_passes_through() {
        let mut lb = LineBuf::new(64);
        lb.extend(b"\xff\xfe\n");
        assert_eq!(&lb.next_message(true).unwrap().unwrap()[..], b"\xff\xfe");
    }

    #[test]
    fn buffer_released_when_empty() {
        let mut lb = LineBuf::new(64);
        lb.extend(b"hello\n");
        lb.next_message(true).unwrap();
        assert_eq!(lb.buf.capacity(), 0);
    }
}
