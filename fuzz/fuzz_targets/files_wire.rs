//! Arbitrary bytes into the files frame decoder (see round_trip.rs), and
//! every decoded path through the path rules.
#![no_main]

#[path = "round_trip.rs"]
mod round_trip;

use libfuzzer_sys::fuzz_target;
use sockit::services::files::wire::{self, Frame, HEADER, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    round_trip::check::<Frame>(data, MAX_FRAME + HEADER);
    if let Ok(parts) = wire::check_path(data) {
        assert!(parts.iter().all(|p| !p.is_empty() && *p != b".." && *p != b"." && !p.contains(&0)));
    }
});
