//! The exec wire format: length-prefixed frames, pure encode and decode.
//!
//! ```text
//! frame   = type:u8  length:u32 (big-endian)  payload[length]     length ≤ MAX_FRAME
//! ```
//!
//! | type | name   | way | payload |
//! |------|--------|-----|---------|
//! | 1–3 | the handshake | | Hello (with [`FLAG_SHELL`] when shell lines are allowed), Auth, Ready: see [`crate::auth::wire`] |
//! | 4 | Run    | C→S | argc:u32, then argc × (length:u32, bytes): the argv, no shell |
//! | 5 | Shell  | C→S | a line for `/bin/sh -c` (only if the server allows) |
//! | 6 | Stdout | S→C | bytes the command wrote to its stdout |
//! | 7 | Stderr | S→C | bytes the command wrote to its stderr |
//! | 8 | Exit   | S→C | kind:u8 (0 exited, 1 killed by signal, 2 timed out, 3 not started), value:i32 (code, signal, or 126/127) |
//! | 9 | Error  | S→C | UTF-8 text: the request was refused, and why (the handshake refuses with it too) |
//! | 10 | Notice | S→C | UTF-8 text: something the user should know (output truncated) |
//!
//! A session: the handshake first (Hello; Auth when the token flag is set;
//! Ready, or Error and the server closes), with the context
//! `"sockit-exec-v1"`. Then any number of commands, one at a time: Run or
//! Shell, answered by Stdout/Stderr/Notice frames as output happens and one
//! Exit (an Error before it says why a command did not start). This module
//! decodes the frames after the handshake: types 1–3 are not among them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frames::Wire;
pub use crate::frames::WireError;

/// The largest payload a frame may carry: bounds what a peer can make the
/// other side buffer. Output is sent in smaller pieces.
pub const MAX_FRAME: usize = 1 << 20;

pub use crate::frames::HEADER;

/// Hello flag (beside the handshake's token flag): Shell frames are allowed.
pub const FLAG_SHELL: u8 = 2;

/// The first type byte of this protocol's own frames (1–3 are the
/// handshake's).
pub const FIRST_TYPE: u8 = 4;
/// The last type byte.
pub const LAST_TYPE: u8 = 10;
/// The type byte of Error, which the handshake refuses with too.
pub const ERROR_TYPE: u8 = 9;

/// The status of a command that could not start: refused (not allowed)
/// or not executable, as a shell says.
pub const CANNOT_EXECUTE: i32 = 126;
/// The status of a command that was not found, as a shell says.
pub const NOT_FOUND: i32 = 127;
/// The status of a command killed for running past the server's
/// `--timeout`, as `timeout(1)` says.
pub const TIMED_OUT: i32 = 124;
/// A command killed by signal N exits `SIGNALED + N`, as a shell says.
pub const SIGNALED: i32 = 128;

/// How a command ended. [`Exit::status`] is what `sockit exec` exits with:
/// the remote command's status passes through in place of
/// [`crate::error::ExitCode`]'s numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It ran past `--timeout`; its process group was killed.
    TimedOut,
    /// It never started: [`CANNOT_EXECUTE`] (refused, or cannot execute) or
    /// [`NOT_FOUND`], as a shell would say.
    NotStarted(i32),
}

impl Exit {
    /// The exit status a client process passes on, as a shell would:
    /// [`SIGNALED`] + signal, [`TIMED_OUT`] for a timeout (as `timeout(1)`
    /// does).
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) | Exit::NotStarted(c) => c,
            Exit::Signal(s) => SIGNALED + s,
            Exit::TimedOut => TIMED_OUT,
        }
    }
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Run a program: argv, no shell.
    Run(Vec<Vec<u8>>),
    /// Run a shell line.
    Shell(Vec<u8>),
    /// Standard output.
    Stdout(Bytes),
    /// Standard error.
    Stderr(Bytes),
    /// The command ended.
    Exit(Exit),
    /// A refusal.
    Error(String),
    /// Something to tell the user.
    Notice(String),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Run(_) => FIRST_TYPE,
            Frame::Shell(_) => 5,
            Frame::Stdout(_) => 6,
            Frame::Stderr(_) => 7,
            Frame::Exit(_) => 8,
            Frame::Error(_) => ERROR_TYPE,
            Frame::Notice(_) => LAST_TYPE,
        }
    }

    /// Appends the encoded frame to `out`. A payload over [`MAX_FRAME`] is
    /// the caller's bug; senders keep their pieces smaller.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = crate::frames::begin_frame(out, self.kind());
        match self {
            Frame::Run(argv) => {
                out.put_u32(argv.len() as u32);
                for arg in argv {
                    out.put_u32(arg.len() as u32);
                    out.put_slice(arg);
                }
            }
            Frame::Shell(b) => out.put_slice(b),
            Frame::Stdout(b) | Frame::Stderr(b) => out.put_slice(b),
            Frame::Exit(exit) => {
                let (kind, value) = match *exit {
                    Exit::Code(c) => (0, c),
                    Exit::Signal(s) => (1, s),
                    Exit::TimedOut => (2, 0),
                    Exit::NotStarted(c) => (3, c),
                };
                out.put_u8(kind);
                out.put_i32(value);
            }
            Frame::Error(t) | Frame::Notice(t) => out.put_slice(t.as_bytes()),
        }
        crate::frames::end_frame(out, start);
    }
}

