//! The official BLAKE3 and bao test vectors (copied with their sources into `node/tests/vectors/`)
//! through our hashing and outboard code.
//!
//! bao's vectors use plain 1 KiB chunks. We check that our 16 KiB-group outboards give the same roots,
//! that bao-tree at chunk-group size 1 KiB reproduces the reference encodings byte for byte (hashed), and
//! that 16 KiB-group outboards verify the same data and catch the same corruptions.

use std::{io::Write, path::PathBuf};

use bao_tree::{
    io::{outboard::PreOrderMemOutboard, sync::decode_ranges, sync::encode_ranges_validated},
    BlockSize, ChunkNum, ChunkRanges,
};
use serde_json::Value;
use wardswarm_node::{
    hash::hash_reader,
    manifest::{Artifact, ArtifactKind, Compression},
    outboard, Hash,
};

fn vectors_dir() -> PathBuf {
    std::env::var_os("WARDSWARM_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors"))
}

fn load(name: &str) -> Value {
    let p = vectors_dir().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); set WARDSWARM_VECTORS to the vectors folder",
            p.display()
        )
    });
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("field {k}"))
}
fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("field {k}"))
}

fn blake3_input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// bao's input: a 4-byte little-endian counter starting at 1, cut to `len` bytes.
fn bao_input(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 4);
    let mut i = 1u32;
    while out.len() < len {
        out.extend_from_slice(&i.to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[test]
fn blake3_vectors_through_streaming_hash() {
    let v = load("blake3_test_vectors.json");
    let key = s(&v, "key").as_bytes();
    let key: [u8; 32] = key.try_into().expect("32-byte key");
    let cases = v["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 22);
    for c in cases {
        let len = u(c, "input_len") as usize;
        let input = blake3_input(len);
        let want = hex::decode(s(c, "hash")).expect("hex");
        // Our streaming hasher, fed in small pieces to cross chunk boundaries.
        let (h, n) = hash_reader(std::io::Cursor::new(&input)).expect("hash");
        assert_eq!(n, len as u64);
        assert_eq!(h.as_bytes()[..], want[..32], "hash, len {len}");
        assert_eq!(Hash::of(&input), h);
        // Extended output and the other two modes of the same crate build.
        let mut xof = vec![0u8; want.len()];
        blake3::Hasher::new()
            .update(&input)
            .finalize_xof()
            .fill(&mut xof);
        assert_eq!(xof, want, "xof, len {len}");
        let keyed = hex::decode(s(c, "keyed_hash")).expect("hex");
        blake3::Hasher::new_keyed(&key)
            .update(&input)
            .finalize_xof()
            .fill(&mut xof);
        assert_eq!(xof, keyed, "keyed, len {len}");
        let derive = hex::decode(s(c, "derive_key")).expect("hex");
        blake3::Hasher::new_derive_key("BLAKE3 2019-12-27 16:29:52 test vectors context")
            .update(&input)
            .finalize_xof()
            .fill(&mut xof);
        assert_eq!(xof, derive, "derive_key, len {len}");
    }
}

/// Our 16 KiB-group outboard of `input`, written to a file the way a release build writes it.
fn group_outboard(input: &[u8]) -> (tempfile::NamedTempFile, tempfile::NamedTempFile, Hash) {
    let mut data = tempfile::NamedTempFile::new().expect("tmp");
    data.write_all(input).expect("write");
    let ob = tempfile::NamedTempFile::new().expect("tmp");
    let root = outboard::create(input, input.len() as u64, ob.as_file()).expect("outboard");
    (data, ob, root)
}

fn artifact(len: usize, root: Hash) -> Artifact {
    Artifact {
        kind: ArtifactKind::Full,
        compression: Compression::None,
        length: len as u64,
        root,
    }
}

#[test]
fn bao_hash_and_outboard_vectors() {
    let v = load("bao_test_vectors.json");
    for c in v["hash"].as_array().expect("hash") {
        let len = u(c, "input_len") as usize;
        let input = bao_input(len);
        let (data, ob, root) = group_outboard(&input);
        assert_eq!(
            root.to_hex(),
            s(c, "bao_hash"),
            "16 KiB-group root, len {len}"
        );
        outboard::verify_files(data.as_file(), ob.as_file(), &artifact(len, root))
            .expect("verifies");
    }
    for c in v["outboard"].as_array().expect("outboard") {
        let len = u(c, "input_len") as usize;
        let input = bao_input(len);
        // bao's outboard = 8-byte LE length + pre-order hash pairs at 1 KiB chunks.
        let ob = PreOrderMemOutboard::create(&input, BlockSize::ZERO);
        let mut encoded = (len as u64).to_le_bytes().to_vec();
        encoded.extend_from_slice(&ob.data);
        assert_eq!(
            encoded.len() as u64,
            u(c, "output_len"),
            "outboard length, len {len}"
        );
        assert_eq!(
            b3(&encoded),
            s(c, "encoded_blake3"),
            "outboard bytes, len {len}"
        );
        assert_eq!(ob.root.to_hex().to_string(), s(c, "bao_hash"));
        // Every input corruption bao's vectors list is caught by our 16 KiB-group verification.
        let (_d, gob, root) = group_outboard(&input);
        for off in c["input_corruptions"].as_array().expect("list") {
            let off = off.as_u64().expect("offset") as usize;
            let mut bad = input.clone();
            bad[off] ^= 1;
            let mut f = tempfile::NamedTempFile::new().expect("tmp");
            f.write_all(&bad).expect("write");
            let got = outboard::verify_files(f.as_file(), gob.as_file(), &artifact(len, root));
            assert!(
                matches!(got, Err(outboard::ArtifactError::GroupMismatch { group, .. }) if group == (off as u64) / outboard::GROUP_BYTES),
                "len {len}, corrupted byte {off}: {got:?}"
            );
        }
    }
}

#[test]
fn bao_encode_vectors() {
    let v = load("bao_test_vectors.json");
    for c in v["encode"].as_array().expect("encode") {
        let len = u(c, "input_len") as usize;
        let input = bao_input(len);
        let ob = PreOrderMemOutboard::create(&input, BlockSize::ZERO);
        let mut encoded = (len as u64).to_le_bytes().to_vec();
        if len > 0 {
            encode_ranges_validated(&input[..], &ob, &ChunkRanges::all(), &mut encoded)
                .expect("encode");
        }
        assert_eq!(
            encoded.len() as u64,
            u(c, "output_len"),
            "combined encoding length, len {len}"
        );
        assert_eq!(
            b3(&encoded),
            s(c, "encoded_blake3"),
            "combined encoding, len {len}"
        );
    }
}

/// The chunks a bao slice covers: at least one chunk, and the last chunk for a start past the end.
fn slice_chunks(len: u64, start: u64, slice_len: u64) -> (u64, u64) {
    let chunks = len.div_ceil(1024).max(1);
    let first = (start / 1024).min(chunks - 1);
    let end = start
        .saturating_add(slice_len)
        .div_ceil(1024)
        .clamp(first + 1, chunks);
    (first, end)
}

#[test]
fn bao_slice_vectors_and_16k_group_slices() {
    let v = load("bao_test_vectors.json");
    let mut checked = 0;
    for c in v["slice"].as_array().expect("slice") {
        let len = u(c, "input_len") as usize;
        let input = bao_input(len);
        let ob1k = PreOrderMemOutboard::create(&input, BlockSize::ZERO);
        let ob16k = PreOrderMemOutboard::create(&input, outboard::BLOCK_SIZE);
        for sl in c["slices"].as_array().expect("slices") {
            let (start, slen) = (u(sl, "start"), u(sl, "len"));
            let mut encoded = (len as u64).to_le_bytes().to_vec();
            if len > 0 {
                let (a, b) = slice_chunks(len as u64, start, slen);
                let ranges = ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
                encode_ranges_validated(&input[..], &ob1k, &ranges, &mut encoded)
                    .expect("encode slice");

                // The same range served from our 16 KiB-group outboard decodes and verifies against the
                // same root, and yields the same bytes.
                let mut wire = Vec::new();
                encode_ranges_validated(&input[..], &ob16k, &ranges, &mut wire)
                    .expect("encode 16k slice");
                let mut target = vec![0u8; len];
                let mut sink = PreOrderMemOutboard {
                    root: ob16k.root,
                    tree: ob16k.tree,
                    data: vec![0u8; ob16k.data.len()],
                };
                decode_ranges(&wire[..], &ranges, &mut target[..], &mut sink)
                    .expect("16k slice verifies");
                let bytes = (a * 1024) as usize..(b * 1024).min(len as u64) as usize;
                assert_eq!(
                    target[bytes.clone()],
                    input[bytes],
                    "16k slice bytes, len {len} start {start}"
                );
                // A flipped byte in the 16 KiB-group slice is rejected.
                if !wire.is_empty() {
                    let last = wire.len() - 1;
                    wire[last] ^= 1;
                    let mut t2 = vec![0u8; len];
                    let mut s2 = PreOrderMemOutboard {
                        root: ob16k.root,
                        tree: ob16k.tree,
                        data: vec![0u8; ob16k.data.len()],
                    };
                    assert!(
                        decode_ranges(&wire[..], &ranges, &mut t2[..], &mut s2).is_err(),
                        "corrupt 16k slice accepted"
                    );
                }
            }
            assert_eq!(
                encoded.len() as u64,
                u(sl, "output_len"),
                "slice length, len {len} start {start} len {slen}"
            );
            assert_eq!(
                b3(&encoded),
                s(sl, "output_blake3"),
                "slice bytes, len {len} start {start} len {slen}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 222, "every slice case in the file");
}
