//! Binary deltas: a bsdiff-style suffix-array diff (matches found by the `bidiff` crate), written as
//! three separately compressed streams, applied as a stream in bounded memory.
//!
//! Format 1 (`docs/formats.md`): `"WSD1"`, then three little-endian u64 lengths, then three zstd
//! streams: the controls (per control: LEB128 add length, LEB128 copy length, zigzag-LEB128 seek), the
//! add bytes (new minus base, byte-wise, where the base matches approximately), and the copy bytes
//! (literal new bytes). Applying starts at base offset 0; for each control it adds `add` bytes to the
//! base, emits `copy` literal bytes, then moves the base position by `seek`. Keeping the three kinds of
//! data apart is what lets each compress well (bsdiff does the same with bzip2).
//!
//! Applying needs the base as `Read + Seek` (the device's committed slot) and holds three zstd windows
//! (written at 8 MiB each, at most 2^[`MAX_WINDOW_LOG`] accepted) and fixed buffers, whatever the
//! image size. Creating holds both images and the base's suffix array in memory (about 6.7 bytes per
//! base byte); that happens on the device maker's build machine.
//!
//! The device checks the base's BLAKE3 against the delta's signed base before it writes anything,
//! refuses output longer than the signed target length, and checks the written image's hash.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::hash::Hash;

/// Largest zstd window a device accepts when decoding (16 MiB per stream): bounds decoder memory.
pub const MAX_WINDOW_LOG: u32 = 24;
/// The window deltas are written with (8 MiB).
pub const WINDOW_LOG: u32 = 23;
/// zstd level of each stream in published deltas.
pub const LEVEL: i32 = 19;
/// The format's magic bytes.
pub const MAGIC: &[u8; 4] = b"WSD1";
const HEADER: u64 = 4 + 3 * 8;

/// Creating or applying a delta failed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("delta is for base {expected}, but the base image hashes to {actual}")]
    WrongBase { expected: Hash, actual: Hash },
    #[error("delta is malformed: {0}")]
    Malformed(String),
    #[error("delta I/O: {0}")]
    Io(io::Error),
}

// By hand, not `#[from]`: the message already prints the cause, so it is not also a `source()`.
impl From<io::Error> for DeltaError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(r: &mut impl Read) -> io::Result<Option<u64>> {
    let mut v = 0u64;
    for i in 0..10 {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated varint",
                ))
            };
        }
        v |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "varint longer than 10 bytes",
    ))
}

fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    enc.include_checksum(false)?;
    enc.window_log(WINDOW_LOG)?;
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.write_all(data)?;
    enc.finish()
}

/// Creates a delta from `base` to `target` (both in memory), each stream at zstd level `level`.
pub fn create(base: &[u8], target: &[u8], level: i32, mut out: impl Write) -> io::Result<()> {
    let (mut ctrl, mut adds, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    {
        let mut t = bidiff::Translator::new(base, target, |c: &bidiff::Control<'_>| {
            put_varint(&mut ctrl, c.add.len() as u64);
            put_varint(&mut ctrl, c.copy.len() as u64);
            put_varint(&mut ctrl, ((c.seek << 1) ^ (c.seek >> 63)) as u64);
            adds.extend_from_slice(c.add);
            copies.extend_from_slice(c.copy);
            Ok::<(), io::Error>(())
        });
        // One partition keeps the patch smallest (more partitions sort in parallel, slightly worse).
        let params =
            bidiff::DiffParams::new(1, None).map_err(|e| io::Error::other(e.to_string()))?;
        bidiff::diff(base, target, &params, |m| t.translate(m))?;
        t.close()?;
    }
    let sections = [
        compress(&ctrl, level)?,
        compress(&adds, level)?,
        compress(&copies, level)?,
    ];
    out.write_all(MAGIC)?;
    for s in &sections {
        out.write_all(&(s.len() as u64).to_le_bytes())?;
    }
    for s in &sections {
        out.write_all(s)?;
    }
    out.flush()
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

type Section<R> = zstd::stream::read::Decoder<'static, io::BufReader<io::Take<R>>>;

fn section<R: Read + Seek>(mut r: R, at: u64, len: u64) -> Result<Section<R>, DeltaError> {
    r.seek(SeekFrom::Start(at))?;
    let mut d = zstd::stream::read::Decoder::new(r.take(len))?;
    d.window_log_max(MAX_WINDOW_LOG)?;
    Ok(d)
}

enum State {
    Control,
    Add(u64, u64, i64),
    Copy(u64, i64),
    Done,
}

/// The new image, read from a delta applied to a base.
pub struct Apply<R: Read + Seek, B: Read + Seek> {
    ctrl: Section<R>,
    adds: Section<R>,
    copies: Section<R>,
    base: B,
    state: State,
    tmp: Vec<u8>,
    produced: u64,
    limit: u64,
}

impl<R: Read + Seek, B: Read + Seek> std::fmt::Debug for Apply<R, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apply")
            .field("produced", &self.produced)
            .finish()
    }
}

