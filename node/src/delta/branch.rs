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
//! - Since 2026-12-07 (instruction sets 4 to 6, written where `Methods::operands` allows): x86-64
//!   code's RIP-relative operands too ([`x86_64_block`]), AArch64 code's `adrp` pages too
//!   ([`arm64_adrp_block`]), and Thumb-2 `bl` for 32-bit Arm code that is mostly Thumb
//!   ([`thumb_block`]). A rebuilt executable's data references move as its calls do.
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
    /// x86-64 code with its RIP-relative operands made absolute too ([`x86_64_block`]).
    X86_64,
    Arm64,
    /// AArch64 code with its `adrp` page addresses made absolute too ([`arm64_adrp_block`]).
    Arm64Adrp,
    /// 32-bit Arm code in the Thumb-2 instruction set: `bl` ([`thumb_block`]).
    Thumb,
    Arm32,
}

impl Arch {
    pub(super) fn code(self) -> u8 {
        match self {
            Self::X86 => 1,
            Self::Arm64 => 2,
            Self::Arm32 => 3,
            Self::X86_64 => 4,
            Self::Arm64Adrp => 5,
            Self::Thumb => 6,
        }
    }
    pub(super) fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::X86),
            2 => Some(Self::Arm64),
            3 => Some(Self::Arm32),
            4 => Some(Self::X86_64),
            5 => Some(Self::Arm64Adrp),
            6 => Some(Self::Thumb),
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
    /// How far (in bytes, either way) a field of [`Arch::X86_64`] may point to be converted: the
    /// smallest power of two at least twice the range's end, from 16 to 256 MiB. Code refers to
    /// data past its own end (read-only data, then writable data), about as far again as the code
    /// reaches into the file: a fixed 16 MiB, as xz's filter has, left most of the references of
    /// a 30 MB executable's first half unconverted. Farther than needed converts more bytes that
    /// only look like instructions.
    fn reach(&self) -> u64 {
        // Saturating: a hostile delta's range may end anywhere below 2^64.
        self.end()
            .saturating_mul(2)
            .checked_next_power_of_two()
            .unwrap_or(u64::MAX)
            .clamp(1 << 24, 1 << 28)
    }
    /// The block holding `pos` (inside the range): its start and end.
    fn block_of(&self, pos: u64) -> (u64, u64) {
        let b = self.start + (pos - self.start) / BLOCK * BLOCK;
        (b, (b + BLOCK).min(self.end()))
    }
}

/// The executable sections of an ELF image worth transforming, in file order; empty for anything
/// else (a disk image, a script, an unknown machine). With `operands` (agents from 2026-12-07,
/// `Methods::operands`), x86-64 and AArch64 code also has its data references made absolute
/// ([`Arch::X86_64`], [`Arch::Arm64Adrp`]), and 32-bit Arm code that is mostly Thumb-2 (what
/// Debian's armhf compilers emit; Rust's armv7 targets emit Arm) has its Thumb calls made absolute
/// ([`Arch::Thumb`]); without, only x86 and Arm calls and AArch64 branches.
pub fn exec_ranges(data: &[u8], operands: bool) -> Vec<Range> {
    use object::{Architecture, Object, ObjectSection, SectionKind};
    let Ok(file) = object::File::parse(data) else {
        return vec![];
    };
    if !matches!(file, object::File::Elf32(_) | object::File::Elf64(_)) {
        return vec![];
    }
    let arch = match file.architecture() {
        Architecture::X86_64 | Architecture::X86_64_X32 if operands => Arch::X86_64,
        Architecture::X86_64 | Architecture::X86_64_X32 | Architecture::I386 => Arch::X86,
        Architecture::Aarch64 if operands => Arch::Arm64Adrp,
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
    if operands && arch == Arch::Arm32 {
        // One instruction set for the whole image, so that base and target agree: the one whose
        // calls are more common.
        let (mut arm, mut thumb) = (0usize, 0usize);
        for r in &out {
            let code = &data[r.start as usize..r.end() as usize];
            arm += code.chunks_exact(4).filter(|w| w[3] == 0xEB).count();
            thumb += (0..code.len().saturating_sub(3))
                .step_by(2)
                .filter(|&i| code[i + 1] & 0xF8 == 0xF0 && code[i + 3] & 0xF8 == 0xF8)
                .count();
        }
        if thumb > arm {
            for r in &mut out {
                r.arch = Arch::Thumb;
            }
        }
    }
    out
}

/// Checks that ranges are sorted, disjoint and do not overflow.
pub(super) fn valid(ranges: &[Range]) -> bool {
    ranges.len() <= MAX_RANGES
        && ranges.iter().all(|r| r.start.checked_add(r.len).is_some())
        && ranges.windows(2).all(|w| w[0].end() <= w[1].start)
}

/// Transforms (`encode`) or restores one block in place; `at` is the file offset of `buf[0]`.
fn block(arch: Arch, reach: u64, buf: &mut [u8], at: u64, encode: bool) {
    scan(
        arch,
        reach,
        buf,
        at,
        encode,
        Scan::start(arch, at),
        usize::MAX,
    );
}

/// Where a scan of one block stands: the next position it looks at, and what the candidates before
/// it left (positions in the scanned buffer). Every rule decides at a position from the bytes at
/// and after it, which no earlier conversion has rewritten (each skips past the field it
/// rewrites), and from this state: so a scan resumed from a state makes the same choices as the
/// scan that reached it, and part of a block can be transformed without the rest
/// ([`BaseView`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scan {
    i: usize,
    /// x86-64: no conversion may rewrite a byte before this.
    protect: usize,
    /// x86: the last candidate left unconverted.
    unconverted: Option<usize>,
}

