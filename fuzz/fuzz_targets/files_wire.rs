//! Arbitrary bytes into the files frame decoder (see round_trip.rs), and
//! every decoded path through the path rules.
//!
//! Refused is the one frame that decodes more than one way of writing it
//! (no reason tail from an older server, a reason code from a newer one):
//! such a frame must encode to the canonical bytes, which decode back to
//! the same frame; every other frame must encode back byte for byte.
#![no_main]

#[path = "round_trip.rs"]
mod round_trip;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sockit::services::files::wire::{self, Frame, HEADER, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    round_trip::check_with(
        data,
        MAX_FRAME + HEADER,
        |buf: &mut BytesMut| {
            let before = buf.clone();
            let frame = wire::decode(buf)?;
            Ok::<_, wire::WireError>(frame.map(|f| (f, before[..before.len() - buf.len()].to_vec())))
        },
        |(frame, raw): &(Frame, Vec<u8>), out: &mut BytesMut| {
            let mut canonical = BytesMut::new();
            frame.encode(&mut canonical);
            if matches!(frame, Frame::Refused(..)) && canonical[..] != raw[..] {
                assert_eq!(wire::decode(&mut canonical).ok().flatten().as_ref(), Some(frame), "{raw:?}");
                out.extend_from_slice(raw);
            } else {
                out.extend_from_slice(&canonical);
            }
        },
    );
    if let Ok(parts) = wire::check_path(data) {
        assert!(parts.iter().all(|p| !p.is_empty() && *p != b".." && *p != b"." && !p.contains(&0)));
    }
});
