//! Reversible branch-target transforms for executable code (xz's BCJ filters, Courgette's idea in
//! small): a relative call or branch is rewritten to the absolute target it points at. When new code
//! is inserted, every call across the insertion changes its relative offset, each by a different
//! amount; its absolute target changes the same way for every call to the same function, which a
//! diff and LZMA2 store far more cheaply. It does not always pay (it made some Rust and C++ deltas
//! larger when applied blindly), so [`super::create`] measures and keeps the smaller delta.
//!
//! The transform works on fixed blocks of [`BLOCK`] bytes from the start of each executable range,
//! an instruction never crossing a block end, so any offset of a base can be transformed by reading
//! one block: applying a delta seeks in the base, and holds one block, whatever the image size.
//!
//! - x86 and x86-64: `call rel32` (E8) and `jmp rel32` (E9) with a near displacement, as xz's x86
//!   filter (the rules are in `block`).
//! - AArch64: `bl imm26`. 32-bit Arm: `bl imm24`.
//!
//! Executable ranges come from the ELF section headers (executable sections of at least one block).

use std::io::{self, Read, Seek, SeekFrom};

/// Transform block: the unit a base is transformed in, and the most a device buffers for it.
pub const BLOCK: u64 = 64 * 1024;
/// Most transformed ranges a delta may name per image.
pub const MAX_RANGES: usize = 16;

/// The instruction set of a transformed range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86,
    Arm64,
    Arm32,
}

impl Arch {
    pub(super) fn code(self) -> u8 {
        match self {
            Self::X86 => 1,
            Self::Arm64 => 2,
            Self::Arm32 => 3,
        }
    }
    pub(super) fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::X86),
            2 => Some(Self::Arm64),
            3 => Some(Self::Arm32),
            _ => None,
        }
    }
}

/// A transformed range of an image: file offsets `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub arch: Arch,
    pub start: u64,
    pub len: u64,
}

impl Range {
    fn end(&self) -> u64 {
        self.start + self.len
    }
    /// The block holding `pos` (inside the range): its start and end.
    fn block_of(&self, pos: u64) -> (u64, u64) {
        let b = self.start + (pos - self.start) / BLOCK * BLOCK;
        (b, (b + BLOCK).min(self.end()))
    }
}

/// The executable sections of an ELF image worth transforming, in file order; empty for anything
/// else (a disk image, a script, an unknown machine).
pub fn exec_ranges(data: &[u8]) -> Vec<Range> {
    use object::{Architecture, Object, ObjectSection, SectionKind};
    let Ok(file) = object::File::parse(data) else {
        return vec![];
    };
    if !matches!(file, object::File::Elf32(_) | object::File::Elf64(_)) {
        return vec![];
    }
    let arch = match file.architecture() {
        Architecture::X86_64 | Architecture::X86_64_X32 | Architecture::I386 => Arch::X86,
        Architecture::Aarch64 => Arch::Arm64,
        Architecture::Arm => Arch::Arm32,
        _ => return vec![],
    };
    let mut out: Vec<Range> = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .filter_map(|s| s.file_range())
        .filter(|(off, len)| *len >= BLOCK && off.saturating_add(*len) <= data.len() as u64)
        .map(|(start, len)| Range { arch, start, len })
        .collect();
    out.sort_by_key(|r| r.start);
    out.dedup_by(|b, a| b.start < a.end()); // drop overlaps (malformed headers)
    out.truncate(MAX_RANGES);
    out
}

/// Checks that ranges are sorted, disjoint and do not overflow.
pub(super) fn valid(ranges: &[Range]) -> bool {
    ranges.len() <= MAX_RANGES
        && ranges.iter().all(|r| r.start.checked_add(r.len).is_some())
        && ranges.windows(2).all(|w| w[0].end() <= w[1].start)
}

