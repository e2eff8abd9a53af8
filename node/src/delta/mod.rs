//! Binary deltas: a bsdiff-style suffix-array diff (matches found by [`scan`], which takes among
//! equally long matches the one nearest the last; controls built by the `bidiff` crate's
//! translator), written as separately compressed streams of controls, add bytes and copy bytes,
//! applied as a stream in bounded memory.
//!
//! Format (`docs/formats.md`): four magic bytes, then little-endian u64 section lengths, then (formats
//! 2 and 3) the transformed ranges of the base and of the target ([`branch`]), then the compressed
//! streams: the controls (per control: LEB128 add length, LEB128 copy length,
//! zigzag-LEB128 seek), the add bytes (new minus base, byte-wise, where the base matches
//! approximately), and the copy bytes (literal new bytes). `"WSD5"` ([`inflate`], written by
//! [`create_inflating`] where it is smaller) wraps a format-4 or format-3 delta taken between the
//! images with their gzip streams inflated. `"WSD4"` is `"WSD3"` with
//! the add literals coded by [`cm`], a model that sees the base bytes under them. `"WSD3"`
//! compresses each stream as an xz stream of LZMA2, tuned per stream, with the controls in three
//! columns and the add bytes' long zero runs in a stream of their own ([`ZERO_RUN_MIN`]); `"WSD2"`
//! (still applied) kept
//! the add bytes whole; `"WSD1"` (still applied) used zstd and interleaved controls. Applying
//! starts at base offset 0; for each control it adds `add` bytes to the base, emits `copy` literal
//! bytes, then moves the base position by `seek`. Keeping the three kinds of data apart is what lets
//! each compress well (bsdiff does the same with bzip2).
//!
//! Applying needs the base as `Read + Seek` (the device's committed slot) and holds one decoder
//! per stream (LZMA2 dictionaries of at most [`MAX_DICT`] each, zstd windows of at most
//! 2^[`MAX_WINDOW_LOG`], format 4's 14 MiB model) and fixed buffers, whatever the image size. Creating holds both images in
//! memory, and the suffix array of the base (4 bytes per byte), or where the base is large, of the
//! base bytes that long exact matches found first leave ([`anchor`]); that happens on the device
//! maker's build machine.
//!
//! The device checks the base's BLAKE3 against the delta's signed base before it writes anything,
//! refuses output longer than the signed target length, and checks the written image's hash.

use std::borrow::Cow;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::OnceLock;

use crate::hash::Hash;

mod anchor;
pub mod branch;
mod cm;
pub mod inflate;
pub mod lz;
mod runs;
mod scan;

use branch::{BaseView, Range, Restore};
use runs::{Adds, ZeroRuns};

/// Largest zstd window a device accepts when decoding (16 MiB per stream): bounds decoder memory.
pub const MAX_WINDOW_LOG: u32 = 24;
/// The window deltas are written with (8 MiB).
pub const WINDOW_LOG: u32 = 23;
/// zstd level of each stream of a format-1 delta (`Codec::Zstd`).
pub const LEVEL: i32 = 19;
/// The least gain for which [`Codec::MODELED`] writes format 4: 5 % of the delta (`docs/deltas.md`:
/// the corpus pairs gain 5.5 to 65 %, the demo's synthetic image 2.2 %, for about 20 times the CPU).
pub const MODEL_MIN_GAIN_PERCENT: u8 = 5;
/// The magic bytes of format 1 (zstd streams; applied, no longer written).
pub const MAGIC_ZSTD: &[u8; 4] = b"WSD1";
/// The magic bytes of format 2 (LZMA2 streams, the add bytes whole; applied, no longer written).
pub const MAGIC_2: &[u8; 4] = b"WSD2";
/// The magic bytes of format 3 (format 2 with long zero runs of the add bytes taken out), written
/// with [`Codec::Lzma2`].
pub const MAGIC_3: &[u8; 4] = b"WSD3";
/// The magic bytes of format 4 (format 3 with the add literals coded by a model that sees the base
/// under them, [`cm`]), what [`create`] writes with [`Codec::Modeled`] where it pays.
pub const MAGIC: &[u8; 4] = b"WSD4";
/// The magic bytes of format 7: format 3 or 4 with a flags byte after the magic ([`FLAG_MODELED`],
/// [`Seeks`] in [`SEEKS_SHIFT`]), written where the seeks are not varints.
pub const MAGIC_7: &[u8; 4] = b"WSD7";
/// Format 7: the add literals are coded by [`cm`] (as format 4).
pub const FLAG_MODELED: u8 = 1;
/// Format 7: where the flags byte holds the seek column's [`Seeks`] (two bits).
pub const SEEKS_SHIFT: u8 = 1;
/// Format 7: every LZMA2 section is one byte, the base-2 logarithm of its dictionary size, then a
/// raw LZMA2 stream, instead of an xz stream (whose headers, index and footer cost about 48 bytes a
/// section: a tenth of a small delta). Agents from 2026-12-07 on.
pub const FLAG_RAW: u8 = 1 << 3;
/// Format 7 with [`FLAG_RAW`]: the copy bytes' section is raw LZMA2 whose dictionary starts out
/// holding the base's first bytes ([`lz::encode_copies`]), written where that is smaller. Agents
/// from 7fe8abd (2026-12-07) on (`release build --delta-format 10`); older ones refuse the flag
/// ("unknown format 7 flags").
pub const FLAG_COPIES_BASE: u8 = 1 << 4;

/// How the seek column codes where each control leaves the base. Which is smallest depends on the
/// pair (`docs/deltas.md`), so each is measured; words are 32-bit big-endian, so that LZMA2's
/// position bits see which byte of a word it codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeks {
    /// The seek (the move from the end of the control's add bytes), zigzag LEB128.
    Varint = 0,
    /// The base position the next control starts at, as a word: in target order these mostly climb,
    /// so their top bytes repeat.
    Absolute = 1,
    /// The next control's diagonal (its base position minus its target position), zigzag, as a
    /// word: constant across a region that moved as a block.
    Diagonal = 2,
}

/// Format 3 takes zero runs of at least this many add bytes out of the add stream (`docs/deltas.md`:
/// 512 measured best of 1 to 4,096 on the corpus; short runs are cheaper left to LZMA2).
pub const ZERO_RUN_MIN: u64 = 512;
/// Largest LZMA2 dictionary a device accepts per stream (16 MiB, as `xz -9`): bounds decoder memory.
pub const MAX_DICT: u32 = 16 << 20;
/// Format 1's header: magic and three section lengths. Format 2 has five (the controls in columns),
/// format 3 six (the add bytes as zero runs and literals).
const HEADER: u64 = 4 + 3 * 8;
const HEADER2: u64 = 4 + 5 * 8;
const HEADER3: u64 = 4 + 6 * 8;
/// One transformed range in the header: arch code, start, length.
const RANGE_BYTES: usize = 1 + 8 + 8;

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

/// How a delta's streams are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Format 4: as format 3, with the add literals coded by a context-mixing model that sees the
    /// base bytes under them: the smallest, and the slowest to create and apply (about 20 times
    /// format 3's CPU on the device). Written only when it makes the whole delta at least
    /// `min_gain_percent` % smaller than format 3 (or format 6) would be, or, for a delta of at most
    /// `free_literals` add literals, when it is smaller at all: the model's cost is per literal, so
    /// a small delta's is small whatever it gains ([`MODEL_FREE_LITERALS`]).
    Modeled {
        min_gain_percent: u8,
        free_literals: u64,
    },
    /// Format 3: every stream LZMA2 (xz), 7 to 9 % below zstd -19 on the corpus.
    Lzma2,
    /// Format 1: zstd at this level (1 to 22): faster to create.
    Zstd(i32),
}

impl Codec {
    /// Format 4 where it makes the delta at least [`MODEL_MIN_GAIN_PERCENT`] % smaller.
    pub const MODELED: Codec = Codec::Modeled {
        min_gain_percent: MODEL_MIN_GAIN_PERCENT,
        free_literals: MODEL_FREE_LITERALS,
    };

    /// The least gain, in percent, that keeps format 4 for a delta of `literals` add literals.
    fn model_min_gain(self, literals: u64) -> u8 {
        match self {
            Codec::Modeled {
                min_gain_percent,
                free_literals,
            } if literals > free_literals => min_gain_percent,
            _ => 0,
        }
    }
}

/// Format 4's apply costs the device about 0.5 µs per add literal on the project machine (several
/// times that on a small device core). Up to this many literals (about half a second here) it is
/// kept wherever it is smaller, whatever the gain: a 112 KB Thumb-2 library whose modeled delta
/// was 2.5 % under format 6 had been given format 6, 0.920 × HDiffPatch instead of 0.897
/// (`docs/deltas.md`, issue 15's twenty-first pass).
pub const MODEL_FREE_LITERALS: u64 = 1 << 20;

