//! The handshake's wire format: four frames that exec and files speak
//! first, pure encode and decode. After Ready the protocol's own codec
//! takes the stream over, with whatever was read past the handshake.
//!
//! ```text
//! frame   = type:u8  length:u32 (big-endian)  payload[length]     length ≤ MAX_PAYLOAD
//! ```
//!
//! | type | name  | way | payload |
//! |------|-------|-----|---------|
//! | 1 | Hello | S→C | version:u8 = 1, flags:u8 ([`FLAG_TOKEN`]; other bits are the protocol's), nonce: 32 bytes |
//! | 2 | Auth  | C→S | HMAC-SHA256(token, context ‖ nonce): 32 bytes, where the context names the protocol |
//! | 3 | Ready | S→C | empty: admitted; the protocol's frames follow |
//! | the protocol's Error type (exec 9, files 14) | Error | S→C | UTF-8 text: refused, and why; then the server closes |
//!
//! These are the bytes exec and files have always sent, so clients and
//! servers from before this codec existed still understand it. Type bytes
//! 4 up to the protocol's last belong to the protocol: one arriving before
//! the handshake is over is [`WireError::Early`], known from the type byte
//! alone, so the peer is told without the payload being buffered.
//!
//! ```
//! use bytes::BytesMut;
//! use sockit::auth::wire::{Frame, Protocol};
//!
//! const P: Protocol = Protocol { name: "demo", context: b"demo-v1", error_type: 9, last_type: 10 };
//! let mut buf = BytesMut::new();
//! P.encode(&Frame::Ready, &mut buf);
//! assert_eq!(&buf[..], [3, 0, 0, 0, 0]);
//! assert_eq!(P.decode(&mut buf), Ok(Some(Frame::Ready)));
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::frames::{self, begin_frame, end_frame, split_frame};

/// Hello flag: the client must prove it holds the token.
pub const FLAG_TOKEN: u8 = 1;
/// The handshake version in Hello.
pub const VERSION: u8 = 1;
/// The largest payload of a handshake frame. Hello and Auth are 34 and 32
/// bytes and refusals are a sentence, so a peer that has proved nothing can
/// make the other side buffer no more than this.
pub const MAX_PAYLOAD: usize = 4096;

const HELLO: u8 = 1;
const AUTH: u8 = 2;
const READY: u8 = 3;
const NONCE: usize = 32;

/// What a handshake needs to know of the protocol that follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// Its name, for messages: `exec` ("a sockit exec server").
    pub name: &'static str,
    /// Names the protocol inside every proof, so a proof for one protocol
    /// is worthless for another.
    pub context: &'static [u8],
    /// The type byte of the protocol's Error frame, which the handshake
    /// refuses with.
    pub error_type: u8,
    /// The protocol's highest type byte: from 4 up to it, its own frames.
    pub last_type: u8,
}

/// One handshake frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The server's greeting.
    Hello {
        /// [`FLAG_TOKEN`], and the protocol's own flags.
        flags: u8,
        /// The challenge for this connection.
        nonce: [u8; 32],
    },
    /// The client's proof.
    Auth {
        /// HMAC-SHA256 of the context and nonce under the token.
        mac: [u8; 32],
    },
    /// Admitted.
    Ready,
    /// Refused, and why.
    Error(String),
}

/// Bytes that are not a handshake frame. The handshake cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A length over [`MAX_PAYLOAD`].
    #[error("handshake frame of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// A type byte neither the handshake nor the protocol has.
    #[error("unknown frame type {kind} (not a sockit {protocol} peer?)")]
    UnknownType {
        /// The type byte.
        kind: u8,
        /// The protocol's name.
        protocol: &'static str,
    },
    /// A frame of the protocol, before the handshake is over. Nothing is
    /// taken off the buffer.
    #[error("a frame of type {0} before the handshake was over")]
    Early(u8),
    /// A payload that does not fit its type.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

