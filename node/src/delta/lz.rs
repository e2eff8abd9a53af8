//! Format 6 (`"WSD6"`): the whole new image as one LZMA2 stream whose dictionary starts out holding
//! the base, as `zstd --patch-from` does with zstd.
//!
//! A bsdiff-style diff (formats 1 to 4) codes the new bytes that have no long match in the base as
//! literals, compressed apart from the base. Where most of the image changed a little everywhere (a
//! program rebuilt with another toolchain: the same functions, laid out and encoded anew), those
//! literals are most of the delta, and many of them repeat short runs of the base. LZMA2 with the
//! base as its preset dictionary finds those runs, and its match distances, repeated-match codes and
//! literal contexts cost fewer bytes there than bidiff's controls and streams (`docs/deltas.md`: the
//! ninja rebuild). For an ELF executable the images are diffed with their branch targets made
//! absolute first ([`super::branch`]), when that measures smaller.
//!
//! The dictionary bounds it: the base must fit in [`MAX_DICT`] (16 MiB), the most a device
//! allocates for an LZMA2 dictionary. Larger bases take the other formats. Applying holds the
//! dictionary (at most 16 MiB, filled from the base, which is read once and checked against the
//! signed base hash before, as for every delta) and one transform block.
//!
//! Layout: `"WSD6"`, the dictionary size (u32, little-endian), the new image's length (u64), the
//! base's and the new image's transformed ranges (as format 3), then the raw LZMA2 stream, which
//! must end with its end marker exactly at the delta's end.

use std::io::{self, Read, Seek};

use lzma_rust2::{Lzma2Options, Lzma2Reader, Lzma2Writer, LzmaOptions};

use super::branch::{self, BaseView, Range, Restore};
use super::{get_ranges, put_ranges, DeltaError, MAX_DICT};

/// The magic bytes of format 6.
pub const MAGIC_6: &[u8; 4] = b"WSD6";

/// The largest base format 6 is tried on: the whole base must fit in the device's dictionary.
pub const MAX_BASE: usize = MAX_DICT as usize;

/// The dictionary for a base and a new image: enough to hold both, rounded up to a power of two,
/// and never over [`MAX_DICT`] (where the base is near that size, the start of the base leaves the
/// window as the new image's end is written: the new image's matches mostly lie at about the same
/// offset in the base, so they stay in reach).
fn dict_size(base: usize, target: usize) -> u32 {
    ((base + target) as u64)
        .next_power_of_two()
        .clamp(1 << 16, u64::from(MAX_DICT)) as u32
}

/// One format-6 delta of `target` against `base`, both already transformed over `rb` and `rt`;
/// `None` once it reaches `limit` bytes.
fn encode(
    base: &[u8],
    target: &[u8],
    rb: &[Range],
    rt: &[Range],
    limit: Option<usize>,
) -> io::Result<Option<Vec<u8>>> {
    let dict = dict_size(base.len(), target.len());
    let mut out = MAGIC_6.to_vec();
    out.extend_from_slice(&dict.to_le_bytes());
    out.extend_from_slice(&(target.len() as u64).to_le_bytes());
    put_ranges(&mut out, rb);
    put_ranges(&mut out, rt);
    // xz's `-9` model: measured on the ninja pair, `lc=4` and `lc=2, pb=0` were within 1 %, and a
    // longer nice length or a deeper search within 0.1 %.
    against(out, dict, base, XZ_MODEL, target, limit)
}

/// xz's `-9` literal model: `lc=3, lp=0, pb=2`.
pub const XZ_MODEL: (u32, u32, u32) = (3, 0, 2);

/// `data` as raw LZMA2 (`-9`, the longest nice length) after `head`, its dictionary of `dict` bytes
/// starting out holding `preset`, with the literal model `(lc, lp, pb)`. With a `limit`, `None` as
/// soon as the output (`head` included) reaches that many bytes: the caller would not keep it, and
/// the rest of the coding is saved. The output only grows, so stopping changes no kept result.
fn against(
    head: Vec<u8>,
    dict: u32,
    preset: &[u8],
    (lc, lp, pb): (u32, u32, u32),
    data: &[u8],
    limit: Option<usize>,
) -> io::Result<Option<Vec<u8>>> {
    let mut opts = LzmaOptions::with_preset(9);
    opts.dict_size = dict;
    opts.nice_len = LzmaOptions::NICE_LEN_MAX;
    opts.lc = lc;
    opts.lp = lp;
    opts.pb = pb;
    opts.preset_dict = Some(preset.to_vec());
    let mut w = Lzma2Writer::new(
        head,
        Lzma2Options {
            lzma_options: opts,
            ..Default::default()
        },
    );
    let limit = limit.unwrap_or(usize::MAX);
    // The writer hands over a chunk of at most 64 KiB of output per 2 MiB of input; pieces of
    // 1 MiB check the limit soon after each.
    for piece in data.chunks(LIMIT_PIECE) {
        io::Write::write_all(&mut w, piece)?;
        if w.inner().len() >= limit {
            return Ok(None);
        }
    }
    let out = w.finish()?;
    Ok((out.len() < limit).then_some(out))
}

