//! Table-driven: every threat the device must refuse, each with its exact refusal.

use std::{fs::File, io::Write};

use wardswarm_node::{
    hash::{Hash, IdParseError},
    manifest::{
        Artifact, ArtifactKind, Compression, Manifest, ManifestError, SignedManifest, Target,
    },
    outboard::{self, ArtifactError},
    root::{Role, RoleName, RootError, TrustRoot},
    signed::{DocError, SignatureError},
    verify::{ArtifactRefusal, DevicePolicy, ManifestRefusal},
    SecretKey, Timestamp,
};

const NOW: u64 = 1_800_000_000; // 2027-01-15
const DAY: u64 = 86_400;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

struct World {
    root: TrustRoot,
    root_keys: Vec<SecretKey>,
    release_keys: Vec<SecretKey>,
}

/// Root version 1: root 1-of-1, release 2-of-3, membership 1-of-1.
fn world() -> World {
    let root_keys = vec![key(1)];
    let release_keys = vec![key(10), key(11), key(12)];
    let ids = |ks: &[SecretKey]| ks.iter().map(SecretKey::public_id).collect::<Vec<_>>();
    let mut root = TrustRoot::new(
        1,
        Timestamp::from_unix(NOW + 365 * DAY),
        Role::new(RoleName::Root, ids(&root_keys), 1).expect("role"),
        Role::new(RoleName::Release, ids(&release_keys), 2).expect("role"),
        Role::new(RoleName::Membership, vec![key(20).public_id()], 1).expect("role"),
    )
    .expect("root");
    root.sign(&root_keys[0], None).expect("sign");
    World {
        root,
        root_keys,
        release_keys,
    }
}

fn manifest(artifact: Artifact) -> Manifest {
    Manifest {
        product: "infusion-pump".into(),
        hardware: vec!["pump-rev-c".into(), "pump-rev-d".into()],
        version: "4.2.1".into(),
        counter: 42,
        created: Timestamp::from_unix(NOW - DAY),
        expires: Timestamp::from_unix(NOW + 30 * DAY),
        target: Target {
            hash: Hash::of(b"target image"),
            length: 12,
        },
        artifacts: vec![artifact],
    }
}

fn artifact_bytes() -> Vec<u8> {
    // Five full 16 KiB groups and a partial sixth, deterministic.
    wardswarm_node::testkit::bytes(5 * 16384 + 777, 0x9e37)
}

fn full_artifact(data: &[u8]) -> Artifact {
    Artifact {
        kind: ArtifactKind::Full,
        compression: Compression::None,
        length: data.len() as u64,
        root: Hash::of(data),
    }
}

fn signed(m: Manifest, signers: &[&SecretKey]) -> Vec<u8> {
    let mut sm = SignedManifest::new(m).expect("valid manifest");
    for k in signers {
        sm.sign(k);
    }
    sm.to_bytes()
}

fn policy<'a>(root: &'a TrustRoot) -> DevicePolicy<'a> {
    DevicePolicy {
        root,
        product: Some("infusion-pump"),
        hardware: "pump-rev-c",
        committed_counter: 41,
        now: Timestamp::from_unix(NOW),
    }
}

/// Flips one hex digit of the n-th signature.
fn tamper_signature(bytes: &[u8], n: usize) -> Vec<u8> {
    let s = String::from_utf8(bytes.to_vec()).expect("utf8");
    let pos = s.match_indices("\"sig\":\"").nth(n).expect("signature").0 + 7;
    let mut b = s.into_bytes();
    b[pos] = if b[pos] == b'0' { b'1' } else { b'0' };
    b
}

/// Repeats the first signature object in the signature list.
fn duplicate_first_signature(bytes: &[u8]) -> Vec<u8> {
    let s = String::from_utf8(bytes.to_vec()).expect("utf8");
    let start = s.find("\"signatures\":[").expect("list") + 14;
    let end = start + s[start..].find('}').expect("object end") + 1;
    let first = s[start..end].to_string();
    let mut out = s.clone();
    out.insert_str(start, &format!("{first},"));
    out.into_bytes()
}

fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(bytes.to_vec()).expect("utf8");
    assert!(s.contains(from), "{from} not in document");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn manifest_refusals_table() {
    let w = world();
    let data = artifact_bytes();
    let good = manifest(full_artifact(&data));
    let (k1, k2, k3) = (&w.release_keys[0], &w.release_keys[1], &w.release_keys[2]);
    let valid = signed(good.clone(), &[k1, k2]);
    let release_role = "release".to_string();

    let expired_root = {
        let mut r = TrustRoot::new(
            1,
            Timestamp::from_unix(NOW - 1),
            w.root.root.clone(),
            w.root.release.clone(),
            w.root.membership.clone(),
        )
        .expect("root");
        r.sign(&w.root_keys[0], None).expect("sign");
        r
    };

    type Tweak = Box<dyn Fn(&mut DevicePolicy<'_>)>;
    let none: fn() -> Tweak = || Box::new(|_: &mut DevicePolicy<'_>| {});
    let mut padded = valid.clone();
    padded.resize(64 * 1024 + 1, b' ');

    let cases: Vec<(&str, Vec<u8>, Tweak, ManifestRefusal)> = vec![
        (
            "bad signature",
            tamper_signature(&valid, 0),
            none(),
            ManifestError::Signatures(SignatureError::Invalid {
                key: k1.public_id(),
            })
            .into(),
        ),
        (
            "missing signature",
            signed(good.clone(), &[]),
            none(),
            ManifestError::Signatures(SignatureError::Unsigned).into(),
        ),
        (
            "valid signatures below threshold",
            signed(good.clone(), &[k3]),
            none(),
            ManifestError::Signatures(SignatureError::BelowThreshold {
                role: release_role.clone(),
                valid: 1,
                threshold: 2,
            })
            .into(),
        ),
        (
            "one key counted twice",
            duplicate_first_signature(&signed(good.clone(), &[k1])),
            none(),
            ManifestError::Signatures(SignatureError::Duplicate {
                key: k1.public_id(),
            })
            .into(),
        ),
        (
            "signer outside the role (a root key signs a release)",
            signed(good.clone(), &[k1, &w.root_keys[0]]),
            none(),
            ManifestError::Signatures(SignatureError::SignerNotInRole {
                key: w.root_keys[0].public_id(),
                roles: release_role.clone(),
            })
            .into(),
        ),
        (
            "wrong hardware",
            valid.clone(),
            Box::new(|p: &mut DevicePolicy<'_>| p.hardware = "monitor-rev-a"),
            ManifestRefusal::WrongHardware {
                device: "monitor-rev-a".into(),
                allowed: good.hardware.clone(),
            },
        ),
        (
            "wrong product",
            valid.clone(),
            Box::new(|p: &mut DevicePolicy<'_>| p.product = Some("patient-monitor")),
            ManifestRefusal::WrongProduct {
                expected: "patient-monitor".into(),
                found: "infusion-pump".into(),
            },
        ),
        (
            "replay: counter equal to the committed floor",
            valid.clone(),
            Box::new(|p: &mut DevicePolicy<'_>| p.committed_counter = 42),
            ManifestRefusal::NotNewer {
                counter: 42,
                floor: 42,
            },
        ),
        (
            "downgrade: counter below the committed floor",
            valid.clone(),
            Box::new(|p: &mut DevicePolicy<'_>| p.committed_counter = 50),
            ManifestRefusal::NotNewer {
                counter: 42,
                floor: 50,
            },
        ),
        (
            "expired manifest",
            valid.clone(),
            Box::new(|p: &mut DevicePolicy<'_>| p.now = Timestamp::from_unix(NOW + 30 * DAY)),
            ManifestRefusal::Expired {
                version: "4.2.1".into(),
                expires: good.expires,
            },
        ),
        (
            "unknown format version",
            replace(&valid, "\"format\":1", "\"format\":2"),
            none(),
            ManifestError::Document(DocError::UnsupportedFormat {
                kind: "wardswarm/release",
                found: 2,
                supported: 1,
            })
            .into(),
        ),
        (
            "unknown hash algorithm",
            replace(&valid, "\"hash\":\"blake3:", "\"hash\":\"sha256:"),
            none(),
            ManifestError::UnknownAlgorithm {
                what: "hash algorithm",
                value: "sha256".into(),
                supported: "blake3",
            }
            .into(),
        ),
        (
            "unknown signature algorithm",
            replace(&valid, "\"key\":\"ed25519:", "\"key\":\"rsa4096:"),
            none(),
            ManifestError::Document(DocError::Id {
                kind: "wardswarm/release",
                cause: IdParseError::UnknownAlgorithm {
                    what: "key",
                    expected: "ed25519",
                    alg: "rsa4096".into(),
                },
            })
            .into(),
        ),
        (
            "unknown compression",
            replace(
                &valid,
                "\"compression\":\"none\"",
                "\"compression\":\"lzma\"",
            ),
            none(),
            ManifestError::UnknownAlgorithm {
                what: "compression",
                value: "lzma".into(),
                supported: "zstd, none",
            }
            .into(),
        ),
        (
            "unknown bao chunk group size",
            replace(&valid, "\"chunk_group_log\":4", "\"chunk_group_log\":0"),
            none(),
            ManifestError::UnknownAlgorithm {
                what: "bao chunk group size (log2 of chunks)",
                value: "0".into(),
                supported: "4 (16 KiB groups)",
            }
            .into(),
        ),
        (
            "document over the size cap",
            padded,
            none(),
            ManifestError::Document(DocError::TooLarge {
                kind: "wardswarm/release",
                len: 64 * 1024 + 1,
                max: 64 * 1024,
            })
            .into(),
        ),
        (
            "not canonical (re-indented)",
            replace(&valid, "\"counter\":42", "\"counter\": 42"),
            none(),
            ManifestError::Document(DocError::NotCanonical {
                kind: "wardswarm/release",
            })
            .into(),
        ),
        (
            "a counter edited after signing",
            replace(&valid, "\"counter\":42", "\"counter\":99"),
            none(),
            ManifestError::Signatures(SignatureError::Invalid {
                key: k1.public_id(),
            })
            .into(),
        ),
    ];

    for (name, bytes, tweak, expected) in cases {
        let mut p = policy(&w.root);
        tweak(&mut p);
        let got = p.accept_manifest(&bytes);
        match got {
            Ok(_) => panic!("case {name:?}: accepted, expected refusal {expected}"),
            Err(e) => assert_eq!(e, expected, "case {name:?}"),
        }
    }

    // The expired trust root refuses even a perfect manifest.
    let p = policy(&expired_root);
    assert_eq!(
        p.accept_manifest(&valid).map(|_| ()),
        Err(ManifestRefusal::Root(RootError::Expired {
            version: 1,
            expires: Timestamp::from_unix(NOW - 1)
        }))
    );

    // And the untouched manifest is accepted, with any two of the three release keys.
    for pair in [[k1, k2], [k2, k3], [k1, k3]] {
        policy(&w.root)
            .accept_manifest(&signed(good.clone(), &pair))
            .expect("valid manifest accepted");
    }
}

fn files_for(data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dp = dir.path().join("data");
    let op = dir.path().join("data.obao");
    File::create(&dp)
        .and_then(|mut f| f.write_all(data))
        .expect("write data");
    let ob = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&op)
        .expect("outboard");
    let root = outboard::create(data, data.len() as u64, &ob).expect("outboard");
    assert_eq!(root, Hash::of(data), "bao root equals plain BLAKE3");
    (dir, dp, op)
}

#[test]
fn artifact_refusals_table() {
    let w = world();
    let data = artifact_bytes();
    let art = full_artifact(&data);
    let bytes = signed(
        manifest(art.clone()),
        &[&w.release_keys[0], &w.release_keys[1]],
    );
    let vm = policy(&w.root).accept_manifest(&bytes).expect("accepted");
    let groups = outboard::groups(data.len() as u64);
    assert_eq!(groups, 6);

    // The genuine files verify.
    let (_d, dp, op) = files_for(&data);
    let open = |p: &std::path::Path| File::open(p).expect("open");
    vm.check_artifact_files(&art.root, &open(&dp), &open(&op))
        .expect("genuine artifact");
    vm.check_artifact_stream(&art.root, &data[..])
        .expect("genuine stream");

    // One flipped byte in the first, a middle and the last chunk group: named exactly.
    for (offset, group) in [
        (0usize, 0u64),
        (2 * 16384 + 5000, 2),
        (data.len() - 1, groups - 1),
    ] {
        let mut bad = data.clone();
        bad[offset] ^= 0x01;
        std::fs::write(&dp, &bad).expect("write");
        match vm.check_artifact_files(&art.root, &open(&dp), &open(&op)) {
            Err(ArtifactRefusal::Bytes {
                cause: ArtifactError::GroupMismatch { group: g, .. },
                ..
            }) => {
                assert_eq!(g, group, "byte {offset}")
            }
            other => {
                panic!("byte {offset}: expected GroupMismatch in group {group}, got {other:?}")
            }
        }
        assert!(matches!(
            vm.check_artifact_stream(&art.root, &bad[..]),
            Err(ArtifactRefusal::Bytes {
                cause: ArtifactError::HashMismatch { .. },
                ..
            })
        ));
    }

    // Longer than signed (endless data), and truncated.
    let mut longer = data.clone();
    longer.extend_from_slice(b"extra");
    std::fs::write(&dp, &longer).expect("write");
    assert!(matches!(
        vm.check_artifact_files(&art.root, &open(&dp), &open(&op)),
        Err(ArtifactRefusal::Bytes {
            cause: ArtifactError::TooLong { .. },
            ..
        })
    ));
    let endless = std::io::repeat(7u8);
    match vm.check_artifact_stream(&art.root, endless) {
        Err(ArtifactRefusal::Bytes {
            cause: ArtifactError::TooLong { signed, actual },
            ..
        }) => {
            assert_eq!(
                (signed, actual),
                (art.length, art.length + 1),
                "reads stop one byte past the signed length"
            )
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    std::fs::write(&dp, &data[..data.len() - 1]).expect("write");
    assert!(matches!(
        vm.check_artifact_files(&art.root, &open(&dp), &open(&op)),
        Err(ArtifactRefusal::Bytes {
            cause: ArtifactError::Truncated { .. },
            ..
        })
    ));

    // A corrupted outboard is reported as such.
    std::fs::write(&dp, &data).expect("write");
    let mut ob = std::fs::read(&op).expect("read");
    ob[10] ^= 0xff;
    std::fs::write(&op, &ob).expect("write");
    assert!(matches!(
        vm.check_artifact_files(&art.root, &open(&dp), &open(&op)),
        Err(ArtifactRefusal::Bytes {
            cause: ArtifactError::OutboardCorrupt { .. },
            ..
        })
    ));

    // Mix-and-match: the artifact of another release is not part of this one...
    let mut other = data.clone();
    other[100] ^= 0x55;
    let other_art = full_artifact(&other);
    let (_d2, dp2, op2) = files_for(&other);
    match vm.check_artifact_files(&other_art.root, &open(&dp2), &open(&op2)) {
        Err(ArtifactRefusal::NotInRelease { root, .. }) => assert_eq!(root, other_art.root),
        other => panic!("expected NotInRelease, got {other:?}"),
    }
    // ...and passing it off under this release's root fails on its bytes.
    assert!(matches!(
        vm.check_artifact_files(&art.root, &open(&dp2), &open(&op2)),
        Err(ArtifactRefusal::Bytes {
            cause: ArtifactError::OutboardCorrupt { .. } | ArtifactError::GroupMismatch { .. },
            ..
        })
    ));
}

#[test]
fn root_rotation_refusals() {
    let w = world();
    let old_key = &w.root_keys[0];
    let new_keys = [key(2), key(3)];
    let new_role = Role::new(
        RoleName::Root,
        new_keys.iter().map(SecretKey::public_id).collect(),
        2,
    )
    .expect("role");
    let v2 = |signers: &[&SecretKey]| {
        let mut r = w
            .root
            .successor(
                Timestamp::from_unix(NOW + 400 * DAY),
                new_role.clone(),
                w.root.release.clone(),
                w.root.membership.clone(),
            )
            .expect("successor");
        for k in signers {
            r.sign(k, Some(&w.root)).expect("allowed signer");
        }
        r.to_bytes()
    };

    let both = v2(&[old_key, &new_keys[0], &new_keys[1]]);
    let accepted = w
        .root
        .verify_successor(&both)
        .expect("rotation signed by both thresholds");
    assert_eq!(accepted.version, 2);
    assert_eq!(accepted.root, new_role);

    assert_eq!(
        w.root.verify_successor(&v2(&[old_key])).map(|_| ()),
        Err(RootError::Signatures {
            version: 2,
            cause: SignatureError::BelowThreshold {
                role: "root of version 2".into(),
                valid: 0,
                threshold: 2
            }
        }),
        "signed only by the old keys"
    );
    assert_eq!(
        w.root
            .verify_successor(&v2(&[&new_keys[0], &new_keys[1]]))
            .map(|_| ()),
        Err(RootError::Signatures {
            version: 2,
            cause: SignatureError::BelowThreshold {
                role: "root of version 1".into(),
                valid: 0,
                threshold: 1
            }
        }),
        "signed only by the new keys"
    );
    assert_eq!(
        w.root
            .verify_successor(&v2(&[old_key, &new_keys[0]]))
            .map(|_| ()),
        Err(RootError::Signatures {
            version: 2,
            cause: SignatureError::BelowThreshold {
                role: "root of version 2".into(),
                valid: 1,
                threshold: 2
            }
        }),
        "new threshold not met"
    );

    // Version 3 cannot follow version 1 directly, and version 1 cannot replace itself (replay).
    let v3 = accepted
        .successor(
            Timestamp::from_unix(NOW + 500 * DAY),
            new_role.clone(),
            w.root.release.clone(),
            w.root.membership.clone(),
        )
        .expect("v3");
    assert_eq!(
        w.root.verify_successor(&v3.to_bytes()).map(|_| ()),
        Err(RootError::VersionNotNext {
            trusted: 1,
            offered: 3
        })
    );
    assert_eq!(
        w.root.verify_successor(&w.root.to_bytes()).map(|_| ()),
        Err(RootError::VersionNotNext {
            trusted: 1,
            offered: 1
        })
    );

    // A signer that is neither an old nor a new root key cannot even be added.
    let mut r = TrustRoot::parse_unverified(&both).expect("parse");
    assert!(matches!(
        r.sign(&w.release_keys[0], Some(&w.root)),
        Err(RootError::Signatures {
            cause: SignatureError::SignerNotInRole { .. },
            ..
        })
    ));

    // Over the size cap before parsing.
    let mut big = both.clone();
    big.resize(64 * 1024 + 1, b' ');
    assert_eq!(
        w.root.verify_successor(&big).map(|_| ()),
        Err(RootError::Document(DocError::TooLarge {
            kind: "wardswarm/root",
            len: 64 * 1024 + 1,
            max: 64 * 1024
        }))
    );
    // Unknown format version.
    let future = String::from_utf8(both)
        .expect("utf8")
        .replacen("\"format\":1", "\"format\":7", 1);
    assert_eq!(
        w.root.verify_successor(future.as_bytes()).map(|_| ()),
        Err(RootError::Document(DocError::UnsupportedFormat {
            kind: "wardswarm/root",
            found: 7,
            supported: 1
        }))
    );
}

/// One byte form per signed document, and an identity a relay cannot change: uppercase signature
/// hex and reordered signatures are refused; dropping a surplus signature (3 signers, threshold 2)
/// leaves a document that still verifies, so the release's id is its signed body, the same for both.
#[test]
fn signature_spellings_are_refused_and_a_dropped_surplus_signature_keeps_the_release_id() {
    let w = world();
    let data = artifact_bytes();
    let m = manifest(full_artifact(&data));
    let k = &w.release_keys;
    let all = signed(m.clone(), &[&k[0], &k[1], &k[2]]);
    let fewer = signed(m, &[&k[0], &k[1]]);
    let p = policy(&w.root);
    let (a, b) = (
        p.accept_manifest(&all).expect("3 of 3"),
        p.accept_manifest(&fewer).expect("2 of 3"),
    );
    assert_ne!(a.signed().id(), b.signed().id(), "different files");
    assert_eq!(
        a.signed().release_id(),
        b.signed().release_id(),
        "one release"
    );

    let text = String::from_utf8(all.clone()).expect("utf-8");
    let sig_at = text.find("\"sig\":\"").expect("a signature") + 7;
    let mut upper = text.clone();
    upper.replace_range(
        sig_at..sig_at + 128,
        &text[sig_at..sig_at + 128].to_uppercase(),
    );
    assert!(matches!(
        SignedManifest::parse(upper.as_bytes()),
        Err(ManifestError::Document(DocError::NotCanonical { .. }))
    ));
    let v: serde_json::Value = serde_json::from_slice(&all).expect("json");
    let sigs = v["signatures"].as_array().expect("signatures");
    let one = serde_json::to_string(&sigs[0]).expect("json");
    let two = serde_json::to_string(&sigs[1]).expect("json");
    let swapped = text.replacen(&format!("{one},{two}"), &format!("{two},{one}"), 1);
    assert_ne!(swapped, text);
    assert!(matches!(
        SignedManifest::parse(swapped.as_bytes()),
        Err(ManifestError::Document(DocError::NotCanonical { .. }))
    ));
}