/// Transforms (`encode`) or restores one block in place; `at` is the file offset of `buf[0]`.
fn block(arch: Arch, buf: &mut [u8], at: u64, encode: bool) {
    match arch {
        Arch::X86 => {
            // An E8/E9 is converted when its displacement's top byte is 00 or FF (a near target;
            // most E8/E9 bytes that are not opcodes fail this) and no unconverted E8/E9 lies in the
            // three bytes before it. A conversion rewrites the four bytes after its opcode, keeps
            // their top byte 00 or FF (the target is sign-extended from 25 bits), and the scan skips
            // them; the second rule keeps a conversion from rewriting the top byte that an earlier,
            // unconverted candidate was judged on. So restoring makes the same choices.
            let mut i = 0;
            let mut unconverted: Option<usize> = None;
            while i + 5 <= buf.len() {
                if !matches!(buf[i], 0xE8 | 0xE9) {
                    i += 1;
                    continue;
                }
                let blocked = unconverted.is_some_and(|p| i - p <= 3);
                if blocked || !matches!(buf[i + 4], 0x00 | 0xFF) {
                    unconverted = Some(i);
                    i += 1;
                    continue;
                }
                let mut w = [0u8; 4];
                w.copy_from_slice(&buf[i + 1..i + 5]);
                let v = u32::from_le_bytes(w);
                let pc = (at + i as u64 + 5) as u32;
                let t = if encode {
                    v.wrapping_add(pc)
                } else {
                    v.wrapping_sub(pc)
                };
                let t = (((t << 7) as i32) >> 7) as u32;
                buf[i + 1..i + 5].copy_from_slice(&t.to_le_bytes());
                i += 5;
            }
        }
        Arch::Arm64 | Arch::Arm32 => {
            let (opmask, op, immmask, pc_off) = match arch {
                Arch::Arm64 => (0xFC00_0000u32, 0x9400_0000u32, 0x03FF_FFFFu32, 0u64),
                _ => (0xFF00_0000, 0xEB00_0000, 0x00FF_FFFF, 8),
            };
            let skip = ((4 - at % 4) % 4) as usize;
            let mut i = skip;
            while i + 4 <= buf.len() {
                let mut w = [0u8; 4];
                w.copy_from_slice(&buf[i..i + 4]);
                let v = u32::from_le_bytes(w);
                if v & opmask == op {
                    let pc = ((at + i as u64 + pc_off) / 4) as u32;
                    let imm = v & immmask;
                    let t = if encode {
                        imm.wrapping_add(pc)
                    } else {
                        imm.wrapping_sub(pc)
                    } & immmask;
                    buf[i..i + 4].copy_from_slice(&((v & !immmask) | t).to_le_bytes());
                }
                i += 4;
            }
        }
    }
}

/// The range holding `pos`, if any.
fn range_at(ranges: &[Range], pos: u64) -> Option<Range> {
    ranges
        .iter()
        .find(|r| r.start <= pos && pos < r.end())
        .copied()
}

/// Where the next range after `pos` starts (`u64::MAX`: none).
fn next_start(ranges: &[Range], pos: u64) -> u64 {
    ranges
        .iter()
        .map(|r| r.start)
        .find(|s| *s > pos)
        .unwrap_or(u64::MAX)
}

/// Transforms every range of an image held in memory (what creating a delta diffs).
pub fn encode_all(data: &mut [u8], ranges: &[Range]) {
    for r in ranges {
        let mut b = r.start;
        while b < r.end() {
            let e = (b + BLOCK).min(r.end());
            block(r.arch, &mut data[b as usize..e as usize], b, true);
            b = e;
        }
    }
}

/// Copies of a base and a target, each transformed over its ranges (what a transformed diff reads).
pub fn encode_pair(base: &[u8], target: &[u8], rb: &[Range], rt: &[Range]) -> (Vec<u8>, Vec<u8>) {
    let (mut tb, mut tt) = (base.to_vec(), target.to_vec());
    encode_all(&mut tb, rb);
    encode_all(&mut tt, rt);
    (tb, tt)
}

