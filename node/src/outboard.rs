//! bao outboards with 16 KiB chunk groups, and artifact verification.
//!
//! An outboard holds the BLAKE3 tree's hash pairs down to 16 KiB chunk groups, in pre-order, without
//! a length prefix (the length comes from the signed manifest). It is 0.39 % of the data, and lets a
//! peer prove any run of chunk groups against the artifact's root, which equals plain BLAKE3 of the
//! artifact bytes. Plain bao (1 KiB chunks) would cost 6.25 %.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    ops::Range,
};

use bao_tree::{
    io::{outboard::PreOrderOutboard, sync::valid_outboard_ranges, sync::valid_ranges},
    BaoTree, BlockSize, ChunkRanges,
};

use crate::{hash::Hash, manifest::Artifact};

/// log2 of the number of 1 KiB BLAKE3 chunks in a chunk group: 16 chunks = 16 KiB.
pub const CHUNK_GROUP_LOG: u8 = 4;
/// The chunk group size as bao-tree's type.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(CHUNK_GROUP_LOG);
/// Bytes in one chunk group.
pub const GROUP_BYTES: u64 = 1024 << CHUNK_GROUP_LOG;

/// The bao tree of an artifact of `length` bytes.
pub fn tree(length: u64) -> BaoTree {
    BaoTree::new(length, BLOCK_SIZE)
}

/// Size of the outboard for `length` bytes of data.
pub fn outboard_size(length: u64) -> u64 {
    tree(length).outboard_size()
}

/// Number of chunk groups in `length` bytes (at least 1, even for empty data).
pub fn groups(length: u64) -> u64 {
    length.div_ceil(GROUP_BYTES).max(1)
}

/// Byte range of chunk group `g` in an artifact of `length` bytes.
pub fn group_bytes(g: u64, length: u64) -> Range<u64> {
    let start = g.saturating_mul(GROUP_BYTES).min(length);
    start..(start.saturating_add(GROUP_BYTES)).min(length)
}

/// Why an artifact's bytes do not match what the manifest signed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact is longer than signed: at least {actual} bytes, the manifest says {signed}")]
    TooLong { signed: u64, actual: u64 },
    #[error("artifact is truncated: {actual} bytes, the manifest says {signed}")]
    Truncated { signed: u64, actual: u64 },
    #[error("outboard is {actual} bytes, expected {expected} for this artifact length")]
    OutboardLength { expected: u64, actual: u64 },
    #[error("outboard does not match the signed bao root (first bad chunk group {group})")]
    OutboardCorrupt { group: u64 },
    #[error("chunk group {group} (bytes {}..{}) does not match the signed bao root", .bytes.start, .bytes.end)]
    GroupMismatch { group: u64, bytes: Range<u64> },
    #[error("content hash {actual} differs from the signed {expected}")]
    HashMismatch { expected: Hash, actual: Hash },
    #[error("I/O error while verifying: {0}")]
    Io(io::Error),
}

// By hand, not `#[from]`: the message already prints the cause, so it is not also a `source()`.
impl From<io::Error> for ArtifactError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Writes the pre-order outboard of `data` (exactly `length` bytes) into `out`, streaming in bounded
/// memory, and returns the bao root. `out` must be open for writing and is sized by this function.
pub fn create(data: impl Read, length: u64, out: &File) -> io::Result<Hash> {
    out.set_len(outboard_size(length))?;
    let tree = tree(length);
    // positioned-io implements WriteAt for an owned File only; a second handle shares the same file.
    let mut ob = PreOrderOutboard {
        root: blake3::hash(&[]),
        tree,
        data: out.try_clone()?,
    };
    let root = bao_tree::io::sync::outboard(
        BufReader::with_capacity(1 << 20, data.take(length)),
        tree,
        &mut ob,
    )?;
    Ok(root.into())
}

