//! Long exact matches found first, by hashing the base's blocks, so that the suffix-array diff sorts
//! and scans only what they leave (the idea of HDiffPatch's block match, written anew).
//!
//! Most of a disk image's new version is its old one, byte for byte, at the same or another offset:
//! unchanged files, the free space between them. Finding those with the suffix array
//! ([`super::scan`]) costs most of a delta's creation: on the 384 MiB rootfs pair, about 20 s to
//! sort and 25 s to scan, and 4 bytes of suffix array per base byte. Here the base's aligned
//! [`BLOCK`]-byte blocks are indexed by a rolling hash, the target is scanned for them (and first
//! along the last match's diagonal and the identity), and every exact match of at least
//! [`MIN_ANCHOR`] bytes becomes an anchor. The base's bytes that no anchor uses and the target's
//! that no anchor covers are then diffed by the suffix-array scan, each compacted into one buffer,
//! and its matches are mapped back and merged with the anchors in target order.
//!
//! An anchor takes equal lengths out of both sides, so a region that bsdiff would match
//! approximately across an anchor keeps its diagonal in the compacted buffers, and its pieces merge
//! back into one add. What the anchors cannot give the diff is the base bytes they used: a target
//! region whose best approximate match lies under another region's anchor loses it. Which is why an
//! anchor must be long, and why [`diff`] uses them only where the base is large enough for the sort
//! to dominate ([`MIN_BASE`]).

use std::io;

use bidiff::Match;

/// The base is indexed in aligned blocks of this many bytes: every exact match of at least
/// `2 * BLOCK - 1` bytes is found.
pub const BLOCK: usize = 64;
/// The shortest exact match kept as an anchor.
pub const MIN_ANCHOR: usize = 1024;
/// Bases smaller than this are diffed whole: their sort is quick, and on executables every byte of
/// the delta counts.
pub const MIN_BASE: usize = 32 << 20;
/// The polynomial of the rolling hash (odd).
const P: u64 = 0x100_0000_01b3;
/// One bit per filter slot: 2^26 bits (8 MiB), to skip most probes of the table in regions that
/// match nothing.
const FILTER_BITS: u32 = 26;

/// The diff of `base` and `target` as bidiff's matches (tiling the target in order), with long exact
/// matches found first where the base is at least [`MIN_BASE`] bytes. With `alone` (this diff
/// has the machine to itself: no other candidate is diffed at once), what the anchors leave is
/// scanned in two halves at once from [`SPLIT_SCAN_FROM`] bytes.
pub fn diff(
    base: &[u8],
    target: &[u8],
    alone: bool,
    on_match: impl FnMut(Match) -> io::Result<()>,
) -> io::Result<()> {
    if base.len() < MIN_BASE {
        return suffix_diff(base, target, on_match);
    }
    let split_from = if alone { SPLIT_SCAN_FROM } else { usize::MAX };
    diff_anchored(base, target, MIN_ANCHOR, split_from, on_match)
}

/// [`diff`] with anchors of at least `min_anchor` bytes, whatever the base's size, and what they
/// leave scanned in two halves from `split_from` bytes.
pub fn diff_anchored(
    base: &[u8],
    target: &[u8],
    min_anchor: usize,
    split_from: usize,
    on_match: impl FnMut(Match) -> io::Result<()>,
) -> io::Result<()> {
    let started = std::time::Instant::now();
    let anchors = find(base, target, min_anchor);
    let anchored: usize = anchors.iter().map(|a| a.len).sum();
    tracing::info!(
        anchors = anchors.len(),
        anchored,
        target = target.len(),
        elapsed = ?started.elapsed(),
        "delta: exact matches found by block hashing"
    );
    if anchors.is_empty() {
        return suffix_diff(base, target, on_match);
    }
    let (tmap, ctarget) = compact(target, target_gaps(&anchors, target.len()));
    let (bmap, cbase) = compact(base, base_unused(&anchors, base.len()));
    tracing::info!(
        base = cbase.len(),
        target = ctarget.len(),
        "delta: diffing what the exact matches leave"
    );
    let mut out = Merge {
        emit: Emitter {
            cur: Match {
                add_old_start: 0,
                add_new_start: 0,
                add_length: 0,
                copy_end: 0,
            },
            on_match,
        },
        anchors: &anchors,
        next: 0,
    };
    let mut tseg = 0;
    split_diff_from(&cbase, &ctarget, split_from, |m| {
        // The add part: split where either side's compacted buffer joins two pieces.
        let (mut ct, mut cb, mut len) = (m.add_new_start, m.add_old_start, m.add_length);
        while len > 0 {
            tseg = tmap.seek(tseg, ct);
            let (t, t_room) = tmap.at(tseg, ct);
            let bseg = bmap.find(cb);
            let (b, b_room) = bmap.at(bseg, cb);
            let l = len.min(t_room).min(b_room);
            out.add(t, b, l)?;
            (ct, cb, len) = (ct + l, cb + l, len - l);
        }
        // The copy part: split where the target's pieces join.
        let mut ct = m.copy_start();
        while ct < m.copy_end {
            tseg = tmap.seek(tseg, ct);
            let (t, t_room) = tmap.at(tseg, ct);
            let l = (m.copy_end - ct).min(t_room);
            out.copy(t, l)?;
            ct += l;
        }
        Ok::<(), io::Error>(())
    })?;
    out.finish()
}

