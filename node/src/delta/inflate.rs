//! Format 5: a delta of images that hold gzip streams, taken between their inflated forms
//! (archive-patcher's idea).
//!
//! A changed file that is stored gzip-compressed (a package's changelog, a man page) differs all
//! through its deflate bytes, so a diff of the images sees noise where the content changed by a few
//! lines. Format 5 diffs "expanded" images instead: every listed gzip body of the base is replaced
//! by its inflated bytes, and so is every changed gzip body of the target (one whose compressed
//! bytes the base does not hold as they are) that this build's zlib re-compresses bit for bit (gzip
//! -9n, as Debian packages are built, mostly is); unchanged ones match as they are. The delta carries
//! the two stream tables and an inner format-3 or format-4 delta between the expanded images. The
//! device inflates the base's listed streams as the inner delta reads them (keeping the most recently
//! read, at most [`CACHE_BYTES`] and [`CACHE_STREAMS`]; each at most [`MAX_INFLATED`]), and deflates the target's listed streams with the recorded level
//! as they stream out. Deflate is C zlib, built from libz-sys's bundled source on every machine; the
//! device checks each re-compressed stream's length against the table and the whole image's hash.
//!
//! Layout (`docs/formats.md`): `"WSD5"`, u64 LE length of the tables, the tables as an xz stream,
//! then the inner delta. Tables: LEB128 count of base streams, then per stream (gap from the end of
//! the previous stream, compressed length, inflated length); LEB128 count of target streams, then
//! per stream (gap in the expanded target, inflated length, compressed length, level byte).

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{count_output, get_varint, malformed, put_varint, DeltaError};

/// The magic bytes of format 5.
pub const MAGIC_5: &[u8; 4] = b"WSD5";
/// Largest inflated (and compressed) size of one listed stream: bounds the device's memory (two
/// cached base streams and one re-compressed target stream). Larger streams stay compressed.
pub const MAX_INFLATED: u64 = 8 << 20;
/// Most streams one image's table may list.
pub const MAX_STREAMS: u64 = 1 << 20;
/// Largest xz-compressed stream table a device reads.
const MAX_TABLES: u64 = 64 << 20;
/// The levels tried when looking for the one that reproduces a target stream, likeliest first.
const LEVELS: [u8; 9] = [9, 6, 1, 2, 3, 4, 5, 7, 8];
const BLOCK: usize = 64 * 1024;

/// One gzip body (the raw deflate stream inside a gzip member) in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Offset of the deflate bytes in the image.
    pub at: u64,
    /// Compressed length.
    pub len: u64,
    /// Inflated length.
    pub inflated: u64,
}