impl Scan {
    /// A scan from the start of a block at file offset `at` (word rules start at the first whole
    /// word).
    fn start(arch: Arch, at: u64) -> Self {
        let i = match arch {
            Arch::X86 | Arch::X86_64 => 0,
            Arch::Thumb => ((2 - at % 2) % 2) as usize,
            Arch::Arm64 | Arch::Arm64Adrp | Arch::Arm32 => ((4 - at % 4) % 4) as usize,
        };
        Self {
            i,
            ..Self::default()
        }
    }

    /// The same state for a buffer holding the block from position `w` on. `w` is at most 8
    /// bytes before `i`: what lies further back (a protection that ended, a candidate more than
    /// three bytes before) no longer matters.
    fn shifted(self, w: usize) -> Self {
        Self {
            i: self.i - w,
            protect: self.protect.saturating_sub(w),
            unconverted: self.unconverted.and_then(|u| u.checked_sub(w)),
        }
    }
}

/// Transforms or restores `buf` (file offset `at`) from scan state `s` on, deciding at every
/// position before `stop` (and up to the buffer's end); returns the state at the first position
/// at or after `stop`.
fn scan(
    arch: Arch,
    reach: u64,
    buf: &mut [u8],
    at: u64,
    encode: bool,
    s: Scan,
    stop: usize,
) -> Scan {
    match arch {
        Arch::X86_64 => x86_64_block(buf, reach, at, encode, s, stop),
        Arch::Thumb => thumb_block(buf, at, encode, s, stop),
        Arch::Arm64Adrp => {
            // Disjoint words (`bl` and `adrp` opcodes differ and conversions keep them): in either
            // order, and each from the same state.
            scan(Arch::Arm64, reach, buf, at, encode, s, stop);
            arm64_adrp_block(buf, at, encode, s, stop)
        }
        Arch::X86 => {
            // An E8/E9 is converted when its displacement's top byte is 00 or FF (a near target;
            // most E8/E9 bytes that are not opcodes fail this) and no unconverted E8/E9 lies in the
            // three bytes before it. A conversion rewrites the four bytes after its opcode, keeps
            // their top byte 00 or FF (the target is sign-extended from 25 bits), and the scan skips
            // them; the second rule keeps a conversion from rewriting the top byte that an earlier,
            // unconverted candidate was judged on. So restoring makes the same choices.
            let mut i = s.i;
            let mut unconverted = s.unconverted;
            while i < stop && i + 5 <= buf.len() {
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
                rebase(buf, i + 1, at, 7, encode);
                i += 5;
            }
            Scan {
                i,
                unconverted,
                ..s
            }
        }
        Arch::Arm64 | Arch::Arm32 => {
            let (opmask, op, immmask, pc_off) = match arch {
                Arch::Arm64 => (0xFC00_0000u32, 0x9400_0000u32, 0x03FF_FFFFu32, 0u64),
                _ => (0xFF00_0000, 0xEB00_0000, 0x00FF_FFFF, 8),
            };
            let mut i = s.i;
            while i < stop && i + 4 <= buf.len() {
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
            Scan { i, ..s }
        }
    }
}

/// Makes the 32-bit little-endian field at `field` absolute against the position just past it
/// (`encode`) or relative again, sign-extended from `32 - sh` bits; `at` is the file offset of
/// `buf[0]`. The x86 rules' one conversion.
fn rebase(buf: &mut [u8], field: usize, at: u64, sh: u32, encode: bool) {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[field..field + 4]);
    let v = u32::from_le_bytes(w);
    let pc = (at + field as u64 + 4) as u32;
    let t = if encode {
        v.wrapping_add(pc)
    } else {
        v.wrapping_sub(pc)
    };
    let t = (((t << sh) as i32) >> sh) as u32;
    buf[field..field + 4].copy_from_slice(&t.to_le_bytes());
}