/// What the anchors leave is scanned in two halves at once (one suffix array, each half its own
/// scan on its own thread) where the target's part is at least this long. The halves meet at a
/// fixed place (the middle), so the delta does not depend on the machine; the second half's scan
/// starts without the first's diagonal, which costs a control or two.
pub const SPLIT_SCAN_FROM: usize = 8 << 20;

/// [`suffix_diff`], the target scanned in two halves at once from `from` bytes.
pub(super) fn split_diff_from(
    base: &[u8],
    target: &[u8],
    from: usize,
    mut on_match: impl FnMut(Match) -> io::Result<()>,
) -> io::Result<()> {
    if target.len() < from.max(2) || base.is_empty() {
        return suffix_diff(base, target, on_match);
    }
    let mid = target.len() / 2;
    let params = super::scan::Params::default();
    let started = std::time::Instant::now();
    let index = super::scan::Index::new(base)?;
    tracing::debug!(bytes = base.len(), elapsed = ?started.elapsed(), "delta: suffix array sorted");
    let started = std::time::Instant::now();
    let second = std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            let mut matches = Vec::new();
            super::scan::diff_with(&index, &target[mid..], params, |m| {
                matches.push(m);
                Ok(())
            })
            .map(|()| matches)
        });
        let first = super::scan::diff_with(&index, &target[..mid], params, &mut on_match);
        let second = second
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("delta: a scan's thread panicked")));
        first.and(second)
    })?;
    for m in second {
        on_match(Match {
            add_new_start: m.add_new_start + mid,
            copy_end: m.copy_end + mid,
            ..m
        })?;
    }
    tracing::debug!(bytes = target.len(), elapsed = ?started.elapsed(), "delta: target scanned in two halves");
    Ok(())
}

/// The suffix-array diff ([`super::scan`]).
fn suffix_diff(
    base: &[u8],
    target: &[u8],
    on_match: impl FnMut(Match) -> io::Result<()>,
) -> io::Result<()> {
    super::scan::diff(base, target, super::scan::Params::default(), on_match)
}

/// An exact match: `target[target..target + len] == base[base..base + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub target: usize,
    pub base: usize,
    pub len: usize,
}

/// The base's aligned blocks by hash: open addressing, each slot the block's index + 1 and 32 bits
/// of its hash; one slot per distinct block content (the first).
struct Table {
    slots: Vec<u64>,
    bits: u32,
    filter: Vec<u64>,
}

fn mix(h: u64) -> u64 {
    h.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn hash(w: &[u8]) -> u64 {
    w.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(P).wrapping_add(u64::from(b) + 1)
    })
}