/// The end of a gzip member header (RFC 1952) that starts at `i`, if it is one.
fn header_end(d: &[u8], i: usize) -> Option<usize> {
    let h = d.get(i..i + 10)?;
    if h[..3] != [0x1f, 0x8b, 8] || h[3] & 0xe0 != 0 {
        return None;
    }
    let flg = h[3];
    let mut j = i + 10;
    if flg & 4 != 0 {
        let x = d.get(j..j + 2)?;
        j += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for bit in [8u8, 16] {
        if flg & bit != 0 {
            // Name and comment: zero-terminated, refused past 4 KiB.
            let end = d.get(j..)?.iter().take(4096).position(|&b| b == 0)?;
            j += end + 1;
        }
    }
    if flg & 2 != 0 {
        j += 2;
    }
    (j <= d.len()).then_some(j)
}

/// Inflates the raw deflate stream at the start of `data` into `out`: the compressed length, or
/// `None` if it is not a whole deflate stream or inflates to more than `cap` bytes.
fn inflate(data: &[u8], cap: u64, out: &mut Vec<u8>) -> Option<usize> {
    let mut d = Decompress::new(false);
    out.clear();
    loop {
        if out.len() == out.capacity() {
            if out.len() as u64 > cap {
                return None;
            }
            out.reserve_exact(BLOCK.min((cap + 1) as usize - out.len()));
        }
        let before = (d.total_in(), d.total_out());
        let at = d.total_in() as usize;
        match d.decompress_vec(&data[at..], out, FlushDecompress::None) {
            Ok(Status::StreamEnd) => break,
            Ok(_) if (d.total_in(), d.total_out()) == before && out.len() < out.capacity() => {
                return None; // no progress: truncated input
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    (out.len() as u64 <= cap).then_some(d.total_in() as usize)
}

/// Every whole gzip member of an image whose body inflates to at most [`MAX_INFLATED`] bytes and
/// matches its trailer's CRC-32 and length, with its inflated bytes.
pub fn scan(d: &[u8]) -> Vec<(Stream, Vec<u8>)> {
    streams(d).into_iter().map(|s| (s, body(d, &s))).collect()
}

/// The inflated bytes of `s`, a stream [`streams`] found in `d`.
fn body(d: &[u8], s: &Stream) -> Vec<u8> {
    let mut raw = Vec::with_capacity(s.inflated as usize + 1);
    let whole = inflate(&d[s.at as usize..], s.inflated, &mut raw);
    debug_assert_eq!(whole, Some(s.len as usize));
    raw
}

/// [`scan`]'s streams without their inflated bytes: a plan keeps only the changed ones' (on the
/// rootfs pair, 10 of 92 MB), and the rest, inflated and dropped, stayed in the allocator's heap.
pub fn streams(d: &[u8]) -> Vec<Stream> {
    let mut found = Vec::new();
    let mut buf = Vec::new();
    let mut i = 0;
    let magic = memchr::memmem::Finder::new(&[0x1f, 0x8b, 8]);
    while let Some(k) = magic.find(&d[i..]) {
        i += k;
        let Some(j) = header_end(d, i) else {
            i += 1;
            continue;
        };
        let Some(len) = inflate(&d[j..], MAX_INFLATED, &mut buf) else {
            i += 1;
            continue;
        };
        let Some(t) = d.get(j + len..j + len + 8) else {
            i += 1;
            continue;
        };
        let mut crc = flate2::Crc::new();
        crc.update(&buf);
        let word = |o: usize| u32::from_le_bytes([t[o], t[o + 1], t[o + 2], t[o + 3]]);
        if len as u64 > MAX_INFLATED || word(0) != crc.sum() || word(4) != buf.len() as u32 {
            i += 1;
            continue;
        }
        let s = Stream {
            at: j as u64,
            len: len as u64,
            inflated: buf.len() as u64,
        };
        found.push(s);
        i = j + len + 8;
    }
    found
}

/// Deflates `raw` at `level` into `out` as this build's zlib does, stopping early once the output
/// departs from `expect` (when given).
fn deflate(raw: &[u8], level: u8, expect: Option<&[u8]>, out: &mut Vec<u8>) -> bool {
    let mut c = Compress::new(Compression::new(level.into()), false);
    out.clear();
    let mut checked = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(BLOCK);
        }
        let at = c.total_in() as usize;
        let flush = if at == raw.len() {
            FlushCompress::Finish
        } else {
            FlushCompress::None
        };
        let end = raw.len().min(at + BLOCK);
        let status = c.compress_vec(&raw[at..end], out, flush);
        if let Some(e) = expect {
            if out.len() > e.len() || out[checked..] != e[checked..out.len()] {
                return false;
            }
            checked = out.len();
        }
        match status {
            Ok(Status::StreamEnd) => return expect.is_none_or(|e| out.len() == e.len()),
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// The zlib level that re-compresses `raw` into exactly `comp`, if there is one.
pub fn reproduce(raw: &[u8], comp: &[u8]) -> Option<u8> {
    let mut out = Vec::new();
    LEVELS
        .into_iter()
        .find(|&l| deflate(raw, l, Some(comp), &mut out))
}

/// `f` of every item, in order, the items shared out among the machine's cores in contiguous parts.
fn in_parallel<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let part = items.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(part)
            .map(|c| scope.spawn(|| c.iter().map(&f).collect::<Vec<U>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// What format 5 would expand, chosen from both images' gzip streams.
#[derive(Debug)]
pub struct Plan {
    /// Base streams to inflate, with their inflated bytes.
    pub base: Vec<(Stream, Vec<u8>)>,
    /// Target streams to inflate and the level that re-compresses each, with the inflated bytes.
    pub target: Vec<(Stream, u8, Vec<u8>)>,
}

impl Plan {
    /// The streams worth expanding, or `None` when no target stream that can be re-compressed
    /// changed from the base (then expanding gains nothing). Only changed streams are expanded: a
    /// target stream whose compressed bytes the base holds as they are stays compressed, and so do
    /// the base's copies of those bytes, which then match it exactly as they are. Inflated, they
    /// would match just as well, but the delta would list them, the device would inflate the
    /// base's and deflate the target's again, and creating it would re-compress them to check
    /// (on the rootfs pair, 1,708 of its 2,090 target streams, 37 of 46 MB inflated). Likewise a
    /// base stream is kept compressed when the target holds the same compressed bytes in a stream
    /// that cannot be re-compressed.
    pub fn new(base: &[u8], target: &[u8]) -> Option<Plan> {
        let hash = |d: &[u8], s: &Stream| blake3::hash(&d[s.at as usize..(s.at + s.len) as usize]);
        // Both images scanned at once, and the target's streams tried for re-compression on
        // every core: this was 8 of the rootfs pair's 41 s on one core (`docs/deltas.md`). Only
        // the streams listed are inflated again to be kept.
        let (in_target, in_base) = std::thread::scope(|scope| {
            let b = scope.spawn(|| streams(base));
            let t = streams(target);
            (t, b.join())
        });
        let in_base = in_base.unwrap_or_else(|p| std::panic::resume_unwind(p));
        if in_target.is_empty() {
            return None;
        }
        // Each base stream's body hashed once: for the target's look-ups, then for what is kept.
        let in_base: Vec<_> = in_base.into_iter().map(|s| (hash(base, &s), s)).collect();
        let base_bodies: HashSet<_> = in_base.iter().map(|(h, _)| *h).collect();
        // Target streams in order, with their bodies' hashes: those the base holds unchanged, and
        // the changed ones.
        let (same, changed): (Vec<_>, Vec<_>) = in_target
            .into_iter()
            .map(|s| (hash(target, &s), s))
            .partition(|(h, _)| base_bodies.contains(h));
        let tried = in_parallel(&changed, |(_, s)| {
            let raw = body(target, s);
            let level = reproduce(&raw, &target[s.at as usize..(s.at + s.len) as usize]);
            level.map(|level| (level, raw))
        });
        let mut keep: HashSet<_> = same.into_iter().map(|(h, _)| h).collect();
        let mut expand = Vec::new();
        for ((h, s), tried) in changed.into_iter().zip(tried) {
            match tried {
                Some((level, raw)) => expand.push((s, level, raw)),
                None => {
                    keep.insert(h);
                }
            }
        }
        if expand.is_empty() {
            return None;
        }
        let base = in_base
            .into_iter()
            .filter(|(h, _)| !keep.contains(h))
            .map(|(_, s)| (s, body(base, &s)))
            .collect();
        Some(Plan {
            base,
            target: expand,
        })
    }

    /// The expanded base and target.
    pub fn expand(&self, base: &[u8], target: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (
            expand(base, self.base.iter().map(|(s, r)| (s, r.as_slice()))),
            expand(
                target,
                self.target.iter().map(|(s, _, r)| (s, r.as_slice())),
            ),
        )
    }

    /// The expanded base, made in `base`'s own buffer where it can be (see [`expand_owned`]).
    pub fn expand_base_owned(&self, base: Vec<u8>) -> Vec<u8> {
        expand_owned(base, self.base.iter().map(|(s, r)| (s, r.as_slice())))
    }

    /// The expanded target, made in `target`'s own buffer where it can be.
    pub fn expand_target_owned(&self, target: Vec<u8>) -> Vec<u8> {
        expand_owned(
            target,
            self.target.iter().map(|(s, _, r)| (s, r.as_slice())),
        )
    }

    /// What the plan changes, alone: the listed streams' compressed bytes, one after the other,
    /// of the base and of the target; and their inflated bodies likewise. The plain delta and
    /// the expanded one differ only there.
    pub fn listed(&self, base: &[u8], target: &[u8]) -> [Vec<u8>; 4] {
        let compressed = |d: &[u8], streams: &mut dyn Iterator<Item = &Stream>| {
            let mut out = Vec::new();
            for s in streams {
                out.extend_from_slice(&d[s.at as usize..(s.at + s.len) as usize]);
            }
            out
        };
        [
            compressed(base, &mut self.base.iter().map(|(s, _)| s)),
            compressed(target, &mut self.target.iter().map(|(s, _, _)| s)),
            self.base
                .iter()
                .flat_map(|(_, r)| r.iter().copied())
                .collect(),
            self.target
                .iter()
                .flat_map(|(_, _, r)| r.iter().copied())
                .collect(),
        ]
    }

    /// The stream tables, uncompressed.
    pub fn tables(&self) -> Vec<u8> {
        let mut t = Vec::new();
        put_varint(&mut t, self.base.len() as u64);
        let mut end = 0;
        for (s, _) in &self.base {
            put_varint(&mut t, s.at - end);
            put_varint(&mut t, s.len);
            put_varint(&mut t, s.inflated);
            end = s.at + s.len;
        }
        put_varint(&mut t, self.target.len() as u64);
        // Gaps in the expanded target: the raw bytes between two streams.
        let mut end = 0;
        for (s, level, _) in &self.target {
            put_varint(&mut t, s.at - end);
            put_varint(&mut t, s.inflated);
            put_varint(&mut t, s.len);
            t.push(*level);
            end = s.at + s.len;
        }
        t
    }
}

/// `d` with each of `streams` (in order, not overlapping) replaced by its inflated bytes, in a new
/// buffer.
fn expand<'a>(d: &[u8], streams: impl Iterator<Item = (&'a Stream, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.len());
    let mut at = 0;
    for (s, raw) in streams {
        out.extend_from_slice(&d[at..s.at as usize]);
        out.extend_from_slice(raw);
        at = (s.at + s.len) as usize;
    }
    out.extend_from_slice(&d[at..]);
    out
}

/// [`expand`], made in
/// `d`'s own buffer when no stream before another is shorter inflated than compressed (then every
/// byte moves only towards the end, and the pieces are moved last first); otherwise in a new
/// buffer. Either way the caller no longer holds the image and its expanded form at once: on the
/// rootfs pair that is 384 MiB of peak memory per image.
fn expand_owned<'a>(
    mut d: Vec<u8>,
    streams: impl Iterator<Item = (&'a Stream, &'a [u8])> + Clone,
) -> Vec<u8> {
    // How far each stream's end moves; in place only if never backwards.
    let mut shift = 0i64;
    let mut forward = true;
    for (s, raw) in streams.clone() {
        shift += raw.len() as i64 - s.len as i64;
        forward &= shift >= 0;
    }
    if !forward {
        return expand(&d, streams);
    }
    let old_len = d.len();
    let pieces: Vec<(&Stream, &[u8])> = streams.collect();
    d.reserve_exact(shift as usize);
    d.resize(old_len + shift as usize, 0);
    // From the last piece back: the raw bytes after each stream, then the stream's body.
    let mut end = old_len; // the end of the not yet moved source bytes
    for (s, raw) in pieces.into_iter().rev() {
        let after = (s.at + s.len) as usize;
        let to = after as i64 + shift;
        d.copy_within(after..end, to as usize);
        shift -= raw.len() as i64 - s.len as i64;
        let body_at = (s.at as i64 + shift) as usize;
        d[body_at..body_at + raw.len()].copy_from_slice(raw);
        end = s.at as usize;
    }
    debug_assert_eq!(shift, 0);
    d
}

/// One listed stream as the device sees it: `x_at` is its offset in the expanded image.
#[derive(Debug, Clone, Copy)]
struct Seg {
    at: u64,
    len: u64,
    inflated: u64,
    x_at: u64,
    level: u8,
}

fn table_err(what: &str) -> DeltaError {
    DeltaError::Malformed(format!("gzip stream table: {what}"))
}

fn varint(r: &mut impl Read) -> Result<u64, DeltaError> {
    get_varint(r)
        .map_err(|e| table_err(&e.to_string()))?
        .ok_or_else(|| table_err("truncated"))
}

/// The format-5 header read from the delta: the two tables and where the inner delta starts.
pub(super) struct Header {
    base: Vec<Seg>,
    target: Vec<Seg>,
    /// Offset of the inner delta.
    pub inner: u64,
}

impl Header {
    /// Reads the header after the magic; `r` is positioned just past it.
    pub(super) fn read(mut r: impl Read) -> Result<Header, DeltaError> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)
            .map_err(|e| DeltaError::Malformed(format!("header: {e}")))?;
        let n = u64::from_le_bytes(b);
        if n > MAX_TABLES {
            return Err(table_err("longer than 64 MiB"));
        }
        let limit = 16 << 20;
        let stream = liblzma::stream::Stream::new_stream_decoder(limit, 0)
            .map_err(|e| DeltaError::Malformed(format!("lzma2 decoder: {e}")))?;
        let mut t = io::BufReader::new(liblzma::bufread::XzDecoder::new_stream(
            io::BufReader::new(r.take(n)),
            stream,
        ));
        let base = Self::segs(&mut t, false)?;
        let target = Self::segs(&mut t, true)?;
        let mut rest = [0u8];
        if t.read(&mut rest).map_err(|e| table_err(&e.to_string()))? != 0 {
            return Err(table_err("data past the tables"));
        }
        Ok(Header {
            base,
            target,
            inner: 4 + 8 + n,
        })
    }

    fn segs(r: &mut impl Read, target: bool) -> Result<Vec<Seg>, DeltaError> {
        let count = varint(r)?;
        if count > MAX_STREAMS {
            return Err(table_err("too many streams"));
        }
        let mut out = Vec::new();
        let (mut end, mut x_end) = (0u64, 0u64);
        for _ in 0..count {
            let gap = varint(r)?;
            let (len, inflated, level) = if target {
                let inflated = varint(r)?;
                let len = varint(r)?;
                let mut l = [0u8];
                r.read_exact(&mut l)
                    .map_err(|e| table_err(&e.to_string()))?;
                (len, inflated, l[0])
            } else {
                let len = varint(r)?;
                (len, varint(r)?, 0)
            };
            if len == 0 || len > MAX_INFLATED || inflated > MAX_INFLATED {
                return Err(table_err("a stream is empty or larger than 8 MiB"));
            }
            if target && !(1..=9).contains(&level) {
                return Err(table_err("a target stream's level is not 1 to 9"));
            }
            let at = end.checked_add(gap).ok_or_else(|| table_err("overflow"))?;
            let x_at = x_end
                .checked_add(gap)
                .ok_or_else(|| table_err("overflow"))?;
            end = at.checked_add(len).ok_or_else(|| table_err("overflow"))?;
            x_end = x_at
                .checked_add(inflated)
                .ok_or_else(|| table_err("overflow"))?;
            out.push(Seg {
                at,
                len,
                inflated,
                x_at,
                level,
            });
        }
        Ok(out)
    }

    /// How much longer the expanded target is than the target, at most.
    pub(super) fn target_growth(&self) -> u64 {
        self.target.iter().map(|s| s.inflated).sum()
    }

    /// The base, seen expanded. Fails if a listed stream lies past the base's end.
    pub(super) fn expanded<B: Read + Seek>(&self, mut base: B) -> Result<Expanded<B>, DeltaError> {
        let len = base.seek(SeekFrom::End(0))?;
        let end = self.base.last().map_or(0, |s| s.at + s.len);
        if end > len {
            return Err(table_err("a base stream lies past the end of the base"));
        }
        let x_len = self.base.iter().fold(len, |l, s| l - s.len + s.inflated);
        base.rewind()?;
        Ok(Expanded {
            base,
            segs: self.base.clone(),
            len: x_len,
            pos: 0,
            raw_pos: Some(0),
            cache: Vec::new(),
            cached: 0,
            cache_bytes: CACHE_BYTES,
            clock: 0,
        })
    }

    /// The target's streams re-compressed around the expanded target that `inner` reads.
    pub(super) fn recompress<I: Read>(&self, inner: I, limit: u64) -> Recompress<I> {
        Recompress {
            inner,
            segs: self.target.clone(),
            next: 0,
            pos: 0,
            out: Vec::new(),
            out_at: 0,
            produced: 0,
            limit,
            tmp: vec![0u8; BLOCK],
            raw: Vec::new(),
        }
    }
}

/// A reader of the delta from the inner delta's start: the inner delta's offsets are its own.
pub struct Shift<R> {
    inner: R,
    off: u64,
}

impl<R: Seek> Shift<R> {
    pub(super) fn new(mut inner: R, off: u64) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(off))?;
        Ok(Self { inner, off })
    }
}

