//! Feeds arbitrary bytes to the exec frame decoder, in arbitrary pieces:
//! it must never panic, never buffer past one frame, and whatever it
//! decodes must encode back to the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sockit::services::exec::wire::{self, HEADER, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the input is split into two reads.
    let (cut, rest) = match data.split_first() {
        Some((c, rest)) => ((*c as usize).min(rest.len()), rest),
        None => return,
    };
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for piece in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match wire::decode(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    let mut again = BytesMut::new();
                    frame.encode(&mut again);
                    assert_eq!(&again[..], &rest[consumed..consumed + used], "{frame:?}");
                    consumed += used;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= MAX_FRAME + HEADER);
    }
});