impl Table {
    fn new(base: &[u8]) -> Option<Self> {
        let blocks = base.len() / BLOCK;
        if blocks == 0 || blocks >= u32::MAX as usize {
            return None;
        }
        let bits = (blocks * 2).next_power_of_two().trailing_zeros();
        let mut t = Self {
            slots: vec![0; 1 << bits],
            bits,
            filter: vec![0; 1 << (FILTER_BITS - 6)],
        };
        for j in 0..blocks {
            let w = &base[j * BLOCK..(j + 1) * BLOCK];
            let m = mix(hash(w));
            let tag = m & 0xffff_ffff;
            let mut i = (m >> (64 - bits)) as usize;
            loop {
                let s = t.slots[i];
                if s == 0 {
                    t.slots[i] = tag << 32 | (j as u64 + 1);
                    let f = (m >> 8) as u32 & ((1 << FILTER_BITS) - 1);
                    t.filter[(f >> 6) as usize] |= 1 << (f & 63);
                    break;
                }
                if s >> 32 == tag {
                    let k = (s & 0xffff_ffff) as usize - 1;
                    if &base[k * BLOCK..(k + 1) * BLOCK] == w {
                        break;
                    }
                }
                i = (i + 1) & ((1 << bits) - 1);
            }
        }
        Some(t)
    }

    /// The base offset of a block equal to `w`, whose hash is `h`.
    fn find(&self, base: &[u8], h: u64, w: &[u8]) -> Option<usize> {
        let m = mix(h);
        let f = (m >> 8) as u32 & ((1 << FILTER_BITS) - 1);
        if self.filter[(f >> 6) as usize] & (1 << (f & 63)) == 0 {
            return None;
        }
        let tag = m & 0xffff_ffff;
        let mut i = (m >> (64 - self.bits)) as usize;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if s >> 32 == tag {
                let k = ((s & 0xffff_ffff) as usize - 1) * BLOCK;
                if &base[k..k + BLOCK] == w {
                    return Some(k);
                }
            }
            i = (i + 1) & ((1 << self.bits) - 1);
        }
    }
}

/// How many bytes `a` and `b` share from their starts.
pub(super) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The exact matches of at least `min_anchor` bytes, in target order, not overlapping in the target.
pub fn find(base: &[u8], target: &[u8], min_anchor: usize) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    let Some(table) = Table::new(base) else {
        return anchors;
    };
    // P^(BLOCK - 1), to take the leaving byte out of the rolling hash.
    let out_weight = (1..BLOCK).fold(1u64, |w, _| w.wrapping_mul(P));
    // The end of the last anchor in the target, and its diagonal (base minus target offset).
    let (mut covered, mut diag) = (0usize, 0isize);
    let mut i = 0;
    let mut h = None;
    while i + BLOCK <= target.len() {
        let w = &target[i..i + BLOCK];
        // The first of the candidates long enough to keep, in this order: the last anchor's
        // diagonal, the identity, the table's block. Continuing where the base was being read
        // keeps the delta's seeks few and short, as bsdiff's scan does (it leaves a diagonal only
        // for a much longer match); and a device applying a format-5 delta inflates a base gzip
        // stream again for every jump back into it.
        let mut best: Option<(usize, usize, usize)> = None; // (start, base start, end)
        let mut kept = false;
        for k in 0..3 {
            let bp = match k {
                0 => i as isize + diag,
                1 if diag != 0 => i as isize,
                2 => {
                    let hv = *h.get_or_insert_with(|| hash(w));
                    match table.find(base, hv, w) {
                        Some(b) => b as isize,
                        None => continue,
                    }
                }
                _ => continue,
            };
            if bp < 0 || bp as usize + BLOCK > base.len() {
                continue;
            }
            let bp = bp as usize;
            if best.is_some_and(|(s, b, _)| b + (i - s) == bp) {
                continue;
            }
            let fwd = common_prefix(&base[bp..], &target[i..]);
            if fwd < BLOCK {
                continue;
            }
            let back = common_prefix_back(&base[..bp], &target[covered..i]);
            let (s, b, e) = (i - back, bp - back, i + fwd);
            if best.is_none_or(|(bs, _, be)| e - s > be - bs) {
                best = Some((s, b, e));
            }
            if e - s >= min_anchor {
                best = Some((s, b, e));
                kept = true;
                break;
            }
        }
        match best {
            Some((s, b, e)) if kept => {
                anchors.push(Anchor {
                    target: s,
                    base: b,
                    len: e - s,
                });
                covered = e;
                diag = b as isize - s as isize;
                i = e;
                h = None;
            }
            Some((_, _, e)) if e > i + BLOCK => {
                // A short match: the windows inside it would find the same blocks again.
                i = e - BLOCK + 1;
                h = None;
            }
            _ => {
                if i + BLOCK < target.len() {
                    h = h.map(|h: u64| {
                        h.wrapping_sub((u64::from(target[i]) + 1).wrapping_mul(out_weight))
                            .wrapping_mul(P)
                            .wrapping_add(u64::from(target[i + BLOCK]) + 1)
                    });
                }
                i += 1;
            }
        }
    }
    anchors
}

