//! The exec client: sends a command over an admitted connection and relays
//! what comes back until its [`Exit`]. The protocol's client half, beside
//! the server ([`super`]) and the wire format ([`super::wire`]); where the
//! output goes and how an ending is shown is the caller's.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::wire::{Exit, Frame};
use crate::frames::FrameStream;
use crate::text::clean;

/// Why a command's relay stopped before its [`Exit`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server sent bytes that are not the protocol, or a frame out of place.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server closed the connection mid-command.
    #[error("the server closed the connection before the command finished")]
    Closed,
    /// Where the output goes was closed (`sockit exec … | head`): how
    /// pipelines end, not a failure.
    #[error("the output was closed")]
    OutputClosed,
    /// Sending to the server, or writing the output, failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An exec connection past the handshake.
pub struct Client<S> {
    frames: FrameStream<S, Frame>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// The connection, with what the handshake read past its end.
    pub fn new(frames: FrameStream<S, Frame>) -> Self {
        Client { frames }
    }

    /// Sends one command ([`Frame::Run`] or [`Frame::Shell`]) and relays its
    /// output to `out` and `err`, and the server's own words (cleaned) to
    /// `notice`; returns how it ended.
    pub async fn run(
        &mut self,
        request: Frame,
        out: &mut (impl AsyncWrite + Unpin),
        err: &mut (impl AsyncWrite + Unpin),
        mut notice: impl FnMut(&str),
    ) -> Result<Exit, ClientError> {
        self.frames.send(&request).await?;
        loop {
            match self.frames.recv().await.map_err(|e| ClientError::Protocol(e.to_string()))? {
                Some(Frame::Stdout(b)) => write(out, &b).await?,
                Some(Frame::Stderr(b)) => write(err, &b).await?,
                // Text from the server, unlike the command's output, goes
                // to the terminal as text: never raw.
                Some(Frame::Notice(t)) | Some(Frame::Error(t)) => notice(&clean(&t)),
                Some(Frame::Exit(exit)) => return Ok(exit),
                Some(other) => return Err(ClientError::Protocol(format!("unexpected {other:?}"))),
                None => return Err(ClientError::Closed),
            }
        }
    }
}

async fn write(w: &mut (impl AsyncWrite + Unpin), b: &[u8]) -> Result<(), ClientError> {
    match w.write_all(b).await.and(w.flush().await) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(ClientError::OutputClosed),
        r => Ok(r?),
    }
}
