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
            z.push(&adds[at..c]);
            at = c;
        }
        let (pairs, literals) = z.finish();
        proptest::prop_assert_eq!(expand(&pairs, &literals), adds.clone());
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
    assert_eq!(&d[..4], MAGIC);
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
    z.push(&adds);
    let (pairs, literals) = z.finish();
    assert_eq!(
        literals.len(),
        11 + 1,
        "the run of 2,999 zeros is out, the 989 zeros stay in"
    );
    let three = by_hand(
        MAGIC,
        &[&cols[0], &cols[1], &cols[2], &pairs, &literals, b"new"],
    );
    assert_eq!(run(&three, &base, 4_003).expect("format 3 applies"), want);

    // Hostile runs: an empty pair, too few zeros, literals left over, a truncated pair.
    let bad = |pairs: &[u8], literals: &[u8]| {
        let d = by_hand(
            MAGIC,
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