/// How much input [`against`] codes between checks of its limit.
const LIMIT_PIECE: usize = 1 << 20;

/// The smallest format-6 delta of `target` against `base`: of the images as they are and, where
/// both are ELF executables of one instruction set, with their branch targets made absolute
/// (`rb` and `rt`, from [`branch::exec_ranges`]; empty otherwise). `None` if the base is over
/// [`MAX_BASE`] or empty (an empty preset dictionary is no dictionary: LZMA2 would then start
/// with a dictionary reset, which the decoder, told of a preset, refuses), or if each candidate
/// reached `limit` bytes (its coding then stopped there: the caller keeps format 6 only below it).
pub fn create(
    base: &[u8],
    target: &[u8],
    rb: &[Range],
    rt: &[Range],
    limit: Option<usize>,
) -> io::Result<Option<Vec<u8>>> {
    if base.is_empty() || base.len() > MAX_BASE {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let (plain, transformed) = if rb.is_empty() || rt.is_empty() {
        (encode(base, target, &[], &[], limit)?, None)
    } else {
        super::at_once(
            || encode(base, target, &[], &[], limit),
            || {
                let (tb, tt) = branch::encode_pair(base, target, rb, rt);
                encode(&tb, &tt, rb, rt, limit)
            },
        )?
    };
    tracing::info!(
        plain = plain.as_ref().map(Vec::len),
        transformed = transformed.as_ref().map(Vec::len),
        limit,
        elapsed = ?started.elapsed(),
        "delta: format 6 (LZMA2 against the base) measured (none: stopped at the limit)"
    );
    Ok(match (plain, transformed) {
        (Some(p), Some(t)) if t.len() < p.len() => Some(t),
        (Some(p), _) => Some(p),
        (None, t) => t,
    })
}

/// The LZMA models tried for a diff's copy bytes coded against the base: xz's default (`lc=3, lp=0,
/// pb=2`) and one for 2-byte aligned code (`lc=0, lp=1, pb=1`: Thumb-2 and much else measured
/// smaller with it, `docs/deltas.md`). Both are tried on streams up to [`COPIES_BOTH_UP_TO`].
pub const COPY_MODELS: [(u32, u32, u32); 2] = [XZ_MODEL, (0, 1, 1)];

/// Copy streams up to this long are coded with each of [`COPY_MODELS`]; longer ones with the
/// first only (each try preloads the base into the match finder again).
pub const COPIES_BOTH_UP_TO: usize = 1 << 20;

/// At most this much of the base's start is preset in a copy stream's dictionary. On the corpus,
/// the first 4 MiB gave at least the whole base's gain on three of four pairs of 4.7 to 19 MB
/// (esbuild kept 84 % of it) and half of it on ruff's 31 MB, for less memory and time than the
/// whole base's 16 MiB (`docs/deltas.md`).
pub const COPIES_PRESET: usize = 4 << 20;

/// The largest dictionary a copy stream is written with: what applying it holds, beside the
/// other sections' dictionaries. Readers accept up to [`MAX_DICT`].
pub const COPIES_MAX_DICT: u32 = 8 << 20;

/// How a copy stream of `copies` bytes against a base of `base` bytes is written: its preset (the
/// base's first bytes, up to [`COPIES_PRESET`]) and its dictionary (enough for the preset and the
/// copies, rounded up to a power of two, at least 64 KiB and at most [`COPIES_MAX_DICT`]).
pub fn copies_layout(base: usize, copies: usize) -> (usize, u32) {
    let preset = base.min(COPIES_PRESET);
    (preset, dict_size(preset, copies).min(COPIES_MAX_DICT))
}

/// A diff's copy bytes (the new bytes with no match in the base) as format 7's
/// [`super::FLAG_COPIES_BASE`] section: the dictionary's size as a power of two (u8), the preset's
/// length (u32 LE), then raw LZMA2 whose dictionary starts out holding that many of the base's
/// first bytes, ending in its end marker. New code is written by the same compiler as the old: its
/// short sequences (prologues, calls, common operand forms) are found in the base where the copy
/// stream alone does not hold them yet. `base` is as the diff saw it (transformed, where the
/// diff's ranges say so), and must not be empty.
pub fn encode_copies(base: &[u8], copies: &[u8], model: (u32, u32, u32)) -> io::Result<Vec<u8>> {
    let (preset, dict) = copies_layout(base.len(), copies.len());
    if preset == 0 {
        return Err(io::Error::other(
            "delta: copies against the base need a base",
        ));
    }
    let mut head = vec![dict.trailing_zeros() as u8];
    head.extend_from_slice(&(preset as u32).to_le_bytes());
    Ok(against(head, dict, &base[..preset], model, copies, None)?.expect("no limit"))
}

/// The dictionary size and preset length an [`encode_copies`] section's header names, checked
/// against what a device allocates: a dictionary of 4 KiB to [`MAX_DICT`], and a preset of at
/// least one byte and at most the dictionary.
pub fn copies_header(head: [u8; 5]) -> Result<(u32, u32), DeltaError> {
    let [log, p @ ..] = head;
    let min = lzma_rust2::DICT_SIZE_MIN.trailing_zeros();
    if !(min..=MAX_DICT.trailing_zeros()).contains(&u32::from(log)) {
        return Err(DeltaError::Malformed(format!(
            "copies against the base: a dictionary of 2^{log} bytes (a device allows 2^{min} to 2^{})",
            MAX_DICT.trailing_zeros()
        )));
    }
    let dict = 1u32 << log;
    let preset = u32::from_le_bytes(p);
    if preset == 0 || preset > dict {
        return Err(DeltaError::Malformed(format!(
            "copies against the base: a preset of {preset} bytes for a dictionary of {dict}"
        )));
    }
    Ok((dict, preset))
}

/// Reads a copy stream coded by [`encode_copies`] (after its header), whose dictionary of `dict`
/// bytes starts out holding `preset`, the base's first bytes.
pub fn decode_copies<R: Read>(input: R, dict: u32, preset: &[u8]) -> Lzma2Reader<R> {
    Lzma2Reader::new(input, dict, Some(preset))
}

/// The new image, decoded from a format-6 delta.
pub struct Decode<R: Read> {
    lzma: Lzma2Reader<io::BufReader<R>>,
    /// The new image's length, from the header.
    len: u64,
    produced: u64,
    done: bool,
}

impl<R: Read> std::fmt::Debug for Decode<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decode")
            .field("len", &self.len)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

fn malformed(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed delta: format 6: {what}"),
    )
}

