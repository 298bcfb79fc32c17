//! Arbitrary bytes into the exec frame decoder (see round_trip.rs).
#![no_main]

#[path = "round_trip.rs"]
mod round_trip;

use libfuzzer_sys::fuzz_target;
use sockit::services::exec::wire::{Frame, HEADER, MAX_FRAME};

fuzz_target!(|data: &[u8]| round_trip::check::<Frame>(data, MAX_FRAME + HEADER));