/// Which of the three streams: they differ enough that each gets its own LZMA2 literal model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Control,
    /// The seek column as 32-bit words (format 7, [`Seeks`]).
    Words,
    Add,
    Copy,
}

fn zstd_compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    enc.include_checksum(false)?;
    enc.window_log(WINDOW_LOG)?;
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.write_all(data)?;
    enc.finish()
}

fn lzma_err(e: liblzma::stream::Error) -> io::Error {
    io::Error::other(format!("lzma2: {e}"))
}

/// LZMA2 at xz's `-9e`, with the dictionary no larger than the data (a smaller dictionary costs the
/// device less memory for the same output) and literal models chosen per stream, measured on the
/// ruff pair (`docs/deltas.md`): controls carry no useful byte context (`lc=0`); add bytes of code
/// move in 4-byte words (`lc=1, lp=2`: 1.1 % smaller than `lc=0, lp=0`); copy bytes are mostly new
/// code and data, where xz's defaults (`lc=3, pb=2`) do best.
fn lzma2_compress(data: &[u8], kind: Kind) -> io::Result<Vec<u8>> {
    lzma2_split(data, kind, false, &never)?
        .ok_or_else(|| io::Error::other("delta: an encoder stopped that was never told to"))
}

/// For a coder that runs to its end.
fn never(_: usize) -> bool {
    false
}

/// As [`lzma2_compress`]; with `split` (where this encoder has a core to itself: not beside the
/// branch transform's candidate), long add literals as two blocks at once ([`SPLIT_ADDS`]). `None`
/// where `enough`, asked with the coded length so far, said to stop ([`drive`]).
fn lzma2_split(
    data: &[u8],
    kind: Kind,
    split: bool,
    enough: &dyn Fn(usize) -> bool,
) -> io::Result<Option<Vec<u8>>> {
    let started = std::time::Instant::now();
    // Two blocks of half the stream each, where it is long enough to pay.
    let block =
        (split && kind == Kind::Add && data.len() >= SPLIT_ADDS).then(|| data.len().div_ceil(2));
    let out = lzma2_compress_inner(data, kind, block, enough)?;
    tracing::debug!(
        ?kind,
        bytes = data.len(),
        compressed = out.as_ref().map_or(0, Vec::len),
        stopped = out.is_none(),
        elapsed = ?started.elapsed(),
        "delta: stream compressed"
    );
    Ok(out)
}

/// How much input [`drive`] gives an encoder at a time (about a second of LZMA2 `-9e` here).
const DRIVE_PIECE: usize = 1 << 20;

/// Runs an encoder over `data`, its output after `out`, asking `enough` with the output's length
/// after every [`DRIVE_PIECE`] of input and every return while finishing: `None` where it said
/// to stop. The output only grows, so its length so far is a lower bound of the whole's. The
/// output is the same bytes however the input is given.
fn drive(
    stream: &mut liblzma::stream::Stream,
    data: &[u8],
    mut out: Vec<u8>,
    enough: &dyn Fn(usize) -> bool,
) -> io::Result<Option<Vec<u8>>> {
    use liblzma::stream::{Action, Status};
    let mut input = data;
    loop {
        let (piece, action) = if input.len() > DRIVE_PIECE {
            (&input[..DRIVE_PIECE], Action::Run)
        } else {
            (input, Action::Finish)
        };
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let before = stream.total_in();
        let status = stream
            .process_vec(piece, &mut out, action)
            .map_err(lzma_err)?;
        input = &input[(stream.total_in() - before) as usize..];
        if status == Status::StreamEnd {
            return Ok(Some(out));
        }
        if enough(out.len()) {
            tracing::debug!(
                consumed = data.len() - input.len(),
                of = data.len(),
                out = out.len(),
                "delta: an encoder stopped: its length so far settles the choice"
            );
            return Ok(None);
        }
    }
}

/// Add literals at least this long are coded as two xz blocks at once (one per core), each half
/// the stream: LZMA2 `-9e` codes about 1 MB a second here, and on an image's 16 MB of literals it
/// was the longest step of creating its delta. The halves cost 0.16 % more on the rootfs pair's
/// literals than one block (`docs/deltas.md`, "Creating faster"). The stream stays one xz stream,
/// read by every decoder; the output does not depend on the machine's cores.
const SPLIT_ADDS: usize = 8 << 20;

/// The LZMA2 filter for `len` bytes of `kind` ([`lzma2_compress`]), and its dictionary's size.
fn lzma2_filters(len: usize, kind: Kind) -> io::Result<(liblzma::stream::Filters, u32)> {
    use liblzma::stream::{Filters, LzmaOptions, PRESET_EXTREME};
    let mut o = LzmaOptions::new_preset(9 | PRESET_EXTREME).map_err(lzma_err)?;
    let dict = (len as u64)
        .next_power_of_two()
        .clamp(4096, u64::from(MAX_DICT)) as u32;
    o.dict_size(dict).nice_len(273);
    let (lc, lp, pb) = match kind {
        Kind::Control => (0, 0, 0),
        Kind::Words => (0, 2, 2),
        Kind::Add => (1, 2, 2),
        Kind::Copy => (3, 0, 2),
    };
    o.literal_context_bits(lc)
        .literal_position_bits(lp)
        .position_bits(pb);
    let mut f = Filters::new();
    f.lzma2(&o);
    Ok((f, dict))
}

/// A section of format 7 with [`FLAG_RAW`]: the dictionary's size as a power of two (one byte),
/// then `data` as raw LZMA2 (`-9e`, as [`lzma2_compress`]), ending in its end marker. `None` where
/// `enough` said to stop ([`drive`]).
fn lzma2_raw(
    data: &[u8],
    kind: Kind,
    enough: &dyn Fn(usize) -> bool,
) -> io::Result<Option<Vec<u8>>> {
    let (f, dict) = lzma2_filters(data.len(), kind)?;
    let mut stream = liblzma::stream::Stream::new_raw_encoder(&f).map_err(lzma_err)?;
    drive(&mut stream, data, vec![dict.trailing_zeros() as u8], enough)
}

/// One xz stream of LZMA2 `-9e`; with `block`, its blocks that long at most, coded on two threads.
fn lzma2_compress_inner(
    data: &[u8],
    kind: Kind,
    block: Option<usize>,
    enough: &dyn Fn(usize) -> bool,
) -> io::Result<Option<Vec<u8>>> {
    use liblzma::stream::{Check, MtStreamBuilder, Stream};
    let (f, _) = lzma2_filters(block.unwrap_or(data.len()), kind)?;
    let mut stream = if let Some(block) = block {
        // The timeout returns control while the threads work, so that `enough` is asked.
        MtStreamBuilder::new()
            .threads(2)
            .block_size(block as u64)
            .timeout_ms(250)
            .filters(f)
            .check(Check::None)
            .encoder()
    } else {
        Stream::new_stream_encoder(&f, Check::None)
    }
    .map_err(lzma_err)?;
    drive(&mut stream, data, Vec::new(), enough)
}

/// Which formats past format 4 creating may write: each is applied only by agents that know it
/// (`release build --delta-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Methods {
    /// Format 5: where a gzip stream that this build re-compresses changed, also diff the images
    /// with their gzip streams inflated ([`inflate`]).
    pub inflate: bool,
    /// Format 6 (agents from 2026-12-06): where the base fits a device's dictionary, also code the
    /// new image as one LZMA2 stream with the base as its preset dictionary ([`lz`]).
    pub against_base: bool,
    /// Format 7 (agents from 2026-12-06): also try the diff's seeks as 32-bit words ([`Seeks`]).
    pub seek_words: bool,
    /// Format 7's [`FLAG_RAW`] (agents from 2026-12-07): raw LZMA2 sections, where no section is
    /// coded in blocks at once.
    pub raw_streams: bool,
    /// Transformed ranges of instruction sets 4 to 6 (agents from 2026-12-07, after raw sections):
    /// x86-64 code's RIP-relative operands and AArch64 code's `adrp` pages made absolute too, not
    /// only calls and branches, and Thumb-2 code's calls ([`branch::Arch::X86_64`],
    /// [`branch::Arch::Arm64Adrp`], [`branch::Arch::Thumb`]).
    pub operands: bool,
    /// Format 7's [`FLAG_COPIES_BASE`] (agents from 2026-12-07, after `operands`), with
    /// `raw_streams`: the diff's copy bytes coded with the base in their dictionary, where that
    /// is smaller.
    pub copies_against_base: bool,
}

