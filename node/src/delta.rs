//! Binary deltas: a bsdiff-style suffix-array diff (the `bidiff` format, version 1) compressed with
//! zstd, applied as a stream.
//!
//! A delta artifact's bytes are `zstd(bidiff patch)`. The patch is a sequence of
//! (add length, add bytes, copy length, seek) controls: "add" bytes are added byte-wise to the base at
//! the current base position, "copy" bytes are literal, then the base position moves. Applying needs
//! the base as `Read + Seek` (the device's active slot) and holds only fixed buffers, whatever the
//! image size: the zstd window (written at 8 MiB, at most 2^[`MAX_WINDOW_LOG`] bytes accepted) and a
//! few hundred KiB of buffers. Creating it holds
//! both images and the base's suffix array in memory (about 6 bytes per base byte plus the target);
//! that happens on the device maker's build machine.
//!
//! The device checks the base's BLAKE3 against the delta's signed base before it writes anything,
//! refuses output longer than the signed target length, and checks the written image's hash.

use std::io::{self, Read, Seek, Write};

use crate::hash::Hash;

/// Largest zstd window a device accepts when decoding (16 MiB): bounds decoder memory.
pub const MAX_WINDOW_LOG: u32 = 24;
/// The window deltas are written with (8 MiB). A patch is mostly runs of small differences and literal
/// bytes, which compress locally; a larger window bought little and cost devices memory.
pub const WINDOW_LOG: u32 = 23;

/// Creating or applying a delta failed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("delta is for base {expected}, but the base image hashes to {actual}")]
    WrongBase { expected: Hash, actual: Hash },
    #[error("delta output is longer than the signed target length {limit}")]
    TooLong { limit: u64 },
    #[error("delta is malformed: {0}")]
    Malformed(String),
    #[error("delta I/O: {0}")]
    Io(#[from] io::Error),
}

/// Creates a delta from `base` to `target` (both in memory), zstd level `level`.
pub fn create(base: &[u8], target: &[u8], level: i32, out: impl Write) -> io::Result<()> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    enc.include_checksum(false)?;
    // Patches of large images have long-range structure; keep the window within what devices accept.
    enc.window_log(WINDOW_LOG.min(zstd_window_for(target.len() as u64)))?;
    // More partitions sort faster in parallel but cost a little size; one keeps the patch smallest.
    let params = bidiff::DiffParams::new(1, None).map_err(|e| io::Error::other(e.to_string()))?;
    bidiff::simple_diff_with_params(base, target, &mut enc, &params)?;
    enc.finish()?.flush()
}

fn zstd_window_for(len: u64) -> u32 {
    // Smallest window covering the stream, at least 1 MiB.
    (64 - len.max(1 << 20).leading_zeros()).clamp(20, WINDOW_LOG)
}

/// Hashes `len` bytes of a base from the start, then rewinds it.
pub fn check_base<B: Read + Seek>(
    base: &mut B,
    len: u64,
    expected: &Hash,
) -> Result<(), DeltaError> {
    base.rewind()?;
    let (actual, n) = crate::hash::hash_reader(base.by_ref().take(len))?;
    base.rewind()?;
    if actual != *expected || n != len {
        return Err(DeltaError::WrongBase {
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

/// A reader of the new image: applies `delta` (zstd-compressed patch) to `base`.
/// It yields at most `limit + 1` bytes, so a hostile patch cannot produce endless output.
pub fn apply<'a, D: Read + 'a, B: Read + Seek + 'a>(
    delta: D,
    base: B,
    limit: u64,
) -> Result<impl Read + 'a, DeltaError> {
    let mut dec = zstd::stream::read::Decoder::new(delta)?;
    dec.window_log_max(MAX_WINDOW_LOG)?;
    let patch =
        bipatch::Reader::new(dec, base).map_err(|e| DeltaError::Malformed(format!("{e:?}")))?;
    Ok(patch.take(limit.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn round_trip_and_wrong_base() {
        let base = testkit::bytes(300_000, 1);
        let mut target = base.clone();
        target[1000..1100].copy_from_slice(&testkit::bytes(100, 2));
        target.extend_from_slice(&testkit::bytes(5000, 3));
        let mut d = Vec::new();
        create(&base, &target, 19, &mut d).expect("create");
        assert!(d.len() < 10_000, "delta {} bytes", d.len());
        let mut out = Vec::new();
        apply(&d[..], io::Cursor::new(&base), target.len() as u64)
            .expect("apply")
            .read_to_end(&mut out)
            .expect("read");
        assert_eq!(out, target);
        let mut wrong = io::Cursor::new(testkit::bytes(300_000, 9));
        assert!(matches!(
            check_base(&mut wrong, 300_000, &Hash::of(&base)),
            Err(DeltaError::WrongBase { .. })
        ));
        let mut right = io::Cursor::new(base.clone());
        check_base(&mut right, base.len() as u64, &Hash::of(&base)).expect("right base");
        // Garbage is refused, not applied.
        assert!(apply(&b"not a delta"[..], io::Cursor::new(&base), 10).is_err());
    }
}
