//! Writes the seed corpus of the fuzz targets (`node/fuzz`) from the test fixtures
//! (`wardswarm_node::testkit::fuzz`): one valid input per message kind, so the fuzzers start from
//! the shape of real traffic.
//!
//!     cargo run -p wardswarm-node --example fuzz_seeds -- node/fuzz/corpus

use std::{path::Path, time::Duration};

use wardswarm_node::{
    agent::{
        machine::Outcome,
        runtime::{Progress, Report},
        slots::SlotId,
        status::{DeviceState, UpdateResult},
    },
    delta,
    groups::GroupSet,
    hash::Hash,
    index::Index,
    manifest::{Artifact, ArtifactKind, Compression, Manifest, SignedManifest, Target},
    membership::{Certificate, Role},
    net::{
        exchange::PeerList,
        wire::{Get, Have},
    },
    outboard,
    revocation::{RevocationList, Revoked},
    store::Store,
    testkit::{self, fuzz, TestKeys},
    SecretKey,
};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

fn peer(seed: u8) -> libp2p::PeerId {
    SecretKey::from_seed([seed; 32])
        .to_libp2p()
        .public()
        .to_peer_id()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: fuzz_seeds <corpus folder>")?;
    let out = Path::new(&out);
    let keys = TestKeys::default();
    let now = fuzz::now();
    let later = now.saturating_add(Duration::from_secs(30 * 86_400));
    write(out, "root", "root", &fuzz::root().to_bytes())?;

    // A release with a full image and a delta from the fixture base.
    let base = fuzz::base();
    let mut target = base.clone();
    target[1000..1100].fill(7);
    target.extend_from_slice(&testkit::bytes(5000, 3));
    let mut d1 = Vec::new();
    delta::create(&base, &target, delta::Codec::Zstd(3), &mut d1)?;
    write(out, "delta", "delta-format1", &d1)?;
    let mut d3 = Vec::new();
    delta::create(&base, &target, delta::Codec::Lzma2, &mut d3)?;
    write(out, "delta", "delta-format3", &d3)?;
    let mut d = Vec::new();
    // Format 4 whatever it gains here, so that the fuzzer starts from one.
    let always = delta::Codec::Modeled {
        min_gain_percent: 0,
        free_literals: 0,
    };
    delta::create(&base, &target, always, &mut d)?;
    write(out, "delta", "delta", &d)?;
    // Format 5: the base's gzip member changed (lines added at the top), and a new one.
    let mut zbase = base.clone();
    let mut newer = fuzz::lines(800, 840);
    newer.extend_from_slice(&fuzz::lines(0, 800));
    let (at, old_len) = (32 << 10, fuzz::gzip(&fuzz::lines(0, 800), 9).len());
    zbase.splice(at..at + old_len, fuzz::gzip(&newer, 9));
    zbase.extend_from_slice(&fuzz::gzip(&fuzz::lines(0, 50), 6));
    let mut d5 = Vec::new();
    delta::create_inflating(&base, &zbase, delta::Codec::Lzma2, &mut d5)?;
    if !d5.starts_with(delta::inflate::MAGIC_5) {
        return Err("the format-5 seed did not come out as format 5".into());
    }
    write(out, "delta", "delta-format5", &d5)?;
    // Format 6: the new image as LZMA2 against the base.
    let d6 = delta::lz::create(&base, &target, &[], &[], None)?
        .ok_or("the base is too large for format 6")?;
    write(out, "delta", "delta-format6", &d6)?;
    // Format 6 with transformed ranges of each instruction set that data references or Thumb-2
    // calls are made absolute in (sets 4 to 6).
    for (name, arch) in [
        ("delta-format6-x86-64", delta::branch::Arch::X86_64),
        ("delta-format6-adrp", delta::branch::Arch::Arm64Adrp),
        ("delta-format6-thumb", delta::branch::Arch::Thumb),
    ] {
        let len = (base.len().min(target.len()) / 2) as u64;
        let r = [delta::branch::Range {
            arch,
            start: 0,
            len,
        }];
        let d = delta::lz::create(&base, &target, &r, &r, None)?.ok_or("the base is too large")?;
        write(out, "delta", name, &d)?;
    }
    // Format 7: the diff with its seeks as absolute and as diagonal words.
    for (name, how) in [
        ("delta-format7-absolute", delta::Seeks::Absolute),
        ("delta-format7-diagonal", delta::Seeks::Diagonal),
    ] {
        let d7 = delta::create_diff_with_seeks(&base, &target, delta::Codec::Lzma2, how)?;
        write(out, "delta", name, &d7)?;
    }
    // Format 7 with raw sections and the copy bytes coded against the base: new bytes made of
    // the base's short runs (as new code is made of the old code's instruction sequences).
    let mut runs = base.clone();
    for k in 0..200 {
        let from = (k * 7_919) % (base.len() - 16);
        runs.extend_from_slice(&base[from..from + 6 + k % 9]);
    }
    let mut d7 = Vec::new();
    let raw = delta::Methods {
        against_base: false,
        ..delta::Methods::ALL
    };
    delta::create_with(&base, &runs, delta::Codec::Lzma2, raw, &mut d7)?;
    if !d7.starts_with(delta::MAGIC_7) || d7[4] & delta::FLAG_COPIES_BASE == 0 {
        return Err("the format-7 seed did not code its copies against the base".into());
    }
    write(out, "delta", "delta-format7-copies-base", &d7)?;
    let full = fuzz::artifact();
    let m = Manifest {
        product: "infusion-pump".into(),
        hardware: vec!["pump-rev-c".into()],
        version: "4.2.1".into(),
        counter: 42,
        created: now,
        expires: later,
        target: Target {
            hash: Hash::of(&target),
            length: target.len() as u64,
        },
        artifacts: vec![
            Artifact {
                kind: ArtifactKind::Full,
                compression: Compression::None,
                length: full.len() as u64,
                root: Hash::of(&full),
            },
            Artifact {
                kind: ArtifactKind::Delta {
                    base: Hash::of(&base),
                },
                compression: Compression::Zstd,
                length: d.len() as u64,
                root: Hash::of(&d),
            },
        ],
    };
    let mut sm = SignedManifest::new(m)?;
    sm.sign(&keys.release);
    let manifest = sm.to_bytes();
    write(out, "manifest", "release", &manifest)?;
    let ix = Index::build(
        "infusion-pump",
        3,
        now,
        later,
        &[("releases/4.2.1".into(), manifest)],
        std::slice::from_ref(&keys.release),
    )?;
    write(out, "index", "index", &ix.to_bytes())?;

    let cert = Certificate::issue(
        fuzz::WARD,
        "pump-17",
        Role::Device,
        &peer(9).to_string(),
        later,
        std::slice::from_ref(&keys.membership),
    )?;
    write(out, "certificate", "device", &cert.to_bytes())?;
    let list = RevocationList::issue(
        fuzz::WARD,
        4,
        now,
        vec![
            Revoked {
                peer: peer(9).to_string(),
                device: "pump-17".into(),
            },
            Revoked {
                peer: peer(10).to_string(),
                device: "pump-18".into(),
            },
        ],
        std::slice::from_ref(&keys.membership),
    )?;
    write(out, "revocations", "two", &list.to_bytes())?;

    let report = Report {
        hardware: "pump-rev-c".into(),
        product: Some("infusion-pump".into()),
        version: "4.2.0".into(),
        counter: 41,
        image: Hash::of(&base),
        slot: SlotId::A,
        state: DeviceState::Fetching,
        target: Some("4.2.1".into()),
        artifact: Some(Hash::of(b"artifact")),
        progress: Some(Progress { have: 3, total: 6 }),
        last: Some(Outcome {
            result: UpdateResult::Committed,
            version: "4.2.0".into(),
            reason: None,
        }),
        bytes_from_gateway: 1 << 20,
        bytes_from_peers: 3 << 20,
        audit_lines: 12,
        labels: vec!["icu-3".into(), "bed-12".into()],
        gated: Some("in_use".into()),
        gated_detail: Some("in use by infusion 7".into()),
        held: None,
        gated_ms: 1500,
    };
    write(out, "report", "fetching", &serde_json::to_vec(&report)?)?;

    // Wire frames: a kind byte, then the body (kind 0: a length-prefixed frame).
    let (full_root, ob) = outboard::create_in_memory(&full);
    let length = full.len() as u64;
    let mut have = GroupSet::new(outboard::groups(length));
    have.insert(0);
    have.insert(4);
    let mut frame = 5u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"hello");
    let frames: [(u8, Vec<u8>); 4] = [
        (0, frame),
        (
            1,
            Have {
                root: full_root,
                length,
                groups: have,
            }
            .to_bytes(),
        ),
        (
            2,
            Get {
                root: full_root,
                length,
                runs: vec![0..2, 3..6],
            }
            .to_bytes(),
        ),
        (
            3,
            PeerList(vec![(peer(9), vec!["/ip4/10.20.0.7/tcp/4101".parse()?])]).to_bytes(),
        ),
    ];
    for (kind, body) in frames {
        let mut b = vec![kind];
        b.extend_from_slice(&body);
        write(out, "wire", &format!("kind-{kind}"), &b)?;
    }

    // A peer's bao response for every group, as a seeding store serves it (pick byte 0x50: groups
    // 0 to 5), and the origin's data and outboard from group 2 on.
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path().join("store"))?;
    std::fs::write(tmp.path().join("data"), &full)?;
    std::fs::write(tmp.path().join("ob"), &ob)?;
    let e = store.import(
        full_root,
        length,
        &tmp.path().join("data"),
        &tmp.path().join("ob"),
    )?;
    let mut resp = vec![0x50];
    e.serve(&[0..outboard::groups(length)], &mut resp)?;
    write(out, "bao_response", "all", &resp)?;
    let data = &full[2 * 16384..];
    let mut plain = vec![2u8];
    plain.extend_from_slice(&u16::try_from(data.len())?.to_be_bytes());
    plain.extend_from_slice(data);
    plain.extend_from_slice(&ob);
    write(out, "origin_data", "from-group-2", &plain)?;
    println!("seed corpus written to {}", out.display());
    Ok(())
}
