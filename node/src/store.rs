//! The verified chunk store: artifacts keyed by bao root, filled in any order, crash-consistent.
//!
//! On disk, one folder per artifact:
//!
//! ```text
//! STORE/<root hex>/length    the signed length, decimal (written once, at creation)
//! STORE/<root hex>/data      the artifact bytes (sparse until complete)
//! STORE/<root hex>/outboard  bao outboard, pre-order, 16 KiB groups (filled as proofs arrive)
//! STORE/<root hex>/groups    bitmap of verified chunk groups, one bit per group
//! ```
//!
//! Write ordering (see `docs/store.md`): for every chunk group received, the bao decoder first checks
//! the parent hashes on its path and then the group's own hash against the signed root; only then are
//! the parents written to `outboard`, the bytes to `data`, and last the group's bit to `groups` (in
//! batches of up to 256 KiB of groups, each batch in that order; see `Pending`). A kill
//! -9 at any instant therefore leaves every set bit backed by verified data (the page cache survives a
//! process kill, and a direct write has reached the device when it returns). [`Entry::sync`] fsyncs data and outboard before the bitmap, bounding what a power cut
//! loses; and on open every claimed group is re-hashed against the outboard and the root, so a bit whose
//! data did not reach the disk is dropped instead of trusted. Before serving, every group is re-validated
//! against the outboard as it is encoded: nothing unverified is ever sent or installed.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    ops::Range,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bao_tree::{
    io::{
        outboard::PreOrderOutboard,
        sync::{
            encode_ranges, encode_ranges_validated, valid_ranges, DecodeResponseIter, ReadAt, Size,
        },
        BaoContentItem, DecodeError, EncodeError,
    },
    ChunkNum, ChunkRanges,
};
use bytes::Bytes;

use crate::{
    fsutil,
    groups::GroupSet,
    hash::Hash,
    outboard::{self, CHUNK_GROUP_LOG, GROUP_BYTES},
};

/// A store operation failed on this node (disk, or a caller asking for something impossible).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O on {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("artifact {root} is stored with length {stored}, but {requested} was requested")]
    LengthMismatch {
        root: Hash,
        stored: u64,
        requested: u64,
    },
    #[error("artifact {root} is not in the store")]
    Unknown { root: Hash },
    #[error("artifact {root}: group {group} is not verified here")]
    NotAvailable { root: Hash, group: u64 },
    #[error("artifact {root}: imported files do not match the root (first bad group {group})")]
    ImportMismatch { root: Hash, group: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

/// Why receiving a range from a peer stopped. Separates the peer's fault from ours.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The peer sent bytes that do not verify against the signed root: ban it for this artifact.
    #[error("peer sent data that does not verify ({0})")]
    Corrupt(String),
    /// The stream ended or failed before the requested ranges were complete (transient).
    #[error("stream ended early: {0}")]
    Truncated(io::Error),
    /// Writing verified data to our own disk failed (local fault: do not blame the peer).
    #[error("local store write failed: {0}")]
    Local(StoreError),
}

/// Why serving a range stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// We do not hold (all of) the requested groups.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Our own data no longer matches the outboard (disk corruption); those groups were dropped.
    #[error("local data failed re-validation; {dropped} group(s) dropped")]
    LocalCorruption { dropped: u64 },
    /// Writing to the peer failed.
    #[error("writing to peer: {0}")]
    Network(io::Error),
}

/// Positioned reads on a shared `&File` (positioned-io implements them only for an owned `File`).
#[derive(Debug, Clone, Copy)]
struct At<'a>(&'a File);

impl ReadAt for At<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        FileExt::read_at(self.0, buf, pos)
    }
}
impl Size for At<'_> {
    fn size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.0.metadata()?.len()))
    }
}

/// Positioned reads of the outboard through a window read ahead, for the encoder: it asks for 64
/// bytes per proof node, in pre-order, and the nodes under one subtree are contiguous there, so one
/// `pread` per window serves many asks, not one per node. The window lives for one response; what it
/// holds of the requested groups' proofs was verified and written before the response began.
/// (Data is read directly: the encoder asks for a whole group at a time.)
struct ReadAhead<'a> {
    file: &'a File,
    window: RefCell<(u64, Vec<u8>)>,
}

/// The outboard window: 64 proof nodes.
const NODE_WINDOW: usize = 4096;

impl<'a> ReadAhead<'a> {
    fn new(file: &'a File) -> Self {
        Self {
            file,
            window: RefCell::new((0, Vec::new())),
        }
    }
}