impl<R: Read> Read for Shift<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Shift<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let p = match pos {
            SeekFrom::Start(p) => {
                self.inner
                    .seek(SeekFrom::Start(self.off.checked_add(p).ok_or_else(
                        || io::Error::new(io::ErrorKind::InvalidInput, "seek overflows"),
                    )?))?
            }
            other => self.inner.seek(other)?,
        };
        p.checked_sub(self.off).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the inner delta")
        })
    }
}

/// The base with its listed streams inflated, read and sought as one image. Inflates a stream
/// when it is first read and keeps the most recently used ones, up to [`CACHE_BYTES`] and
/// [`CACHE_STREAMS`] in all.
pub struct Expanded<B> {
    base: B,
    segs: Vec<Seg>,
    len: u64,
    pos: u64,
    /// The base's position, when known (saves a seek per read).
    raw_pos: Option<u64>,
    /// Inflated streams: index, bytes, when last read.
    cache: Vec<(usize, Vec<u8>, u64)>,
    /// Bytes held by `cache` (capacities), and the most it may hold.
    cached: u64,
    cache_bytes: u64,
    clock: u64,
}

/// The most inflated base bytes [`Expanded`] keeps: two of the largest streams, as many smaller
/// ones. A delta's copies can go back and forth between several streams (the rootfs pair's
/// between three of 0.25 to 0.77 MB: with two kept, it inflated 0.9 to 3.8 GB for a 0.4 GB image).
pub const CACHE_BYTES: u64 = 2 * MAX_INFLATED;
/// The most streams [`Expanded`] keeps, whatever their size: finding one is a scan of them, and
/// an image of many small gzip files (changelogs of a few hundred bytes) must not make every read
/// scan thousands.
pub const CACHE_STREAMS: usize = 64;