/// The last opcode byte of the instructions whose memory operand [`x86_64_block`] converts where
/// it is RIP-relative: the byte before the ModRM byte.
const RIP_OPCODES: [bool; 256] = {
    let mut t = [false; 256];
    let ops: &[u8] = &[
        // ALU r/m forms, MOVSXD, IMUL, TEST, XCHG, MOV, LEA, group 1/3/5, MOV r/m imm.
        0x01, 0x03, 0x09, 0x0B, 0x11, 0x13, 0x19, 0x1B, 0x21, 0x23, 0x29, 0x2B, 0x31, 0x33, 0x39,
        0x3B, 0x63, 0x69, 0x6B, 0x80, 0x81, 0x83, 0x84, 0x85, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D,
        0xC6, 0xC7, 0xF6, 0xF7, 0xFF,
        // Two-byte (0F xx) SSE loads and stores, compares, logic and arithmetic; MOVZX, MOVSX.
        0x10, 0x12, 0x16, 0x28, 0x2E, 0x2F, 0x54, 0x57, 0x58, 0x59, 0x5C, 0x5E, 0x6F, 0x7F, 0xB6,
        0xB7, 0xBE, 0xBF, 0xD6, 0xDB, 0xEB, 0xEF, 0xFE, 0x74,
    ];
    let mut i = 0;
    while i < ops.len() {
        t[ops[i] as usize] = true;
        i += 1;
    }
    t
};