impl ReadAt for ReadAhead<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() >= NODE_WINDOW {
            return FileExt::read_at(self.file, buf, pos);
        }
        let mut w = self.window.borrow_mut();
        let (start, bytes) = &mut *w;
        if pos < *start || pos + buf.len() as u64 > *start + bytes.len() as u64 {
            bytes.resize(NODE_WINDOW, 0);
            let mut filled = 0;
            while filled < bytes.len() {
                match FileExt::read_at(self.file, &mut bytes[filled..], pos + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            bytes.truncate(filled);
            *start = pos;
        }
        let off = (pos - *start) as usize;
        let n = buf.len().min(bytes.len().saturating_sub(off));
        buf[..n].copy_from_slice(&bytes[off..off + n]);
        Ok(n)
    }
}
impl Size for ReadAhead<'_> {
    fn size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.file.metadata()?.len()))
    }
}

/// Positioned reads on a window of memory that starts at `base` of a larger object of size `len`.
#[derive(Debug, Clone, Copy)]
struct Slice<'a> {
    base: u64,
    bytes: &'a [u8],
    len: u64,
}

impl ReadAt for Slice<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(off) = pos.checked_sub(self.base) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read before the window",
            ));
        };
        let off = off as usize;
        if off >= self.bytes.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.bytes.len() - off);
        buf[..n].copy_from_slice(&self.bytes[off..off + n]);
        Ok(n)
    }
}
impl Size for Slice<'_> {
    fn size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.len))
    }
}

/// Chunk ranges (1 KiB units) of a list of group ranges.
pub fn chunk_ranges(groups: &[Range<u64>]) -> ChunkRanges {
    let mut out = ChunkRanges::empty();
    for r in groups {
        out |= ChunkRanges::from(
            ChunkNum(r.start << CHUNK_GROUP_LOG)..ChunkNum(r.end << CHUNK_GROUP_LOG),
        );
    }
    out
}

/// One artifact in the store.
#[derive(Debug)]
pub struct Entry {
    root: Hash,
    length: u64,
    dir: PathBuf,
    data: File,
    /// `data` opened for direct I/O, where the file system allows it: verified batches go past the
    /// page cache (see [`Entry::write_data`]).
    direct: Option<File>,
    /// Set at the first refusal of a direct write: from then on, the page cache.
    direct_refused: AtomicBool,
    /// Bytes written past the page cache.
    direct_bytes: AtomicU64,
    outboard: File,
    groups_file: File,
    have: Mutex<GroupSet>,
    /// Outboard nodes this process has verified and written: every response carries the proof path
    /// from the root to its groups, and writing those same 64 bytes again for each request was 6 of
    /// every 7 `pwrite`s in the live 50-device ward (requests of one or two groups).
    parents_written: Vec<AtomicU64>,
}

impl Entry {
    /// The bao root.
    pub fn root(&self) -> Hash {
        self.root
    }
    /// The signed length.
    pub fn length(&self) -> u64 {
        self.length
    }
    /// Number of chunk groups.
    pub fn group_count(&self) -> u64 {
        outboard::groups(self.length)
    }
    /// A snapshot of the verified groups.
    pub fn have(&self) -> GroupSet {
        self.lock().clone()
    }
    /// All groups verified.
    pub fn is_complete(&self) -> bool {
        self.lock().is_full()
    }
    /// The data file path (read it only once complete).
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// The outboard file path.
    pub fn outboard_path(&self) -> PathBuf {
        self.dir.join("outboard")
    }
    /// Bytes of verified data this process wrote past the page cache (direct I/O), for tests and
    /// figures.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GroupSet> {
        // A panic while holding the lock cannot leave the set half-updated (single-bit updates).
        self.have.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tree(&self) -> bao_tree::BaoTree {
        outboard::tree(self.length)
    }

    /// Removes groups (after local corruption is found).
    fn unmark(&self, groups: impl IntoIterator<Item = u64>) -> Result<u64, StoreError> {
        let mut have = self.lock();
        let mut n = 0;
        for g in groups {
            n += u64::from(have.remove(g));
        }
        let p = self.dir.join("groups");
        self.groups_file
            .write_all_at(&have.to_bytes(), 0)
            .map_err(io_err(&p))?;
        Ok(n)
    }