impl<B: Read + Seek> Expanded<B> {
    /// Keeps at most `n` inflated bytes (tests: a small bound makes streams leave the cache).
    #[cfg(test)]
    pub(super) fn with_cache_bytes(mut self, n: u64) -> Self {
        self.cache_bytes = n;
        self
    }

    /// The inflated bytes now kept, and how many streams hold them.
    #[cfg(test)]
    pub(super) fn cached(&self) -> (u64, usize) {
        (self.cached, self.cache.len())
    }

    /// The inflated bytes of stream `k`, inflating it if it is not cached.
    fn stream(&mut self, k: usize) -> io::Result<&[u8]> {
        self.clock += 1;
        if let Some(i) = self.cache.iter().position(|c| c.0 == k) {
            self.cache[i].2 = self.clock;
            return Ok(&self.cache[i].1);
        }
        let s = self.segs[k];
        // The least recently read streams make room (a listed stream inflates to at most
        // MAX_INFLATED, so one always fits).
        while !self.cache.is_empty()
            && (self.cached + s.inflated > self.cache_bytes || self.cache.len() >= CACHE_STREAMS)
        {
            let lru = (0..self.cache.len())
                .min_by_key(|&i| self.cache[i].2)
                .expect("not empty");
            let (_, gone, _) = self.cache.swap_remove(lru);
            self.cached -= gone.capacity() as u64;
        }
        let mut comp = vec![0u8; s.len as usize];
        self.base.seek(SeekFrom::Start(s.at))?;
        self.raw_pos = None;
        self.base.read_exact(&mut comp)?;
        self.raw_pos = Some(s.at + s.len);
        let mut out = Vec::with_capacity(s.inflated as usize);
        let n = inflate(&comp, s.inflated, &mut out);
        if n != Some(comp.len()) || out.len() as u64 != s.inflated {
            return Err(malformed(&format!(
                "the base's gzip stream at offset {} does not inflate to {} bytes",
                s.at, s.inflated
            )));
        }
        // Exactly its length, so that the bound counts what is held.
        out.shrink_to_fit();
        self.cached += out.capacity() as u64;
        self.cache.push((k, out, self.clock));
        Ok(&self.cache.last().expect("just pushed").1)
    }
}

