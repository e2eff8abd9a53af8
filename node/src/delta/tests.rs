//! The delta format's tests: round trips, every format still applied, and hostile input.

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
    create(&base, &target, Codec::Lzma2, &mut d).expect("create");
    assert!(d.len() < 10_000, "delta {} bytes", d.len());
    assert_eq!(run(&d, &base, target.len() as u64).expect("apply"), target);
    // Format 1 (zstd) is still applied.
    let mut d1 = Vec::new();
    create(&base, &target, Codec::Zstd(19), &mut d1).expect("create");
    assert_eq!(&d1[..4], MAGIC_ZSTD);
    assert_eq!(run(&d1, &base, target.len() as u64).expect("apply"), target);
    assert!(run(&d1[..d1.len() - 3], &base, target.len() as u64).is_err());
    // Identical and empty inputs.
    let mut same = Vec::new();
    create(&base, &base, Codec::Lzma2, &mut same).expect("create");
    assert_eq!(run(&same, &base, base.len() as u64).expect("apply"), base);
    let mut empty = Vec::new();
    create(&base, &[], Codec::Lzma2, &mut empty).expect("create");
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

/// The add bytes as the decoder expands them from format 3's pairs and literals.
fn expand(pairs: &[u8], literals: &[u8]) -> Vec<u8> {
    let (mut p, mut l, mut out) = (io::Cursor::new(pairs), literals, Vec::new());
    while let Some(n) = get_varint(&mut p).expect("pair") {
        let z = get_varint(&mut p).expect("pair").expect("whole pair");
        assert!(n + z > 0, "an empty pair was written");
        out.extend_from_slice(&l[..n as usize]);
        l = &l[n as usize..];
        out.resize(out.len() + z as usize, 0);
    }
    assert!(l.is_empty(), "literals left over");
    out
}

proptest::proptest! {
    /// Whatever the add bytes and however they arrive in pieces, the pairs and literals give them
    /// back, and only runs of at least `ZERO_RUN_MIN` zeros leave the literals.
    #[test]
    fn zero_runs_give_the_add_bytes_back(
        runs in proptest::collection::vec((0usize..1200, 0usize..40), 0..24),
        cuts in proptest::collection::vec(0usize..5000, 0..6),
    ) {
        let mut adds = Vec::new();
        for (i, (zeros, other)) in runs.iter().enumerate() {
            adds.resize(adds.len() + zeros, 0);
            adds.extend((0..*other).map(|k| ((i * 31 + k * 7) % 255 + 1) as u8));
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(adds.len())).collect();
        cuts.sort_unstable();
        let mut z = ZeroRuns::default();
        let mut at = 0;
        for c in cuts.into_iter().chain([adds.len()]) {
            let seg = cm::Segment {
                base_pos: at as u64,
                target_pos: at as u64 + 1000,
                len: 0,
                base_end: c as u64,
            };
            z.push(&adds[at..c], &seg);
            at = c;
        }
        let (pairs, literals, segments) = z.finish();
        proptest::prop_assert_eq!(expand(&pairs, &literals), adds.clone());
        // The segments say where each literal is, in order, within its control.
        let places: Vec<u64> = segments
            .iter()
            .flat_map(|s| {
                assert!(s.len > 0 && s.base_pos + s.len <= s.base_end);
                assert_eq!(s.target_pos, s.base_pos + 1000);
                s.base_pos..s.base_pos + s.len
            })
            .collect();
        proptest::prop_assert_eq!(places.len(), literals.len());
        proptest::prop_assert!(places.windows(2).all(|w| w[0] < w[1]));
        for (p, l) in places.iter().zip(&literals) {
            proptest::prop_assert_eq!(adds[*p as usize], *l);
        }
        // Zeros stay among the literals only from runs shorter than the threshold, and no run of
        // the threshold's length is left there.
        let short: u64 = runs
            .iter()
            .map(|(zeros, _)| *zeros as u64)
            .filter(|z| *z < ZERO_RUN_MIN)
            .sum();
        let kept = literals.iter().filter(|b| **b == 0).count() as u64;
        proptest::prop_assert!(kept <= short, "{} zeros kept, {} in short runs", kept, short);
        let long = literals
            .windows(ZERO_RUN_MIN as usize)
            .any(|w| w.iter().all(|b| *b == 0));
        proptest::prop_assert!(!long, "a run of {} zeros left among the literals", ZERO_RUN_MIN);
    }
}

/// A delta of format 2 or 3 built by hand from its streams (one control column each).
fn by_hand(magic: &[u8; 4], streams: &[&[u8]]) -> Vec<u8> {
    let kinds = [
        Kind::Control,
        Kind::Control,
        Kind::Control,
        Kind::Control,
        Kind::Add,
        Kind::Copy,
    ];
    let kinds = &kinds[kinds.len() - streams.len()..];
    let packed: Vec<Vec<u8>> = streams
        .iter()
        .zip(kinds)
        .map(|(s, k)| lzma2_compress(s, *k).expect("compress"))
        .collect();
    let mut out = magic.to_vec();
    for s in &packed {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    put_ranges(&mut out, &[]);
    put_ranges(&mut out, &[]);
    for s in &packed {
        out.extend_from_slice(s);
    }
    out
}

fn varints(v: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in v {
        put_varint(&mut out, *x);
    }
    out
}

#[test]
fn format_3_takes_long_zero_runs_out_and_format_2_still_applies() {
    // A base that the target matches exactly over long stretches: the add bytes are long zero runs.
    let base = testkit::bytes(400_000, 5);
    let mut target = base.clone();
    for at in (0..400_000).step_by(50_000) {
        target[at + 10] ^= 0x5a;
    }
    let mut d = Vec::new();
    create(&base, &target, Codec::Lzma2, &mut d).expect("create");
    assert_eq!(&d[..4], MAGIC_3);
    assert_eq!(run(&d, &base, target.len() as u64).expect("apply"), target);

    // The same edit as format 2 and as format 3, built by hand: one control adding over the whole
    // base (bytes changed at 10 and 1,000), then 3 literal bytes.
    let base = testkit::bytes(4_000, 6);
    let mut adds = vec![0u8; 4_000];
    adds[10] = 1;
    adds[1_000] = 0xff;
    let mut want: Vec<u8> = base
        .iter()
        .zip(&adds)
        .map(|(b, a)| b.wrapping_add(*a))
        .collect();
    want.extend_from_slice(b"new");
    let cols = [varints(&[4_000]), varints(&[3]), varints(&[0])];
    let two = by_hand(MAGIC_2, &[&cols[0], &cols[1], &cols[2], &adds, b"new"]);
    assert_eq!(run(&two, &base, 4_003).expect("format 2 applies"), want);
    let mut z = ZeroRuns::default();
    let whole = cm::Segment {
        base_pos: 0,
        target_pos: 0,
        len: 0,
        base_end: 4_000,
    };
    z.push(&adds, &whole);
    let (pairs, literals, _) = z.finish();
    assert_eq!(
        literals.len(),
        11 + 1,
        "the run of 2,999 zeros is out, the 989 zeros stay in"
    );
    let three = by_hand(
        MAGIC_3,
        &[&cols[0], &cols[1], &cols[2], &pairs, &literals, b"new"],
    );
    assert_eq!(run(&three, &base, 4_003).expect("format 3 applies"), want);

    // Hostile runs: an empty pair, too few zeros, literals left over, a truncated pair.
    let bad = |pairs: &[u8], literals: &[u8]| {
        let d = by_hand(
            MAGIC_3,
            &[&cols[0], &cols[1], &cols[2], pairs, literals, b"new"],
        );
        run(&d, &base, 4_003)
            .expect_err("hostile runs must be refused")
            .to_string()
    };
    let e = bad(&varints(&[0, 0, 12, 3_988]), &literals);
    assert!(e.contains("empty zero run"), "{e}");
    assert!(bad(&varints(&[12, 100]), &literals).contains("add stream too short"));
    let e = bad(&varints(&[11, 3_989]), &literals);
    assert!(e.contains("past the last zero run"), "{e}");
    let mut cut = varints(&[12, 3_988]);
    cut.pop();
    let e = bad(&cut, &literals);
    assert!(e.contains("truncated zero run"), "{e}");
    assert!(bad(&varints(&[13, 3_987]), &literals).contains("too short"));
}

/// Reads the whole output in pieces of the given sizes (cycled): the window of base bytes that
/// format 4 keeps ahead must not depend on how the caller reads.
fn run_in_pieces(d: &[u8], base: &[u8], limit: u64, pieces: &[usize]) -> io::Result<Vec<u8>> {
    let mut a = apply(|| Ok(io::Cursor::new(d)), io::Cursor::new(base), limit)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = Vec::new();
    for &n in pieces.iter().cycle() {
        let mut buf = vec![0u8; n.max(1)];
        let got = a.read(&mut buf)?;
        if got == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..got]);
    }
    unreachable!("cycle ends only by returning")
}