    /// Marks verified groups, after their data was written: bits in memory, then the changed bytes of
    /// the bitmap in one write. Returns the groups that were not marked before.
    fn mark_all(&self, groups: &[u64]) -> Result<Vec<u64>, StoreError> {
        let mut have = self.lock();
        let fresh: Vec<u64> = groups.iter().copied().filter(|g| have.insert(*g)).collect();
        let (Some(lo), Some(hi)) = (fresh.iter().min(), fresh.iter().max()) else {
            return Ok(fresh);
        };
        let bytes: Vec<u8> = (lo / 8..=hi / 8).map(|i| have.byte(i)).collect();
        self.groups_file
            .write_all_at(&bytes, lo / 8)
            .map_err(|cause| StoreError::Io {
                path: self.dir.join("groups"),
                cause,
            })?;
        Ok(fresh)
    }

    /// Receives a bao-encoded response for `groups` from `encoded`, verifying each chunk group against
    /// the signed root before it is written. Calls `on_group` for each newly verified group, once it
    /// is written. On error, the groups verified before it stay verified. Returns the bytes written:
    /// a group held already is verified again but not written again.
    ///
    /// Verified groups are written in batches (see [`Pending`]): a batch is written before the
    /// response would wait for the peer ([`Incoming::drained`]), so a slow peer's groups are on disk
    /// and reported as soon as they are all there is.
    pub fn receive(
        &self,
        groups: &[Range<u64>],
        encoded: impl Incoming,
        on_group: impl FnMut(u64),
    ) -> Result<u64, ReceiveError> {
        self.receive_as(groups, encoded, on_group, Reuse::Seldom)
    }