impl Methods {
    /// Formats 1 to 4 only.
    pub const NONE: Methods = Methods {
        inflate: false,
        against_base: false,
        seek_words: false,
        raw_streams: false,
        operands: false,
        copies_against_base: false,
    };
    /// Every format this build writes.
    pub const ALL: Methods = Methods {
        inflate: true,
        against_base: true,
        seek_words: true,
        raw_streams: true,
        operands: true,
        copies_against_base: true,
    };
}

/// Creates a delta from `base` to `target` (both in memory), its streams compressed with `codec`:
/// formats 1 to 4 ([`create_with`] with [`Methods::NONE`]).
pub fn create(base: &[u8], target: &[u8], codec: Codec, out: impl Write) -> io::Result<()> {
    create_with(base, target, codec, Methods::NONE, out)
}

/// As [`create`], and where both images hold gzip streams and one that this build can re-compress
/// changed, also a format-5 delta between their inflated forms ([`inflate`]); the smaller is
/// written. Format 1 (`Codec::Zstd`) is never wrapped.
pub fn create_inflating(
    base: &[u8],
    target: &[u8],
    codec: Codec,
    out: impl Write,
) -> io::Result<()> {
    let methods = Methods {
        inflate: true,
        against_base: false,
        seek_words: false,
        raw_streams: false,
        operands: false,
        copies_against_base: false,
    };
    create_with(base, target, codec, methods, out)
}

/// Creates the smallest delta from `base` to `target` that `codec` and `methods` allow, measuring
/// each candidate rather than assuming which pays: the bsdiff-style diff of the images as they
/// are and, for ELF executables, with their branch targets made absolute ([`branch`]); with
/// `methods.against_base`, format 6 ([`lz`]); with `methods.seek_words`, format 7's seek words; with `methods.inflate`, all of these again between
/// the images with their gzip streams inflated (format 5). Format 1 (`Codec::Zstd`) is only ever
/// the plain or transformed diff.
pub fn create_with(
    base: &[u8],
    target: &[u8],
    codec: Codec,
    methods: Methods,
    out: impl Write,
) -> io::Result<()> {
    create_from(
        Cow::Borrowed(base),
        Cow::Borrowed(target),
        codec,
        methods,
        out,
    )
}

/// Images at least this large together decide between format 5 and the plain delta on the
/// streams that expanding changes ([`expanding_pays`]) before diffing the whole images: where
/// expanding wins there, the plain images' diff is not made, and an owned image's buffer becomes
/// its expanded form. Smaller pairs measure both whole deltas.
pub const DECIDE_ON_STREAMS_FROM: usize = 64 << 20;

/// [`create_with`], taking the images owned where the caller can give them up: a large pair's
/// format-5 delta then holds the expanded images in place of the plain ones instead of both.
pub fn create_from(
    base: Cow<'_, [u8]>,
    target: Cow<'_, [u8]>,
    codec: Codec,
    methods: Methods,
    out: impl Write,
) -> io::Result<()> {
    create_deciding_from(base, target, codec, methods, DECIDE_ON_STREAMS_FROM, out)
}

/// [`create_from`] with the pair size from which format 5 is decided on the listed streams.
fn create_deciding_from(
    base: Cow<'_, [u8]>,
    target: Cow<'_, [u8]>,
    codec: Codec,
    methods: Methods,
    decide_from: usize,
    mut out: impl Write,
) -> io::Result<()> {
    let plan = match codec {
        Codec::Zstd(_) => None,
        _ if methods.inflate => inflate::Plan::new(&base, &target),
        _ => None,
    };
    let methods = match codec {
        Codec::Zstd(_) => Methods::NONE,
        _ => methods,
    };
    let best = match plan {
        None => best(&base, target, codec, methods, None)?.expect("no budget"),
        Some(plan)
            if base.len() + target.len() >= decide_from
                && expanding_pays(&plan, &base, &target)? =>
        {
            // Expanded one image at a time, each in its own buffer where owned: at most one plain
            // image beside the expanded ones.
            let bx = match base {
                Cow::Owned(b) => plan.expand_base_owned(b),
                Cow::Borrowed(b) => plan.expand_base_owned(b.to_vec()),
            };
            let tx = match target {
                Cow::Owned(t) => plan.expand_target_owned(t),
                Cow::Borrowed(t) => plan.expand_target_owned(t.to_vec()),
            };
            inflated(plan, &bx, tx, codec, methods)?
        }
        Some(plan) => {
            // Both deltas at once, one per core, and the smaller kept: inflating pays on changed
            // gzip files and could cost elsewhere, so it is measured, never assumed. The plain
            // one is coded only as far as it could still be smaller than the inflated one (the
            // likelier to win): before its add literals, it waits for the inflated one's size.
            let budget = Budget::default();
            let (plain, inflated) = at_once(
                || best(&base, Cow::Borrowed(&target), codec, methods, Some(&budget)),
                || {
                    let _known = budget.known_on_drop();
                    let (bx, tx) = plan.expand(&base, &target);
                    let d = inflated(plan, &bx, tx, codec, methods)?;
                    budget.set(d.len());
                    Ok(d)
                },
            )?;
            tracing::info!(
                plain = plain.as_ref().map(Vec::len),
                inflated = inflated.len(),
                "delta: format 5 measured (plain: none where it stopped, unable to be smaller)"
            );
            match plain {
                Some(plain) if plain.len() <= inflated.len() => plain,
                _ => inflated,
            }
        }
    };
    out.write_all(&best)?;
    out.flush()
}

/// Whether format 5 wins on what it changes: the delta between the base's and target's listed
/// streams inflated (with the tables) against the delta between the same streams as they are
/// ([`inflate::Plan::listed`]). The whole deltas differ only there, but for matches across a
/// stream's edge and, in the plain images, a changed stream's compressed bytes matched elsewhere
/// in the base than its old version; so expanding must win by [`STREAMS_MARGIN`] percent, and
/// otherwise both whole deltas are measured.
fn expanding_pays(plan: &inflate::Plan, base: &[u8], target: &[u8]) -> io::Result<bool> {
    let started = std::time::Instant::now();
    let [cb, ct, ib, it] = plan.listed(base, target);
    let tables = lzma2_compress(&plan.tables(), Kind::Control)?.len();
    // Both as format 3 whatever the delta's codec, the quickest to make: a comparison, not the
    // delta (the add model and format 6 would cost seconds here, and weigh both sides alike).
    let (plain, expanded) = at_once(
        || best(&cb, Cow::Borrowed(&ct), Codec::Lzma2, Methods::NONE, None),
        || best(&ib, Cow::Borrowed(&it), Codec::Lzma2, Methods::NONE, None),
    )?;
    let plain = plain.expect("no budget").len();
    let expanded = expanded.expect("no budget").len() + tables;
    let pays = (expanded as u64) * (100 + STREAMS_MARGIN) < (plain as u64) * 100;
    tracing::info!(
        listed_compressed = ct.len(),
        listed_inflated = it.len(),
        plain,
        expanded,
        pays,
        elapsed = ?started.elapsed(),
        "delta: format 5 measured on the listed streams alone"
    );
    Ok(pays)
}

/// How many percent smaller expanding must make the listed streams' delta for the plain images'
/// diff to be skipped ([`expanding_pays`]).
const STREAMS_MARGIN: u64 = 10;

