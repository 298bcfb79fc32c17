//! The files wire format: length-prefixed control frames, with file data
//! sent raw between them. Pure encode and decode, and the path rules.
//!
//! ```text
//! frame   = type:u8  length:u32 (big-endian)  payload[length]     length ≤ MAX_FRAME
//! meta    = mode:u32  mtime_secs:i64  mtime_nanos:u32
//! ```
//!
//! | type | name    | way | payload |
//! |------|---------|-----|---------|
//! | 1–3 | the handshake | | Hello, Auth, Ready: see [`crate::auth::wire`] |
//! | 4 | Dir     | C→S | meta, path |
//! | 5 | File    | C→S | size:u64, meta, flags:u8 (1 = store under a new name if taken), path |
//! | 6 | Send    | S→C | offset:u64: send the file's bytes from here (more than 0 resumes) |
//! | 7 | Exists  | S→C | BLAKE3 of the file of that name and size already there: 32 bytes |
//! | 8 | Proceed | C→S | empty: send it anyway (the server's policy decides) |
//! | 9 | Skip    | C→S | empty: do not send this file |
//! | 10 | Done   | C→S | BLAKE3 of the whole file: 32 bytes |
//! | 11 | Stored | S→C | the name it was stored under (differs when renamed) |
//! | 12 | Same   | S→C | empty: an identical file is already there |
//! | 13 | Refused | S→C | UTF-8 text: this entry was not stored, and why; then 0:u8, reason:u8 ([`Reason`]) |
//! | 14 | Error  | S→C | UTF-8 text: the session cannot go on, and why (the handshake refuses with it too) |
//! | 15 | End    | C→S | empty: nothing more to send |
//! | 16 | Bye    | S→C | empty: everything before End is answered |
//!
//! Refused's reason trails its text so that both sides tolerate the other
//! version: a payload without the `0, reason` tail (no message holds a NUL)
//! is [`Reason::Other`], an unknown reason byte reads as `Other`, and an
//! older sender prints the tail as two escaped control characters.
//!
//! Paths are relative, `/`-separated bytes ([`check_path`] says which are
//! allowed); mode is the Unix permission bits.
//!
//! A session: the handshake first (Hello, Auth when the token flag is set,
//! Ready or Error, as in exec), with the context `"sockit-files-v1"`; this
//! module decodes the frames after it, so types 1–3 are not among them.
//! Then entries, each answered by exactly one final frame (Stored,
//! Same or Refused), in order, so a sender may pipeline them:
//! - Dir: the server creates the directory; its mode and time are set at End.
//! - File of at most [`SMALL`] bytes: the sender sends File, the `size`
//!   bytes, then Done without waiting for anything.
//! - A bigger File: the sender waits for the server's first answer. Send:
//!   the bytes from `offset` to the end, then Done. Exists: Skip, or Proceed
//!   (answered like a File). Refused: nothing more.
//!
//! The server stores a file under its name only after the BLAKE3 it
//! computed over the whole file matches Done's. End is answered by Bye
//! after every entry is; then either side closes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frames::Wire;
pub use crate::frames::WireError;

/// The largest control frame: paths and messages fit well within it.
pub const MAX_FRAME: usize = 64 * 1024;
pub use crate::frames::HEADER;
/// The first type byte of this protocol's own frames (1–3 are the
/// handshake's).
pub const FIRST_TYPE: u8 = 4;
/// The last type byte.
pub const LAST_TYPE: u8 = 16;
/// The type byte of Error, which the handshake refuses with too.
pub const ERROR_TYPE: u8 = 14;
/// Files up to this size are sent without waiting for the server: they are
/// never resumed, and pipelining them is what makes many small files fast.
pub const SMALL: u64 = 1 << 20;
/// File flag: if the name is taken, store as `name (1).ext`.
pub const FLAG_RENAME: u8 = 1;
/// The longest path accepted, in bytes.
pub const MAX_PATH: usize = 4096;
/// The directory inside the receiving directory where partial files wait;
/// senders cannot write there.
pub const PARTIAL_DIR: &str = ".sockit-partial";

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Permissions and modification time of an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time: seconds since the epoch.
    pub mtime: i64,
    /// Modification time: nanoseconds, below 10⁹.
    pub mtime_ns: u32,
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A directory.
    Dir {
        /// Mode and time, set when the session ends.
        meta: Meta,
        /// Relative path.
        path: Vec<u8>,
    },
    /// A file follows (or will, once the server says from where).
    File {
        /// Its size in bytes.
        size: u64,
        /// Mode and time, set before it is stored.
        meta: Meta,
        /// [`FLAG_RENAME`].
        flags: u8,
        /// Relative path.
        path: Vec<u8>,
    },
    /// Send the bytes from this offset.
    Send(u64),
    /// A file of that name and size is there, with this hash.
    Exists(Hash),
    /// Send it anyway.
    Proceed,
    /// Do not send it.
    Skip,
    /// The file's bytes are all sent; this is their hash.
    Done(Hash),
    /// Stored under this name.
    Stored(Vec<u8>),
    /// An identical file is already there.
    Same,
    /// Not stored: the reason a sender may act on, and the words for people.
    Refused(Reason, String),
    /// The session ends, and why.
    Error(String),
    /// Nothing more to send.
    End,
    /// Everything is answered.
    Bye,
}