    /// [`Self::receive`], for data that will be read again soon (`Reuse::Soon`: written through the
    /// page cache whatever the batch) or seldom.
    fn receive_as(
        &self,
        groups: &[Range<u64>],
        encoded: impl Incoming,
        on_group: impl FnMut(u64),
        reuse: Reuse,
    ) -> Result<u64, ReceiveError> {
        let ranges = chunk_ranges(groups);
        let tree = self.tree();
        let pending = RefCell::new(Pending::new(self, on_group, reuse));
        let reader = FlushBeforeWait {
            inner: encoded,
            pending: &pending,
        };
        let failed = |e: ReceiveError| {
            // What verified before the failure is kept (a local fault has already been kept).
            let mut p = pending.borrow_mut();
            match p.local.take() {
                Some(local) => Err(ReceiveError::Local(local)),
                None => match p.flush() {
                    Ok(()) => Err(e),
                    Err(local) => Err(ReceiveError::Local(local)),
                },
            }
        };
        for item in DecodeResponseIter::new(self.root.into(), tree, reader, &ranges) {
            let step = match item {
                Ok(BaoContentItem::Parent(p)) => match tree.pre_order_offset(p.node) {
                    Some(index) if !self.parent_written(index) => {
                        let mut pair = [0u8; 64];
                        pair[..32].copy_from_slice(p.pair.0.as_bytes());
                        pair[32..].copy_from_slice(p.pair.1.as_bytes());
                        pending.borrow_mut().parent(index, pair);
                        Ok(())
                    }
                    // Verified against the same root before: the same 64 bytes.
                    _ => Ok(()),
                },
                // A group held already (a response whose first groups were verified early, read
                // again whole; an endgame duplicate) verified the same bytes: not written again.
                Ok(BaoContentItem::Leaf(leaf))
                    if self.lock().contains(leaf.offset / GROUP_BYTES) =>
                {
                    Ok(())
                }
                Ok(BaoContentItem::Leaf(leaf)) => pending.borrow_mut().leaf(leaf.offset, leaf.data),
                Err(DecodeError::ParentHashMismatch(n)) => {
                    return failed(ReceiveError::Corrupt(format!(
                        "parent hash mismatch at level {}",
                        n.level()
                    )))
                }
                Err(DecodeError::LeafHashMismatch(c)) => {
                    return failed(ReceiveError::Corrupt(format!(
                        "chunk group {} does not match the root",
                        c.0 >> CHUNK_GROUP_LOG
                    )))
                }
                Err(DecodeError::LeafNotFound(_) | DecodeError::ParentNotFound(_)) => {
                    return failed(ReceiveError::Truncated(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the stream",
                    )))
                }
                Err(DecodeError::Io(e)) => return failed(ReceiveError::Truncated(e)),
            };
            if let Err(local) = step {
                return Err(ReceiveError::Local(local));
            }
        }
        let mut p = pending.into_inner();
        p.flush().map_err(ReceiveError::Local)?;
        Ok(p.bytes)
    }

    /// Writes verified leaves, contiguous from `offset`. A full batch ([`DIRECT_MIN_BYTES`] or more)
    /// of data that will be read again seldom ([`Reuse::Seldom`]: fetched from a peer) goes past the
    /// page cache in whole blocks where the file system allows it; a smaller one, the gateway's WAN
    /// intake ([`Reuse::Soon`]: it serves the ward next, from the cache), the artifact's short last
    /// group, and everything where direct I/O is refused, with one `pwritev` of the decoder's
    /// buffers.
    ///
    /// Full batches come from a fast peer (on an idle link): bytes a node writes once and reads
    /// seldom (once to install, a few times to serve peers). Through the page cache each of those bytes is copied into a freshly allocated page,
    /// dirties memory that writeback must then chase, and evicts other files' pages; on a device,
    /// the clinical application's. Past it, the leaves are copied once into a warm, aligned buffer and
    /// the device's DMA does the rest. The pair benchmark moved 385 to 400 MB/s this way against 331
    /// to 372 through the page cache (`docs/performance.md`). Small batches (a paced peer's few
    /// groups, the ward's usual case) stay in the page cache: there each direct write is a request
    /// to the device of its own, and sending the ward's batches of 64 KiB and up direct cost it more
    /// CPU, not less.
    fn write_data(&self, leaves: &[Bytes], offset: u64, reuse: Reuse) -> io::Result<()> {
        let len: usize = leaves.iter().map(|b| b.len()).sum();
        // Whole blocks of a full batch of seldom-read data, from an aligned offset; else none.
        let whole = match len / fsutil::DIRECT_ALIGN * fsutil::DIRECT_ALIGN {
            w if reuse == Reuse::Seldom
                && w >= DIRECT_MIN_BYTES
                && offset.is_multiple_of(fsutil::DIRECT_ALIGN as u64) =>
            {
                w
            }
            _ => 0,
        };
        let done = match &self.direct {
            Some(d) if whole > 0 && !self.direct_refused.load(Ordering::Relaxed) => {
                match direct_write(d, leaves, offset, whole) {
                    Ok(()) => {
                        self.direct_bytes.fetch_add(whole as u64, Ordering::Relaxed);
                        whole
                    }
                    Err(e) if fsutil::direct_refused(&e) => {
                        tracing::debug!(path = %self.data_path().display(), "direct I/O refused; writing through the page cache");
                        self.direct_refused.store(true, Ordering::Relaxed);
                        0
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => 0,
        };
        if done == len {
            return Ok(());
        }
        // What is left: from byte `done` of the leaves on.
        let mut skip = done;
        let rest: Vec<Bytes> = leaves
            .iter()
            .filter_map(|b| {
                if skip >= b.len() {
                    skip -= b.len();
                    None
                } else {
                    let part = b.slice(skip..);
                    skip = 0;
                    Some(part)
                }
            })
            .collect();
        write_all_vectored_at(&self.data, &rest, offset + done as u64)
    }

    fn parent_written(&self, index: u64) -> bool {
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        self.parents_written
            .get(word)
            .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
    }

    /// Receives plain bytes from an untrusted source (the WAN origin): `data` holds whole groups from
    /// `first_group` on (the artifact's last group may be short), `outboard` is the origin's complete
    /// pre-order outboard. Both are untrusted: they are bao-encoded together and go through
    /// [`Self::receive`], so every group is checked against the signed root before it is written.
    pub fn receive_plain(
        &self,
        first_group: u64,
        data: &[u8],
        outboard: &[u8],
        on_group: impl FnMut(u64),
    ) -> Result<u64, ReceiveError> {
        let start = first_group * GROUP_BYTES;
        let end = (start + data.len() as u64).min(self.length);
        let groups = first_group..outboard::groups(end.max(start + 1)).max(first_group + 1);
        if end != self.length && !(data.len() as u64).is_multiple_of(GROUP_BYTES) {
            return Err(ReceiveError::Corrupt(
                "origin data does not end on a chunk-group boundary".into(),
            ));
        }
        if outboard.len() as u64 != outboard::outboard_size(self.length) {
            return Err(ReceiveError::Corrupt(format!(
                "origin outboard is {} bytes, {} were expected",
                outboard.len(),
                outboard::outboard_size(self.length)
            )));
        }
        let ob = PreOrderOutboard {
            root: self.root.into(),
            tree: self.tree(),
            data: Slice {
                base: 0,
                bytes: outboard,
                len: outboard.len() as u64,
            },
        };
        let mut encoded = Vec::with_capacity(data.len() + data.len() / 128 + 1024);
        let window = Slice {
            base: start,
            bytes: data,
            len: self.length,
        };
        encode_ranges(
            window,
            &ob,
            &chunk_ranges(std::slice::from_ref(&groups)),
            &mut encoded,
        )
        .map_err(|e| ReceiveError::Corrupt(format!("origin data or outboard is malformed: {e}")))?;
        // The gateway's WAN intake: the ward is served from it next, so it stays in the page cache.
        self.receive_as(&[groups], &encoded[..], on_group, Reuse::Soon)
    }

    /// Encodes `groups` (all must be verified here) bao-encoded into `out`, re-validating every group
    /// against the outboard as it goes.
    pub fn serve(&self, groups: &[Range<u64>], out: impl Write) -> Result<(), ServeError> {
        {
            let have = self.lock();
            for r in groups {
                if let Some(g) = (r.start..r.end).find(|g| !have.contains(*g)) {
                    return Err(StoreError::NotAvailable {
                        root: self.root,
                        group: g,
                    }
                    .into());
                }
            }
        }
        let ranges = chunk_ranges(groups);
        let ob = PreOrderOutboard {
            root: self.root.into(),
            tree: self.tree(),
            data: ReadAhead::new(&self.outboard),
        };
        match encode_ranges_validated(At(&self.data), &ob, &ranges, out) {
            Ok(()) => Ok(()),
            Err(EncodeError::Io(e)) => Err(ServeError::Network(e)),
            Err(_) => {
                // Our own bytes failed validation: find which and stop claiming them.
                let valid = self.validate(groups).map_err(ServeError::Store)?;
                let bad: Vec<u64> = groups
                    .iter()
                    .flat_map(|r| r.clone())
                    .filter(|g| !valid.contains(*g))
                    .collect();
                let dropped = self.unmark(bad)?;
                tracing::warn!(target: "wardswarm::security", root = %self.root, dropped, "local data failed re-validation before sending");
                Err(ServeError::LocalCorruption { dropped })
            }
        }
    }

    /// Re-hashes the given groups against the outboard and the root; returns those that verify.
    pub fn validate(&self, groups: &[Range<u64>]) -> Result<GroupSet, StoreError> {
        let mut valid = GroupSet::new(self.group_count());
        if groups.is_empty() {
            return Ok(valid);
        }
        if self.length == 0 {
            if Hash::of(&[]) == self.root {
                valid.insert(0);
            }
            return Ok(valid);
        }
        let ranges = chunk_ranges(groups);
        let ob = PreOrderOutboard {
            root: self.root.into(),
            tree: self.tree(),
            data: At(&self.outboard),
        };
        let p = self.data_path();
        for r in valid_ranges(&ob, At(&self.data), &ranges) {
            let r = r.map_err(io_err(&p))?;
            // Only whole groups count (the last group may be short).
            let first = r.start.0.div_ceil(1 << CHUNK_GROUP_LOG);
            let total_chunks = self.tree().chunks().0;
            let end = if r.end.0 >= total_chunks {
                self.group_count()
            } else {
                r.end.0 >> CHUNK_GROUP_LOG
            };
            valid.insert_range(first..end);
        }
        Ok(valid)
    }

    /// fsyncs data and outboard, then the bitmap, so a power cut loses at most unsynced groups.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.data.sync_data().map_err(io_err(&self.data_path()))?;
        self.outboard
            .sync_data()
            .map_err(io_err(&self.outboard_path()))?;
        self.groups_file
            .sync_data()
            .map_err(io_err(&self.dir.join("groups")))
    }
}

/// A response being received: bytes to read, and whether the next read would wait for the peer.
pub trait Incoming: Read {
    /// Nothing is buffered here: the next read waits for the peer (or sees the end).
    fn drained(&self) -> bool;
}

impl Incoming for &[u8] {
    fn drained(&self) -> bool {
        self.is_empty()
    }
}

impl<T: Incoming + ?Sized> Incoming for &mut T {
    fn drained(&self) -> bool {
        (**self).drained()
    }
}

/// Verified groups held in a batch before they are written: at most this many bytes. One write of
/// data, one of proof nodes and one of the bitmap per batch, instead of one each per 16 KiB group
/// (three syscalls per group were most of a fetcher's CPU outside the ciphers; `docs/performance.md`).
const BATCH_BYTES: usize = 256 * 1024;

/// Verified data, proof nodes and groups not yet written. A flush writes the proof nodes and the
/// data, then the groups' bits, then reports the groups: the store's write order, per batch.
struct Pending<'e, F> {
    entry: &'e Entry,
    /// Contiguous verified leaves starting at `data_at`, `data_len` bytes ([`Entry::write_data`]).
    data_at: u64,
    data: Vec<Bytes>,
    data_len: usize,
    /// Proof nodes (pre-order index, the 64-byte pair).
    parents: Vec<(u64, [u8; 64])>,
    groups: Vec<u64>,
    on_group: F,
    reuse: Reuse,
    /// Bytes written.
    bytes: u64,
    /// A write that failed inside a read (before waiting): reported as ours, not the peer's.
    local: Option<StoreError>,
}