/// The smallest delta of the images as given: the bsdiff-style diff (formats 1 to 4), of the
/// images as they are and, for ELF executables of one instruction set (format 2 on), with their
/// branch targets made absolute; format 6 and format 7's seek words as `methods` allow. With a
/// `budget`, `None` where no candidate can be smaller than that many bytes (their coding stops
/// as soon as the streams coded so far reach it).
fn best(
    base: &[u8],
    target: Cow<'_, [u8]>,
    codec: Codec,
    methods: Methods,
    budget: Option<&Budget>,
) -> io::Result<Option<Vec<u8>>> {
    let words = if methods.seek_words {
        SeekChoice::Smallest
    } else {
        SeekChoice::Varint
    };
    // Only format 2 and later carry transformed ranges.
    let (rb, rt) = match codec {
        Codec::Modeled { .. } | Codec::Lzma2 => (
            branch::exec_ranges(base, methods.operands),
            branch::exec_ranges(&target, methods.operands),
        ),
        Codec::Zstd(_) => (vec![], vec![]),
    };
    let same_arch = !rb.is_empty()
        && !rt.is_empty()
        && rb
            .iter()
            .chain(&rt)
            .all(|r| rb.first().is_some_and(|f| f.arch == r.arch));
    let (rb, rt) = if same_arch {
        (rb, rt)
    } else {
        (vec![], vec![])
    };
    // Beside the branch transform's candidate, each encoder has one core; alone, two.
    let lane = Lane {
        budget,
        split: !same_arch,
        raw: methods.raw_streams,
        copies_base: methods.raw_streams && methods.copies_against_base,
    };
    let diff = if same_arch {
        // Both candidates at once, one per core: each diff is single-threaded.
        let (plain, transformed) = at_once(
            || encode(base, Cow::Borrowed(&target), codec, &[], &[], words, lane),
            || {
                let (tb, tt) = branch::encode_pair(base, &target, &rb, &rt);
                encode(&tb, Cow::Owned(tt), codec, &rb, &rt, words, lane)
            },
        )?;
        tracing::info!(
            plain = plain.as_ref().map(Vec::len),
            transformed = transformed.as_ref().map(Vec::len),
            ranges = rb.len(),
            "delta: the branch transform measured"
        );
        match (plain, transformed) {
            (Some(p), Some(t)) if t.len() < p.len() => Some(t),
            (Some(p), _) => Some(p),
            (None, t) => t,
        }
    } else if !methods.against_base || base.len() > lz::MAX_BASE || base.is_empty() {
        // Format 6 will not be tried ([`lz::create`] takes no such base): the target is given up
        // to the diff, which frees an owned one before coding.
        return encode(base, target, codec, &[], &[], words, lane);
    } else {
        encode(base, Cow::Borrowed(&target), codec, &[], &[], words, lane)?
    };
    if !methods.against_base {
        return Ok(diff);
    }
    let Some(diff) = diff else {
        // The diff could not come under the budget; format 6 is kept only if it does.
        let Some(lz) = lz::create(base, &target, &rb, &rt, None)? else {
            return Ok(None);
        };
        return Ok(budget.is_none_or(|b| lz.len() < b.wait()).then_some(lz));
    };
    // Format 4 costs the device about 20 times the CPU of the others to apply: as against format 3,
    // it must beat format 6 by the codec's least gain to be kept.
    // The diff's add literals are at most the target's length.
    let modeled =
        diff.starts_with(MAGIC) || (diff.starts_with(MAGIC_7) && diff[4] & FLAG_MODELED != 0);
    let slack = if modeled {
        codec.model_min_gain(target.len() as u64)
    } else {
        0
    };
    // Format 6 is kept below this size, and its coding stops when it reaches it: where the diff
    // is far smaller (most patch releases), that saves most of format 6's time.
    let limit = format_6_limit(diff.len(), slack);
    let Some(lz) = lz::create(base, &target, &rb, &rt, Some(limit))? else {
        return Ok(Some(diff));
    };
    let keep_lz = lz.len() < limit;
    tracing::info!(
        diff = diff.len(),
        format_6 = lz.len(),
        kept = if keep_lz { "format 6" } else { "the diff" },
        "delta: format 6 against the diff"
    );
    Ok(Some(if keep_lz { lz } else { diff }))
}

/// The size format 6 must stay under to be kept instead of a diff of `diff` bytes, which may be
/// `slack` percent larger (a modeled diff's least gain): the smallest `n` with
/// `n * 100 >= diff * (100 + slack)`.
fn format_6_limit(diff: usize, slack: u8) -> usize {
    let scaled = (diff as u64).saturating_mul(100 + u64::from(slack));
    usize::try_from(scaled.div_ceil(100)).unwrap_or(usize::MAX)
}

/// How a candidate's encoder runs beside the others.
#[derive(Clone, Copy, Default)]
struct Lane<'a> {
    /// Stop before the add literals where this candidate cannot come under this size.
    budget: Option<&'a Budget>,
    /// This encoder has a core to itself: long add literals are coded as two blocks at once
    /// ([`SPLIT_ADDS`]), and a large image's diff scans what its anchors leave in two halves at
    /// once ([`anchor::SPLIT_SCAN_FROM`]). Not beside the branch transform's candidate, which
    /// already runs at once.
    split: bool,
    /// Raw LZMA2 sections ([`FLAG_RAW`]).
    raw: bool,
    /// With `raw`: also code the copy bytes against the base ([`FLAG_COPIES_BASE`]).
    copies_base: bool,
}

/// The size another candidate will have: a candidate that is worth finishing only if it can be
/// smaller waits for it.
#[derive(Default)]
struct Budget {
    size: std::sync::Mutex<Option<usize>>,
    known: std::sync::Condvar,
}

impl Budget {
    /// Sets the size, once (later calls do nothing), and wakes whoever waits.
    fn set(&self, n: usize) {
        let mut size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        if size.is_none() {
            *size = Some(n);
            self.known.notify_all();
        }
    }

    /// The size, once it is set.
    fn wait(&self) -> usize {
        let mut size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(n) = *size {
                return n;
            }
            size = self.known.wait(size).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A guard that, if the size was never set (the other candidate failed or panicked), sets
    /// it to "no limit" when dropped, so that no one waits for ever.
    fn known_on_drop(&self) -> impl Drop + '_ {
        struct Guard<'a>(&'a Budget);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                self.0.set(usize::MAX);
            }
        }
        Guard(self)
    }
}

/// Runs `a` on another thread and `b` on this one (creating is single-threaded per candidate, and
/// the machine has cores to spare), and returns both results, or the first error.
fn at_once<A, B>(
    a: impl FnOnce() -> io::Result<A> + Send,
    b: impl FnOnce() -> io::Result<B>,
) -> io::Result<(A, B)>
where
    A: Send,
{
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(a);
        let b = b();
        let a = a
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("delta: a candidate's encoder panicked")));
        (a, b)
    });
    Ok((a?, b?))
}

/// The format-5 delta of `plan`, whose expanded images are `bx` and `tx` (given up to the diff).
fn inflated(
    plan: inflate::Plan,
    bx: &[u8],
    tx: Vec<u8>,
    codec: Codec,
    methods: Methods,
) -> io::Result<Vec<u8>> {
    let tables = lzma2_compress(&plan.tables(), Kind::Control)?;
    tracing::info!(
        base_streams = plan.base.len(),
        target_streams = plan.target.len(),
        expanded_base = bx.len(),
        expanded_target = tx.len(),
        "delta: diffing the images with their gzip streams inflated"
    );
    drop(plan);
    let mut d = inflate::MAGIC_5.to_vec();
    d.extend_from_slice(&(tables.len() as u64).to_le_bytes());
    d.extend_from_slice(&tables);
    let inner = best(bx, Cow::Owned(tx), codec, methods, None)?.expect("no budget");
    d.extend_from_slice(&inner);
    Ok(d)
}

fn put_ranges(out: &mut Vec<u8>, ranges: &[Range]) {
    out.push(ranges.len() as u8);
    for r in ranges {
        out.push(r.arch.code());
        out.extend_from_slice(&r.start.to_le_bytes());
        out.extend_from_slice(&r.len.to_le_bytes());
    }
}

/// Which seek codings [`encode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeekChoice {
    /// Varints (formats 1 to 4).
    Varint,
    /// The smallest of every [`Seeks`].
    Smallest,
    /// This one, whatever its size (tests and fuzz seeds).
    Force(Seeks),
}

/// The bsdiff-style diff of the images as they are, its seeks coded as `seeks` says whatever the
/// size: for tests and fuzzing seeds, which need every format 7 coding. Releases use
/// [`create_with`].
#[doc(hidden)]
pub fn create_diff_with_seeks(
    base: &[u8],
    target: &[u8],
    codec: Codec,
    seeks: Seeks,
) -> io::Result<Vec<u8>> {
    encode(
        base,
        Cow::Borrowed(target),
        codec,
        &[],
        &[],
        SeekChoice::Force(seeks),
        Lane::default(),
    )
    .map(|d| d.expect("no budget"))
}

/// One delta: the diff of `base` and `target` as given (already transformed over `rb` and `rt`).
/// `seeks` says which seek codings to try (format 7's words, or varints only). With a `budget`
/// (LZMA2 codecs), `None` as soon as the streams coded so far reach that many bytes.
/// The add literals' two coders, the model and LZMA2, run at once to learn whether the model is
/// kept ([`Codec::Modeled`]). Each coder's output only grows, so each may stop as soon as its length
/// so far settles that, whatever its whole length would be: LZMA2 once the model is kept anyway,
/// the model once it cannot be. The delta is byte for byte the one both coders run to their ends
/// would give. Where the model wins by far, LZMA2 stops well before its end (grpcio: at 70 and 74 %
/// of its input); where it wins narrowly, near its end or not at all (`docs/deltas.md`).
#[derive(Default)]
struct Race {
    /// The least gain that keeps the model, in percent of the delta's sections.
    min_gain: u8,
    /// The sections other than the literals, as the delta will have them.
    rest: OnceLock<usize>,
    /// The model's and LZMA2's whole lengths, once known.
    model: OnceLock<usize>,
    lzma: OnceLock<usize>,
}

