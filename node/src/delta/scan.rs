//! The diff's scan: bsdiff's approximate matching (Colin Percival's algorithm) over a suffix array
//! of the base, written anew here so that which match it takes, and when, depends on what the
//! match costs the delta.
//!
//! bsdiff walks the target and, at each position, looks up the longest exact match in the base. It
//! keeps extending the current alignment (the last match's diagonal, base position minus target
//! position) while that alignment still matches nearly as well, and starts a new match where the
//! longest exact match beats it by more than 8 bytes. Each new match costs the delta a control, and
//! a control's seek is most of its size: of the controls bidiff's scan made for the lxml pair (a
//! Cython module regenerated), 55 % landed 2^13 bytes or more from every one of the last 16
//! diagonals, and the seeks cost 2.3 bytes each after LZMA2 (`docs/deltas.md`). Two changes:
//!
//! - A short byte string (a function prologue, a common instruction sequence) occurs in the base
//!   many times, all equally long matches, and the suffix array's binary search lands on any one of
//!   them. Here the scan looks at up to [`NEAR_CANDIDATES`] suffixes each side of where the search
//!   landed that match as long, and takes the one nearest the current diagonal.
//! - The threshold for a new match depends on where it is: more than [`Params::better_near`] bytes
//!   better where its diagonal is within [`Params::near_distance`] of the current one (a short
//!   seek), more than [`Params::better_by`] bytes where it is not. Measured on the corpus
//!   (`docs/deltas.md`): 12, 6 and 4,096.
//!
//! The output is bidiff's [`Match`]es, tiling the target in order, as `bidiff::diff` gives them;
//! the translator and every format are unchanged, so older agents apply these deltas.

use std::io;

use bidiff::Match;

use super::anchor::common_prefix;

/// How many suffixes each side of the binary search's landing place are looked at for an equally
/// long match nearer the current diagonal.
pub const NEAR_CANDIDATES: usize = 32;
/// Matches longer than this are taken where the search lands: a seek costs nothing next to them,
/// and comparing long equal prefixes is what would cost.
const NEAR_MAX_LEN: usize = 4096;

/// The scan's knobs. bsdiff's own scan is `better_by: 8, near: false, better_near: 8`.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// A new match is started where the longest exact match is longer than what the current
    /// diagonal matches over the same bytes by more than this.
    pub better_by: usize,
    /// Take among equally long matches the one nearest the current diagonal.
    pub near: bool,
    /// The threshold instead of `better_by` for a match whose diagonal is less than
    /// `near_distance` bytes from the current one.
    pub better_near: usize,
    pub near_distance: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            better_by: 12,
            near: true,
            better_near: 6,
            near_distance: 4096,
        }
    }
}

/// The base's suffix array (divsufsort; 4 bytes per base byte), and where in it each two-byte
/// prefix starts.
pub struct Index<'a> {
    base: &'a [u8],
    sa: Vec<i32>,
    /// `starts[k]`: the first suffix whose [`prefix_key`] is at least `k` ([`KEYS`] + 1 entries).
    /// A search starts within its needle's prefix instead of the whole array: the binary search's
    /// first steps, each a cache miss in the array and another in the base, were most of the scan's
    /// time (`perf annotate`, `docs/deltas.md`).
    starts: Vec<u32>,
}

/// How many [`prefix_key`]s there are.
const KEYS: usize = 256 * 257;

/// A suffix's or needle's place among two-byte prefixes, in the suffix array's order: the first
/// byte, then no second byte before any second byte. `None` for an empty one.
fn prefix_key(s: &[u8]) -> Option<usize> {
    let first = usize::from(*s.first()?);
    Some(first * 257 + s.get(1).map_or(0, |&b| usize::from(b) + 1))
}

impl<'a> Index<'a> {
    /// Sorts the suffixes of `base`, which must be shorter than 2 GiB (`i32` positions).
    pub fn new(base: &'a [u8]) -> io::Result<Self> {
        if i32::try_from(base.len()).is_err() {
            return Err(io::Error::other(format!(
                "delta: a base of {} bytes is too large for the suffix array (at most 2 GiB)",
                base.len()
            )));
        }
        let (_, sa) = divsufsort::sort(base).into_parts();
        // Count every suffix's key (a pass over the base, not the array), then sum: suffixes are
        // sorted, so each key's are contiguous.
        let mut starts = vec![0u32; KEYS + 1];
        for i in 0..base.len() {
            if let Some(k) = prefix_key(&base[i..base.len().min(i + 2)]) {
                starts[k + 1] += 1;
            }
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        Ok(Self { base, sa, starts })
    }

    fn suffix(&self, i: usize) -> &'a [u8] {
        &self.base[self.sa[i] as usize..]
    }

