//! Release builds with `--base`: a delta is published per base only when it pays, and it reproduces
//! the target.

use std::{io::Read, time::Duration};

use wardswarm_node::{
    delta,
    manifest::ArtifactKind,
    release::{self, BuildRequest, ARTIFACTS_DIR},
    testkit::{self, TestKeys},
    Hash, Timestamp,
};

#[test]
fn a_delta_is_published_only_when_it_pays_and_it_reproduces_the_target() {
    let d = tempfile::tempdir().expect("tmp");
    let old = testkit::bytes(1 << 20, 1);
    let mut new = old.clone();
    new[300_000..310_000].copy_from_slice(&testkit::bytes(10_000, 2));
    let unrelated = testkit::bytes(1 << 20, 3);
    for (name, bytes) in [("old", &old), ("new", &new), ("unrelated", &unrelated)] {
        std::fs::write(d.path().join(name), bytes).expect("write");
    }
    let keys = TestKeys::default();
    let now = Timestamp::from_unix(1_800_000_000);
    let r = release::build(&BuildRequest {
        bases: vec![d.path().join("old"), d.path().join("unrelated")],
        ..request(&d, &keys, now)
    })
    .expect("build");
    let m = &r.manifest.manifest;
    assert_eq!(m.artifacts.len(), 2, "full + one delta: {:?}", m.artifacts);
    assert!(
        m.delta_from(&Hash::of(&unrelated)).is_none(),
        "an unrelated base gets the full image"
    );
    let a = m.delta_from(&Hash::of(&old)).expect("delta from old");
    assert_eq!(
        a.kind,
        ArtifactKind::Delta {
            base: Hash::of(&old)
        }
    );
    let full = m.full().expect("full");
    assert!(
        a.length * 10 <= full.length,
        "delta {} vs full {}",
        a.length,
        full.length
    );
    // The published delta applies to the old image and gives the signed target.
    let path = d.path().join("rel").join(ARTIFACTS_DIR).join(a.file_name());
    assert_eq!(applied(&path, &old, m.target.length), m.target.hash);
    release::verify_dir(&d.path().join("rel"), None, None).expect("the release verifies");

    // For a fleet whose agents predate format 4, the build writes the format asked for.
    let r3 = release::build(&BuildRequest {
        out: d.path().join("rel3"),
        bases: vec![d.path().join("old")],
        delta_codec: delta::Codec::Lzma2,
        delta_methods: delta::Methods::NONE,
        ..request(&d, &keys, now)
    })
    .expect("build");
    let m3 = &r3.manifest.manifest;
    let a3 = m3.delta_from(&Hash::of(&old)).expect("delta from old");
    let bytes = std::fs::read(
        d.path()
            .join("rel3")
            .join(ARTIFACTS_DIR)
            .join(a3.file_name()),
    )
    .expect("read delta");
    assert_eq!(&bytes[..4], delta::MAGIC_3);
}

#[test]
fn an_image_whose_gzip_file_changed_gets_a_format_5_delta_unless_the_fleet_predates_it() {
    use testkit::fuzz::{gzip, lines};
    let d = tempfile::tempdir().expect("tmp");
    let image = |log: &[u8], seed: u64| {
        let mut b = testkit::bytes(300_000, seed);
        b.extend_from_slice(&gzip(log, 9));
        b.extend_from_slice(&testkit::bytes(300_000, seed + 1));
        b
    };
    let old = image(&lines(0, 20_000), 1);
    let mut log = lines(20_000, 20_100);
    log.extend_from_slice(&lines(0, 20_000));
    let new = image(&log, 1);
    std::fs::write(d.path().join("old"), &old).expect("write");
    std::fs::write(d.path().join("new"), &new).expect("write");
    let keys = TestKeys::default();
    let now = Timestamp::from_unix(1_800_000_000);
    let mut sizes = vec![];
    for (dir, inflate) in [("rel5", true), ("rel4", false)] {
        let r = release::build(&BuildRequest {
            out: d.path().join(dir),
            bases: vec![d.path().join("old")],
            delta_methods: delta::Methods {
                inflate,
                against_base: false,
                seek_words: false,
                raw_streams: false,
                operands: false,
                copies_against_base: false,
            },
            ..request(&d, &keys, now)
        })
        .expect("build");
        let m = &r.manifest.manifest;
        let a = m.delta_from(&Hash::of(&old)).expect("delta from old");
        let path = d.path().join(dir).join(ARTIFACTS_DIR).join(a.file_name());
        let bytes = std::fs::read(&path).expect("read delta");
        assert_eq!(bytes.starts_with(delta::inflate::MAGIC_5), inflate);
        assert_eq!(applied(&path, &old, m.target.length), m.target.hash);
        sizes.push(a.length);
    }
    assert!(
        sizes[0] * 4 < sizes[1],
        "format 5 {} B against format 4 {} B",
        sizes[0],
        sizes[1]
    );
}

/// The hash of what the delta at `path` gives applied to `base`.
fn applied(path: &std::path::Path, base: &[u8], limit: u64) -> Hash {
    let mut out = Vec::new();
    delta::apply(
        || std::fs::File::open(path),
        std::io::Cursor::new(base),
        limit,
    )
    .expect("apply")
    .read_to_end(&mut out)
    .expect("read");
    Hash::of(&out)
}

/// A build of `new` into `rel` with no bases.
fn request(d: &tempfile::TempDir, keys: &TestKeys, now: Timestamp) -> BuildRequest {
    BuildRequest {
        target: d.path().join("new"),
        product: "p".into(),
        hardware: vec!["h".into()],
        version: "2".into(),
        counter: 2,
        created: now,
        expires: now.saturating_add(Duration::from_secs(86_400)),
        keys: vec![keys.release.clone()],
        out: d.path().join("rel"),
        zstd_level: 3,
        zstd_workers: 0,
        root: Some(keys.root(now, Duration::from_secs(86_400 * 30))),
        bases: vec![],
        delta_codec: delta::Codec::MODELED,
        delta_methods: delta::Methods::ALL,
    }
}