impl Race {
    /// Whether the model, `model` bytes, is kept against LZMA2's `lzma` bytes, with `rest` bytes of
    /// other sections: it is no longer and gains at least `min_gain` % of the delta's sections.
    fn keeps(&self, rest: usize, model: usize, lzma: usize) -> bool {
        let gain = lzma.saturating_sub(model) as u128;
        model <= lzma && gain * 100 >= u128::from(self.min_gain) * (rest + lzma) as u128
    }

    /// Whether LZMA2, `n` bytes out so far, may stop: the model is kept whatever LZMA2's whole
    /// length `l` >= `n` (`l (100 - g) >= 100 m + g rest` holds at `n`, so at every `l` past it).
    fn lzma_enough(&self, n: usize) -> bool {
        let (Some(&rest), Some(&m)) = (self.rest.get(), self.model.get()) else {
            return false;
        };
        let g = u128::from(self.min_gain);
        g < 100 && n as u128 * (100 - g) >= 100 * m as u128 + g * rest as u128
    }

    /// Whether the model, `n` bytes out so far, may stop: it is not kept at `n` bytes, nor at any
    /// length past it.
    fn model_enough(&self, n: usize) -> bool {
        match (self.rest.get(), self.lzma.get()) {
            (Some(&rest), Some(&l)) => !self.keeps(rest, n, l),
            _ => false,
        }
    }
}

/// The seek column coded as words, absolute and diagonal, where every seek fits one.
type WordColumns = [Option<io::Result<(Vec<u8>, Seeks)>>; 2];

/// The length of every section but the add literals, with the seek column the delta will take:
/// `None` if any failed to code.
fn sections_but_literals(
    rest: &[io::Result<Vec<u8>>; 5],
    words: &WordColumns,
    forced: Option<Seeks>,
) -> Option<usize> {
    let mut lens = [0usize; 5];
    for (len, r) in lens.iter_mut().zip(rest) {
        *len = r.as_ref().ok()?.len();
    }
    for w in words.iter().flatten() {
        let (w, how) = w.as_ref().ok()?;
        let take = match forced {
            Some(f) => f == *how,
            None => w.len() < lens[2],
        };
        if take {
            lens[2] = w.len();
        }
    }
    Some(lens.iter().sum())
}