impl<'e, F: FnMut(u64)> Pending<'e, F> {
    fn new(entry: &'e Entry, on_group: F, reuse: Reuse) -> Self {
        Self {
            entry,
            reuse,
            data_at: 0,
            data: Vec::new(),
            data_len: 0,
            parents: Vec::new(),
            groups: Vec::new(),
            on_group,
            bytes: 0,
            local: None,
        }
    }

    fn parent(&mut self, index: u64, pair: [u8; 64]) {
        self.parents.push((index, pair));
    }

    fn leaf(&mut self, offset: u64, bytes: Bytes) -> Result<(), StoreError> {
        if !self.data.is_empty() && self.data_at + self.data_len as u64 != offset {
            self.flush()?;
        }
        if self.data.is_empty() {
            self.data_at = offset;
        }
        self.data_len += bytes.len();
        self.data.push(bytes);
        self.groups.push(offset / GROUP_BYTES);
        if self.data_len >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let e = self.entry;
        if !self.parents.is_empty() {
            self.parents.sort_unstable_by_key(|p| p.0);
            self.parents.dedup_by_key(|p| p.0);
            // Nodes under one subtree are contiguous in pre-order: write each contiguous run at once.
            let mut run = Vec::with_capacity(self.parents.len() * 64);
            let mut i = 0;
            while i < self.parents.len() {
                let first = self.parents[i].0;
                run.clear();
                while i < self.parents.len() && self.parents[i].0 == first + (run.len() / 64) as u64
                {
                    run.extend_from_slice(&self.parents[i].1);
                    i += 1;
                }
                e.outboard
                    .write_all_at(&run, first * 64)
                    .map_err(|cause| StoreError::Io {
                        path: e.outboard_path(),
                        cause,
                    })?;
            }
            for (index, _) in self.parents.drain(..) {
                if let Some(w) = e.parents_written.get((index / 64) as usize) {
                    w.fetch_or(1u64 << (index % 64), Ordering::Relaxed);
                }
            }
        }
        if !self.data.is_empty() {
            e.write_data(&self.data, self.data_at, self.reuse)
                .map_err(|cause| StoreError::Io {
                    path: e.data_path(),
                    cause,
                })?;
            self.bytes += self.data_len as u64;
            self.data.clear();
            self.data_len = 0;
        }
        if !self.groups.is_empty() {
            let fresh = e.mark_all(&self.groups)?;
            self.groups.clear();
            for g in fresh {
                (self.on_group)(g);
            }
        }
        Ok(())
    }
}