    /// The longest prefix of `needle` found in the base: (index in the suffix array, length).
    fn search(&self, needle: &[u8]) -> (usize, usize) {
        let n = self.sa.len();
        if n == 0 {
            return (0, 0);
        }
        // The first suffix not less than the needle; the longest match is it or the one before.
        // Every suffix before the needle's key is less than it, every one after is greater.
        let (mut lo, mut hi) = match prefix_key(needle) {
            Some(k) => (self.starts[k] as usize, self.starts[k + 1] as usize),
            None => (0, 0),
        };
        // What the needle shares with the suffixes just below and at `hi`, where known: every
        // suffix between them shares the lesser, so a comparison starts there.
        let (mut below, mut above) = (None::<usize>, None::<usize>);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let suffix = self.suffix(mid);
            let skip = below.unwrap_or(0).min(above.unwrap_or(0));
            let shared = skip + common_prefix(&suffix[skip..], &needle[skip..]);
            let less = shared < needle.len()
                && (shared == suffix.len() || suffix[shared] < needle[shared]);
            if less {
                lo = mid + 1;
                below = Some(shared);
            } else {
                hi = mid;
                above = Some(shared);
            }
        }
        let below = match below {
            Some(b) => b,
            None if lo > 0 => common_prefix(self.suffix(lo - 1), needle),
            None => 0,
        };
        let above = match above {
            Some(a) => a,
            None if lo < n => common_prefix(self.suffix(lo), needle),
            None => 0,
        };
        if above >= below && lo < n {
            (lo, above)
        } else {
            (lo - 1, below)
        }
    }

    /// Of the suffixes around `at` (up to [`NEAR_CANDIDATES`] each side) that share `len` bytes
    /// with `needle`, the one nearest `want`: (base position, length).
    fn nearest(&self, at: usize, len: usize, needle: &[u8], want: isize) -> (usize, usize) {
        let distance = |i: usize| (self.sa[i] as isize - want).unsigned_abs();
        let (mut best, mut pos) = (distance(at), self.sa[at] as usize);
        if len == 0 || len > NEAR_MAX_LEN {
            return (pos, len);
        }
        // Suffixes sharing `len` bytes with the needle are contiguous around `at`: look at each
        // side until one shares less.
        let mut shares = |i: usize| {
            if common_prefix(self.suffix(i), needle) < len {
                return false;
            }
            let d = distance(i);
            if d < best {
                (best, pos) = (d, self.sa[i] as usize);
            }
            true
        };
        for i in (at.saturating_sub(NEAR_CANDIDATES)..at).rev() {
            if !shares(i) {
                break;
            }
        }
        for i in at + 1..self.sa.len().min(at + 1 + NEAR_CANDIDATES) {
            if !shares(i) {
                break;
            }
        }
        (pos, len)
    }

    /// The longest prefix of `needle` found in the base: (base position, length); among matches as
    /// long, the one nearest `want` when `near`.
    #[cfg(test)]
    fn longest(&self, needle: &[u8], want: isize, near: bool) -> (usize, usize) {
        let (at, len) = self.search(needle);
        if self.sa.is_empty() {
            return (0, 0);
        }
        if near {
            self.nearest(at, len, needle, want)
        } else {
            (self.sa[at] as usize, len)
        }
    }
}

/// The diff of `base` and `target` as matches tiling the target in order. An empty base gives one
/// match that copies the whole target.
pub fn diff(
    base: &[u8],
    target: &[u8],
    params: Params,
    mut on_match: impl FnMut(Match) -> io::Result<()>,
) -> io::Result<()> {
    if base.is_empty() {
        if !target.is_empty() {
            on_match(Match {
                add_old_start: 0,
                add_new_start: 0,
                add_length: 0,
                copy_end: target.len(),
            })?;
        }
        return Ok(());
    }
    let started = std::time::Instant::now();
    let index = Index::new(base)?;
    tracing::debug!(bytes = base.len(), elapsed = ?started.elapsed(), "delta: suffix array sorted");
    let started = std::time::Instant::now();
    diff_with(&index, target, params, on_match)?;
    tracing::debug!(bytes = target.len(), elapsed = ?started.elapsed(), "delta: target scanned");
    Ok(())
}