/// A base image as the delta saw it: its ranges transformed, one block at a time, as it is read.
#[derive(Debug)]
pub struct BaseView<B> {
    inner: B,
    ranges: Vec<Range>,
    pos: u64,
    /// Where `inner` is, when known: a read that follows on needs no seek (which would empty a
    /// buffered reader).
    inner_pos: Option<u64>,
    cache: Vec<u8>,
    cached: Option<u64>,
}

impl<B: Read + Seek> BaseView<B> {
    pub fn new(inner: B, ranges: Vec<Range>) -> Self {
        Self {
            inner,
            ranges,
            pos: 0,
            inner_pos: None,
            cache: Vec::new(),
            cached: None,
        }
    }
}

impl<B: Read + Seek> Read for BaseView<B> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let pos = self.pos;
        let inside = range_at(&self.ranges, pos);
        let n = match inside {
            Some(r) => {
                let (b, e) = r.block_of(pos);
                if self.cached != Some(b) {
                    self.cached = None;
                    self.cache.resize((e - b) as usize, 0);
                    self.inner_pos = None;
                    self.inner.seek(SeekFrom::Start(b))?;
                    self.inner.read_exact(&mut self.cache).map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                "malformed delta: a transformed range runs past the end of the base",
                            )
                        } else {
                            e
                        }
                    })?;
                    self.inner_pos = Some(e);
                    block(r.arch, &mut self.cache, b, true);
                    self.cached = Some(b);
                }
                let from = (pos - b) as usize;
                let n = out.len().min(self.cache.len() - from);
                out[..n].copy_from_slice(&self.cache[from..from + n]);
                n
            }
            None => {
                let next = next_start(&self.ranges, pos);
                let want = (out.len() as u64).min(next - pos) as usize;
                match self.inner_pos {
                    Some(at) if at == pos => {}
                    // Relative where the inner position is known: a buffered reader keeps its
                    // buffer for a seek within it. An absolute seek empties it, and a delta's
                    // controls seek often and not far: each refilled 256 KiB, for a few hundred
                    // bytes read (`docs/deltas.md`, "Applying faster").
                    Some(at) => {
                        self.inner_pos = None;
                        self.inner.seek_relative(pos.wrapping_sub(at) as i64)?;
                    }
                    None => self.inner.seek(SeekFrom::Start(pos)).map(drop)?,
                }
                let n = self.inner.read(&mut out[..want])?;
                self.inner_pos = Some(pos + n as u64);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl<B: Read + Seek> Seek for BaseView<B> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the base",
            )
        };
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(bad)?,
            SeekFrom::End(d) => {
                let len = self.inner.seek(SeekFrom::End(0))?;
                self.inner_pos = Some(len);
                len.checked_add_signed(d).ok_or_else(bad)?
            }
        };
        Ok(self.pos)
    }
}

/// The new image restored from its transformed form as it streams out of the delta: output is
/// buffered one block at a time inside a range, and passed through outside.
#[derive(Debug)]
pub struct Restore<R> {
    inner: R,
    ranges: Vec<Range>,
    buf: Vec<u8>,
    at: usize,
    /// File offset of `buf[0]`.
    start: u64,
}

impl<R: Read> Restore<R> {
    pub fn new(inner: R, ranges: Vec<Range>) -> Self {
        Self {
            inner,
            ranges,
            buf: Vec::new(),
            at: 0,
            start: 0,
        }
    }
}