/// A base like code: runs of varied "instructions" with 4-byte displacements.
fn code_like(len: usize, seed: u64) -> Vec<u8> {
    let noise = testkit::bytes(len, seed);
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len {
        out.push(0xe8);
        let disp = (noise[i % len] as u32) << 8 | u32::from(noise[(i + 1) % len]);
        out.extend_from_slice(&disp.to_le_bytes());
        out.extend_from_slice(&noise[i % len..(i % len + 7).min(len)]);
        i += 13;
    }
    out.truncate(len);
    out
}

#[test]
fn format_4_round_trips_in_any_pieces_and_refuses_damage() {
    // A target that moved code (every displacement past the middle shifted), inserted bytes and
    // zeroed a stretch: approximate matches, long zero runs, controls of every kind.
    let base = code_like(200_000, 11);
    let mut target = base.clone();
    for at in (100_000..200_000 - 5).step_by(12) {
        if target[at] == 0xe8 {
            let d = u32::from_le_bytes(target[at + 1..at + 5].try_into().expect("4 bytes"));
            target[at + 1..at + 5].copy_from_slice(&d.wrapping_add(0x40).to_le_bytes());
        }
    }
    target.splice(50_000..50_000, testkit::bytes(3_000, 12));
    target[150_000..160_000].fill(0);
    let mut d = Vec::new();
    create(
        &base,
        &target,
        Codec::Modeled {
            min_gain_percent: 0,
            free_literals: 0,
        },
        &mut d,
    )
    .expect("create");
    assert_eq!(&d[..4], MAGIC);
    let limit = target.len() as u64;
    assert_eq!(run(&d, &base, limit).expect("apply"), target);
    for pieces in [&[1][..], &[3, 1, 7], &[65_536 + 5, 2], &[100_000]] {
        let out = run_in_pieces(&d, &base, limit, pieces).expect("apply in pieces");
        assert!(out == target, "pieces {pieces:?}");
    }
    // Format 4 is smaller than format 3 here, as on the corpus.
    let mut d3 = Vec::new();
    create(&base, &target, Codec::Lzma2, &mut d3).expect("create");
    assert!(
        d.len() < d3.len(),
        "format 4 {} vs 3 {} bytes",
        d.len(),
        d3.len()
    );
    assert_eq!(run(&d3, &base, limit).expect("format 3 applies"), target);
    // Where the model gains less than asked, the delta stays format 3, byte for byte.
    let mut fallback = Vec::new();
    let strict = Codec::Modeled {
        min_gain_percent: 100,
        free_literals: 0,
    };
    create(&base, &target, strict, &mut fallback).expect("create");
    assert!(fallback == d3, "format 3 when the model does not pay");
    // Unless the delta has so few add literals that the model's apply costs next to nothing: then
    // format 4 is kept wherever it is smaller, whatever the least gain asked.
    let mut cheap = Vec::new();
    let few = Codec::Modeled {
        min_gain_percent: 100,
        free_literals: MODEL_FREE_LITERALS,
    };
    create(&base, &target, few, &mut cheap).expect("create");
    assert!(cheap == d, "format 4 when its literals are few");

    // The coded literals are the fifth section: cut one byte off it, add one, or flip bytes in it.
    let lens: Vec<u64> = (0..6)
        .map(|i| u64::from_le_bytes(d[4 + 8 * i..12 + 8 * i].try_into().expect("8 bytes")))
        .collect();
    let start = 4 + 48 + 2 + lens[..4].iter().sum::<u64>() as usize;
    let end = start + lens[4] as usize;
    let with_literals = |lits: &[u8]| {
        let mut out = d[..4].to_vec();
        for (i, l) in lens.iter().enumerate() {
            let l = if i == 4 { lits.len() as u64 } else { *l };
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(&d[52..start]);
        out.extend_from_slice(lits);
        out.extend_from_slice(&d[end..]);
        out
    };
    assert_eq!(
        with_literals(&d[start..end]),
        d,
        "the section is where the header says"
    );
    let e = run(&with_literals(&d[start..end - 1]), &base, limit).expect_err("truncated");
    assert!(e.to_string().contains("truncated"), "{e}");
    let mut padded = d[start..end].to_vec();
    padded.push(0);
    let e = run(&with_literals(&padded), &base, limit).expect_err("padded");
    assert!(e.to_string().contains("past the coded add literals"), "{e}");
    for at in [0, 1, (end - start) / 2, end - start - 1] {
        let mut flipped = d[start..end].to_vec();
        flipped[at] ^= 0x10;
        // Damage either fails to decode or decodes to other bytes: never the target, never a panic.
        if let Ok(out) = run(&with_literals(&flipped), &base, limit) {
            assert!(out != target, "a flipped byte at {at} went unnoticed");
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Any edit of any base comes back through format 4, however it is read.
    #[test]
    fn format_4_gives_the_target_back(
        seed in 0u64..1000,
        len in 0usize..20_000,
        edits in proptest::collection::vec((0usize..20_000, 0usize..300, 0u8..3), 0..12),
        piece in 1usize..5_000,
    ) {
        let base = code_like(len, seed);
        let mut target = base.clone();
        for (at, n, kind) in edits {
            let at = at.min(target.len());
            let n = n.min(target.len() - at);
            match kind {
                0 => target[at..at + n].iter_mut().for_each(|b| *b = b.wrapping_add(3)),
                1 => { target.splice(at..at, testkit::bytes(n, seed + 1)); }
                _ => { target.drain(at..at + n); }
            }
        }
        let mut d = Vec::new();
        let codec = Codec::Modeled { min_gain_percent: 0, free_literals: 0 };
        create(&base, &target, codec, &mut d).expect("create");
        let out = run_in_pieces(&d, &base, target.len() as u64, &[piece]).expect("apply");
        proptest::prop_assert!(out == target);
    }
}

/// Seeded text: `lines` lines of words, as a changelog holds.
fn text(lines: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "fix", "the", "upstream", "release", "security", "CVE", "package", "build", "debian",
        "patch", "update", "new", "version", "urgency", "medium", "closes",
    ];
    let mut rng = testkit::Rng::new(seed);
    let mut out = Vec::new();
    for _ in 0..lines {
        for _ in 0..1 + rng.below(10) {
            out.extend_from_slice(WORDS[rng.below(16) as usize].as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(format!("{}\n", rng.below(100_000)).as_bytes());
    }
    out
}

/// A gzip member of `data` made by this build's zlib at `level` (0: stored blocks, which no level
/// from 1 to 9 reproduces).
fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// An image of random bytes with gzip members in it, as a file system holds compressed files.
fn image(parts: &[Vec<u8>], seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        out.extend_from_slice(&testkit::bytes(20_000, seed + i as u64));
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&testkit::bytes(20_000, seed + 99));
    out
}

fn gzip_pair() -> (Vec<u8>, Vec<u8>) {
    let (log, same, stored) = (text(4000, 1), text(3000, 2), text(2000, 3));
    let mut newer = text(40, 4);
    newer.extend_from_slice(&log);
    let base = image(&[gzip(&log, 9), gzip(&same, 6), gzip(&stored, 0)], 10);
    let target = image(
        &[
            gzip(&newer, 9),
            gzip(&same, 6),
            gzip(&stored, 0),
            gzip(&text(500, 5), 1),
        ],
        10,
    );
    (base, target)
}

#[test]
fn gzip_streams_are_found_and_reproduced() {
    let data = text(1000, 7);
    let img = image(&[gzip(&data, 9), gzip(&data, 0)], 1);
    let found = inflate::scan(&img);
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|(_, raw)| raw == &data));
    let body = |s: &inflate::Stream| &img[s.at as usize..(s.at + s.len) as usize];
    assert_eq!(inflate::reproduce(&data, body(&found[0].0)), Some(9));
    assert_eq!(inflate::reproduce(&data, body(&found[1].0)), None);
    // A member whose trailer's CRC does not match is not a stream.
    let mut bad = gzip(&data, 9);
    let n = bad.len();
    bad[n - 6] ^= 1;
    assert!(inflate::scan(&image(&[bad], 1)).is_empty());
    // Name and comment fields are skipped.
    let mut named = Vec::new();
    let mut e = flate2::GzBuilder::new()
        .filename("changelog")
        .comment("c")
        .write(&mut named, flate2::Compression::new(9));
    e.write_all(&data).expect("gzip");
    e.finish().expect("gzip");
    assert_eq!(inflate::scan(&named).len(), 1);
}

#[test]
fn format_5_round_trip_is_smaller_and_refuses_hostile_tables() {
    let (base, target) = gzip_pair();
    let limit = target.len() as u64;
    let (mut plain, mut d) = (Vec::new(), Vec::new());
    create(&base, &target, Codec::Lzma2, &mut plain).expect("create");
    create_inflating(&base, &target, Codec::Lzma2, &mut d).expect("create");
    assert_eq!(&d[..4], inflate::MAGIC_5);
    assert_eq!(run(&d, &base, limit).expect("apply"), target);
    assert_eq!(
        run_in_pieces(&d, &base, limit, &[1, 7, 4096]).expect("apply"),
        target
    );
    assert!(
        d.len() * 2 < plain.len(),
        "format 5 {} bytes, plain {}",
        d.len(),
        plain.len()
    );
    // Nothing to gain (no changed stream): the plain delta.
    let mut same = Vec::new();
    create_inflating(&base, &base, Codec::Lzma2, &mut same).expect("create");
    assert_ne!(&same[..4], inflate::MAGIC_5);
    // Truncated anywhere: an error, never a panic or the target.
    for cut in [5, 12, 20, d.len() / 2, d.len() - 1] {
        assert!(run(&d[..cut], &base, limit).is_err(), "cut at {cut}");
    }
    assert!(run(&d, &base, limit - 1).is_err());
    // The wrong base: its streams do not inflate where the table says.
    assert!(run(&d, &testkit::bytes(base.len(), 5), limit).is_err());
}

#[test]
fn only_changed_gzip_streams_are_expanded() {
    let (base, target) = gzip_pair();
    let plan = inflate::Plan::new(&base, &target).expect("a changed stream");
    let inflated = |d: &[u8], s: &inflate::Stream| {
        let body = &d[s.at as usize..(s.at + s.len) as usize];
        let mut raw = Vec::new();
        flate2::read::DeflateDecoder::new(body)
            .read_to_end(&mut raw)
            .expect("inflate");
        raw
    };
    // The target's changed stream and its new one; not the stream the base holds unchanged, nor
    // the one no level reproduces.
    let listed: Vec<(Vec<u8>, u8)> = plan
        .target
        .iter()
        .map(|(s, level, _)| (inflated(&target, s), *level))
        .collect();
    let mut newer = text(40, 4);
    newer.extend_from_slice(&text(4000, 1));
    assert_eq!(listed, vec![(newer, 9), (text(500, 5), 1)]);
    // The base's old version of the changed stream; its copy of the unchanged one stays
    // compressed, to match the target's as it is, and so does the stored one.
    let base_listed: Vec<Vec<u8>> = plan.base.iter().map(|(s, _)| inflated(&base, s)).collect();
    assert_eq!(base_listed, vec![text(4000, 1)]);
    // The expanded target holds the unchanged stream's compressed bytes as the base does.
    let (bx, tx) = plan.expand(&base, &target);
    let same = gzip(&text(3000, 2), 6);
    let body = &same[10..same.len() - 8];
    let finder = memchr::memmem::Finder::new(body);
    assert!(finder.find(&bx).is_some() && finder.find(&tx).is_some());
}

#[test]
fn expanding_an_owned_image_in_place_gives_the_expanded_image() {
    // Streams that grow inflated (text): moved in place.
    let (base, target) = gzip_pair();
    let plan = inflate::Plan::new(&base, &target).expect("a changed stream");
    let (bx, tx) = plan.expand(&base, &target);
    assert_eq!(plan.expand_base_owned(base.clone()), bx);
    assert_eq!(plan.expand_target_owned(target.clone()), tx);
    // A first stream that shrinks inflated (random bytes, stored by deflate with its framing),
    // then one that grows: not in place, and the same bytes.
    let (a, b) = (testkit::bytes(30_000, 61), testkit::bytes(30_000, 62));
    let base = image(&[gzip(&a, 9), gzip(&text(2000, 63), 9)], 64);
    let mut later = text(2000, 63);
    later.extend_from_slice(b"one more line\n");
    let target = image(&[gzip(&b, 9), gzip(&later, 9)], 64);
    let plan = inflate::Plan::new(&base, &target).expect("changed streams");
    assert!(plan
        .target
        .iter()
        .any(|(s, _, raw)| (raw.len() as u64) < s.len));
    let (bx, tx) = plan.expand(&base, &target);
    assert_eq!(plan.expand_base_owned(base), bx);
    assert_eq!(plan.expand_target_owned(target), tx);
}

#[test]
fn a_large_pair_decides_format_5_on_its_listed_streams() {
    // Decided on the listed streams (as a pair of 64 MiB or more is): format 5, whose inner delta
    // is the one measured whole, and it applies; owned and borrowed images give the same bytes.
    let (base, target) = gzip_pair();
    let limit = target.len() as u64;
    let methods = Methods {
        inflate: true,
        ..Methods::NONE
    };
    let decided = |b: Cow<'_, [u8]>, t: Cow<'_, [u8]>, from: usize| {
        let mut d = Vec::new();
        create_deciding_from(b, t, Codec::Lzma2, methods, from, &mut d).expect("create");
        d
    };
    let measured = decided(Cow::Borrowed(&base), Cow::Borrowed(&target), usize::MAX);
    let borrowed = decided(Cow::Borrowed(&base), Cow::Borrowed(&target), 0);
    let owned = decided(Cow::Owned(base.clone()), Cow::Owned(target.clone()), 0);
    assert_eq!(&borrowed[..4], inflate::MAGIC_5);
    assert_eq!(borrowed, measured);
    assert_eq!(owned, measured);
    assert_eq!(run(&owned, &base, limit).expect("apply"), target);
    // Where expanding gains nothing on the streams (random bytes, inflated no better than as
    // they are), both whole deltas are measured as for a small pair: the same delta.
    let (a, b) = (testkit::bytes(30_000, 71), testkit::bytes(30_000, 72));
    let base = image(&[gzip(&a, 9)], 73);
    let target = image(&[gzip(&b, 9)], 73);
    let measured = decided(Cow::Borrowed(&base), Cow::Borrowed(&target), usize::MAX);
    let owned = decided(Cow::Owned(base.clone()), Cow::Owned(target.clone()), 0);
    assert_eq!(owned, measured);
    assert_eq!(
        run(&owned, &base, target.len() as u64).expect("apply"),
        target
    );
}

/// An image of `parts` as gzip streams (seeded by `seed`), its expanded form, and the format-5
/// header a device reads for it (against a target with one changed stream).
fn expandable(parts: &[Vec<u8>], seed: u64) -> (Vec<u8>, Vec<u8>, inflate::Header) {
    let base = image(&parts.iter().map(|p| gzip(p, 9)).collect::<Vec<_>>(), seed);
    let target = image(&[gzip(&text(100, 40), 9)], 31);
    let plan = inflate::Plan::new(&base, &target).expect("a changed stream");
    let (bx, _) = plan.expand(&base, &target);
    let t = lzma2_compress(&plan.tables(), Kind::Control).expect("xz");
    let mut tables = (t.len() as u64).to_le_bytes().to_vec();
    tables.extend_from_slice(&t);
    let header = inflate::Header::read(io::Cursor::new(&tables)).expect("tables");
    (base, bx, header)
}

#[test]
fn the_expanded_base_reads_back_and_forth_between_streams() {
    // Five base streams, read at seeded places in any order, with room for two, then for all.
    let parts: Vec<Vec<u8>> = (0..5).map(|i| text(2000, 20 + i)).collect();
    let (base, bx, header) = expandable(&parts, 30);
    let largest = parts.iter().map(Vec::len).max().expect("parts") as u64;
    for room in [2 * largest, 1 << 30] {
        let mut x = header
            .expanded(io::Cursor::new(&base))
            .expect("expanded")
            .with_cache_bytes(room);
        let mut rng = testkit::Rng::new(room);
        let mut most = 0;
        for _ in 0..300 {
            let at = rng.below(bx.len() as u64);
            let len = (1 + rng.below(5000)).min(bx.len() as u64 - at) as usize;
            let mut got = vec![0; len];
            x.seek(SeekFrom::Start(at)).expect("seek");
            x.read_exact(&mut got).expect("read");
            assert_eq!(got, &bx[at as usize..at as usize + len], "at {at}");
            let (bytes, streams) = x.cached();
            assert!(bytes <= room, "{bytes} cached, room for {room}");
            most = most.max(streams);
        }
        let want = if room < 1 << 30 { 2 } else { 5 };
        assert_eq!(most, want, "streams kept at once with room for {room}");
    }
    // Many small streams: never more than `CACHE_STREAMS` kept, whatever the room.
    let parts: Vec<Vec<u8>> = (0..100).map(|i| text(20, 50 + i)).collect();
    let (base, bx, header) = expandable(&parts, 60);
    let mut x = header.expanded(io::Cursor::new(&base)).expect("expanded");
    let mut got = Vec::new();
    x.read_to_end(&mut got).expect("read");
    assert_eq!(got, bx);
    assert_eq!(x.cached().1, inflate::CACHE_STREAMS);
}

/// A format-5 delta with the given tables around the inner delta of `base` to itself.
fn wrapped(tables: &[u8], base: &[u8]) -> Vec<u8> {
    let t = lzma2_compress(tables, Kind::Control).expect("xz");
    let mut d = inflate::MAGIC_5.to_vec();
    d.extend_from_slice(&(t.len() as u64).to_le_bytes());
    d.extend_from_slice(&t);
    create(base, base, Codec::Lzma2, &mut d).expect("create");
    d
}

#[test]
fn format_5_tables_are_checked() {
    let data = text(500, 8);
    let base = image(&[gzip(&data, 9)], 3);
    let s = inflate::scan(&base)[0].0;
    let table = |base_rows: &[(u64, u64, u64)], target_rows: &[(u64, u64, u64, u8)]| {
        let mut t = Vec::new();
        put_varint(&mut t, base_rows.len() as u64);
        for &(g, l, i) in base_rows {
            put_varint(&mut t, g);
            put_varint(&mut t, l);
            put_varint(&mut t, i);
        }
        put_varint(&mut t, target_rows.len() as u64);
        for &(g, i, l, lv) in target_rows {
            put_varint(&mut t, g);
            put_varint(&mut t, i);
            put_varint(&mut t, l);
            t.push(lv);
        }
        t
    };
    let limit = base.len() as u64 * 2;
    let err = |t: Vec<u8>| match run(&wrapped(&t, &base), &base, limit) {
        Err(e) => e.to_string(),
        Ok(_) => String::from("applied"),
    };
    // Empty tables: the inner delta alone.
    assert_eq!(
        run(&wrapped(&table(&[], &[]), &base), &base, limit).expect("apply"),
        base
    );
    assert!(err(table(&[(base.len() as u64, 10, 10)], &[])).contains("past the end"));
    assert!(err(table(&[(s.at, s.len, s.inflated + 1)], &[])).contains("does not inflate"));
    assert!(err(table(&[(s.at, 9 << 20, 10)], &[])).contains("larger than 8 MiB"));
    assert!(err(table(&[], &[(0, 10, 10, 0)])).contains("level"));
    // A target stream whose recorded length the re-compression does not give.
    assert!(err(table(&[], &[(0, 1000, 10, 9)])).contains("zlib deflates differently"));
    let mut t = table(&[], &[]);
    t.push(0);
    assert!(err(t).contains("past the tables"));
}

/// A "rebuild": the base's lines in another order, a few of them new, as a toolchain change moves
/// and re-encodes every function. bidiff finds no long matches; LZMA2 against the base finds the
/// lines.
fn rebuild_pair() -> (Vec<u8>, Vec<u8>) {
    let base = text(12_000, 61);
    let lines: Vec<&[u8]> = base.split_inclusive(|b| *b == b'\n').collect();
    let mut rng = testkit::Rng::new(62);
    let mut target = Vec::new();
    for _ in 0..lines.len() {
        if rng.below(20) == 0 {
            target.extend_from_slice(&text(1, rng.below(1_000_000)));
        } else {
            target.extend_from_slice(lines[rng.below(lines.len() as u64) as usize]);
        }
    }
    (base, target)
}

#[test]
fn format_6_is_kept_where_smaller_and_refuses_hostile_input() {
    let (base, target) = rebuild_pair();
    let len = target.len() as u64;
    let mut diff = Vec::new();
    create(&base, &target, Codec::MODELED, &mut diff).expect("create");
    let mut d = Vec::new();
    create_with(&base, &target, Codec::MODELED, Methods::ALL, &mut d).expect("create");
    assert_eq!(&d[..4], lz::MAGIC_6, "format 6 was not kept");
    assert!(d.len() < diff.len(), "{} >= {}", d.len(), diff.len());
    for pieces in [&[1usize, 7, 65_536][..], &[100_000]] {
        assert_eq!(
            run_in_pieces(&d, &base, len, pieces).expect("apply"),
            target
        );
    }
    // Where it is not smaller (a small change in place in 2 MB of noise: LZMA2 still codes a
    // match every 273 bytes), the diff is kept.
    let noise = testkit::bytes(2_000_000, 64);
    let mut small = noise.clone();
    small[5_000..5_010].copy_from_slice(b"0123456789");
    let mut d2 = Vec::new();
    create_with(&noise, &small, Codec::MODELED, Methods::ALL, &mut d2).expect("create");
    assert_ne!(&d2[..4], lz::MAGIC_6);
    assert_eq!(run(&d2, &noise, small.len() as u64).expect("apply"), small);

    // Truncated anywhere (the end marker too), bytes after the end, a short limit: errors.
    for cut in [1, 2, 9, d.len() / 2] {
        assert!(run(&d[..d.len() - cut], &base, len).is_err(), "cut {cut}");
    }
    let mut longer = d.clone();
    longer.push(0);
    let e = run(&longer, &base, len).expect_err("trailing byte");
    assert!(e.to_string().contains("after the LZMA2 stream"), "{e}");
    assert!(run(&d, &base, len - 1).is_err());
    // A header that lies about the length, or asks for too large a dictionary.
    for stated in [len - 1, len + 1] {
        let mut h = d.clone();
        h[8..16].copy_from_slice(&stated.to_le_bytes());
        assert!(run(&h, &base, len + 10).is_err(), "stated {stated}");
    }
    let mut big = d.clone();
    big[4..8].copy_from_slice(&(MAX_DICT * 2).to_le_bytes());
    let e = run(&big, &base, len).expect_err("dictionary");
    assert!(matches!(e, DeltaError::Malformed(_)), "{e}");
    // Flipped bytes in the stream: an error or a different image (caught by the image's hash),
    // never a panic.
    let mut rng = testkit::Rng::new(63);
    for _ in 0..200 {
        let mut bad = d.clone();
        let at = 40 + rng.below(bad.len() as u64 - 40) as usize;
        bad[at] ^= 1 << rng.below(8);
        if let Ok(out) = run(&bad, &base, len) {
            assert_eq!(out.len() as u64, len);
        }
    }
    // A base larger than a device's dictionary.
    let huge = vec![0u8; lz::MAX_BASE + 1];
    let e = run(&d, &huge, len).expect_err("base too large");
    assert!(e.to_string().contains("whole base"), "{e}");
}

#[test]
fn format_6_with_transformed_ranges_round_trips() {
    use branch::Arch;
    for arch in [Arch::X86, Arch::X86_64, Arch::Arm64Adrp] {
        format_6_with_ranges_of(arch);
    }
}

fn format_6_with_ranges_of(arch: branch::Arch) {
    let base = code_like(200_000, 71);
    let mut target = code_like(40_000, 72);
    target.extend_from_slice(&base[10_000..150_000]);
    let ranges = [Range {
        arch,
        start: 1_000,
        len: 100_000,
    }];
    let mut tb = base.clone();
    let mut tt = target.clone();
    branch::encode_all(&mut tb, &ranges);
    branch::encode_all(&mut tt, &ranges);
    assert_ne!(tt, target);
    let d = lz::create(&base, &target, &ranges, &ranges, None)
        .expect("create")
        .expect("fits");
    assert_eq!(&d[..4], lz::MAGIC_6);
    assert_eq!(
        run_in_pieces(&d, &base, target.len() as u64, &[3, 70_000]).expect("apply"),
        target
    );
    // A limit above its size changes nothing; at its size or below, nothing is kept.
    for (limit, kept) in [(d.len() + 1, true), (d.len(), false), (d.len() / 2, false)] {
        let got = lz::create(&base, &target, &ranges, &ranges, Some(limit)).expect("create");
        assert_eq!(got.as_ref(), kept.then_some(&d), "limit {limit}");
    }
}

/// Format 6's coding stops at its limit, and stopping there keeps exactly what the rule "format
/// 6 under the diff's size plus the slack" keeps.
#[test]
fn format_6_stops_where_it_could_no_longer_be_kept() {
    // Unrelated images: format 6 is about the target's size, far over a small limit (it stops
    // after the first piece; the result is what is checked, not the time).
    let base = code_like(64 << 10, 91);
    let target = code_like(3 << 19, 92);
    assert_eq!(
        lz::create(&base, &target, &[], &[], Some(10_000)).expect("create"),
        None
    );
    for diff in [0usize, 1, 99, 100, 101, 12_345, 1 << 40] {
        for slack in [0u8, 5, 7, 100] {
            let limit = format_6_limit(diff, slack);
            for lz in [limit.saturating_sub(1), limit, limit.saturating_add(1)] {
                let rule = (lz as u128) * 100 < (diff as u128) * (100 + u128::from(slack));
                assert_eq!(lz < limit, rule, "diff {diff} slack {slack} lz {lz}");
            }
        }
    }
}

/// Blocks of the base in another order, lightly edited, between new bytes: many far seeks.
fn moved_blocks_pair() -> (Vec<u8>, Vec<u8>) {
    let base = code_like(400_000, 81);
    let mut rng = testkit::Rng::new(82);
    let mut target = Vec::new();
    for _ in 0..60 {
        let at = rng.below(390_000) as usize;
        let len = 2_000 + rng.below(4_000) as usize;
        let mut block = base[at..(at + len).min(base.len())].to_vec();
        for k in (0..block.len()).step_by(97) {
            block[k] ^= 0x5a;
        }
        target.extend_from_slice(&block);
        target.extend_from_slice(&testkit::bytes(50, rng.next_u64()));
    }
    (base, target)
}

#[test]
fn format_7_round_trips_every_seek_coding_and_refuses_damage() {
    let (base, target) = moved_blocks_pair();
    let len = target.len() as u64;
    for codec in [
        Codec::Lzma2,
        Codec::Modeled {
            min_gain_percent: 0,
            free_literals: 0,
        },
    ] {
        for how in [Seeks::Varint, Seeks::Absolute, Seeks::Diagonal] {
            let d = create_diff_with_seeks(&base, &target, codec, how).expect("encode");
            if how == Seeks::Varint {
                assert!(&d[..4] == MAGIC || &d[..4] == MAGIC_3);
            } else {
                assert_eq!(&d[..4], MAGIC_7);
                assert_eq!(d[4] >> SEEKS_SHIFT, how as u8);
                if codec == Codec::Lzma2 {
                    assert_eq!(d[4] & FLAG_MODELED, 0);
                }
            }
            for pieces in [&[1usize, 9_999][..], &[70_000]] {
                assert_eq!(
                    run_in_pieces(&d, &base, len, pieces).expect("apply"),
                    target,
                    "{codec:?} {how:?}"
                );
            }
            assert!(run(&d[..d.len() - 9], &base, len).is_err());
            if how != Seeks::Varint {
                let mut bad = d.clone();
                bad[4] |= 3 << SEEKS_SHIFT;
                let e = run(&bad, &base, len).expect_err("unknown flags");
                assert!(e.to_string().contains("flags"), "{e}");
                // Another seek coding read from the same column: an error or another image,
                // never a panic.
                let mut other = d.clone();
                other[4] ^= 3 << SEEKS_SHIFT;
                if let Ok(out) = run(&other, &base, len) {
                    assert_ne!(out, target);
                }
            }
        }
    }
    // Unforced, the smallest coding is kept: here the seeks are far and words pay.
    let mut d = Vec::new();
    create_with(&base, &target, Codec::Lzma2, Methods::ALL, &mut d).expect("create");
    assert_eq!(run(&d, &base, len).expect("apply"), target);
}

#[test]
fn format_7_raw_sections_round_trip_are_smaller_and_refuse_damage() {
    let (base, target) = moved_blocks_pair();
    let len = target.len() as u64;
    // Format 6 would win here: the diff only.
    let raw = Methods {
        against_base: false,
        ..Methods::ALL
    };
    let xz = Methods {
        raw_streams: false,
        ..raw
    };
    for codec in [
        Codec::Lzma2,
        Codec::Modeled {
            min_gain_percent: 0,
            free_literals: 0,
        },
    ] {
        let (mut d, mut old) = (Vec::new(), Vec::new());
        create_with(&base, &target, codec, raw, &mut d).expect("create");
        create_with(&base, &target, codec, xz, &mut old).expect("create");
        assert_eq!(&d[..4], MAGIC_7, "{codec:?}");
        assert_ne!(d[4] & FLAG_RAW, 0);
        // Five or six sections, each about 48 bytes of xz container lighter.
        assert!(
            d.len() + 5 * 40 < old.len(),
            "{} raw, {} xz",
            d.len(),
            old.len()
        );
        for pieces in [&[1usize, 9_999][..], &[70_000]] {
            assert_eq!(
                run_in_pieces(&d, &base, len, pieces).expect("apply"),
                target
            );
        }
        assert_eq!(run(&old, &base, len).expect("apply"), target);
        assert!(run(&d[..d.len() - 9], &base, len).is_err());
        // The first section's dictionary byte (no transformed ranges here): over the device's
        // limit, or under LZMA2's least, is refused before anything is allocated.
        let first = HEADER3 as usize + 1 + 2;
        assert_eq!(d[first], 12, "a small stream's dictionary is 4 KiB");
        for log in [11u8, 25, 40, 255] {
            let mut bad = d.clone();
            bad[first] = log;
            let e = run(&bad, &base, len).expect_err("dictionary");
            assert!(e.to_string().contains("dictionary"), "{e}");
        }
        // Read as xz streams, or xz streams read as raw ones: an error, never a panic.
        let mut flipped = d.clone();
        flipped[4] &= !FLAG_RAW;
        assert!(run(&flipped, &base, len).is_err());
        let words = create_diff_with_seeks(&base, &target, codec, Seeks::Absolute).expect("xz");
        assert_eq!((&words[..4], words[4] & FLAG_RAW), (&MAGIC_7[..], 0));
        assert_eq!(run(&words, &base, len).expect("apply"), target);
        let mut flipped = words;
        flipped[4] |= FLAG_RAW;
        assert!(run(&flipped, &base, len).is_err());
        // An unknown flag is refused as one.
        let mut bad = d.clone();
        bad[4] |= 1 << 5;
        let e = run(&bad, &base, len).expect_err("unknown flags");
        assert!(e.to_string().contains("flags"), "{e}");
    }
}

/// A pair whose new bytes are not in the base as long matches, but are made of its short runs (as
/// new code is made of the old code's instruction sequences): blocks of the base kept, and
/// between them runs of 6 to 14 bytes taken from anywhere in it.
fn short_runs_pair() -> (Vec<u8>, Vec<u8>) {
    let base = testkit::bytes(200_000, 91);
    let mut rng = testkit::Rng::new(92);
    let mut target = Vec::new();
    for _ in 0..20 {
        let at = rng.below(190_000) as usize;
        target.extend_from_slice(&base[at..at + 5_000]);
        for _ in 0..150 {
            let from = rng.below(199_000) as usize;
            let len = 6 + rng.below(9) as usize;
            target.extend_from_slice(&base[from..from + len]);
        }
    }
    (base, target)
}

#[test]
fn format_7_copies_against_the_base_round_trip_are_smaller_and_refuse_damage() {
    let (base, target) = short_runs_pair();
    let len = target.len() as u64;
    let with = Methods {
        against_base: false,
        ..Methods::ALL
    };
    let without = Methods {
        copies_against_base: false,
        ..with
    };
    for codec in [
        Codec::Lzma2,
        Codec::Modeled {
            min_gain_percent: 0,
            free_literals: 0,
        },
    ] {
        let (mut d, mut alone) = (Vec::new(), Vec::new());
        create_with(&base, &target, codec, with, &mut d).expect("create");
        create_with(&base, &target, codec, without, &mut alone).expect("create");
        assert_eq!(&d[..4], MAGIC_7, "{codec:?}");
        assert_ne!(d[4] & FLAG_COPIES_BASE, 0, "{codec:?}");
        assert_eq!(alone[4] & FLAG_COPIES_BASE, 0, "{codec:?}");
        // The runs cost a match each against the base, their bytes alone.
        assert!(
            d.len() * 10 < alone.len() * 9,
            "{codec:?}: {} against the base, {} alone",
            d.len(),
            alone.len()
        );
        for pieces in [&[1usize, 9_999][..], &[70_000], &[3, 5, 4_096]] {
            assert_eq!(
                run_in_pieces(&d, &base, len, pieces).expect("apply"),
                target
            );
        }
        assert_eq!(run(&alone, &base, len).expect("apply"), target);
        // Truncated, or short of its output limit: an error.
        assert!(run(&d[..d.len() - 5], &base, len).is_err());
        assert!(run(&d, &base, len - 1).is_err());
        // The copy section's dictionary byte: out of a device's range is refused by name.
        let lens: Vec<u64> = (0..6)
            .map(|i| u64::from_le_bytes(d[5 + 8 * i..13 + 8 * i].try_into().expect("8")))
            .collect();
        let copies_at = HEADER3 as usize + 1 + 2 + lens[..5].iter().sum::<u64>() as usize;
        for log in [11u8, 25, 255] {
            let mut bad = d.clone();
            bad[copies_at] = log;
            let e = run(&bad, &base, len).expect_err("dictionary");
            assert!(e.to_string().contains("dictionary"), "{e}");
        }
        // The preset: the whole base here; past the base, or none, is refused by name; a shorter
        // one gives another image or an error.
        let preset =
            |d: &[u8]| u32::from_le_bytes(d[copies_at + 1..copies_at + 5].try_into().expect("4"));
        assert_eq!(preset(&d) as usize, base.len());
        for p in [0u32, base.len() as u32 + 1] {
            let mut bad = d.clone();
            bad[copies_at + 1..copies_at + 5].copy_from_slice(&p.to_le_bytes());
            let e = run(&bad, &base, len).expect_err("preset");
            assert!(e.to_string().contains("preset"), "{e}");
        }
        let mut shorter = d.clone();
        shorter[copies_at + 1..copies_at + 5].copy_from_slice(&1000u32.to_le_bytes());
        if let Ok(out) = run(&shorter, &base, len) {
            assert_ne!(out, target);
        }
        // Without the flag the section is read as a stream of its own; the flag without raw
        // sections is refused; another base gives another image or an error, never a panic.
        let mut flipped = d.clone();
        flipped[4] &= !FLAG_COPIES_BASE;
        if let Ok(out) = run(&flipped, &base, len) {
            assert_ne!(out, target);
        }
        let mut bad = d.clone();
        bad[4] &= !FLAG_RAW;
        let e = run(&bad, &base, len).expect_err("flag without raw sections");
        assert!(e.to_string().contains("raw"), "{e}");
        let other = testkit::bytes(base.len(), 93);
        if let Ok(out) = run(&d, &other, len) {
            assert_ne!(out, target);
        }
        // An empty base has no preset to start from.
        let e = run(&d, &[], len).expect_err("empty base");
        assert!(e.to_string().contains("preset"), "{e}");
    }
    // Where the copies are no smaller against the base (none here: the target is the base with
    // bytes changed in place), the flag is not written.
    let mut same = base.clone();
    for k in (0..same.len()).step_by(1_000) {
        same[k] ^= 1;
    }
    let mut d = Vec::new();
    create_with(&base, &same, Codec::Lzma2, with, &mut d).expect("create");
    assert_eq!(run(&d, &base, same.len() as u64).expect("apply"), same);
}

#[test]
fn a_copy_streams_preset_is_the_base_up_to_its_dictionary() {
    assert_eq!(lz::copies_layout(100_000, 20_000), (100_000, 1 << 17));
    assert_eq!(lz::copies_layout(10, 10), (10, 1 << 16));
    assert_eq!(lz::copies_layout(40 << 20, 100), (4 << 20, 8 << 20));
    assert_eq!(lz::copies_layout(5 << 20, 5 << 20), (4 << 20, 8 << 20));
    let head = |log: u8, preset: u32| {
        let mut h = [log, 0, 0, 0, 0];
        h[1..].copy_from_slice(&preset.to_le_bytes());
        lz::copies_header(h)
    };
    assert_eq!(head(16, 1).expect("least"), (1 << 16, 1));
    assert_eq!(head(24, 1 << 24).expect("most"), (1 << 24, 1 << 24));
    for (log, preset) in [(25, 1), (11, 1), (16, 0), (16, (1 << 16) + 1), (255, 1)] {
        assert!(head(log, preset).is_err(), "{log} {preset}");
    }
    // The encoder refuses an empty base rather than write a stream no decoder can start.
    assert!(lz::encode_copies(&[], b"copies", lz::COPY_MODELS[0]).is_err());
}

#[test]
fn an_image_past_the_anchor_size_round_trips() {
    // A 40 MiB image: its 4 KiB blocks of random data mostly kept, some moved, some changed by a
    // few bytes (as a rebuilt file would), and new data inserted; long exact matches are found by
    // block hashing before the suffix-array diff sees what is left.
    const B: usize = 4096;
    let base = testkit::bytes(40 << 20, 61);
    assert!(base.len() >= anchor::MIN_BASE);
    let mut rng = testkit::Rng::new(62);
    let mut target = Vec::with_capacity(base.len() + (1 << 20));
    for k in 0..base.len() / B {
        let from = match rng.below(100) {
            0..=2 => rng.below((base.len() / B) as u64) as usize,
            _ => k,
        };
        let start = target.len();
        target.extend_from_slice(&base[from * B..(from + 1) * B]);
        if rng.below(100) < 2 {
            for _ in 0..8 {
                let at = start + rng.below(B as u64) as usize;
                target[at] = target[at].wrapping_add(1 + rng.below(255) as u8);
            }
        }
        if rng.below(1000) == 0 {
            target.extend_from_slice(&testkit::bytes(3000, k as u64));
        }
    }
    let anchors = anchor::find(&base, &target, anchor::MIN_ANCHOR);
    let anchored: usize = anchors.iter().map(|a| a.len).sum();
    assert!(
        anchored * 10 > target.len() * 9,
        "{anchored} bytes anchored"
    );
    let mut d = Vec::new();
    create(&base, &target, Codec::Lzma2, &mut d).expect("create");
    assert!(d.len() < 1 << 20, "delta {} bytes", d.len());
    assert_eq!(run(&d, &base, target.len() as u64).expect("apply"), target);
}

#[test]
fn a_budget_is_waited_for_and_never_left_unset() {
    let b = Budget::default();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| b.wait());
        b.set(7);
        b.set(9);
        assert_eq!(waiter.join().expect("waiter"), 7);
    });
    // A candidate that fails before its size is known still releases whoever waits.
    let b = Budget::default();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| b.wait());
        drop(b.known_on_drop());
        assert_eq!(waiter.join().expect("waiter"), usize::MAX);
    });
}