impl<B: Read + Seek> Read for Expanded<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let pos = self.pos;
        let k = self.segs.partition_point(|s| s.x_at <= pos);
        if k > 0 && pos < self.segs[k - 1].x_at + self.segs[k - 1].inflated {
            let from = (pos - self.segs[k - 1].x_at) as usize;
            let s = self.stream(k - 1)?;
            let n = buf.len().min(s.len() - from);
            buf[..n].copy_from_slice(&s[from..from + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        // Between streams: the base's own bytes.
        let raw_at = match k {
            0 => pos,
            _ => {
                let s = self.segs[k - 1];
                s.at + s.len + (pos - s.x_at - s.inflated)
            }
        };
        let gap_end = self.segs.get(k).map_or(self.len, |s| s.x_at);
        let n = buf.len().min((gap_end - pos) as usize);
        match self.raw_pos {
            Some(p) if p == raw_at => {}
            // Relative: a buffered base keeps its buffer for a short seek.
            Some(p) if p.abs_diff(raw_at) < 1 << 30 => {
                self.base.seek_relative(raw_at as i64 - p as i64)?
            }
            _ => {
                self.base.seek(SeekFrom::Start(raw_at))?;
            }
        }
        self.raw_pos = None;
        let got = self.base.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the base is shorter than the delta's stream table says",
            ));
        }
        self.raw_pos = Some(raw_at + got as u64);
        self.pos += got as u64;
        Ok(got)
    }
}