/// Applies a delta to `base`. `open` opens the delta (called three times: one reader per stream).
/// Reading yields the new image; more than `limit` bytes is an error (a hostile delta cannot produce
/// endless output).
pub fn apply<R: Read + Seek, B: Read + Seek>(
    mut open: impl FnMut() -> io::Result<R>,
    base: B,
    limit: u64,
) -> Result<Apply<R, B>, DeltaError> {
    let mut head = [0u8; HEADER as usize];
    open()?
        .read_exact(&mut head)
        .map_err(|e| DeltaError::Malformed(format!("header: {e}")))?;
    if &head[..4] != MAGIC {
        return Err(DeltaError::Malformed(
            "not a wardswarm delta (bad magic)".into(),
        ));
    }
    let len =
        |i: usize| u64::from_le_bytes(head[4 + 8 * i..12 + 8 * i].try_into().unwrap_or([0; 8]));
    let (a, b, c) = (len(0), len(1), len(2));
    let at_b = HEADER.checked_add(a);
    let at_c = at_b.and_then(|x| x.checked_add(b));
    let (Some(at_b), Some(at_c)) = (at_b, at_c) else {
        return Err(DeltaError::Malformed("section lengths overflow".into()));
    };
    Ok(Apply {
        ctrl: section(open()?, HEADER, a)?,
        adds: section(open()?, at_b, b)?,
        copies: section(open()?, at_c, c)?,
        base,
        state: State::Control,
        tmp: vec![0u8; 64 * 1024],
        produced: 0,
        limit,
    })
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed delta: {what}"),
    )
}

impl<R: Read + Seek, B: Read + Seek> Read for Apply<R, B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if buf.is_empty() {
                return Ok(0);
            }
            match self.state {
                State::Done => return Ok(0),
                State::Control => {
                    let Some(add) = get_varint(&mut self.ctrl)? else {
                        self.state = State::Done;
                        continue;
                    };
                    let copy = get_varint(&mut self.ctrl)?
                        .ok_or_else(|| malformed("truncated control"))?;
                    let z = get_varint(&mut self.ctrl)?
                        .ok_or_else(|| malformed("truncated control"))?;
                    let seek = ((z >> 1) as i64) ^ -((z & 1) as i64);
                    self.state = State::Add(add, copy, seek);
                }
                State::Add(0, copy, seek) => self.state = State::Copy(copy, seek),
                State::Add(rem, copy, seek) => {
                    let n = (rem.min(buf.len() as u64) as usize).min(self.tmp.len());
                    self.base.read_exact(&mut buf[..n])?;
                    self.adds
                        .read_exact(&mut self.tmp[..n])
                        .map_err(|_| malformed("add stream too short"))?;
                    for (o, d) in buf[..n].iter_mut().zip(&self.tmp[..n]) {
                        *o = o.wrapping_add(*d);
                    }
                    self.state = State::Add(rem - n as u64, copy, seek);
                    return self.produced(n);
                }
                State::Copy(0, seek) => {
                    self.base.seek(SeekFrom::Current(seek))?;
                    self.state = State::Control;
                }
                State::Copy(rem, seek) => {
                    let n = rem.min(buf.len() as u64) as usize;
                    self.copies
                        .read_exact(&mut buf[..n])
                        .map_err(|_| malformed("copy stream too short"))?;
                    self.state = State::Copy(rem - n as u64, seek);
                    return self.produced(n);
                }
            }
        }
    }
}

impl<R: Read + Seek, B: Read + Seek> Apply<R, B> {
    fn produced(&mut self, n: usize) -> io::Result<usize> {
        self.produced += n as u64;
        if self.produced > self.limit {
            return Err(malformed(&format!(
                "output longer than {} bytes",
                self.limit
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn run(d: &[u8], base: &[u8], limit: u64) -> Result<Vec<u8>, DeltaError> {
        let mut out = Vec::new();
        apply(|| Ok(io::Cursor::new(d)), io::Cursor::new(base), limit)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_wrong_base_and_hostile_input() {
        let base = testkit::bytes(300_000, 1);
        let mut target = base.clone();
        target[1000..1100].copy_from_slice(&testkit::bytes(100, 2));
        target.extend_from_slice(&testkit::bytes(5000, 3));
        let mut d = Vec::new();
        create(&base, &target, 19, &mut d).expect("create");
        assert!(d.len() < 10_000, "delta {} bytes", d.len());
        assert_eq!(run(&d, &base, target.len() as u64).expect("apply"), target);
        // Identical and empty inputs.
        let mut same = Vec::new();
        create(&base, &base, 19, &mut same).expect("create");
        assert_eq!(run(&same, &base, base.len() as u64).expect("apply"), base);
        let mut empty = Vec::new();
        create(&base, &[], 19, &mut empty).expect("create");
        assert!(run(&empty, &base, 0).expect("apply").is_empty());

        let mut wrong = io::Cursor::new(testkit::bytes(300_000, 9));
        assert!(matches!(
            check_base(&mut wrong, 300_000, &Hash::of(&base)),
            Err(DeltaError::WrongBase { .. })
        ));
        let mut right = io::Cursor::new(base.clone());
        check_base(&mut right, base.len() as u64, &Hash::of(&base)).expect("right base");

        // Garbage, truncation and an output limit are errors, never silent.
        assert!(run(b"not a delta at all, not at all", &base, 10).is_err());
        assert!(run(&d[..d.len() - 7], &base, target.len() as u64).is_err());
        assert!(run(&d, &base, target.len() as u64 - 1).is_err());
    }
}