/// Transforms or restores one block of x86-64 code: `call`/`jmp rel32` as [`block`]'s x86 rule,
/// and the 32-bit displacement of a RIP-relative memory operand (ModRM `mod=00 rm=101` after one
/// of [`RIP_OPCODES`]): a `lea`, `mov` or SSE load of a constant changes its displacement wherever
/// code moved, and its absolute target only where the data did.
///
/// The displacement is made absolute against the position just past it (an instruction with an
/// immediate after it is off by the immediate's length, the same for every instance, which is all
/// a diff needs). Either rule converts only a field whose top byte is 00 or FF and keeps it so
/// (sign-extended from 25 bits). A candidate left unconverted protects the bytes it was judged on:
/// no later conversion may rewrite them, so restoring, which sees later fields still converted,
/// judges every candidate on the same bytes and makes the same choices.
fn x86_64_block(buf: &mut [u8], reach: u64, at: u64, encode: bool, s: Scan, stop: usize) -> Scan {
    let mut i = s.i;
    // No conversion may rewrite a byte before `protect`.
    let mut protect = s.protect;
    // Fields in [-reach, reach) are converted, and kept there.
    let sh = 31 - reach.trailing_zeros();
    let near = |buf: &[u8], field: usize| {
        let v =
            u32::from_le_bytes([buf[field], buf[field + 1], buf[field + 2], buf[field + 3]]) as i32;
        (v << sh) >> sh == v
    };
    while i < stop && i + 5 <= buf.len() {
        let (field, len) = match buf[i] {
            0xE8 | 0xE9 => (i + 1, 5),
            op if RIP_OPCODES[op as usize] && i + 6 <= buf.len() && buf[i + 1] & 0xC7 == 0x05 => {
                (i + 2, 6)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        if field >= protect && near(buf, field) {
            rebase(buf, field, at, sh, encode);
            i += len;
        } else {
            protect = protect.max(field + 4);
            i += 1;
        }
    }
    Scan { i, protect, ..s }
}

/// Transforms or restores the `adrp` instructions of one block of AArch64 code (after or before
/// [`block`]'s `bl` rule, which touches other words): `adrp` loads the 4 KiB page of an address
/// relative to its own page, so it changes wherever code moved and the data did not. Its page
/// offset is made absolute where it is within 2^17 pages (512 MiB) either way, and the result
/// wrapped into that range, so restoring converts the same words.
fn arm64_adrp_block(buf: &mut [u8], at: u64, encode: bool, s: Scan, stop: usize) -> Scan {
    let mut i = s.i;
    while i < stop && i + 4 <= buf.len() {
        let mut w = [0u8; 4];
        w.copy_from_slice(&buf[i..i + 4]);
        let v = u32::from_le_bytes(w);
        i += 4;
        if v & 0x9F00_0000 != 0x9000_0000 {
            continue;
        }
        // imm21 = immhi (bits 5..24) : immlo (bits 29..31).
        let imm = ((v >> 3) & 0x001F_FFFC) | ((v >> 29) & 3);
        // Within ±2^17 pages: the top four bits of the 21 are all equal.
        let top = imm >> 17;
        if top != 0 && top != 0xF {
            continue;
        }
        let page = ((at + i as u64 - 4) >> 12) as u32;
        let t = if encode {
            imm.wrapping_add(page)
        } else {
            imm.wrapping_sub(page)
        };
        // Sign-extend from 18 bits into the 21-bit field.
        let t = ((((t << 14) as i32) >> 14) as u32) & 0x001F_FFFF;
        let v = (v & 0x9F00_001F) | ((t & 3) << 29) | ((t & 0x001F_FFFC) << 3);
        buf[i - 4..i].copy_from_slice(&v.to_le_bytes());
    }
    Scan { i, ..s }
}

/// Transforms or restores the `bl` calls of one block of Thumb-2 code, as xz's ARM-Thumb filter
/// does: a `bl` is two halfwords, `11110 S imm10` then `11 J1 1 J2 imm11`; for a call within
/// ±4 MiB J1 and J2 are 1, and S:imm10:imm11 is the halfword offset from the instruction's end.
/// That offset is made absolute (wrapped to its 22 bits); the bits a candidate is judged on (the
/// top five of each halfword) are never rewritten, so restoring makes the same choices.
fn thumb_block(buf: &mut [u8], at: u64, encode: bool, s: Scan, stop: usize) -> Scan {
    let mut i = s.i;
    while i < stop && i + 4 <= buf.len() {
        if buf[i + 1] & 0xF8 != 0xF0 || buf[i + 3] & 0xF8 != 0xF8 {
            i += 2;
            continue;
        }
        let v = (u32::from(buf[i + 1] & 7) << 19)
            | (u32::from(buf[i]) << 11)
            | (u32::from(buf[i + 3] & 7) << 8)
            | u32::from(buf[i + 2]);
        let pc = ((at + i as u64 + 4) / 2) as u32;
        let t = if encode {
            v.wrapping_add(pc)
        } else {
            v.wrapping_sub(pc)
        } & 0x003F_FFFF;
        buf[i + 1] = (buf[i + 1] & 0xF8) | ((t >> 19) & 7) as u8;
        buf[i] = (t >> 11) as u8;
        buf[i + 3] = (buf[i + 3] & 0xF8) | ((t >> 8) & 7) as u8;
        buf[i + 2] = t as u8;
        i += 4;
    }
    Scan { i, ..s }
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
            block(
                r.arch,
                r.reach(),
                &mut data[b as usize..e as usize],
                b,
                true,
            );
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

/// A base image as the delta saw it: its ranges transformed as it is read.
///
/// A delta's controls read the base a few hundred bytes at a time and seek between reads, often
/// to another block: transforming the whole block for each read took more than half of applying
/// an x86-64 executable's delta (biome: 66,375 block transforms of 319 distinct blocks). So a
/// block is transformed whole once, at its first read, keeping the scan's state at every
/// [`SUB`] bytes; later reads transform only the sub-block they read, resumed from its state
/// ([`Scan`]), and the last [`SUBS_KEPT`] sub-blocks are kept.
#[derive(Debug)]
pub struct BaseView<B> {
    inner: B,
    ranges: Vec<Range>,
    pos: u64,
    /// Where `inner` is, when known: a read that follows on needs no seek (which would empty a
    /// buffered reader).
    inner_pos: Option<u64>,
    /// Per block read (by its file offset): the scan's state at each sub-block.
    states: std::collections::HashMap<u64, Vec<Scan>>,
    /// Transformed sub-blocks by file offset, the most recently used last.
    kept: Vec<(u64, Vec<u8>)>,
    /// Scratch for a block or a sub-block's window.
    scratch: Vec<u8>,
}

/// A base's blocks are transformed again this many bytes at a time (see [`BaseView`]).
const SUB: u64 = 4096;
/// Transformed sub-blocks a [`BaseView`] keeps.
const SUBS_KEPT: usize = 8;
/// Blocks whose scan states a [`BaseView`] keeps (at most 1 MiB, for 128 MiB of code): past it
/// they are forgotten, and a block read again is transformed whole again.
const BLOCKS_KEPT: usize = 2048;

impl<B: Read + Seek> BaseView<B> {
    pub fn new(inner: B, ranges: Vec<Range>) -> Self {
        Self {
            inner,
            ranges,
            pos: 0,
            inner_pos: None,
            states: std::collections::HashMap::new(),
            kept: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Moves the base to `to`. Relative where its position is known: a buffered reader keeps its
    /// buffer for a seek within it. An absolute seek empties it, and a delta's controls seek often
    /// and not far: each refilled 256 KiB, for a few hundred bytes read (`docs/deltas.md`,
    /// "Applying faster").
    fn seek_inner(&mut self, to: u64) -> io::Result<()> {
        match self.inner_pos {
            Some(at) if at == to => {}
            Some(at) => {
                self.inner_pos = None;
                self.inner.seek_relative(to.wrapping_sub(at) as i64)?;
            }
            None => self.inner.seek(SeekFrom::Start(to)).map(drop)?,
        }
        Ok(())
    }

    /// Reads the base's own bytes `[from, to)` into `scratch`.
    fn read_original(&mut self, from: u64, to: u64) -> io::Result<()> {
        self.scratch.resize((to - from) as usize, 0);
        self.seek_inner(from)?;
        self.inner.read_exact(&mut self.scratch).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed delta: a transformed range runs past the end of the base",
                )
            } else {
                e
            }
        })?;
        self.inner_pos = Some(to);
        Ok(())
    }

    /// The transformed sub-block at file offset `sb` of range `r`'s block `[b, e)`.
    fn sub_block(&mut self, r: Range, b: u64, e: u64, sb: u64) -> io::Result<Vec<u8>> {
        let k = ((sb - b) / SUB) as usize;
        let len = (e - b) as usize;
        let (from, to) = ((k as u64 * SUB) as usize, ((sb + SUB).min(e) - b) as usize);
        if let Some(states) = self.states.get(&b) {
            // From the state this sub-block's scan starts in: its window begins up to 8 bytes
            // before that position and ends 8 bytes past the sub-block (no rule looks further
            // ahead than 6), or at the block's end.
            let s = states[k];
            let w = s.i.saturating_sub(8).min(from);
            let end = (to + 8).min(len);
            self.read_original(b + w as u64, b + end as u64)?;
            scan(
                r.arch,
                r.reach(),
                &mut self.scratch,
                b + w as u64,
                true,
                s.shifted(w),
                to - w,
            );
            return Ok(self.scratch[from - w..to - w].to_vec());
        }
        // The block's first read: transformed whole, its states kept.
        self.read_original(b, e)?;
        let subs = len.div_ceil(SUB as usize);
        let mut states = Vec::with_capacity(subs);
        let mut s = Scan::start(r.arch, b);
        states.push(s);
        for k in 1..subs {
            // The state at the first position at or after 8 bytes before the sub-block: the
            // conversions that write into it are all decided from there on.
            s = scan(
                r.arch,
                r.reach(),
                &mut self.scratch,
                b,
                true,
                s,
                k * SUB as usize - 8,
            );
            states.push(s);
        }
        scan(r.arch, r.reach(), &mut self.scratch, b, true, s, usize::MAX);
        if self.states.len() >= BLOCKS_KEPT {
            self.states.clear();
        }
        self.states.insert(b, states);
        Ok(self.scratch[from..to].to_vec())
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
                let sb = b + (pos - b) / SUB * SUB;
                match self.kept.iter().position(|(at, _)| *at == sb) {
                    Some(i) => {
                        let k = self.kept.remove(i);
                        self.kept.push(k);
                    }
                    None => {
                        let bytes = self.sub_block(r, b, e, sb)?;
                        if self.kept.len() >= SUBS_KEPT {
                            self.kept.remove(0);
                        }
                        self.kept.push((sb, bytes));
                    }
                }
                let cached = &self.kept[self.kept.len() - 1].1;
                let from = (pos - sb) as usize;
                let n = out.len().min(cached.len() - from);
                out[..n].copy_from_slice(&cached[from..from + n]);
                n
            }
            None => {
                let next = next_start(&self.ranges, pos);
                let want = (out.len() as u64).min(next - pos) as usize;
                self.seek_inner(pos)?;
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
                block(r.arch, r.reach(), &mut self.buf, pos, false);
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
        // RIP-relative operands (`lea`, `mov`, `call [rip]`) overlapping the calls, and `adrp`
        // words with near and far pages.
        for i in (0..len.saturating_sub(8)).step_by(17) {
            d[i] = [0x8D, 0x8B, 0xFF, 0x0F][i % 4];
            d[i + 1] = [0x05, 0x15, 0x3D, 0x25][i % 3];
            d[i + 5] = if i % 3 == 0 { 0xFF } else { 0x00 };
        }
        // Thumb-2 `bl` pairs, some overlapping one another.
        for i in (0..len.saturating_sub(8)).step_by(26) {
            d[i + 1] = 0xF0 | (d[i + 1] & 7);
            d[i + 3] = 0xF8 | (d[i + 3] & 7);
            d[i + 5] = 0xF8 | (d[i + 5] & 7);
        }
        for i in (0..len.saturating_sub(8)).step_by(44) {
            d[i + 3] = 0x90 | (d[i + 3] & 0x60);
            d[i + 2] = if i % 3 == 0 { 0xFF } else { d[i + 2] & 0x03 };
        }
        d
    }

    /// Bytes made of little else than x86 candidates (opcodes, RIP ModRM bytes, 00 and FF),
    /// overlapping every way: the rules' choices must be the same restoring as transforming.
    #[test]
    fn x86_64_candidates_packed_tight_round_trip() {
        let mut rng = crate::testkit::Rng::new(21);
        for round in 0..200 {
            let len = 64 + rng.below(4_000) as usize;
            let alphabet = [0xE8, 0xE9, 0x8D, 0x8B, 0x05, 0x15, 0x00, 0xFF, 0x48, 0x0D];
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let at = rng.below(1 << 30);
            let reach = 1u64 << (24 + rng.below(5));
            let mut enc = data.clone();
            block(Arch::X86_64, reach, &mut enc, at, true);
            assert_ne!(enc, data, "round {round}: nothing converted");
            block(Arch::X86_64, reach, &mut enc, at, false);
            assert_eq!(enc, data, "round {round}");
        }
    }

    /// Code that moved, with the data it refers to where it was: after the transform its RIP-
    /// relative operands and `adrp` pages are the same bytes at the new place as at the old one,
    /// which is what lets a diff copy them.
    #[test]
    fn moved_code_reads_the_same_after_the_transform() {
        // x86-64: `lea rax, [rip + d]`, `mov rcx, [rip + d]`, `call [rip + d]`, each aimed at the
        // same absolute targets from two places 4,133 bytes apart.
        let place = |at: usize| {
            let mut img = vec![0x90u8; 20_000];
            let mut p = at;
            for (k, op) in [[0x48, 0x8D, 0x05], [0x48, 0x8B, 0x0D], [0x90, 0xFF, 0x15]]
                .iter()
                .cycle()
                .take(30)
                .enumerate()
            {
                let target = 15_000 + 64 * k as i64;
                img[p..p + 3].copy_from_slice(op);
                let disp = (target - (p + 7) as i64) as i32;
                img[p + 3..p + 7].copy_from_slice(&disp.to_le_bytes());
                p += 7;
            }
            img
        };
        same_after(Arch::X86_64, place, 1_000, 5_133, 210);
        // Calls and branches only leave them apart.
        let (mut a, mut b) = (place(1_000), place(5_133));
        block(Arch::X86, 1 << 24, &mut a, 0, true);
        block(Arch::X86, 1 << 24, &mut b, 0, true);
        assert_ne!(a[1_000..1_210], b[5_133..5_343]);

        // AArch64: `adrp x3, page` aimed at the same pages from code three pages further on.
        let place = |at: usize| {
            let mut img = vec![0u8; 64 * 1024];
            for k in 0..40usize {
                let pc = at + 4 * k;
                let page = (60_000 + 4_096 * (k as i64 % 3)) >> 12;
                let imm = (page - (pc as i64 >> 12)) as u32 & 0x001F_FFFF;
                let w = 0x9000_0003 | ((imm & 3) << 29) | ((imm >> 2) << 5);
                img[pc..pc + 4].copy_from_slice(&w.to_le_bytes());
            }
            img
        };
        same_after(Arch::Arm64Adrp, place, 4_096, 4 * 4_096, 160);

        // Thumb-2: `bl` to the same functions from code 1,234 bytes further on.
        let place = |at: usize| {
            let mut img = vec![0u8; 64 * 1024];
            for k in 0..40usize {
                let pc = at + 4 * k;
                let target = 50_000 + 96 * (k as i64 % 5);
                let off = ((target - (pc as i64 + 4)) >> 1) as u32 & 0x003F_FFFF;
                img[pc] = (off >> 11) as u8;
                img[pc + 1] = 0xF0 | ((off >> 19) & 7) as u8;
                img[pc + 2] = off as u8;
                img[pc + 3] = 0xF8 | ((off >> 8) & 7) as u8;
            }
            img
        };
        same_after(Arch::Thumb, place, 2_000, 3_234, 160);
    }

    /// Code placed (by `place`) at `from` and at `to` differs over `len` bytes as it is, reads
    /// the same once both images are transformed, and restores to what it was.
    fn same_after(
        arch: Arch,
        place: impl Fn(usize) -> Vec<u8>,
        from: usize,
        to: usize,
        len: usize,
    ) {
        let (mut a, mut b) = (place(from), place(to));
        assert_ne!(a[from..from + len], b[to..to + len], "{arch:?}");
        block(arch, 1 << 24, &mut a, 0, true);
        block(arch, 1 << 24, &mut b, 0, true);
        assert_eq!(a[from..from + len], b[to..to + len], "{arch:?}");
        block(arch, 1 << 24, &mut b, 0, false);
        assert_eq!(b, place(to), "{arch:?}");
    }

    #[test]
    fn every_arch_round_trips_at_any_offset() {
        for arch in ARCHS {
            let data = code(300_001, 7);
            let (ranges, enc) = transformed(&data, arch, [(1_001, 150_000), (200_003, 99_998)]);
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

    /// A scan stopped anywhere and resumed on a buffer that starts up to 8 bytes before its
    /// position transforms the rest exactly as the scan that did not stop, on bytes where every
    /// rule's candidates overlap and protect one another.
    #[test]
    fn a_scan_resumed_anywhere_makes_the_same_choices() {
        let alphabet = [
            0x8B, 0x05, 0xE8, 0x00, 0xFF, 0x15, 0xF0, 0xF8, 0x94, 0xEB, 0x90,
        ];
        let orig: Vec<u8> = testkit::bytes(3_000, 23)
            .iter()
            .map(|b| alphabet[*b as usize % alphabet.len()])
            .collect();
        let at = 1_000_003u64;
        for arch in ARCHS {
            for encode in [true, false] {
                let mut whole = orig.clone();
                scan(
                    arch,
                    1 << 24,
                    &mut whole,
                    at,
                    encode,
                    Scan::start(arch, at),
                    usize::MAX,
                );
                for stop in 0..2_990 {
                    let mut first = orig.clone();
                    let s = scan(
                        arch,
                        1 << 24,
                        &mut first,
                        at,
                        encode,
                        Scan::start(arch, at),
                        stop,
                    );
                    let w = s.i.saturating_sub(8);
                    let mut rest = orig[w..].to_vec();
                    scan(
                        arch,
                        1 << 24,
                        &mut rest,
                        at + w as u64,
                        encode,
                        s.shifted(w),
                        usize::MAX,
                    );
                    assert!(
                        rest[s.i - w..] == whole[s.i..],
                        "{arch:?} encode {encode}: resumed at {} (stop {stop})",
                        s.i
                    );
                }
            }
        }
    }

    /// Ranges of `arch` at (start, length) each, and `data` transformed over them.
    fn transformed(data: &[u8], arch: Arch, at: [(u64, u64); 2]) -> (Vec<Range>, Vec<u8>) {
        let ranges: Vec<Range> = at
            .iter()
            .map(|&(start, len)| Range { arch, start, len })
            .collect();
        let mut enc = data.to_vec();
        encode_all(&mut enc, &ranges);
        (ranges, enc)
    }

    const ARCHS: [Arch; 6] = [
        Arch::X86,
        Arch::X86_64,
        Arch::Arm64,
        Arch::Arm64Adrp,
        Arch::Arm32,
        Arch::Thumb,
    ];

    /// Reads of any size at any offset, in any order and again, through the view's sub-blocks
    /// resumed from kept scan states: the same bytes as the whole image transformed at once, for
    /// every instruction set, on code-like bytes dense with candidates and on bytes of a small
    /// alphabet where candidates overlap everywhere.
    #[test]
    fn the_base_view_reads_what_the_whole_transform_gives_in_any_order() {
        let alphabet = [
            0x8B, 0x05, 0xE8, 0x00, 0xFF, 0x7F, 0x15, 0xF0, 0xF8, 0x94, 0xEB, 0x90,
        ];
        let dense: Vec<u8> = testkit::bytes(400_003, 22)
            .iter()
            .map(|b| alphabet[*b as usize % alphabet.len()])
            .collect();
        for (data, arch) in [code(400_003, 21), dense]
            .into_iter()
            .flat_map(|d| ARCHS.map(|a| (d.clone(), a)))
        {
            let (ranges, enc) = transformed(&data, arch, [(3, 200_001), (250_002, 140_000)]);
            let inner = io::BufReader::with_capacity(16_384, io::Cursor::new(data.clone()));
            let mut v = BaseView::new(inner, ranges);
            let mut rng = crate::testkit::Rng::new(arch.code().into());
            for _ in 0..3_000 {
                // Mostly near the last read, sometimes anywhere: blocks and sub-blocks read
                // first, again, and across their ends.
                let pos = if rng.below(4) == 0 {
                    rng.below(data.len() as u64)
                } else {
                    let at = v.stream_position().expect("position");
                    (at + rng.below(20_000))
                        .saturating_sub(10_000)
                        .min(data.len() as u64 - 1)
                };
                v.seek(SeekFrom::Start(pos)).expect("seek");
                let n = (1 + rng.below(9_000) as usize).min(data.len() - pos as usize);
                let mut got = vec![0u8; n];
                v.read_exact(&mut got).expect("read");
                assert!(
                    got == enc[pos as usize..pos as usize + n],
                    "{arch:?}: {n} bytes at {pos}"
                );
            }
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

    /// A hostile range ending near 2^64 has the widest reach, and no overflow.
    #[test]
    fn the_reach_of_any_range_is_bounded() {
        let at = |start: u64, len: u64| {
            Range {
                arch: Arch::X86_64,
                start,
                len,
            }
            .reach()
        };
        assert_eq!(at(0, 65_536), 1 << 24);
        assert_eq!(at(1_000_000, 19_000_000), 1 << 26);
        assert_eq!(at(u64::MAX / 2, u64::MAX / 2), 1 << 28);
        assert_eq!(at(u64::MAX - 1, 1), 1 << 28);
    }

    #[test]
    fn non_elf_and_garbage_have_no_ranges() {
        assert!(exec_ranges(&testkit::bytes(100_000, 3), true).is_empty());
        let mut fake = b"\x7fELF\x02\x01\x01".to_vec();
        fake.extend_from_slice(&testkit::bytes(10_000, 4));
        assert!(exec_ranges(&fake, true).is_empty());
    }
}