/// The diff of the indexed base and `target` (not empty base), as [`diff`]'s matches.
pub fn diff_with(
    index: &Index<'_>,
    target: &[u8],
    params: Params,
    mut on_match: impl FnMut(Match) -> io::Result<()>,
) -> io::Result<()> {
    let mut scan = Scan::new(index, target, params);
    while let Some(m) = scan.next_match() {
        on_match(m)?;
    }
    Ok(())
}

/// The scan's state between matches.
struct Scan<'i, 'a> {
    index: &'i Index<'a>,
    base: &'a [u8],
    target: &'a [u8],
    params: Params,
    /// Where the scan is, and the exact match found there (base position, length).
    scan: usize,
    pos: usize,
    len: usize,
    /// Where the last match's add started, in the target and in the base, and its diagonal.
    last_scan: usize,
    last_pos: usize,
    last_offset: isize,
}

impl<'i, 'a> Scan<'i, 'a> {
    fn new(index: &'i Index<'a>, target: &'a [u8], params: Params) -> Self {
        Self {
            index,
            base: index.base,
            target,
            params,
            scan: 0,
            pos: 0,
            len: 0,
            last_scan: 0,
            last_pos: 0,
            last_offset: 0,
        }
    }

    /// Whether `target[t]` equals the base byte on the last diagonal.
    fn on_diagonal(&self, t: usize) -> bool {
        let b = t as isize + self.last_offset;
        b >= 0 && (b as usize) < self.base.len() && self.base[b as usize] == self.target[t]
    }