impl<R: Read> Read for Restore<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            let pos = self.start + self.buf.len() as u64;
            let inside = range_at(&self.ranges, pos);
            let end = match inside {
                Some(r) => r.block_of(pos).1,
                None => next_start(&self.ranges, pos).min(pos + BLOCK),
            };
            self.buf.resize((end - pos) as usize, 0);
            let mut got = 0;
            while got < self.buf.len() {
                let n = self.inner.read(&mut self.buf[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            self.buf.truncate(got);
            if let Some(r) = inside {
                block(r.arch, &mut self.buf, pos, false);
            }
            self.start = pos;
            self.at = 0;
            if got == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    /// Code-like bytes: many E8/E9 and BL opcodes with near displacements, between random bytes.
    fn code(len: usize, seed: u64) -> Vec<u8> {
        let mut d = testkit::bytes(len, seed);
        for i in (0..len.saturating_sub(8)).step_by(23) {
            d[i] = 0xE8;
            d[i + 4] = if i % 2 == 0 { 0x00 } else { 0xFF };
        }
        for i in (0..len.saturating_sub(8)).step_by(36) {
            d[i + 3] = 0x94;
        }
        d
    }

    #[test]
    fn every_arch_round_trips_at_any_offset() {
        for arch in [Arch::X86, Arch::Arm64, Arch::Arm32] {
            let data = code(300_001, 7);
            let ranges = vec![
                Range {
                    arch,
                    start: 1_001,
                    len: 150_000,
                },
                Range {
                    arch,
                    start: 200_003,
                    len: 99_998,
                },
            ];
            let mut enc = data.clone();
            encode_all(&mut enc, &ranges);
            assert_ne!(enc, data, "{arch:?}: the transform changed nothing");
            // The base view yields the transformed image from any offset.
            let mut v = BaseView::new(io::Cursor::new(data.clone()), ranges.clone());
            for at in [0u64, 1_000, 1_001, 66_537, 151_000, 200_002, 300_000] {
                v.seek(SeekFrom::Start(at)).expect("seek");
                let mut got = vec![0u8; 70_000.min(data.len() - at as usize)];
                v.read_exact(&mut got).expect("read");
                assert_eq!(
                    got,
                    enc[at as usize..at as usize + got.len()],
                    "{arch:?} at {at}"
                );
            }
            // A range past the end of the base is an error, not a short image.
            let mut past = BaseView::new(
                io::Cursor::new(data[..150_000].to_vec()),
                vec![Range {
                    arch,
                    start: 100_000,
                    len: 100_000,
                }],
            );
            past.seek(SeekFrom::Start(120_000)).expect("seek");
            let e = past.read(&mut [0u8; 10]).expect_err("past the end");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            // Restoring the transformed stream gives the original back, whatever the read sizes.
            let mut r = Restore::new(io::Cursor::new(enc.clone()), ranges);
            let mut back = Vec::new();
            let mut piece = vec![0u8; 7_777];
            loop {
                let n = r.read(&mut piece).expect("restore");
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&piece[..n]);
            }
            assert_eq!(back, data, "{arch:?}");
        }
    }

    /// A delta's controls seek back and forth a little at a time: through a buffered base, the
    /// view seeks relatively (keeping the buffer) and must still read the right bytes, in and out
    /// of transformed ranges, whichever way it moves.
    #[test]
    fn short_seeks_through_a_buffered_base_read_the_right_bytes() {
        let data = code(100_003, 11);
        let ranges = vec![Range {
            arch: Arch::X86,
            start: 40_000,
            len: 20_000,
        }];
        let mut enc = data.clone();
        encode_all(&mut enc, &ranges);
        let inner = io::BufReader::with_capacity(4_096, io::Cursor::new(data.clone()));
        let mut v = BaseView::new(inner, ranges);
        let mut rng = crate::testkit::Rng::new(5);
        let mut pos = 0i64;
        for _ in 0..5_000 {
            let step = rng.below(18_000) as i64 - 9_000;
            pos = (pos + step).clamp(0, data.len() as i64 - 1);
            let at = v.stream_position().expect("position") as i64;
            v.seek_relative(pos - at).expect("seek");
            let n = (1 + rng.below(600) as usize).min(data.len() - pos as usize);
            let mut got = vec![0u8; n];
            v.read_exact(&mut got).expect("read");
            assert_eq!(got, enc[pos as usize..pos as usize + n], "at {pos}");
            pos += n as i64;
        }
    }

    #[test]
    fn non_elf_and_garbage_have_no_ranges() {
        assert!(exec_ranges(&testkit::bytes(100_000, 3)).is_empty());
        let mut fake = b"\x7fELF\x02\x01\x01".to_vec();
        fake.extend_from_slice(&testkit::bytes(10_000, 4));
        assert!(exec_ranges(&fake).is_empty());
    }
}
