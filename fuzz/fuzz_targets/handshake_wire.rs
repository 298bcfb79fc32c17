//! Arbitrary bytes into the handshake decoder (see round_trip.rs), as exec
//! and as files speak it: their Error frames have different types.
#![no_main]

#[path = "round_trip.rs"]
mod round_trip;

use libfuzzer_sys::fuzz_target;
use sockit::auth::wire::MAX_PAYLOAD;
use sockit::frames::HEADER;
use sockit::services::{exec, files};

fuzz_target!(|data: &[u8]| {
    for p in [exec::HANDSHAKE, files::HANDSHAKE] {
        round_trip::check_with(data, MAX_PAYLOAD + HEADER, |b| p.decode(b), |f, out| p.encode(f, out));
    }
});
