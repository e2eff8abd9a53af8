//! Sets of chunk groups (16 KiB units of an artifact), as a dense bitmap.
//!
//! Used by the store (which groups are verified on disk), the scheduler (which groups each peer has)
//! and the wire (availability messages, as runs).

use std::ops::Range;

/// A set of group indices in `0..len`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct GroupSet {
    len: u64,
    words: Vec<u64>,
    count: u64,
}

impl std::fmt::Debug for GroupSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupSet({}/{} ", self.count, self.len)?;
        f.debug_list().entries(self.runs().take(8)).finish()?;
        write!(f, ")")
    }
}

impl GroupSet {
    /// An empty set over `len` groups.
    pub fn new(len: u64) -> Self {
        Self {
            len,
            words: vec![0; len.div_ceil(64) as usize],
            count: 0,
        }
    }
    /// A full set over `len` groups.
    pub fn full(len: u64) -> Self {
        let mut s = Self::new(len);
        s.insert_range(0..len);
        s
    }
    /// The bitmap words (group `g` is bit `g % 64` of word `g / 64`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    /// Number of groups the set ranges over.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Number of groups in the set.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// No group is in the set.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Every group is in the set.
    pub fn is_full(&self) -> bool {
        self.count == self.len
    }
    /// Membership.
    pub fn contains(&self, g: u64) -> bool {
        g < self.len && self.words[(g / 64) as usize] & (1 << (g % 64)) != 0
    }
    /// Adds a group; returns whether it was new. Out-of-range groups are ignored.
    pub fn insert(&mut self, g: u64) -> bool {
        if g >= self.len {
            return false;
        }
        let w = &mut self.words[(g / 64) as usize];
        let bit = 1u64 << (g % 64);
        let new = *w & bit == 0;
        *w |= bit;
        self.count += u64::from(new);
        new
    }
    /// Removes a group; returns whether it was present.
    pub fn remove(&mut self, g: u64) -> bool {
        if g >= self.len {
            return false;
        }
        let w = &mut self.words[(g / 64) as usize];
        let bit = 1u64 << (g % 64);
        let had = *w & bit != 0;
        *w &= !bit;
        self.count -= u64::from(had);
        had
    }
    /// Adds a range (clamped to the set's length).
    pub fn insert_range(&mut self, r: Range<u64>) {
        for g in r.start..r.end.min(self.len) {
            self.insert(g);
        }
    }
    /// The groups as maximal runs, ascending.
    pub fn runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut g = 0u64;
        std::iter::from_fn(move || {
            while g < self.len && !self.contains(g) {
                // Skip empty words quickly.
                if g.is_multiple_of(64) && self.words[(g / 64) as usize] == 0 {
                    g += 64;
                    continue;
                }
                g += 1;
            }
            if g >= self.len {
                return None;
            }
            let start = g;
            while g < self.len && self.contains(g) {
                g += 1;
            }
            Some(start..g)
        })
    }
    /// Ascending members.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs().flatten()
    }
    /// Groups in `self` but not in `other`.
    pub fn difference(&self, other: &GroupSet) -> GroupSet {
        let mut out = self.clone();
        for (i, w) in out.words.iter_mut().enumerate() {
            *w &= !other.words.get(i).copied().unwrap_or(0);
        }
        out.recount();
        out
    }
    /// Every group of `self` is in `other` (of the same length).
    pub fn is_subset(&self, other: &GroupSet) -> bool {
        self.len == other.len
            && self
                .words
                .iter()
                .zip(&other.words)
                .all(|(a, b)| a & !b == 0)
    }
    /// Adds every group of `other`.
    pub fn union_with(&mut self, other: &GroupSet) {
        for (i, w) in self.words.iter_mut().enumerate() {
            *w |= other.words.get(i).copied().unwrap_or(0);
        }
        self.clear_tail();
        self.recount();
    }
    fn clear_tail(&mut self) {
        let extra = self.words.len() as u64 * 64 - self.len;
        if extra > 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= u64::MAX >> extra;
            }
        }
    }
    fn recount(&mut self) {
        self.count = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
    }
    /// Byte `i` of the on-disk form (groups `8i..8i+8`), without building the whole bitmap.
    pub fn byte(&self, i: u64) -> u8 {
        self.words
            .get((i / 8) as usize)
            .map_or(0, |w| (w >> ((i % 8) * 8)) as u8)
    }
    /// The raw bitmap, little-endian words, `ceil(len/8)` bytes (the store's on-disk form).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        v.truncate(self.len.div_ceil(8) as usize);
        v
    }
    /// Reads the on-disk form; extra bits past `len` are ignored.
    pub fn from_bytes(len: u64, bytes: &[u8]) -> Self {
        let mut s = Self::new(len);
        for (i, w) in s.words.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            let start = i * 8;
            if start < bytes.len() {
                let end = (start + 8).min(bytes.len());
                b[..end - start].copy_from_slice(&bytes[start..end]);
            }
            *w = u64::from_le_bytes(b);
        }
        s.clear_tail();
        s.recount();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn subset_is_every_member_contained(len in 1u64..300, a in proptest::collection::vec(0u64..300, 0..60), b in proptest::collection::vec(0u64..300, 0..200)) {
            let (mut x, mut y) = (GroupSet::new(len), GroupSet::new(len));
            for m in &a { if *m < len { x.insert(*m); } }
            for m in &b { if *m < len { y.insert(*m); } }
            prop_assert_eq!(x.is_subset(&y), x.iter().all(|g| y.contains(g)));
            prop_assert!(x.difference(&y).is_subset(&x));
            prop_assert!(!x.is_subset(&GroupSet::new(len + 1)), "other lengths never");
        }

        #[test]
        fn bytes_and_runs_round_trip(len in 0u64..300, members in proptest::collection::vec(0u64..300, 0..80)) {
            let mut s = GroupSet::new(len);
            for m in &members { s.insert(*m); }
            let back = GroupSet::from_bytes(len, &s.to_bytes());
            prop_assert_eq!(&back, &s);
            let bytes = s.to_bytes();
            for (i, b) in bytes.iter().enumerate() { prop_assert_eq!(s.byte(i as u64), *b); }
            let mut from_runs = GroupSet::new(len);
            for r in s.runs() { from_runs.insert_range(r); }
            prop_assert_eq!(&from_runs, &s);
            let expected: Vec<u64> = { let mut v: Vec<u64> = members.iter().copied().filter(|m| *m < len).collect(); v.sort(); v.dedup(); v };
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(s.count(), expected.len() as u64);
            let full = GroupSet::full(len);
            prop_assert_eq!(full.difference(&s).count(), len - s.count());
        }
    }
}