fn encode(
    base: &[u8],
    target: Cow<'_, [u8]>,
    codec: Codec,
    rb: &[Range],
    rt: &[Range],
    seeks: SeekChoice,
    lane: Lane<'_>,
) -> io::Result<Option<Vec<u8>>> {
    let Lane {
        budget,
        split,
        raw,
        copies_base,
    } = lane;
    let words = seeks != SeekChoice::Varint;
    let (mut ctrl, mut adds, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    let mut cols: [Vec<u8>; 3] = Default::default();
    // The seeks as 32-bit words (absolute, diagonal), while every one fits.
    let mut absolute = words.then(Vec::new);
    let mut diagonal = words.then(Vec::new);
    let mut runs = ZeroRuns::default();
    let columns = !matches!(codec, Codec::Zstd(_));
    // Where the next control starts in the base and in the target.
    let (mut base_pos, mut target_pos) = (0u64, 0u64);
    {
        let mut t = bidiff::Translator::new(base, &target, |c: &bidiff::Control<'_>| {
            let seek = ((c.seek << 1) ^ (c.seek >> 63)) as u64;
            if columns {
                put_varint(&mut cols[0], c.add.len() as u64);
                put_varint(&mut cols[1], c.copy.len() as u64);
                put_varint(&mut cols[2], seek);
            } else {
                put_varint(&mut ctrl, c.add.len() as u64);
                put_varint(&mut ctrl, c.copy.len() as u64);
                put_varint(&mut ctrl, seek);
            }
            if columns {
                let at = cm::Segment {
                    base_pos,
                    target_pos,
                    len: 0,
                    base_end: base_pos + c.add.len() as u64,
                };
                runs.push(c.add, &at);
            } else {
                adds.extend_from_slice(c.add);
            }
            copies.extend_from_slice(c.copy);
            base_pos = (base_pos + c.add.len() as u64).wrapping_add_signed(c.seek);
            target_pos += (c.add.len() + c.copy.len()) as u64;
            if let Some(w) = &mut absolute {
                match u32::try_from(base_pos) {
                    Ok(p) => w.extend_from_slice(&p.to_be_bytes()),
                    Err(_) => absolute = None,
                }
            }
            if let Some(w) = &mut diagonal {
                let d = base_pos as i64 - target_pos as i64;
                match u32::try_from(((d << 1) ^ (d >> 63)) as u64) {
                    Ok(d) => w.extend_from_slice(&d.to_be_bytes()),
                    Err(_) => diagonal = None,
                }
            }
            Ok::<(), io::Error>(())
        });
        anchor::diff(base, &target, split, |m| t.translate(m))?;
        t.close()?;
    }
    // The streams hold what is left to code: an owned target is no longer needed (on the rootfs
    // pair, 386 MiB freed before the coders' dictionaries are allocated).
    drop(target);
    let (magic, flags, sections) = match codec {
        Codec::Zstd(level) => (
            MAGIC_ZSTD,
            0,
            vec![
                zstd_compress(&ctrl, level)?,
                zstd_compress(&adds, level)?,
                zstd_compress(&copies, level)?,
            ],
        ),
        // Controls in three columns (add lengths, copy lengths, seeks): each column's numbers are
        // alike, and LZMA2 finds more in them apart (1 to 2 % of the ruff and uv deltas). The add
        // literals' model, the slowest step, on one core; LZMA2 of every stream (the literals too,
        // to measure the model against) on the other. Either coder of the literals stops once its
        // length so far settles which is kept ([`Race`]).
        Codec::Modeled { .. } | Codec::Lzma2 => {
            let (zero_runs, literals, segments) = runs.finish();
            // Raw LZMA2 sections, unless the literals are coded in blocks at once (an xz stream).
            let raw = raw && !(split && literals.len() >= SPLIT_ADDS);
            let code = |data: &[u8], kind| {
                if raw {
                    lzma2_raw(data, kind, &never)?.ok_or_else(|| {
                        io::Error::other("delta: an encoder stopped that was never told to")
                    })
                } else {
                    lzma2_compress(data, kind)
                }
            };
            let forced = match seeks {
                SeekChoice::Force(f) => Some(f),
                _ => None,
            };
            let race = Race {
                min_gain: codec.model_min_gain(literals.len() as u64),
                ..Race::default()
            };
            let code_literals = || {
                let enough = |n| race.lzma_enough(n);
                let out = if raw {
                    lzma2_raw(&literals, Kind::Add, &enough)
                } else {
                    lzma2_split(&literals, Kind::Add, split, &enough)
                };
                if let Ok(Some(l)) = &out {
                    let _ = race.lzma.set(l.len());
                }
                out
            };
            let model = || {
                let started = std::time::Instant::now();
                let out = cm::encode_unless(base, &segments, &literals, &|n| race.model_enough(n));
                tracing::debug!(
                    bytes = literals.len(),
                    compressed = out.as_ref().ok().and_then(Option::as_ref).map_or(0, Vec::len),
                    stopped = matches!(out, Ok(None)),
                    elapsed = ?started.elapsed(),
                    "delta: add literals modeled"
                );
                if let Ok(Some(m)) = &out {
                    let _ = race.model.set(m.len());
                }
                out
            };
            // Every stream but the add literals.
            let code_rest = || {
                let words_z = [(&absolute, Seeks::Absolute), (&diagonal, Seeks::Diagonal)]
                    .map(|(w, how)| w.as_ref().map(|w| code(w, Kind::Words).map(|c| (c, how))));
                let mut rest = [
                    (&cols[0], Kind::Control),
                    (&cols[1], Kind::Control),
                    (&cols[2], Kind::Control),
                    (&zero_runs, Kind::Control),
                    (&copies, Kind::Copy),
                ]
                .map(|(data, kind)| code(data, kind));
                // The copy bytes against the base too, and the smallest kept.
                let mut against = false;
                if raw && copies_base && !base.is_empty() && !copies.is_empty() {
                    let tries = if copies.len() <= lz::COPIES_BOTH_UP_TO {
                        &lz::COPY_MODELS[..]
                    } else {
                        &lz::COPY_MODELS[..1]
                    };
                    let started = std::time::Instant::now();
                    for &model in tries {
                        let c = lz::encode_copies(base, &copies, model);
                        let smaller = match (&c, &rest[4]) {
                            (Ok(c), Ok(r)) => c.len() < r.len(),
                            (Ok(_), Err(_)) => true,
                            (Err(_), _) => false,
                        };
                        tracing::debug!(
                            bytes = copies.len(),
                            against_base = c.as_ref().map_or(0, Vec::len),
                            alone = rest[4].as_ref().map_or(0, Vec::len),
                            ?model,
                            "delta: copy bytes coded against the base"
                        );
                        if smaller {
                            rest[4] = c;
                            against = true;
                        }
                    }
                    tracing::debug!(
                        elapsed = ?started.elapsed(),
                        "delta: copies against the base measured"
                    );
                }
                if let Some(n) = sections_but_literals(&rest, &words_z, forced) {
                    let _ = race.rest.set(n);
                }
                (rest, words_z, against)
            };
            let modeling = matches!(codec, Codec::Modeled { .. });
            let (modeled, lzma, rest, words_z) = match budget {
                // The literals' LZMA2 here, the other streams and then the model beside it (the
                // other streams first: either coder of the literals needs their length to stop).
                None => std::thread::scope(|scope| {
                    // Long literals (an image's): the model, the longest coder, starts at once
                    // on its own thread, and learns the other streams' length as it goes.
                    let early = (split && literals.len() >= SPLIT_ADDS && modeling)
                        .then(|| scope.spawn(model));
                    let side = scope.spawn(|| {
                        let rest = code_rest();
                        let modeled = match early {
                            Some(m) => Some(m.join().unwrap_or_else(|_| {
                                Err(io::Error::other("delta: the model panicked"))
                            })),
                            None => modeling.then(model),
                        };
                        (modeled, rest)
                    });
                    let lzma = code_literals();
                    side.join()
                        .map(|(modeled, (rest, words_z, against))| {
                            (modeled, lzma, (rest, against), words_z)
                        })
                        .map_err(|_| {
                            io::Error::other("delta: the model or another stream's coder panicked")
                        })
                })?,
                Some(budget) => {
                    // The other streams first (the literals' coding is most of the time): if
                    // they alone, with the smaller seek column, reach the budget, this delta
                    // cannot be the smaller one.
                    let (rest, words_z, against) = code_rest();
                    let budget = budget.wait();
                    let len = |r: &io::Result<Vec<u8>>| r.as_ref().map_or(0, Vec::len);
                    let seek_column = words_z
                        .iter()
                        .flatten()
                        .map(|w| w.as_ref().map_or(usize::MAX, |(c, _)| c.len()))
                        .fold(len(&rest[2]), usize::min);
                    let lower = HEADER3 as usize
                        + 2
                        + RANGE_BYTES * (rb.len() + rt.len())
                        + len(&rest[0])
                        + len(&rest[1])
                        + seek_column
                        + len(&rest[3])
                        + len(&rest[4]);
                    if rest.iter().all(Result::is_ok) && lower > budget {
                        tracing::info!(
                            lower,
                            budget,
                            literals = literals.len(),
                            "delta: a candidate stopped before its add literals: it cannot be smaller"
                        );
                        return Ok(None);
                    }
                    let (modeled, lzma) = std::thread::scope(|scope| {
                        let modeled = modeling.then(|| scope.spawn(model));
                        let lzma = code_literals();
                        let modeled = modeled.map(|m| {
                            m.join().unwrap_or_else(|_| {
                                Err(io::Error::other("delta: the model panicked"))
                            })
                        });
                        (modeled, lzma)
                    });
                    (modeled, lzma, (rest, against), words_z)
                }
            };
            let (rest, copies_against) = rest;
            let [c0, c1, c2, z, copies] = rest;
            let mut rest = [c0?, c1?, c2?, z?, copies?];
            let mut flags = 0;
            let mut seeks = Seeks::Varint;
            for w in words_z {
                if let Some((w, how)) = w.transpose()? {
                    tracing::debug!(
                        varints = rest[2].len(),
                        words = w.len(),
                        ?how,
                        "delta: the seek column measured"
                    );
                    let take = match forced {
                        Some(f) => f == how,
                        None => w.len() < rest[2].len(),
                    };
                    if take {
                        rest[2] = w;
                        seeks = how;
                    }
                }
            }
            flags |= (seeks as u8) << SEEKS_SHIFT;
            if raw {
                flags |= FLAG_RAW;
            }
            if copies_against {
                flags |= FLAG_COPIES_BASE;
            }
            let lzma = lzma?;
            let rest_len = rest.iter().map(Vec::len).sum::<usize>();
            let stopped = || io::Error::other("delta: both coders of the add literals stopped");
            let (magic, lits) = match (codec, modeled) {
                (Codec::Modeled { .. }, Some(m)) => {
                    let m = m?;
                    // Format 4 costs the device far more CPU to apply: keep it only where it pays.
                    let keep = match (&m, &lzma) {
                        (Some(m), Some(l)) => race.keeps(rest_len, m.len(), l.len()),
                        // LZMA2 stopped where the model was kept whatever its length, or the model
                        // where it could not be.
                        (Some(_), None) => true,
                        (None, Some(_)) => false,
                        (None, None) => return Err(stopped()),
                    };
                    tracing::info!(
                        modeled = m.as_ref().map(Vec::len),
                        lzma2 = lzma.as_ref().map(Vec::len),
                        rest = rest_len,
                        kept = if keep { "format 4" } else { "format 3" },
                        "delta: the add model measured (a coder that stopped early has no length)"
                    );
                    match (keep, m, lzma) {
                        (true, Some(m), _) => {
                            flags |= FLAG_MODELED;
                            (MAGIC, m)
                        }
                        (false, _, Some(l)) => (MAGIC_3, l),
                        _ => return Err(stopped()),
                    }
                }
                _ => (MAGIC_3, lzma.ok_or_else(stopped)?),
            };
            let [c0, c1, c2, z, copies] = rest;
            let magic = if seeks != Seeks::Varint || raw {
                MAGIC_7
            } else {
                magic
            };
            (magic, flags, vec![c0, c1, c2, z, lits, copies])
        }
    };
    let mut out = magic.to_vec();
    if magic == MAGIC_7 {
        out.push(flags);
    }
    for s in &sections {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    if columns {
        put_ranges(&mut out, rb);
        put_ranges(&mut out, rt);
    }
    for s in &sections {
        out.extend_from_slice(s);
    }
    Ok(Some(out))
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

/// One stream's decoder, reading its slice of the delta.
enum Section<R: Read> {
    Zstd(zstd::stream::read::Decoder<'static, io::BufReader<io::Take<R>>>),
    Lzma2(liblzma::bufread::XzDecoder<io::BufReader<io::Take<R>>>),
    /// Format 4's coded add literals, read by [`cm::Decoder`].
    Raw(io::BufReader<io::Take<R>>),
    /// Format 7's copy bytes against the base ([`FLAG_COPIES_BASE`]).
    AgainstBase(Box<lzma_rust2::Lzma2Reader<io::BufReader<io::Take<R>>>>),
}

impl<R: Read> Read for Section<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Zstd(d) => d.read(buf),
            Self::Lzma2(d) => d.read(buf),
            Self::Raw(d) => d.read(buf),
            Self::AgainstBase(d) => d.read(buf).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => malformed(&format!(
                    "the copy bytes' LZMA2 stream (coded against the base) is corrupt ({e})"
                )),
                _ => e,
            }),
        }
    }
}

/// How a section of a delta is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coded {
    /// Format 4's add literals: the model's bytes, read as they are.
    Model,
    /// An xz stream of LZMA2 (formats 2 to 4, and 7 without [`FLAG_RAW`]).
    Xz,
    /// Format 7 with [`FLAG_RAW`]: the dictionary's size as a power of two, then raw LZMA2.
    RawLzma2,
    /// A zstd frame (format 1).
    Zstd,
}

fn section<R: Read + Seek>(
    mut r: R,
    at: u64,
    len: u64,
    coded: Coded,
) -> Result<Section<R>, DeltaError> {
    r.seek(SeekFrom::Start(at))?;
    match coded {
        Coded::Model => Ok(Section::Raw(io::BufReader::with_capacity(
            64 * 1024,
            r.take(len),
        ))),
        Coded::Xz => {
            // The memory limit refuses a stream whose dictionary is over `MAX_DICT` before
            // decoding it.
            let limit = u64::from(MAX_DICT) + (1 << 20);
            let stream = liblzma::stream::Stream::new_stream_decoder(limit, 0)
                .map_err(|e| DeltaError::Malformed(format!("lzma2 decoder: {e}")))?;
            let input = io::BufReader::with_capacity(64 * 1024, r.take(len));
            Ok(Section::Lzma2(liblzma::bufread::XzDecoder::new_stream(
                input, stream,
            )))
        }
        Coded::RawLzma2 => {
            let mut input = io::BufReader::with_capacity(64 * 1024, r.take(len));
            let mut log = [0u8];
            input
                .read_exact(&mut log)
                .map_err(|e| DeltaError::Malformed(format!("raw LZMA2 section: {e}")))?;
            // The dictionary is allocated as the delta says: refuse any over `MAX_DICT` before.
            if !(12..=MAX_DICT.trailing_zeros()).contains(&u32::from(log[0])) {
                return Err(DeltaError::Malformed(format!(
                    "raw LZMA2 section asks for a dictionary of 2^{} bytes (at most 2^{})",
                    log[0],
                    MAX_DICT.trailing_zeros()
                )));
            }
            let mut o = liblzma::stream::LzmaOptions::new_preset(6)
                .map_err(|e| DeltaError::Malformed(format!("lzma2 decoder: {e}")))?;
            o.dict_size(1 << log[0]);
            let mut f = liblzma::stream::Filters::new();
            f.lzma2(&o);
            let stream = liblzma::stream::Stream::new_raw_decoder(&f)
                .map_err(|e| DeltaError::Malformed(format!("lzma2 decoder: {e}")))?;
            Ok(Section::Lzma2(liblzma::bufread::XzDecoder::new_stream(
                input, stream,
            )))
        }
        Coded::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(r.take(len))?;
            d.window_log_max(MAX_WINDOW_LOG)?;
            Ok(Section::Zstd(d))
        }
    }
}