    fn next_match(&mut self) -> Option<Match> {
        let (base, target) = (self.base, self.target);
        while self.scan < target.len() {
            self.scan += self.len;
            // How many of the bytes from `scored` to the end of the current exact match the last
            // diagonal matches.
            let mut old_score = 0usize;
            let mut scored = self.scan;
            while self.scan < target.len() {
                let want = self.scan as isize + self.last_offset;
                let needle = &target[self.scan..];
                let at;
                (at, self.len) = self.index.search(needle);
                while scored < self.scan + self.len {
                    old_score += usize::from(self.on_diagonal(scored));
                    scored += 1;
                }
                if self.len == old_score && self.len != 0 {
                    // The last diagonal matches as well: where else it matches does not matter.
                    break;
                }
                let least = self.params.better_by.min(self.params.better_near);
                if self.len > old_score + least {
                    // A new match may be taken: where it is decides both its threshold and the
                    // seek's cost.
                    (self.pos, self.len) = if self.params.near {
                        self.index.nearest(at, self.len, needle, want)
                    } else {
                        (self.index.sa[at] as usize, self.len)
                    };
                    let near =
                        (self.pos as isize - want).unsigned_abs() < self.params.near_distance;
                    let better_by = if near {
                        self.params.better_near
                    } else {
                        self.params.better_by
                    };
                    if self.len > old_score + better_by {
                        break;
                    }
                }
                if self.on_diagonal(self.scan) {
                    old_score -= 1;
                }
                self.scan += 1;
            }
            if self.len == old_score && self.scan != target.len() {
                continue;
            }
            // Extend the last match forward from `last_scan` and the new one backward from
            // `scan`, each as far as at least half its bytes match.
            let mut forward = {
                let (mut s, mut best_s, mut best) = (0isize, 0isize, 0usize);
                let room = (self.scan - self.last_scan).min(base.len() - self.last_pos);
                for i in 0..room {
                    s += isize::from(base[self.last_pos + i] == target[self.last_scan + i]);
                    if s * 2 - (i + 1) as isize > best_s * 2 - best as isize {
                        (best_s, best) = (s, i + 1);
                    }
                }
                best
            };
            let mut backward = if self.scan >= target.len() {
                0
            } else {
                let (mut s, mut best_s, mut best) = (0isize, 0isize, 0usize);
                let room = (self.scan - self.last_scan).min(self.pos);
                for i in 1..=room {
                    s += isize::from(base[self.pos - i] == target[self.scan - i]);
                    if s * 2 - i as isize > best_s * 2 - best as isize {
                        (best_s, best) = (s, i);
                    }
                }
                best
            };
            // Where the two extensions overlap, split them where the bytes favour each side most.
            if self.last_scan + forward > self.scan - backward {
                let overlap = (self.last_scan + forward) - (self.scan - backward);
                let (mut s, mut best_s, mut split) = (0isize, 0isize, 0usize);
                for i in 0..overlap {
                    let t = self.last_scan + forward - overlap + i;
                    s += isize::from(target[t] == base[self.last_pos + forward - overlap + i]);
                    let t = self.scan - backward + i;
                    s -= isize::from(target[t] == base[self.pos - backward + i]);
                    if s > best_s {
                        (best_s, split) = (s, i + 1);
                    }
                }
                forward = forward + split - overlap;
                backward -= split;
            }
            let m = Match {
                add_old_start: self.last_pos,
                add_new_start: self.last_scan,
                add_length: forward,
                copy_end: self.scan - backward,
            };
            self.last_scan = self.scan - backward;
            self.last_pos = self.pos - backward;
            self.last_offset = self.pos as isize - self.scan as isize;
            return Some(m);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    /// Applies the matches as the translator does, checking that they tile the target; and the sum
    /// of the seeks' distances.
    fn rebuild(base: &[u8], target: &[u8], params: Params) -> (Vec<u8>, u64) {
        let (mut out, mut seeks, mut next_base) = (Vec::new(), 0u64, None::<usize>);
        diff(base, target, params, |m: Match| {
            assert_eq!(m.add_new_start, out.len(), "matches tile the target");
            assert!(m.copy_start() <= m.copy_end && m.copy_end <= target.len());
            assert!(m.add_old_start + m.add_length <= base.len());
            if let Some(b) = next_base {
                seeks += (m.add_old_start as i64 - b as i64).unsigned_abs();
            }
            for i in 0..m.add_length {
                let d = target[m.add_new_start + i].wrapping_sub(base[m.add_old_start + i]);
                out.push(base[m.add_old_start + i].wrapping_add(d));
            }
            out.extend_from_slice(&target[m.copy_start()..m.copy_end]);
            next_base = Some(m.add_old_start + m.add_length);
            Ok(())
        })
        .expect("diff");
        (out, seeks)
    }

    const FAR: Params = Params {
        better_by: 8,
        near: false,
        better_near: 8,
        near_distance: 0,
    };

    #[test]
    fn equally_long_matches_are_taken_nearest_the_diagonal() {
        let mut base = testkit::bytes(100_000, 1);
        let motif = testkit::bytes(24, 2);
        for at in [1_000, 50_000, 90_000] {
            base[at..at + 24].copy_from_slice(&motif);
        }
        let mut needle = motif.clone();
        needle.extend_from_slice(&testkit::bytes(100, 3));
        let index = Index::new(&base).expect("index");
        for (want, at) in [
            (900, 1_000),
            (49_990, 50_000),
            (60_000, 50_000),
            (99_000, 90_000),
        ] {
            assert_eq!(index.longest(&needle, want, true), (at, 24), "want {want}");
        }
        // Without the choice, any of the three.
        let (at, len) = index.longest(&needle, 0, false);
        assert!([1_000, 50_000, 90_000].contains(&at) && len == 24);
        // A longer match wins over a nearer one.
        base[50_024] = needle[24];
        let index = Index::new(&base).expect("index");
        assert_eq!(index.longest(&needle, 1_000, true), (50_000, 25));
        // An empty base and an empty needle.
        assert_eq!(
            Index::new(&[]).expect("index").longest(&needle, 0, true),
            (0, 0)
        );
        assert_eq!(index.longest(&[], 0, true).1, 0);
    }

    /// Code-like: the target is the base's functions in a new order, each with a few bytes changed
    /// and common short sequences (prologues) that occur all over the base.
    fn moved_code(seed: u64) -> (Vec<u8>, Vec<u8>) {
        let prologue = testkit::bytes(20, seed + 100);
        let mut base = Vec::new();
        let mut funcs = Vec::new();
        for k in 0..200u64 {
            let start = base.len();
            base.extend_from_slice(&prologue);
            base.extend_from_slice(&testkit::bytes(200 + (k as usize * 37) % 300, seed + k));
            funcs.push(start..base.len());
        }
        let mut target = Vec::new();
        for k in (0..funcs.len()).rev() {
            let r = funcs[(k * 7) % funcs.len()].clone();
            let start = target.len();
            target.extend_from_slice(&base[r]);
            for j in (start + 30..target.len()).step_by(40) {
                target[j] = target[j].wrapping_add(1);
            }
        }
        (base, target)
    }

    #[test]
    fn seeks_stay_near_and_the_target_is_rebuilt() {
        for seed in 1..4 {
            let (base, target) = moved_code(seed);
            let (out, far) = rebuild(&base, &target, FAR);
            assert_eq!(out, target);
            let (out, near) = rebuild(&base, &target, Params::default());
            assert_eq!(out, target);
            assert!(near < far, "seed {seed}: seeks {near} near, {far} far");
        }
    }

    /// The search as the whole array's binary search would find it, comparing whole suffixes.
    fn search_plainly(index: &Index<'_>, needle: &[u8]) -> (usize, usize) {
        let n = index.sa.len();
        let lo = index
            .sa
            .partition_point(|&p| &index.base[p as usize..] < needle);
        let shared = |i: usize| common_prefix(&index.base[index.sa[i] as usize..], needle);
        let below = if lo > 0 { shared(lo - 1) } else { 0 };
        let above = if lo < n { shared(lo) } else { 0 };
        if above >= below && lo < n {
            (lo, above)
        } else {
            (lo - 1, below)
        }
    }

    proptest::proptest! {
        /// Starting within the needle's two-byte prefix and skipping what the bounds share finds
        /// what the whole array's search finds, on bases of few symbols (long shared prefixes),
        /// needles of one byte, needles that run past every suffix, and needles from the base.
        #[test]
        fn the_search_finds_what_a_plain_search_finds(
            base in proptest::collection::vec(0u8..4, 1..3_000),
            needles in proptest::collection::vec(
                (proptest::collection::vec(0u8..5, 0..40), 0usize..3_000, 0usize..60),
                1..40,
            ),
        ) {
            let index = Index::new(&base).expect("index");
            for (mut needle, at, len) in needles {
                let at = at % base.len();
                if len > 0 {
                    // A piece of the base, then the generated bytes.
                    let mut from_base = base[at..base.len().min(at + len)].to_vec();
                    from_base.append(&mut needle);
                    needle = from_base;
                }
                proptest::prop_assert_eq!(index.search(&needle), search_plainly(&index, &needle));
            }
        }

        /// Whatever the target is made of (base pieces, changed base pieces, zeros, new bytes) and
        /// whatever the thresholds, the matches tile it and rebuild it.
        #[test]
        fn any_target_is_rebuilt(
            pieces in proptest::collection::vec((0u8..4, 0usize..30_000, 1usize..3_000), 0..20),
            better_by in 0usize..20,
            better_near in 0usize..20,
            near_distance in 0usize..10_000,
            near in proptest::bool::ANY,
            seed in 0u64..1_000,
        ) {
            let mut base = testkit::bytes(32 * 1024, seed);
            base[..2048].fill(0);
            let mut target = Vec::new();
            for (k, at, len) in pieces {
                let at = at.min(base.len() - 1);
                let len = len.min(base.len() - at);
                match k {
                    0 => target.extend_from_slice(&base[at..at + len]),
                    1 => {
                        let start = target.len();
                        target.extend_from_slice(&base[at..at + len]);
                        for j in (start..target.len()).step_by(7) {
                            target[j] ^= 0x40;
                        }
                    }
                    2 => target.resize(target.len() + len, 0),
                    _ => target.extend_from_slice(&testkit::bytes(len, seed + at as u64)),
                }
            }
            let params = Params { better_by, near, better_near, near_distance };
            proptest::prop_assert_eq!(rebuild(&base, &target, params).0, target.clone());
            proptest::prop_assert_eq!(rebuild(&[], &target, params).0, target);
        }
    }
}