/// Opens a format-6 delta whose magic was read from `r`. The base is read whole (at most
/// [`MAX_BASE`] bytes, transformed as the header says) into the dictionary. `limit` bounds the
/// output, as for the other formats.
pub fn open<R: Read, B: Read + Seek>(
    r: R,
    base: B,
    limit: u64,
) -> Result<Restore<Decode<R>>, DeltaError> {
    let mut r = io::BufReader::with_capacity(64 * 1024, r);
    let mut b4 = [0u8; 4];
    let mut b8 = [0u8; 8];
    r.read_exact(&mut b4)
        .and_then(|()| r.read_exact(&mut b8))
        .map_err(|e| DeltaError::Malformed(format!("format 6 header: {e}")))?;
    let dict = u32::from_le_bytes(b4);
    let len = u64::from_le_bytes(b8);
    if !(lzma_rust2::DICT_SIZE_MIN..=MAX_DICT).contains(&dict) {
        return Err(DeltaError::Malformed(format!(
            "format 6: a dictionary of {dict} bytes (a device allows 4 KiB to {MAX_DICT})"
        )));
    }
    if len > limit {
        return Err(DeltaError::Malformed(format!(
            "format 6: the new image would be {len} bytes, over the limit of {limit}"
        )));
    }
    let rb = get_ranges(&mut r)?;
    let rt = get_ranges(&mut r)?;
    // The base, transformed as the creator saw it. One byte past the most tells a base that is
    // too large for this format from one that fits exactly.
    let mut preset = Vec::new();
    BaseView::new(base, rb)
        .take(MAX_BASE as u64 + 1)
        .read_to_end(&mut preset)?;
    if preset.len() > MAX_BASE {
        return Err(DeltaError::Malformed(format!(
            "format 6 needs the whole base in its dictionary, and the base is over {MAX_BASE} bytes"
        )));
    }
    // An empty base is no preset: the stream must then reset the dictionary first, which the
    // decoder checks.
    let lzma = Lzma2Reader::new(r, dict, (!preset.is_empty()).then_some(&preset[..]));
    drop(preset);
    let decode = Decode {
        lzma,
        len,
        produced: 0,
        done: false,
    };
    Ok(Restore::new(decode, rt))
}

impl<R: Read> Read for Decode<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        // At most one byte past the stated length, to tell a stream that runs on.
        let want = (self.len - self.produced).saturating_add(1);
        let want = buf.len().min(usize::try_from(want).unwrap_or(usize::MAX));
        let n = self
            .lzma
            .read(&mut buf[..want])
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => malformed("the LZMA2 stream is truncated"),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                    malformed(format!("the LZMA2 stream is corrupt ({e})"))
                }
                _ => e,
            })?;
        self.produced += n as u64;
        if self.produced > self.len {
            return Err(malformed(format!(
                "the stream decodes to more than the {} bytes its header states",
                self.len
            )));
        }
        if n == 0 {
            if self.produced != self.len {
                return Err(malformed(format!(
                    "the stream ended after {} of the {} bytes its header states",
                    self.produced, self.len
                )));
            }
            // The end marker must be the delta's last byte.
            let mut b = [0u8];
            if self.lzma.inner_mut().read(&mut b)? != 0 {
                return Err(malformed("bytes after the LZMA2 stream's end"));
            }
            self.done = true;
        }
        Ok(n)
    }
}