/// Why an entry was not stored, as a stable code on the wire: senders
/// branch on it, never on the words beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// Anything else (a path refused, a disk error): nothing to retry.
    #[default]
    Other = 0,
    /// The BLAKE3 computed by the server did not match Done's: nothing was
    /// stored; a resumed file may be sent again whole.
    Mismatch = 1,
    /// A different file of that name is there (no `--rename`, no
    /// `--overwrite`).
    Taken = 2,
}

impl Reason {
    /// The reason of a code byte; unknown codes (a newer peer) are
    /// [`Reason::Other`].
    pub fn from_code(code: u8) -> Reason {
        match code {
            1 => Reason::Mismatch,
            2 => Reason::Taken,
            _ => Reason::Other,
        }
    }
}

impl Frame {
    /// A refusal without a reason a sender could act on.
    pub fn refused(why: impl Into<String>) -> Frame {
        Frame::Refused(Reason::Other, why.into())
    }
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Dir { .. } => FIRST_TYPE,
            Frame::File { .. } => 5,
            Frame::Send(_) => 6,
            Frame::Exists(_) => 7,
            Frame::Proceed => 8,
            Frame::Skip => 9,
            Frame::Done(_) => 10,
            Frame::Stored(_) => 11,
            Frame::Same => 12,
            Frame::Refused(..) => 13,
            Frame::Error(_) => ERROR_TYPE,
            Frame::End => 15,
            Frame::Bye => LAST_TYPE,
        }
    }

    /// Appends the encoded frame to `out`. A payload over [`MAX_FRAME`]
    /// (a path over [`MAX_PATH`], a huge message) is the caller's bug.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = crate::frames::begin_frame(out, self.kind());
        let meta = |out: &mut BytesMut, m: &Meta| {
            out.put_u32(m.mode);
            out.put_i64(m.mtime);
            out.put_u32(m.mtime_ns);
        };
        match self {
            Frame::Exists(h) | Frame::Done(h) => out.put_slice(h),
            Frame::Proceed | Frame::Skip | Frame::Same | Frame::End | Frame::Bye => {}
            Frame::Dir { meta: m, path } => {
                meta(out, m);
                out.put_slice(path);
            }
            Frame::File { size, meta: m, flags, path } => {
                out.put_u64(*size);
                meta(out, m);
                out.put_u8(*flags);
                out.put_slice(path);
            }
            Frame::Send(offset) => out.put_u64(*offset),
            Frame::Stored(name) => out.put_slice(name),
            Frame::Refused(reason, t) => {
                out.put_slice(t.as_bytes());
                out.put_slice(&[0, *reason as u8]);
            }
            Frame::Error(t) => out.put_slice(t.as_bytes()),
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

const META: usize = 16;

fn parse(kind: u8, mut p: Bytes) -> Result<Frame, WireError> {
    let text = |p: Bytes, name| String::from_utf8(p.to_vec()).map_err(|_| WireError::Malformed(name));
    let hash =
        |p: &Bytes, name| -> Result<Hash, WireError> { p.as_ref().try_into().map_err(|_| WireError::Malformed(name)) };
    let empty = |p: &Bytes, f: Frame, name| if p.is_empty() { Ok(f) } else { Err(WireError::Malformed(name)) };
    let meta = |p: &mut Bytes| {
        let (mode, mtime, mtime_ns) = (p.get_u32(), p.get_i64(), p.get_u32());
        (mtime_ns < 1_000_000_000).then_some(Meta { mode, mtime, mtime_ns })
    };
    Ok(match kind {
        4 => {
            if p.len() < META {
                return Err(WireError::Malformed("dir"));
            }
            let meta = meta(&mut p).ok_or(WireError::Malformed("dir"))?;
            Frame::Dir { meta, path: p.to_vec() }
        }
        5 => {
            if p.len() < 8 + META + 1 {
                return Err(WireError::Malformed("file"));
            }
            let size = p.get_u64();
            let meta = meta(&mut p).ok_or(WireError::Malformed("file"))?;
            let flags = p.get_u8();
            Frame::File { size, meta, flags, path: p.to_vec() }
        }
        6 if p.len() == 8 => Frame::Send(p.get_u64()),
        6 => return Err(WireError::Malformed("send")),
        7 => Frame::Exists(hash(&p, "exists")?),
        8 => empty(&p, Frame::Proceed, "proceed")?,
        9 => empty(&p, Frame::Skip, "skip")?,
        10 => Frame::Done(hash(&p, "done")?),
        11 => Frame::Stored(p.to_vec()),
        12 => empty(&p, Frame::Same, "same")?,
        13 => match p.len().checked_sub(2) {
            Some(at) if p[at] == 0 => {
                let reason = Reason::from_code(p[at + 1]);
                Frame::Refused(reason, text(p.slice(..at), "refused")?)
            }
            // An older server: the words only.
            _ => Frame::refused(text(p, "refused")?),
        },
        14 => Frame::Error(text(p, "error")?),
        15 => empty(&p, Frame::End, "end")?,
        16 => empty(&p, Frame::Bye, "bye")?,
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

/// Why a path is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty.
    #[error("empty path")]
    Empty,
    /// Over [`MAX_PATH`] bytes, or a part over 255.
    #[error("path too long")]
    TooLong,
    /// Starts with `/`.
    #[error("absolute path: paths must be relative to the receiving directory")]
    Absolute,
    /// Contains a NUL byte.
    #[error("NUL byte in the name")]
    Nul,
    /// A `..` part.
    #[error("'..' in the path: it would leave the receiving directory")]
    Parent,
    /// An empty or `.` part (`a//b`, `./a`).
    #[error("empty or '.' part in the path")]
    Dot,
    /// Starts with [`PARTIAL_DIR`].
    #[error("{PARTIAL_DIR} is the server's own directory")]
    Reserved,
}

/// The parts of a relative path, if the receiver may write there: not
/// empty, not absolute, no NUL, no `..`, `.` or empty part, not inside
/// [`PARTIAL_DIR`], at most [`MAX_PATH`] bytes and 255 per part.
/// (Symlinks on the way are the receiver's check: they need the disk.)
pub fn check_path(path: &[u8]) -> Result<Vec<&[u8]>, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if path[0] == b'/' {
        return Err(PathError::Absolute);
    }
    if path.contains(&0) {
        return Err(PathError::Nul);
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    for part in &parts {
        match *part {
            b".." => return Err(PathError::Parent),
            b"" | b"." => return Err(PathError::Dot),
            p if p.len() > 255 => return Err(PathError::TooLong),
            _ => {}
        }
    }
    if parts[0] == PARTIAL_DIR.as_bytes() {
        return Err(PathError::Reserved);
    }
    Ok(parts)
}

/// `name (n).ext` for the n-th free name instead of `name.ext`.
pub fn numbered(name: &[u8], n: u32) -> Vec<u8> {
    let dot = name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
    let (stem, ext) = name.split_at(dot.unwrap_or(name.len()));
    let mut out = stem.to_vec();
    out.extend_from_slice(format!(" ({n})").as_bytes());
    out.extend_from_slice(ext);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_frame_round_trips() {
        let meta = Meta { mode: 0o644, mtime: -5, mtime_ns: 999_999_999 };
        let frames = [
            Frame::Dir { meta, path: b"a/b".to_vec() },
            Frame::File { size: u64::MAX, meta, flags: FLAG_RENAME, path: b"a/b/c.txt".to_vec() },
            Frame::Send(12345),
            Frame::Exists([3; 32]),
            Frame::Proceed,
            Frame::Skip,
            Frame::Done([4; 32]),
            Frame::Stored(b"c (1).txt".to_vec()),
            Frame::Same,
            Frame::Refused(Reason::Taken, "exists".into()),
            Frame::Refused(Reason::Mismatch, String::new()),
            Frame::refused("disk"),
            Frame::Error("disk full".into()),
            Frame::End,
            Frame::Bye,
        ];
        for f in &frames {
            let mut buf = BytesMut::new();
            f.encode(&mut buf);
            assert_eq!(decode(&mut buf).unwrap().as_ref(), Some(f));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refusals_carry_their_reason_in_two_trailing_bytes() {
        let mut buf = BytesMut::new();
        Frame::Refused(Reason::Mismatch, "x".into()).encode(&mut buf);
        assert_eq!(&buf[..], &[13, 0, 0, 0, 3, b'x', 0, 1]);
        // An older server's refusal: words only.
        let mut old = BytesMut::from(&[13u8, 0, 0, 0, 2, b'n', b'o'][..]);
        assert_eq!(decode(&mut old), Ok(Some(Frame::refused("no"))));
        let mut empty = BytesMut::from(&[13u8, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut empty), Ok(Some(Frame::refused(""))));
        // A newer server's reason this sender does not know.
        let mut newer = BytesMut::from(&[13u8, 0, 0, 0, 3, b'x', 0, 99][..]);
        assert_eq!(decode(&mut newer), Ok(Some(Frame::refused("x"))));
    }

    #[test]
    fn bad_frames_fail_cleanly() {
        let mut big = BytesMut::from(&[13u8, 0, 1, 0, 1][..]);
        assert_eq!(decode(&mut big), Err(WireError::TooLarge(65537)));
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(decode(&mut http), Err(WireError::UnknownType(b'G'))));
        let mut short_file = BytesMut::from(&[5u8, 0, 0, 0, 3, 1, 2, 3][..]);
        assert_eq!(decode(&mut short_file), Err(WireError::Malformed("file")));
        let mut bad_nanos = BytesMut::new();
        Frame::Dir { meta: Meta { mode: 0, mtime: 0, mtime_ns: 0 }, path: b"d".to_vec() }.encode(&mut bad_nanos);
        bad_nanos[HEADER + 12..HEADER + 16].copy_from_slice(&2_000_000_000u32.to_be_bytes());
        assert_eq!(decode(&mut bad_nanos), Err(WireError::Malformed("dir")));
        let mut end_with_payload = BytesMut::from(&[15u8, 0, 0, 0, 1, 0][..]);
        assert_eq!(decode(&mut end_with_payload), Err(WireError::Malformed("end")));
        // The handshake's frames are over once entries may come.
        let mut ready = BytesMut::from(&[3u8, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut ready), Err(WireError::UnknownType(3)));
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(check_path(b"a/b.txt").unwrap(), [&b"a"[..], b"b.txt"]);
        assert_eq!(check_path(b"..."), Ok(vec![&b"..."[..]]));
        assert_eq!(check_path(b""), Err(PathError::Empty));
        assert_eq!(check_path(b"/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(check_path(b"../x"), Err(PathError::Parent));
        assert_eq!(check_path(b"a/../../x"), Err(PathError::Parent));
        assert_eq!(check_path(b"a//b"), Err(PathError::Dot));
        assert_eq!(check_path(b"./a"), Err(PathError::Dot));
        assert_eq!(check_path(b"a/"), Err(PathError::Dot));
        assert_eq!(check_path(b"a\0b"), Err(PathError::Nul));
        assert_eq!(check_path(b".sockit-partial/x"), Err(PathError::Reserved));
        assert_eq!(check_path(&[b'a'; 256]), Err(PathError::TooLong));
        assert_eq!(check_path(&b"a/".repeat(3000)), Err(PathError::TooLong));
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(numbered(b"report.pdf", 1), b"report (1).pdf");
        assert_eq!(numbered(b"archive.tar.gz", 2), b"archive.tar (2).gz");
        assert_eq!(numbered(b"README", 3), b"README (3)");
        assert_eq!(numbered(b".bashrc", 1), b".bashrc (1)");
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
        let meta = (any::<u32>(), any::<i64>(), 0u32..1_000_000_000).prop_map(|(mode, mtime, mtime_ns)| Meta {
            mode,
            mtime,
            mtime_ns,
        });
        prop_oneof![
            (meta.clone(), bytes()).prop_map(|(meta, path)| Frame::Dir { meta, path }),
            (any::<u64>(), meta, any::<u8>(), bytes()).prop_map(|(size, meta, flags, path)| Frame::File {
                size,
                meta,
                flags,
                path
            }),
            any::<u64>().prop_map(Frame::Send),
            any::<[u8; 32]>().prop_map(Frame::Exists),
            Just(Frame::Proceed),
            Just(Frame::Skip),
            any::<[u8; 32]>().prop_map(Frame::Done),
            bytes().prop_map(Frame::Stored),
            Just(Frame::Same),
            (prop_oneof![Just(Reason::Other), Just(Reason::Mismatch), Just(Reason::Taken)], ".{0,40}")
                .prop_map(|(r, t)| Frame::Refused(r, t)),
            ".{0,40}".prop_map(Frame::Error),
            Just(Frame::End),
            Just(Frame::Bye),
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

        #[test]
        fn checked_paths_have_no_way_out(path in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), Just(b'a'), Just(0u8)], 0..12)) {
            if let Ok(parts) = check_path(&path) {
                for p in parts {
                    prop_assert!(!p.is_empty() && p != b"." && p != b".." && !p.contains(&0) && !p.contains(&b'/'));
                }
            }
        }
    }
}