/// Opens format 7's copy section coded against the base ([`lz::encode_copies`]): reads the
/// base's first bytes (as the diff saw them) into its dictionary, then rewinds the base.
fn copies_section<R: Read + Seek, B: Read + Seek>(
    mut r: R,
    at: u64,
    len: u64,
    base: &mut BaseView<B>,
) -> Result<Section<R>, DeltaError> {
    r.seek(SeekFrom::Start(at))?;
    let mut input = io::BufReader::with_capacity(64 * 1024, r.take(len));
    let mut head = [0u8; 5];
    input
        .read_exact(&mut head)
        .map_err(|e| DeltaError::Malformed(format!("copies against the base: {e}")))?;
    let (dict, want) = lz::copies_header(head)?;
    let mut preset = Vec::new();
    base.seek(SeekFrom::Start(0))?;
    (&mut *base)
        .take(u64::from(want))
        .read_to_end(&mut preset)?;
    base.seek(SeekFrom::Start(0))?;
    if preset.len() as u64 != u64::from(want) {
        return Err(DeltaError::Malformed(format!(
            "copies against the base: a preset of {want} bytes, and the base has {}",
            preset.len()
        )));
    }
    let reader = lz::decode_copies(input, dict, &preset);
    Ok(Section::AgainstBase(Box::new(reader)))
}

enum State {
    Control,
    Add(u64, u64, i64),
    Copy(u64, i64),
    Done,
}

/// The delta's output before the branch transform is undone.
struct Raw<R: Read + Seek, B: Read + Seek> {
    /// One interleaved control stream (format 1) or three columns (format 2).
    ctrl: Vec<Section<R>>,
    adds: Adds<R>,
    copies: Section<R>,
    base: BaseView<B>,
    state: State,
    tmp: Vec<u8>,
    /// How the seek column codes the seeks (format 7).
    seeks: Seeks,
    /// Format 4: base bytes of the current control already read, from the base position on.
    window: Vec<u8>,
    /// Where the base is read next (kept by hand: format 4's model needs it).
    base_pos: u64,
    produced: u64,
    limit: u64,
}

/// The new image, read from a delta applied to a base.
pub struct Apply<R: Read + Seek, B: Read + Seek> {
    out: Out<R, B>,
}

/// A delta of formats 1 to 4, 6 or 7 (what format 5 wraps). Held boxed by [`Apply`], so the
/// variants' sizes need not match.
#[allow(clippy::large_enum_variant)]
enum Plain<R: Read + Seek, B: Read + Seek> {
    Streams(Restore<Raw<R, B>>),
    /// Format 6: the base held in the LZMA2 dictionary.
    AgainstBase(Restore<lz::Decode<R>>),
}

impl<R: Read + Seek, B: Read + Seek> Read for Plain<R, B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Streams(p) => p.read(buf),
            Self::AgainstBase(p) => p.read(buf),
        }
    }
}

enum Out<R: Read + Seek, B: Read + Seek> {
    Plain(Box<Plain<R, B>>),
    /// Format 5: the inner delta reads the expanded base and writes the expanded target.
    Inflated(Box<inflate::Recompress<Plain<inflate::Shift<R>, inflate::Expanded<B>>>>),
}

impl<R: Read + Seek, B: Read + Seek> Read for Apply<R, B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.out {
            Out::Plain(p) => p.read(buf),
            Out::Inflated(p) => p.read(buf),
        }
    }
}

impl<R: Read + Seek, B: Read + Seek> std::fmt::Debug for Apply<R, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apply").finish_non_exhaustive()
    }
}

/// Reads the transformed ranges of one image from a format-2 header.
fn get_ranges(r: &mut impl Read) -> Result<Vec<Range>, DeltaError> {
    let bad = |what: &str| DeltaError::Malformed(format!("transformed ranges: {what}"));
    let mut n = [0u8];
    r.read_exact(&mut n).map_err(|e| bad(&e.to_string()))?;
    if usize::from(n[0]) > branch::MAX_RANGES {
        return Err(bad("too many"));
    }
    let mut out = Vec::with_capacity(n[0].into());
    for _ in 0..n[0] {
        let mut b = [0u8; RANGE_BYTES];
        r.read_exact(&mut b).map_err(|e| bad(&e.to_string()))?;
        let arch = branch::Arch::from_code(b[0]).ok_or_else(|| bad("unknown instruction set"))?;
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        out.push(Range {
            arch,
            start: word(1),
            len: word(9),
        });
    }
    if !branch::valid(&out) {
        return Err(bad("overlapping, unsorted or overflowing"));
    }
    Ok(out)
}

/// The read buffer for a base given to [`apply`], in bytes. A delta reads its base where its
/// controls point, a few hundred bytes at a time here and there: a larger buffer is refilled whole
/// at each far seek. With 256 KiB, applying the ruff pair's delta read 19.9 GB from its 31 MB base
/// (77,000 refills) and spent 1.8 s in the kernel; with 16 KiB, 0.2 s (`docs/deltas.md`,
/// "Applying faster").
pub const BASE_BUFFER: usize = 16 * 1024;

/// Applies a delta to `base`. `open` opens the delta (called once per stream, and once more for
/// format 5). Reading yields the new image; more than `limit` bytes is an error (a hostile delta
/// cannot produce endless output).
pub fn apply<R: Read + Seek, B: Read + Seek>(
    mut open: impl FnMut() -> io::Result<R>,
    base: B,
    limit: u64,
) -> Result<Apply<R, B>, DeltaError> {
    let mut r = open()?;
    let magic = read_magic(&mut r)?;
    if &magic != inflate::MAGIC_5 {
        return Ok(Apply {
            out: Out::Plain(Box::new(apply_plain(r, magic, open, base, limit)?)),
        });
    }
    let header = inflate::Header::read(io::BufReader::new(r))?;
    let expanded = header.expanded(base)?;
    let inner_at = header.inner;
    let mut open = move || inflate::Shift::new(open()?, inner_at);
    let mut r = open()?;
    let magic = read_magic(&mut r)?;
    let inner = apply_plain(
        r,
        magic,
        open,
        expanded,
        limit.saturating_add(header.target_growth()),
    )?;
    Ok(Apply {
        out: Out::Inflated(Box::new(header.recompress(inner, limit))),
    })
}

fn read_magic(r: &mut impl Read) -> Result<[u8; 4], DeltaError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .map_err(|e| DeltaError::Malformed(format!("header: {e}")))?;
    Ok(magic)
}