/// Long add literals are coded as two xz blocks on two threads: still one xz stream, which the
/// decoder that applies deltas reads whole, to the same bytes, and not the one-block stream.
#[test]
fn add_literals_in_two_blocks_decode_as_one_stream() {
    let data: Vec<u8> = testkit::bytes(300_001, 9)
        .into_iter()
        .enumerate()
        .map(|(i, b)| if i % 7 == 0 { b } else { 0 })
        .collect();
    let code = |block| {
        lzma2_compress_inner(&data, Kind::Add, block, &never)
            .expect("compress")
            .expect("never stopped")
    };
    let one = code(None);
    let two = code(Some(150_001));
    assert_ne!(one, two, "the split changed nothing");
    for coded in [&one, &two] {
        let mut back = Vec::new();
        liblzma::bufread::XzDecoder::new(&coded[..])
            .read_to_end(&mut back)
            .expect("decode");
        assert_eq!(back, data);
    }
    // Coding it again gives the same bytes: a delta does not depend on thread timing.
    assert_eq!(code(Some(150_001)), two);
}

/// An encoder driven a piece at a time writes what one given everything at once writes, raw or
/// an xz stream, in one block or two; and stops where told to, after its first piece.
#[test]
fn encoders_driven_in_pieces_write_the_same_bytes_and_stop_when_told() {
    let data: Vec<u8> = testkit::bytes(DRIVE_PIECE * 2 + 12_345, 11)
        .into_iter()
        .enumerate()
        .map(|(i, b)| if i % 5 == 0 { b } else { (i / 4096) as u8 })
        .collect();
    let (f, dict) = lzma2_filters(data.len(), Kind::Add).expect("filters");
    let stream = liblzma::stream::Stream::new_raw_encoder(&f).expect("raw encoder");
    let mut whole =
        liblzma::write::XzEncoder::new_stream(vec![dict.trailing_zeros() as u8], stream);
    whole.write_all(&data).expect("write");
    let whole = whole.finish().expect("finish");
    assert_eq!(
        lzma2_raw(&data, Kind::Add, &never).expect("raw"),
        Some(whole)
    );
    let stream =
        liblzma::stream::Stream::new_stream_encoder(&f, liblzma::stream::Check::None).expect("xz");
    let mut whole = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    whole.write_all(&data).expect("write");
    let whole = whole.finish().expect("finish");
    assert_eq!(
        lzma2_compress_inner(&data, Kind::Add, None, &never).expect("xz"),
        Some(whole)
    );
    let asked = std::cell::Cell::new(0);
    let enough = |_| {
        asked.set(asked.get() + 1);
        true
    };
    assert_eq!(lzma2_raw(&data, Kind::Add, &enough).expect("raw"), None);
    assert_eq!(asked.get(), 1, "stopped at its first ask");
    let half = data.len().div_ceil(2);
    assert_eq!(
        lzma2_compress_inner(&data, Kind::Add, Some(half), &|_| true).expect("two blocks"),
        None
    );
}