impl Protocol {
    /// Appends the encoded frame to `out`. A refusal over [`MAX_PAYLOAD`]
    /// bytes is the caller's bug: refusals are a sentence.
    pub fn encode(&self, frame: &Frame, out: &mut BytesMut) {
        let kind = match frame {
            Frame::Hello { .. } => HELLO,
            Frame::Auth { .. } => AUTH,
            Frame::Ready => READY,
            Frame::Error(_) => self.error_type,
        };
        let start = begin_frame(out, kind);
        match frame {
            Frame::Hello { flags, nonce } => {
                out.put_u8(VERSION);
                out.put_u8(*flags);
                out.put_slice(nonce);
            }
            Frame::Auth { mac } => out.put_slice(mac),
            Frame::Ready => {}
            Frame::Error(why) => {
                debug_assert!(why.len() <= MAX_PAYLOAD, "a refusal of {} bytes", why.len());
                out.put_slice(why.as_bytes());
            }
        }
        end_frame(out, start);
    }

    /// Takes one handshake frame off the front of `buf`: `Ok(None)` until a
    /// whole one is there. Never panics and never buffers past
    /// [`MAX_PAYLOAD`], whatever the bytes.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some(&kind) = buf.first() else { return Ok(None) };
        if !matches!(kind, HELLO | AUTH | READY) && kind != self.error_type {
            return Err(if (READY + 1..=self.last_type).contains(&kind) {
                WireError::Early(kind)
            } else {
                WireError::UnknownType { kind, protocol: self.name }
            });
        }
        match split_frame(buf, kind..=kind, MAX_PAYLOAD) {
            Ok(Some((kind, payload))) => self.parse(kind, payload).map(Some),
            Ok(None) => Ok(None),
            Err(frames::WireError::TooLarge(n)) => Err(WireError::TooLarge(n)),
            Err(frames::WireError::Malformed(what)) => Err(WireError::Malformed(what)),
            Err(frames::WireError::UnknownType(kind)) => Err(WireError::UnknownType { kind, protocol: self.name }),
        }
    }

    fn parse(&self, kind: u8, p: Bytes) -> Result<Frame, WireError> {
        Ok(match kind {
            HELLO => {
                if p.len() != 2 + NONCE || p[0] != VERSION {
                    return Err(WireError::Malformed("hello (another protocol version?)"));
                }
                let nonce = p[2..].try_into().map_err(|_| WireError::Malformed("hello"))?;
                Frame::Hello { flags: p[1], nonce }
            }
            AUTH => Frame::Auth { mac: p.as_ref().try_into().map_err(|_| WireError::Malformed("auth"))? },
            READY if p.is_empty() => Frame::Ready,
            READY => return Err(WireError::Malformed("ready")),
            _ => Frame::Error(String::from_utf8(p.to_vec()).map_err(|_| WireError::Malformed("error"))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::HEADER;
    use crate::services::{exec, files};
    use proptest::prelude::*;

    const EXEC: Protocol = exec::HANDSHAKE;
    const FILES: Protocol = files::HANDSHAKE;

    fn encoded(p: &Protocol, f: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.encode(f, &mut out);
        out.to_vec()
    }

    /// The bytes every sockit since the first exec and files has sent:
    /// pinned, so old and new clients and servers keep understanding each
    /// other. (The same literals passed against the encoders before the
    /// handshake had a codec of its own.)
    #[test]
    fn bytes_on_the_wire_are_pinned() {
        let nonce: [u8; 32] = std::array::from_fn(|i| i as u8);
        let hello = |flags| [&[1, 0, 0, 0, 34, 1, flags][..], &nonce].concat();
        let auth = [&[2, 0, 0, 0, 32][..], &[0xab; 32]].concat();
        assert_eq!(encoded(&EXEC, &Frame::Hello { flags: 3, nonce }), hello(3));
        assert_eq!(encoded(&FILES, &Frame::Hello { flags: 1, nonce }), hello(1));
        for p in [EXEC, FILES] {
            assert_eq!(encoded(&p, &Frame::Auth { mac: [0xab; 32] }), auth);
            assert_eq!(encoded(&p, &Frame::Ready), [3, 0, 0, 0, 0]);
        }
        assert_eq!(encoded(&EXEC, &Frame::Error("no".into())), [9, 0, 0, 0, 2, b'n', b'o']);
        assert_eq!(encoded(&FILES, &Frame::Error("no".into())), [14, 0, 0, 0, 2, b'n', b'o']);
        // The proofs too: the context strings are part of the protocol.
        assert_eq!(EXEC.context, b"sockit-exec-v1");
        assert_eq!(FILES.context, b"sockit-files-v1");
    }

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            Frame::Hello { flags: 0xff, nonce: [9; 32] },
            Frame::Auth { mac: [1; 32] },
            Frame::Ready,
            Frame::Error("no".into()),
        ];
        for p in [EXEC, FILES] {
            for f in &frames {
                let mut buf = BytesMut::from(&encoded(&p, f)[..]);
                assert_eq!(p.decode(&mut buf), Ok(Some(f.clone())));
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn truncated_frames_wait_and_take_nothing() {
        for f in [Frame::Hello { flags: 1, nonce: [9; 32] }, Frame::Auth { mac: [1; 32] }, Frame::Error("why".into())] {
            let whole = encoded(&EXEC, &f);
            for cut in 0..whole.len() {
                let mut part = BytesMut::from(&whole[..cut]);
                assert_eq!(EXEC.decode(&mut part), Ok(None), "{f:?} cut at {cut}");
                assert_eq!(part.len(), cut, "nothing consumed");
            }
        }
    }

    #[test]
    fn garbage_fails_cleanly() {
        let decode = |p: Protocol, bytes: &[u8]| p.decode(&mut BytesMut::from(bytes));
        assert_eq!(decode(EXEC, b"GET / HTTP/1.1\r\n"), Err(WireError::UnknownType { kind: b'G', protocol: "exec" }));
        assert!(decode(FILES, b"GET /").unwrap_err().to_string().contains("not a sockit files peer?"));
        assert_eq!(decode(EXEC, &[2, 0xff, 0xff, 0xff, 0xff]), Err(WireError::TooLarge(u32::MAX as usize)));
        assert_eq!(decode(EXEC, &[9, 0, 0, 0x10, 1]), Err(WireError::TooLarge(4097)));
        // A protocol's frame before Ready: known from its type byte alone.
        assert_eq!(decode(EXEC, &[4]), Err(WireError::Early(4)));
        assert_eq!(decode(FILES, &[9, 0, 0, 0, 0]), Err(WireError::Early(9)), "files' Skip");
        // Each protocol's Error type is its own.
        assert_eq!(decode(EXEC, &[14, 0, 0, 0, 0]), Err(WireError::UnknownType { kind: 14, protocol: "exec" }));
        assert_eq!(decode(FILES, &[14, 0, 0, 0, 0]), Ok(Some(Frame::Error(String::new()))));
        let mut v2 = encoded(&EXEC, &Frame::Hello { flags: 0, nonce: [0; 32] });
        v2[HEADER] = 2;
        assert_eq!(decode(EXEC, &v2), Err(WireError::Malformed("hello (another protocol version?)")));
        assert_eq!(decode(EXEC, &[1, 0, 0, 0, 1, 1]), Err(WireError::Malformed("hello (another protocol version?)")));
        assert_eq!(decode(EXEC, &[2, 0, 0, 0, 1, 1]), Err(WireError::Malformed("auth")));
        assert_eq!(decode(EXEC, &[3, 0, 0, 0, 1, 0]), Err(WireError::Malformed("ready")));
        assert_eq!(decode(EXEC, &[9, 0, 0, 0, 1, 0xff]), Err(WireError::Malformed("error")));
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u8>(), any::<[u8; 32]>()).prop_map(|(flags, nonce)| Frame::Hello { flags, nonce }),
            any::<[u8; 32]>().prop_map(|mac| Frame::Auth { mac }),
            Just(Frame::Ready),
            ".{0,40}".prop_map(Frame::Error),
        ]
    }

    fn protocol() -> impl Strategy<Value = Protocol> {
        prop_oneof![Just(EXEC), Just(FILES)]
    }

    proptest! {
        #[test]
        fn streams_of_frames_decode_in_any_split(p in protocol(), frames in proptest::collection::vec(frame(), 1..8), cut in any::<usize>()) {
            crate::frames::checks::decode_in_any_split_with(&frames, cut, |b| p.decode(b), |f, out| p.encode(f, out));
        }

        #[test]
        fn arbitrary_bytes_never_panic(p in protocol(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            crate::frames::checks::arbitrary_bytes_with(&bytes, MAX_PAYLOAD, |b| p.decode(b));
        }
    }
}