/// Takes one frame off the front of `buf`: `Ok(None)` until a whole frame
/// is there. Never panics and never buffers past [`MAX_FRAME`], whatever
/// the bytes.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    match crate::frames::split_frame(buf, FIRST_TYPE..=LAST_TYPE, MAX_FRAME)? {
        Some((kind, payload)) => parse(kind, payload).map(Some),
        None => Ok(None),
    }
}

fn parse(kind: u8, mut p: Bytes) -> Result<Frame, WireError> {
    let text = |p: Bytes, name| String::from_utf8(p.to_vec()).map_err(|_| WireError::Malformed(name));
    Ok(match kind {
        4 => {
            let bad = WireError::Malformed("run");
            if p.remaining() < 4 {
                return Err(bad);
            }
            let argc = p.get_u32() as usize;
            // Each argument takes at least its 4-byte length: a count that
            // cannot fit is rejected before anything is allocated for it.
            if argc > p.remaining() / 4 {
                return Err(bad);
            }
            let mut argv = Vec::with_capacity(argc);
            for _ in 0..argc {
                if p.remaining() < 4 {
                    return Err(bad);
                }
                let n = p.get_u32() as usize;
                if n > p.remaining() {
                    return Err(bad);
                }
                argv.push(p.split_to(n).to_vec());
            }
            if p.has_remaining() {
                return Err(bad);
            }
            Frame::Run(argv)
        }
        5 => Frame::Shell(p.to_vec()),
        6 => Frame::Stdout(p),
        7 => Frame::Stderr(p),
        8 => {
            if p.len() != 5 {
                return Err(WireError::Malformed("exit"));
            }
            let (k, v) = (p.get_u8(), p.get_i32());
            Frame::Exit(match k {
                0 => Exit::Code(v),
                1 => Exit::Signal(v),
                2 if v == 0 => Exit::TimedOut,
                3 => Exit::NotStarted(v),
                _ => return Err(WireError::Malformed("exit")),
            })
        }
        9 => Frame::Error(text(p, "error")?),
        10 => Frame::Notice(text(p, "notice")?),
        _ => return Err(WireError::UnknownType(kind)),
    })
}

impl Wire for Frame {
    type Error = WireError;

    fn decode(buf: &mut BytesMut) -> Result<Option<Self>, WireError> {
        decode(buf)
    }

    fn encode(&self, out: &mut BytesMut) {
        Frame::encode(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(f: &Frame) -> Frame {
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        let got = decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        got
    }

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            Frame::Run(vec![b"ls".to_vec(), b"-l".to_vec(), vec![], vec![0xff, b';']]),
            Frame::Run(vec![]),
            Frame::Shell(b"echo hi; touch x".to_vec()),
            Frame::Stdout(Bytes::from_static(b"\x00\x01binary")),
            Frame::Stderr(Bytes::new()),
            Frame::Exit(Exit::Code(3)),
            Frame::Exit(Exit::Signal(9)),
            Frame::Exit(Exit::TimedOut),
            Frame::Exit(Exit::NotStarted(127)),
            Frame::Error("not allowed".into()),
            Frame::Notice("truncated".into()),
        ];
        for f in &frames {
            assert_eq!(&round_trip(f), f);
        }
    }

    #[test]
    fn partial_frames_wait_and_bad_ones_fail() {
        let mut whole = BytesMut::new();
        Frame::Shell(b"uptime".to_vec()).encode(&mut whole);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut part), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut, "nothing consumed");
        }
        let mut big = BytesMut::from(&[6u8, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(decode(&mut big), Err(WireError::TooLarge(u32::MAX as usize)));
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(decode(&mut http), Err(WireError::UnknownType(b'G'))));
        // argc claims more arguments than the payload can hold.
        let mut lying = BytesMut::from(&[4u8, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(decode(&mut lying), Err(WireError::Malformed("run")));
        // One encoding per frame: a timeout carries no value.
        let mut odd_exit = BytesMut::from(&[8u8, 0, 0, 0, 5, 2, 0, 0, 8, 7][..]);
        assert_eq!(decode(&mut odd_exit), Err(WireError::Malformed("exit")));
        let mut bad_utf8 = BytesMut::from(&[9u8, 0, 0, 0, 1, 0xff][..]);
        assert_eq!(decode(&mut bad_utf8), Err(WireError::Malformed("error")));
        // The handshake's frames are over once a command may come.
        let mut ready = BytesMut::from(&[3u8, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut ready), Err(WireError::UnknownType(3)));
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            proptest::collection::vec(bytes(), 0..8).prop_map(Frame::Run),
            bytes().prop_map(Frame::Shell),
            bytes().prop_map(|b| Frame::Stdout(b.into())),
            bytes().prop_map(|b| Frame::Stderr(b.into())),
            any::<i32>().prop_map(|c| Frame::Exit(Exit::Code(c))),
            any::<i32>().prop_map(|s| Frame::Exit(Exit::Signal(s))),
            any::<i32>().prop_map(|c| Frame::Exit(Exit::NotStarted(c))),
            Just(Frame::Exit(Exit::TimedOut)),
            ".{0,40}".prop_map(Frame::Error),
            ".{0,40}".prop_map(Frame::Notice),
        ]
    }

    proptest! {
        #[test]
        fn streams_of_frames_decode_in_any_split(frames in proptest::collection::vec(frame(), 1..8), cut in any::<usize>()) {
            crate::frames::checks::decode_in_any_split(&frames, cut);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            crate::frames::checks::arbitrary_bytes::<Frame>(&bytes, MAX_FRAME);
        }
    }
}