/// Whether received data will be read again soon: the gateway's WAN intake, which it serves to
/// the whole ward next, or not (what a device fetches, to install).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    Soon,
    Seldom,
}

/// Aligned buffers for direct writes, kept for the next batch: taking a fresh one per batch would
/// fault in new pages each time, the cost direct writes are there to avoid.
static DIRECT_BUFS: Mutex<Vec<fsutil::AlignedBuf>> = Mutex::new(Vec::new());
/// At most this many idle buffers are kept (one per thread writing at once, on a small machine).
const DIRECT_BUFS_KEPT: usize = 8;
/// A direct write's buffer: a batch and one group over it, so a batch is one write.
const DIRECT_BUF_BYTES: usize = BATCH_BYTES + GROUP_BYTES as usize;
/// Batches of at least this many bytes (a full batch) are written past the page cache
/// ([`Entry::write_data`]).
const DIRECT_MIN_BYTES: usize = BATCH_BYTES;

/// Writes the first `whole` bytes of `leaves` (a multiple of [`fsutil::DIRECT_ALIGN`]) at `offset`
/// (aligned) through `direct`, an `O_DIRECT` descriptor, copying them into an aligned buffer first.
fn direct_write(direct: &File, leaves: &[Bytes], offset: u64, whole: usize) -> io::Result<()> {
    let mut buf = DIRECT_BUFS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_else(|| fsutil::AlignedBuf::new(DIRECT_BUF_BYTES));
    let r = (|| {
        let mut bytes = leaves.iter().map(|b| &b[..]);
        let mut piece: &[u8] = &[];
        let mut at = offset;
        let mut left = whole;
        while left > 0 {
            let room = left.min(DIRECT_BUF_BYTES);
            let out = &mut buf.as_mut_slice()[..room];
            let mut filled = 0;
            while filled < room {
                while piece.is_empty() {
                    piece = bytes.next().ok_or_else(|| {
                        io::Error::other("a direct write ran out of leaves (a bug in wardswarm)")
                    })?;
                }
                let n = piece.len().min(room - filled);
                out[filled..filled + n].copy_from_slice(&piece[..n]);
                piece = &piece[n..];
                filled += n;
            }
            let mut done = 0;
            while done < room {
                match direct.write_at(&buf.as_slice()[done..room], at + done as u64) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) if n % fsutil::DIRECT_ALIGN == 0 => done += n,
                    // A short write that is not whole blocks: the rest cannot go direct.
                    Ok(_) => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            at += room as u64;
            left -= room;
        }
        Ok(())
    })();
    let mut kept = DIRECT_BUFS.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() < DIRECT_BUFS_KEPT {
        kept.push(buf);
    }
    r
}