impl<B: Read + Seek> Seek for Expanded<B> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let (from, by) = match pos {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.len, d),
        };
        self.pos = from.checked_add_signed(by).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the base",
            )
        })?;
        Ok(self.pos)
    }
}

/// The target, read from the expanded target with its listed streams deflated again.
pub struct Recompress<I> {
    inner: I,
    segs: Vec<Seg>,
    next: usize,
    /// Bytes of the expanded target consumed.
    pos: u64,
    /// A re-compressed stream being given out.
    out: Vec<u8>,
    out_at: usize,
    produced: u64,
    limit: u64,
    tmp: Vec<u8>,
    raw: Vec<u8>,
}

impl<I: Read> Recompress<I> {
    fn give(&mut self, n: usize) -> io::Result<usize> {
        count_output(&mut self.produced, self.limit, n)
    }
}

impl<I: Read> Read for Recompress<I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.out_at < self.out.len() {
            let n = buf.len().min(self.out.len() - self.out_at);
            buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
            self.out_at += n;
            return self.give(n);
        }
        if let Some(s) = self
            .segs
            .get(self.next)
            .copied()
            .filter(|s| s.x_at == self.pos)
        {
            self.raw.clear();
            self.raw.reserve(s.inflated as usize);
            while (self.raw.len() as u64) < s.inflated {
                let want = (s.inflated - self.raw.len() as u64).min(BLOCK as u64) as usize;
                let got = self.inner.read(&mut self.tmp[..want])?;
                if got == 0 {
                    return Err(malformed("the delta ends inside a gzip stream"));
                }
                self.raw.extend_from_slice(&self.tmp[..got]);
            }
            let mut out = std::mem::take(&mut self.out);
            if !deflate(&self.raw, s.level, None, &mut out) || out.len() as u64 != s.len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "re-compressing the target's gzip stream {} at level {} gave {} bytes, not \
                         {}: this agent's zlib deflates differently from the one that made the \
                         delta; install the full image",
                        self.next,
                        s.level,
                        out.len(),
                        s.len
                    ),
                ));
            }
            self.out = out;
            self.out_at = 0;
            self.pos += s.inflated;
            self.next += 1;
            return self.read(buf);
        }
        let room = self
            .segs
            .get(self.next)
            .map_or(buf.len() as u64, |s| s.x_at - self.pos);
        let n = buf.len().min(room.min(usize::MAX as u64) as usize);
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 && self.next < self.segs.len() {
            return Err(malformed("the delta ends before its last gzip stream"));
        }
        self.pos += got as u64;
        self.give(got)
    }
}

impl<R> std::fmt::Debug for Shift<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shift").finish_non_exhaustive()
    }
}

impl<B> std::fmt::Debug for Expanded<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expanded").finish_non_exhaustive()
    }
}

impl<I> std::fmt::Debug for Recompress<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recompress").finish_non_exhaustive()
    }
}