/// How many bytes `a` and `b` share at their ends.
fn common_prefix_back(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The target's ranges that no anchor covers, in order.
fn target_gaps(anchors: &[Anchor], len: usize) -> Vec<(usize, usize)> {
    let mut gaps = Vec::with_capacity(anchors.len() + 1);
    let mut at = 0;
    for a in anchors {
        if a.target > at {
            gaps.push((at, a.target));
        }
        at = a.target + a.len;
    }
    if len > at {
        gaps.push((at, len));
    }
    gaps
}

/// The base's ranges that no anchor uses, in order.
fn base_unused(anchors: &[Anchor], len: usize) -> Vec<(usize, usize)> {
    let mut used: Vec<(usize, usize)> = anchors.iter().map(|a| (a.base, a.base + a.len)).collect();
    used.sort_unstable();
    let mut free = Vec::new();
    let mut at = 0;
    for (s, e) in used {
        if s > at {
            free.push((at, s));
        }
        at = at.max(e);
    }
    if len > at {
        free.push((at, len));
    }
    free
}

/// Where each piece of a compacted buffer came from: its start in the compacted buffer and in the
/// original, in order, and the compacted length at the end.
struct Map {
    pieces: Vec<(usize, usize)>,
    len: usize,
}

/// `ranges` of `data` copied into one buffer, and the map back.
fn compact(data: &[u8], ranges: Vec<(usize, usize)>) -> (Map, Vec<u8>) {
    let total = ranges.iter().map(|(s, e)| e - s).sum();
    let mut buf = Vec::with_capacity(total);
    let mut pieces = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        pieces.push((buf.len(), s));
        buf.extend_from_slice(&data[s..e]);
    }
    (Map { pieces, len: total }, buf)
}

impl Map {
    /// The piece holding compacted offset `c`, searching forward from piece `from`.
    fn seek(&self, mut from: usize, c: usize) -> usize {
        if from >= self.pieces.len() || self.pieces[from].0 > c {
            return self.find(c);
        }
        while from + 1 < self.pieces.len() && self.pieces[from + 1].0 <= c {
            from += 1;
        }
        from
    }

    /// The piece holding compacted offset `c`.
    fn find(&self, c: usize) -> usize {
        self.pieces.partition_point(|p| p.0 <= c) - 1
    }

    /// The original offset of compacted offset `c` in piece `k`, and how many bytes of the piece
    /// are left from there.
    fn at(&self, k: usize, c: usize) -> (usize, usize) {
        let end = self.pieces.get(k + 1).map_or(self.len, |p| p.0);
        (self.pieces[k].1 + (c - self.pieces[k].0), end - c)
    }
}

/// Emits the anchors between the mapped pieces, in target order.
struct Merge<'a, F> {
    emit: Emitter<F>,
    anchors: &'a [Anchor],
    next: usize,
}

impl<F, E> Merge<'_, F>
where
    F: FnMut(Match) -> Result<(), E>,
{
    fn anchors_before(&mut self, t: usize) -> Result<(), E> {
        while let Some(a) = self.anchors.get(self.next).filter(|a| a.target < t) {
            self.emit.add(a.target, a.base, a.len)?;
            self.next += 1;
        }
        Ok(())
    }

    fn add(&mut self, t: usize, b: usize, len: usize) -> Result<(), E> {
        self.anchors_before(t)?;
        self.emit.add(t, b, len)
    }

    fn copy(&mut self, t: usize, len: usize) -> Result<(), E> {
        self.anchors_before(t)?;
        self.emit.copy(len)
    }

    fn finish(mut self) -> Result<(), E> {
        self.anchors_before(usize::MAX)?;
        self.emit.flush()
    }
}

