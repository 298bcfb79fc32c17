//! What every frame decoder must do with arbitrary bytes, in arbitrary
//! pieces: never panic, never buffer past one frame, and whatever it
//! decodes must encode back to the same bytes.

use bytes::BytesMut;
use sockit::frames::Wire;

/// Checks the wire format `F` on `data` (see [`check_with`]).
#[allow(dead_code)] // the handshake and files targets use check_with only
pub fn check<F: Wire + std::fmt::Debug>(data: &[u8], max_buffered: usize) {
    check_with(data, max_buffered, F::decode, F::encode);
}

/// Checks the codec `decode`/`encode` on `data`; the first byte picks
/// where the input is split into two reads. `max_buffered` is a header
/// plus the largest frame.
pub fn check_with<F: std::fmt::Debug, E>(
    data: &[u8],
    max_buffered: usize,
    decode: impl Fn(&mut BytesMut) -> Result<Option<F>, E>,
    encode: impl Fn(&F, &mut BytesMut),
) {
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
            match decode(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    let mut again = BytesMut::new();
                    encode(&frame, &mut again);
                    assert_eq!(&again[..], &rest[consumed..consumed + used], "{frame:?}");
                    consumed += used;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= max_buffered);
    }
}