/// The model stops where told to, and runs to the same bytes where never told to.
#[test]
fn the_model_stops_when_told() {
    let base = testkit::bytes(300_000, 12);
    let literals = testkit::bytes(200_000, 13);
    let segments = [cm::Segment {
        base_pos: 0,
        target_pos: 0,
        len: literals.len() as u64,
        base_end: base.len() as u64,
    }];
    let whole = cm::encode(&base, &segments, &literals).expect("encode");
    assert_eq!(
        cm::encode_unless(&base, &segments, &literals, &never).expect("encode"),
        Some(whole.clone())
    );
    let asked = std::cell::Cell::new(Vec::new());
    let enough = |n: usize| {
        let mut a = asked.take();
        a.push(n);
        asked.set(a);
        n > whole.len() / 2
    };
    assert_eq!(
        cm::encode_unless(&base, &segments, &literals, &enough).expect("encode"),
        None
    );
    let asked = asked.take();
    assert!(
        asked.len() >= 2 && asked.windows(2).all(|w| w[0] <= w[1]),
        "{asked:?}"
    );
    let last = *asked.last().expect("asked");
    assert!(last > whole.len() / 2 && last < whole.len(), "{asked:?}");
}

proptest::proptest! {
    /// A coder stops only where its whole length could not change the choice: LZMA2 only where
    /// the model is kept at every LZMA2 length from there on, the model only where it is kept at
    /// none from there on.
    #[test]
    fn a_coder_stops_only_where_the_choice_is_settled(
        min_gain in 0u8..=100,
        rest in 0usize..5_000_000,
        model in 0usize..5_000_000,
        lzma in 0usize..5_000_000,
        n in 0usize..5_000_000,
    ) {
        let race = Race { min_gain, ..Race::default() };
        proptest::prop_assert!(!race.lzma_enough(n) && !race.model_enough(n), "nothing known yet");
        race.rest.set(rest).expect("rest");
        race.model.set(model).expect("model");
        if race.lzma_enough(n) && n <= lzma {
            proptest::prop_assert!(race.keeps(rest, model, lzma));
        }
        let race = Race { min_gain, ..Race::default() };
        race.rest.set(rest).expect("rest");
        race.lzma.set(lzma).expect("lzma");
        if race.model_enough(n) && n <= model {
            proptest::prop_assert!(!race.keeps(rest, model, lzma));
        }
        // And a coder at its whole length stops exactly where the choice is the other's.
        proptest::prop_assert_eq!(race.model_enough(model), !race.keeps(rest, model, lzma));
    }
}

#[test]
fn the_least_gain_is_asked_only_of_deltas_with_many_literals() {
    assert_eq!(Codec::MODELED.model_min_gain(MODEL_FREE_LITERALS), 0);
    assert_eq!(
        Codec::MODELED.model_min_gain(MODEL_FREE_LITERALS + 1),
        MODEL_MIN_GAIN_PERCENT
    );
    assert_eq!(Codec::Lzma2.model_min_gain(u64::MAX), 0);
}