/// Writes `bufs` at `offset`, one after another, in as few `pwritev` calls as the kernel allows.
fn write_all_vectored_at(file: &File, bufs: &[Bytes], offset: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    let mut at = offset;
    while !rest.is_empty() {
        match rustix::io::pwritev(file, rest, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                at += n as u64;
                io::IoSlice::advance_slices(&mut rest, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The decoder's reader: writes the pending batch before a read that would wait for the peer.
struct FlushBeforeWait<'p, 'e, R, F> {
    inner: R,
    pending: &'p RefCell<Pending<'e, F>>,
}

impl<R: Incoming, F: FnMut(u64)> Read for FlushBeforeWait<'_, '_, R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inner.drained() {
            let mut p = self.pending.borrow_mut();
            if let Err(e) = p.flush() {
                let msg = e.to_string();
                p.local = Some(e);
                return Err(io::Error::other(msg));
            }
        }
        self.inner.read(buf)
    }
}

/// The store: a folder of artifacts.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    entries: Mutex<BTreeMap<Hash, Arc<Entry>>>,
}

impl Store {
    /// Opens (creating if needed) a store folder, re-validating what every artifact claims.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut entries = BTreeMap::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // An interrupted creation: never renamed into place, so never used.
                let _ = fs::remove_dir_all(e.path());
                continue;
            }
            let Ok(root) = format!("blake3:{name}").parse::<Hash>() else {
                continue;
            };
            match Self::open_entry(&e.path(), root) {
                Ok(entry) => {
                    entries.insert(root, Arc::new(entry));
                }
                Err(err) => {
                    tracing::warn!(%root, error = %err, "discarding an unreadable store entry");
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Self {
            dir,
            entries: Mutex::new(entries),
        })
    }

    fn open_entry(path: &Path, root: Hash) -> Result<Entry, StoreError> {
        let lp = path.join("length");
        let text = fs::read_to_string(&lp).map_err(io_err(&lp))?;
        let length: u64 = text.trim().parse().map_err(|_| StoreError::Io {
            path: lp.clone(),
            cause: io::Error::new(io::ErrorKind::InvalidData, "length file is not a number"),
        })?;
        let open = |n: &str, len: u64| -> Result<File, StoreError> {
            let p = path.join(n);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(io_err(&p))?;
            // A short file (crash before set_len reached disk) is extended with zeros: unverified.
            if f.metadata().map_err(io_err(&p))?.len() != len {
                f.set_len(len).map_err(io_err(&p))?;
            }
            Ok(f)
        };
        let groups = outboard::groups(length);
        let data = open("data", length)?;
        let direct = fsutil::open_direct(&path.join("data"), true);
        let ob = open("outboard", outboard::outboard_size(length))?;
        let gp = path.join("groups");
        let groups_file = open("groups", groups.div_ceil(8))?;
        let mut bitmap = Vec::new();
        (&groups_file)
            .read_to_end(&mut bitmap)
            .map_err(io_err(&gp))?;
        let claimed = GroupSet::from_bytes(groups, &bitmap);
        let entry = Entry {
            root,
            length,
            dir: path.to_path_buf(),
            data,
            direct,
            direct_refused: AtomicBool::new(false),
            direct_bytes: AtomicU64::new(0),
            outboard: ob,
            groups_file,
            have: Mutex::new(GroupSet::new(groups)),
            parents_written: (0..outboard::outboard_size(length).div_ceil(64 * 64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        let claimed_runs: Vec<Range<u64>> = claimed.runs().collect();
        let valid = entry.validate(&claimed_runs)?;
        if valid.count() != claimed.count() {
            tracing::warn!(%root, claimed = claimed.count(), valid = valid.count(), "store entry lost groups (power cut or disk fault); they will be fetched again");
        }
        *entry.lock() = valid.clone();
        entry
            .groups_file
            .write_all_at(&valid.to_bytes(), 0)
            .map_err(io_err(&gp))?;
        Ok(entry)
    }

    /// The store folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An artifact, if stored.
    pub fn get(&self, root: &Hash) -> Option<Arc<Entry>> {
        self.lock().get(root).cloned()
    }

    /// All stored artifacts.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Hash, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the entry for `root`, creating an empty one of the signed `length` if needed.
    pub fn create(&self, root: Hash, length: u64) -> Result<Arc<Entry>, StoreError> {
        let mut entries = self.lock();
        if let Some(e) = entries.get(&root) {
            if e.length != length {
                return Err(StoreError::LengthMismatch {
                    root,
                    stored: e.length,
                    requested: length,
                });
            }
            return Ok(e.clone());
        }
        let final_dir = self.dir.join(root.to_hex());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.new-", root.short()))
            .tempdir_in(&self.dir)
            .map_err(io_err(&self.dir))?;
        let t = tmp.path();
        let write = |n: &str, len: u64, contents: &[u8]| -> Result<(), StoreError> {
            let p = t.join(n);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(io_err(&p))?;
            f.write_all(contents).map_err(io_err(&p))?;
            f.set_len(len.max(contents.len() as u64))
                .map_err(io_err(&p))?;
            f.sync_all().map_err(io_err(&p))
        };
        let len_text = format!("{length}\n");
        write("length", len_text.len() as u64, len_text.as_bytes())?;
        write("data", length, &[])?;
        write("outboard", outboard::outboard_size(length), &[])?;
        write("groups", outboard::groups(length).div_ceil(8), &[])?;
        fsutil::fsync_dir(t).map_err(io_err(t))?;
        let kept = tmp.keep();
        fs::rename(&kept, &final_dir).map_err(io_err(&final_dir))?;
        fsutil::fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        let entry = Arc::new(Self::open_entry(&final_dir, root)?);
        entries.insert(root, entry.clone());
        Ok(entry)
    }

    /// Imports a complete artifact from a data file and its outboard (e.g. a release directory),
    /// verifying every group. Returns the entry, complete.
    pub fn import(
        &self,
        root: Hash,
        length: u64,
        data: &Path,
        ob: &Path,
    ) -> Result<Arc<Entry>, StoreError> {
        let e = self.create(root, length)?;
        if e.is_complete() {
            return Ok(e);
        }
        let mut src = File::open(data).map_err(io_err(data))?;
        copy_at(&mut src, &e.data, length).map_err(io_err(data))?;
        let mut src = File::open(ob).map_err(io_err(ob))?;
        copy_at(&mut src, &e.outboard, outboard::outboard_size(length)).map_err(io_err(ob))?;
        e.data.sync_data().map_err(io_err(&e.data_path()))?;
        e.outboard.sync_data().map_err(io_err(&e.outboard_path()))?;
        let valid = e.validate(std::slice::from_ref(&(0..e.group_count())))?;
        if !valid.is_full() {
            let group = (0..e.group_count())
                .find(|g| !valid.contains(*g))
                .unwrap_or(0);
            return Err(StoreError::ImportMismatch { root, group });
        }
        e.mark_all(&(0..e.group_count()).collect::<Vec<_>>())?;
        e.sync()?;
        Ok(e)
    }

    /// Removes an artifact.
    pub fn remove(&self, root: &Hash) -> Result<(), StoreError> {
        if let Some(e) = self.lock().remove(root) {
            let trash = self.dir.join(format!(".{}.trash", root.to_hex()));
            fs::rename(&e.dir, &trash).map_err(io_err(&e.dir))?;
            fs::remove_dir_all(&trash).map_err(io_err(&trash))?;
        }
        Ok(())
    }
}

fn copy_at(src: &mut File, dst: &File, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shorter than the signed length",
            ));
        }
        let n = n.min((len - off) as usize);
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}