/// Builds bidiff's matches from pieces in target order, joining adds that continue each other.
struct Emitter<F> {
    cur: Match,
    on_match: F,
}

impl<F, E> Emitter<F>
where
    F: FnMut(Match) -> Result<(), E>,
{
    fn add(&mut self, t: usize, b: usize, len: usize) -> Result<(), E> {
        debug_assert_eq!(self.cur.copy_end, t, "pieces must tile the target");
        let c = &mut self.cur;
        if c.copy_end == c.copy_start() && c.add_old_start + c.add_length == b {
            c.add_length += len;
            c.copy_end += len;
            return Ok(());
        }
        self.flush()?;
        self.cur = Match {
            add_old_start: b,
            add_new_start: t,
            add_length: len,
            copy_end: t + len,
        };
        Ok(())
    }

    fn copy(&mut self, len: usize) -> Result<(), E> {
        self.cur.copy_end += len;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), E> {
        if self.cur.copy_end > self.cur.add_new_start {
            let next = Match {
                add_old_start: self.cur.add_old_start + self.cur.add_length,
                add_new_start: self.cur.copy_end,
                add_length: 0,
                copy_end: self.cur.copy_end,
            };
            (self.on_match)(std::mem::replace(&mut self.cur, next))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    /// Applies bidiff's matches as the translator does, checking that they tile the target.
    fn rebuild(base: &[u8], target: &[u8], min_anchor: usize) -> Vec<u8> {
        rebuild_counting(base, target, min_anchor).0
    }

    /// [`rebuild`], and how many add bytes are not zero (the base did not match there).
    fn rebuild_counting(base: &[u8], target: &[u8], min_anchor: usize) -> (Vec<u8>, usize) {
        let (mut out, mut differ) = (Vec::new(), 0);
        diff_anchored(base, target, min_anchor, usize::MAX, |m: Match| {
            assert_eq!(m.add_new_start, out.len(), "matches tile the target");
            for i in 0..m.add_length {
                let d = target[m.add_new_start + i].wrapping_sub(base[m.add_old_start + i]);
                differ += usize::from(d != 0);
                out.push(base[m.add_old_start + i].wrapping_add(d));
            }
            out.extend_from_slice(&target[m.copy_start()..m.copy_end]);
            Ok(())
        })
        .expect("diff");
        (out, differ)
    }

    /// A synthetic image: blocks of the base moved, duplicated, changed and dropped, zeros between.
    fn image_pair(seed: u64) -> (Vec<u8>, Vec<u8>) {
        let base = testkit::bytes(1 << 20, seed);
        let mut target = Vec::new();
        let noise = testkit::bytes(1 << 16, seed + 1);
        for k in 0..40usize {
            let at = (k * 7919 * 13) % (base.len() - 20_000);
            let len = 1_000 + (k * 373) % 15_000;
            target.extend_from_slice(&base[at..at + len]);
            match k % 4 {
                0 => target.extend_from_slice(&noise[k * 100..k * 100 + 300]),
                1 => target.extend(std::iter::repeat_n(0, 5_000)),
                _ => {}
            }
            if k % 3 == 0 {
                let n = target.len();
                target[n - 500] ^= 0x55;
            }
            if k % 5 == 2 {
                // Changed every 300 bytes, as code whose addresses moved: no exact match of
                // 1,024 bytes, left to the suffix-array diff's approximate matches.
                let n = target.len();
                for j in (n - len..n).step_by(300) {
                    target[j] = target[j].wrapping_add(1);
                }
            }
        }
        (base, target)
    }

    #[test]
    fn anchored_matches_rebuild_the_target() {
        for seed in 1..4 {
            let (base, target) = image_pair(seed);
            for min in [64, 200, 1024, 1 << 20] {
                let (out, differ) = rebuild_counting(&base, &target, min);
                assert_eq!(out, target, "seed {seed}, min {min}");
                // The target is the base's bytes but for a few changed ones and new noise: the
                // matches, mapped back, must say where (an add byte off its place is noise).
                assert!(
                    differ * 100 < target.len(),
                    "{differ} add bytes differ, min {min}"
                );
            }
            let anchors = find(&base, &target, 1024);
            assert!(anchors.len() >= 20, "{} anchors", anchors.len());
            for a in &anchors {
                assert_eq!(
                    base[a.base..a.base + a.len],
                    target[a.target..a.target + a.len]
                );
                assert!(a.len >= 1024);
            }
            assert!(anchors
                .windows(2)
                .all(|w| w[0].target + w[0].len <= w[1].target));
        }
    }

    #[test]
    fn a_target_scanned_in_two_halves_is_rebuilt_and_costs_little() {
        // The suffix-array diff alone (no anchors), whole and split at the middle: both tile the
        // target and rebuild it; the split loses at most a few matches' worth of add bytes.
        for seed in 1..3 {
            let (base, target) = image_pair(seed);
            let run = |from: usize| {
                let (mut out, mut differ, mut matches) = (Vec::new(), 0usize, 0usize);
                split_diff_from(&base, &target, from, |m: Match| {
                    assert_eq!(m.add_new_start, out.len(), "matches tile the target");
                    assert!(m.copy_start() <= m.copy_end && m.copy_end <= target.len());
                    for i in 0..m.add_length {
                        let d = target[m.add_new_start + i].wrapping_sub(base[m.add_old_start + i]);
                        differ += usize::from(d != 0);
                        out.push(base[m.add_old_start + i].wrapping_add(d));
                    }
                    out.extend_from_slice(&target[m.copy_start()..m.copy_end]);
                    matches += 1;
                    Ok(())
                })
                .expect("diff");
                (out, differ, matches)
            };
            let (whole, whole_differ, whole_matches) = run(usize::MAX);
            let (split, split_differ, split_matches) = run(0);
            assert_eq!(whole, target);
            assert_eq!(split, target);
            assert!(
                split_matches <= whole_matches + 2 && split_differ <= whole_differ + 64,
                "split: {split_matches} matches, {split_differ} differing; whole: \
                 {whole_matches}, {whole_differ}"
            );
        }
        // Tiny and empty targets are not split.
        let base = testkit::bytes(10_000, 9);
        for target in [vec![], vec![1u8]] {
            let mut n = 0;
            split_diff_from(&base, &target, 0, |m: Match| {
                n += m.copy_end;
                Ok(())
            })
            .expect("diff");
            assert_eq!(n, target.len());
        }
    }

    #[test]
    fn edge_cases_rebuild() {
        let base = testkit::bytes(10_000, 5);
        for target in [
            vec![],
            base[..10].to_vec(),
            base.clone(),
            [&base[5000..], &base[..5000]].concat(),
            testkit::bytes(10_000, 6),
            vec![0; 20_000],
        ] {
            assert_eq!(rebuild(&base, &target, 100), target);
        }
        assert_eq!(rebuild(&[], &base, 100), base);
        assert_eq!(
            rebuild(&vec![0; 9_000], &vec![0; 30_000], 100),
            vec![0; 30_000]
        );
    }

    proptest::proptest! {
        /// Whatever the pieces of base, zeros and new bytes a target is made of, and whatever the
        /// least anchor, the matches tile the target and rebuild it.
        #[test]
        fn any_target_is_rebuilt(
            pieces in proptest::collection::vec((0u8..3, 0usize..60_000, 1usize..6_000), 0..24),
            min in 64usize..3_000,
            seed in 0u64..1_000,
        ) {
            let base = testkit::bytes(64 * 1024, seed);
            let mut target = Vec::new();
            for (k, at, len) in pieces {
                let at = at.min(base.len() - 1);
                let len = len.min(base.len() - at);
                match k {
                    0 => target.extend_from_slice(&base[at..at + len]),
                    1 => target.resize(target.len() + len, 0),
                    _ => target.extend_from_slice(&testkit::bytes(len, seed + at as u64)),
                }
            }
            proptest::prop_assert_eq!(rebuild(&base, &target, min), target);
        }
    }

    #[test]
    fn an_unchanged_image_is_one_anchor() {
        let base = testkit::bytes(1 << 20, 7);
        assert_eq!(
            find(&base, &base, 1024),
            vec![Anchor {
                target: 0,
                base: 0,
                len: base.len()
            }]
        );
    }
}