/// Applies a delta of formats 1 to 4 or 6 (format 5's inner delta is one of them) whose `magic` was
/// read from `r`; `open` opens it again, once per stream.
fn apply_plain<R: Read + Seek, B: Read + Seek>(
    mut r: R,
    magic: [u8; 4],
    mut open: impl FnMut() -> io::Result<R>,
    base: B,
    limit: u64,
) -> Result<Plain<R, B>, DeltaError> {
    if &magic == lz::MAGIC_6 {
        return Ok(Plain::AgainstBase(lz::open(r, base, limit)?));
    }
    let mut modeled = &magic == MAGIC;
    let mut seeks = Seeks::Varint;
    let mut flags_len = 0;
    let mut raw = false;
    let mut copies_against = false;
    if &magic == MAGIC_7 {
        let mut f = [0u8];
        r.read_exact(&mut f)
            .map_err(|e| DeltaError::Malformed(format!("header: {e}")))?;
        raw = f[0] & FLAG_RAW != 0;
        copies_against = f[0] & FLAG_COPIES_BASE != 0;
        if copies_against && !raw {
            return Err(DeltaError::Malformed(
                "format 7: copies against the base without raw sections".into(),
            ));
        }
        seeks = match (f[0] & !(FLAG_RAW | FLAG_COPIES_BASE)) >> SEEKS_SHIFT {
            0 => Seeks::Varint,
            1 => Seeks::Absolute,
            2 => Seeks::Diagonal,
            _ => {
                return Err(DeltaError::Malformed(format!(
                    "unknown format 7 flags {:#04x} (written by a newer version?)",
                    f[0]
                )))
            }
        };
        modeled = f[0] & FLAG_MODELED != 0;
        flags_len = 1;
    }
    let (lzma2, mut start) = match &magic {
        m if m == MAGIC || m == MAGIC_3 || m == MAGIC_7 => (true, HEADER3),
        m if m == MAGIC_2 => (true, HEADER2),
        m if m == MAGIC_ZSTD => (false, HEADER),
        _ => {
            return Err(DeltaError::Malformed(
                "not a wardswarm delta (bad magic; written by a newer version?)".into(),
            ))
        }
    };
    let zero_runs = start == HEADER3;
    let mut lens = vec![0u64; (start as usize - 4) / 8];
    start += flags_len;
    for l in lens.iter_mut() {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)
            .map_err(|e| DeltaError::Malformed(format!("header: {e}")))?;
        *l = u64::from_le_bytes(b);
    }
    let (mut rb, mut rt) = (vec![], vec![]);
    if lzma2 {
        let mut r = io::BufReader::new(r);
        rb = get_ranges(&mut r)?;
        rt = get_ranges(&mut r)?;
        start += (2 + (rb.len() + rt.len()) * RANGE_BYTES) as u64;
    }
    let mut base = BaseView::new(base, rb);
    let last = lens.len() - 1;
    let mut sections = Vec::with_capacity(lens.len());
    let mut at = start;
    for (i, len) in lens.into_iter().enumerate() {
        if copies_against && i == last {
            sections.push(copies_section(open()?, at, len, &mut base)?);
            break;
        }
        // Format 4's fifth section, the add literals, is the model's coded bytes.
        let kind = match (lzma2, modeled && i == 4) {
            (_, true) => Coded::Model,
            (true, false) if raw => Coded::RawLzma2,
            (true, false) => Coded::Xz,
            (false, false) => Coded::Zstd,
        };
        sections.push(section(open()?, at, len, kind)?);
        at = at
            .checked_add(len)
            .ok_or_else(|| DeltaError::Malformed("section lengths overflow".into()))?;
    }
    let copies = sections.pop();
    let adds = sections.pop();
    let (Some(adds), Some(copies)) = (adds, copies) else {
        return Err(DeltaError::Malformed("missing sections".into()));
    };
    let adds = if !zero_runs {
        Adds::Whole(adds)
    } else if modeled {
        let pairs = sections
            .pop()
            .ok_or_else(|| DeltaError::Malformed("missing sections".into()))?;
        Adds::Modeled {
            pairs: Box::new(pairs),
            literals: Box::new(cm::Decoder::new(adds)?),
            model: None,
            literal: 0,
            zeros: 0,
        }
    } else {
        let pairs = sections
            .pop()
            .ok_or_else(|| DeltaError::Malformed("missing sections".into()))?;
        Adds::Runs {
            pairs: Box::new(pairs),
            literals: Box::new(adds),
            literal: 0,
            zeros: 0,
        }
    };
    let raw = Raw {
        ctrl: sections,
        adds,
        copies,
        base,
        state: State::Control,
        seeks,
        tmp: vec![0u8; 64 * 1024],
        window: Vec::new(),
        base_pos: 0,
        produced: 0,
        limit,
    };
    Ok(Plain::Streams(Restore::new(raw, rt)))
}

impl<R: Read + Seek, B: Read + Seek> Raw<R, B> {
    /// The next seek, for a control of `add` and `copy` bytes that starts here.
    fn seek(&mut self, add: u64, copy: u64, column: usize) -> io::Result<i64> {
        let zigzag = |z: u64| ((z >> 1) as i64) ^ -((z & 1) as i64);
        if self.seeks == Seeks::Varint {
            let z = get_varint(&mut self.ctrl[column])?
                .ok_or_else(|| malformed("truncated control"))?;
            return Ok(zigzag(z));
        }
        let mut w = [0u8; 4];
        self.ctrl[column]
            .read_exact(&mut w)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => malformed("truncated control"),
                _ => e,
            })?;
        let w = u64::from(u32::from_be_bytes(w));
        // Where the control's add bytes end in the base, and where the next control starts in
        // the target: i128, so that no hostile length overflows.
        let add_end = i128::from(self.base_pos) + i128::from(add);
        let next = match self.seeks {
            Seeks::Absolute => i128::from(w),
            _ => {
                let target_end = i128::from(self.produced) + i128::from(add) + i128::from(copy);
                target_end + i128::from(zigzag(w))
            }
        };
        i64::try_from(next - add_end).map_err(|_| malformed("seek out of range"))
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed delta: {what}"),
    )
}

impl<R: Read + Seek, B: Read + Seek> Read for Raw<R, B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if buf.is_empty() {
                return Ok(0);
            }
            match self.state {
                State::Done => return Ok(0),
                State::Control => {
                    let Some(add) = get_varint(&mut self.ctrl[0])? else {
                        // Every stream must end here, and end whole: reading on to each end makes
                        // its decoder check the stream's footer (a truncated delta is an error).
                        let mut b = [0u8];
                        for s in self.ctrl.iter_mut().skip(1) {
                            if s.read(&mut b)? != 0 {
                                return Err(malformed("control columns of unequal length"));
                            }
                        }
                        self.adds.finish()?;
                        if self.copies.read(&mut b)? != 0 {
                            return Err(malformed("data past the last control"));
                        }
                        self.state = State::Done;
                        continue;
                    };
                    let last = self.ctrl.len() - 1;
                    let copy = get_varint(&mut self.ctrl[1.min(last)])?
                        .ok_or_else(|| malformed("truncated control"))?;
                    let seek = self.seek(add, copy, last)?;
                    self.state = State::Add(add, copy, seek);
                }
                State::Add(0, copy, seek) => self.state = State::Copy(copy, seek),
                State::Add(rem, copy, seek) if matches!(self.adds, Adds::Modeled { .. }) => {
                    // The model looks a few base bytes ahead within the control: keep them read,
                    // and give out only bytes whose lookahead is in the window.
                    let want = rem.min(self.tmp.len() as u64) as usize;
                    let have = self.window.len();
                    if have < want {
                        self.window.resize(want, 0);
                        self.base.read_exact(&mut self.window[have..])?;
                    }
                    let ready = if want as u64 == rem {
                        want
                    } else {
                        want - (cm::LOOKAHEAD - 1)
                    };
                    let n = ready.min(buf.len());
                    for (k, out) in buf[..n].iter_mut().enumerate() {
                        let ctx = cm::Ctx {
                            base: &self.window[k..want.min(k + cm::LOOKAHEAD)],
                            base_pos: self.base_pos + k as u64,
                            target_pos: self.produced + k as u64,
                        };
                        *out = self.window[k].wrapping_add(self.adds.modeled(&ctx)?);
                    }
                    self.window.drain(..n);
                    self.base_pos += n as u64;
                    self.state = State::Add(rem - n as u64, copy, seek);
                    return self.produced(n);
                }
                State::Add(rem, copy, seek) => {
                    let n = (rem.min(buf.len() as u64) as usize).min(self.tmp.len());
                    self.base.read_exact(&mut buf[..n])?;
                    self.adds
                        .read_exact(&mut self.tmp[..n])
                        .map_err(|e| match e.kind() {
                            io::ErrorKind::UnexpectedEof => malformed("add stream too short"),
                            _ => e,
                        })?;
                    for (o, d) in buf[..n].iter_mut().zip(&self.tmp[..n]) {
                        *o = o.wrapping_add(*d);
                    }
                    self.base_pos += n as u64;
                    self.state = State::Add(rem - n as u64, copy, seek);
                    return self.produced(n);
                }
                State::Copy(0, seek) => {
                    // Relative: a buffered base keeps its buffer for a short seek.
                    self.base.seek_relative(seek)?;
                    self.base_pos = self.base_pos.wrapping_add_signed(seek);
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

impl<R: Read + Seek, B: Read + Seek> Raw<R, B> {
    fn produced(&mut self, n: usize) -> io::Result<usize> {
        count_output(&mut self.produced, self.limit, n)
    }
}

/// Adds `n` bytes of output to `produced`: more than `limit` in all is an error (a hostile delta
/// cannot produce endless output).
fn count_output(produced: &mut u64, limit: u64, n: usize) -> io::Result<usize> {
    *produced += n as u64;
    if *produced > limit {
        return Err(malformed(&format!("output longer than {limit} bytes")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