/// An in-memory outboard (tests and small artifacts).
pub fn create_in_memory(data: &[u8]) -> (Hash, Vec<u8>) {
    let ob = bao_tree::io::outboard::PreOrderMemOutboard::create(data, BLOCK_SIZE);
    (ob.root.into(), ob.data)
}

/// First chunk group not covered by `valid`, a sorted list of valid chunk ranges.
fn first_gap(
    valid: impl IntoIterator<Item = io::Result<Range<bao_tree::ChunkNum>>>,
    chunks: u64,
) -> io::Result<Option<u64>> {
    let mut cursor = 0u64;
    for r in valid {
        let r = r?;
        if r.start.0 > cursor {
            return Ok(Some(cursor >> CHUNK_GROUP_LOG));
        }
        cursor = cursor.max(r.end.0);
    }
    Ok((cursor < chunks).then_some(cursor >> CHUNK_GROUP_LOG))
}

/// Verifies a data file and its outboard against a signed artifact entry, naming the first bad chunk
/// group. Reads the files with positioned reads; memory stays bounded.
pub fn verify_files(
    data: &File,
    outboard: &File,
    artifact: &Artifact,
) -> Result<(), ArtifactError> {
    let (length, root) = (artifact.length, artifact.root);
    let actual = data.metadata()?.len();
    if actual > length {
        return Err(ArtifactError::TooLong {
            signed: length,
            actual,
        });
    }
    if actual < length {
        return Err(ArtifactError::Truncated {
            signed: length,
            actual,
        });
    }
    let expected = outboard_size(length);
    let ob_len = outboard.metadata()?.len();
    if ob_len != expected {
        return Err(ArtifactError::OutboardLength {
            expected,
            actual: ob_len,
        });
    }
    if length == 0 {
        let actual = Hash::of(&[]);
        return if actual == root {
            Ok(())
        } else {
            Err(ArtifactError::HashMismatch {
                expected: root,
                actual,
            })
        };
    }
    let tree = tree(length);
    let chunks = tree.chunks().0;
    let ob = PreOrderOutboard {
        root: root.into(),
        tree,
        data: outboard,
    };
    let all = ChunkRanges::all();
    if let Some(group) = first_gap(valid_outboard_ranges(&ob, &all), chunks)? {
        return Err(ArtifactError::OutboardCorrupt { group });
    }
    if let Some(group) = first_gap(valid_ranges(&ob, data, &all), chunks)? {
        return Err(ArtifactError::GroupMismatch {
            group,
            bytes: group_bytes(group, length),
        });
    }
    Ok(())
}

/// Verifies a stream of artifact bytes against its signed entry without an outboard: exact length
/// (reading at most one byte past it, so endless data is cut off) and BLAKE3 root.
pub fn verify_stream(data: impl Read, artifact: &Artifact) -> Result<(), ArtifactError> {
    let (hash, n) = crate::hash::hash_reader(data.take(artifact.length.saturating_add(1)))?;
    if n > artifact.length {
        return Err(ArtifactError::TooLong {
            signed: artifact.length,
            actual: n,
        });
    }
    if n < artifact.length {
        return Err(ArtifactError::Truncated {
            signed: artifact.length,
            actual: n,
        });
    }
    if hash != artifact.root {
        return Err(ArtifactError::HashMismatch {
            expected: artifact.root,
            actual: hash,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_arithmetic() {
        assert_eq!(groups(0), 1);
        assert_eq!(groups(GROUP_BYTES), 1);
        assert_eq!(groups(GROUP_BYTES + 1), 2);
        assert_eq!(
            group_bytes(1, GROUP_BYTES + 5),
            GROUP_BYTES..GROUP_BYTES + 5
        );
        // 16 KiB groups: the outboard is 64 bytes per group, about 0.39 %.
        let len = 64 * 1024 * 1024;
        assert_eq!(outboard_size(len), (len / GROUP_BYTES - 1) * 64);
    }
}
