//! Installing a fetched artifact into the inactive slot: decode it (zstd, or a delta applied to the
//! committed slot, whose image is checked first), hash what is written, write the slot, read it back
//! and check the signed image hash. Errors say whether the release or this device is at fault.

use std::{
    fs::File,
    io::{self, Read},
    path::PathBuf,
};

#[cfg(feature = "test-faults")]
use std::time::Duration;

use super::{
    machine::Offer,
    slots::{SlotError, SlotId, Slots},
};
use crate::{
    hash::{hash_reader, Hash},
    manifest::{Compression, Kind},
    store::Store,
};

/// Wraps the decoded image before it is hashed and written (see `Agent::install_hook`).
pub(super) type SourceHook = Box<dyn FnOnce(Box<dyn Read>) -> Box<dyn Read> + Send>;

/// The `pause-install` test fault: creates `marker` once `at` bytes passed, then blocks for good,
/// so a test can kill the process mid-install at a known point.
#[cfg(feature = "test-faults")]
pub(super) struct PauseAt {
    inner: Box<dyn Read>,
    n: u64,
    at: u64,
    marker: PathBuf,
}

#[cfg(feature = "test-faults")]
impl PauseAt {
    /// Pauses `inner` once `at` bytes passed, after creating `marker`.
    pub(super) fn new(inner: Box<dyn Read>, at: u64, marker: PathBuf) -> Self {
        Self {
            inner,
            n: 0,
            at,
            marker,
        }
    }
}

#[cfg(feature = "test-faults")]
impl Read for PauseAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.n >= self.at {
            let _ = std::fs::write(&self.marker, b"");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        Ok(k)
    }
}

/// Why installing into the inactive slot failed. Every variant is a fault of this device or of the
/// artifact it verified: the install is retried only with another artifact or after a fix here.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("artifact {0} is not complete in the store")]
    NotStored(Hash),
    #[error("opening the artifact {path}: {cause}")]
    Open { path: PathBuf, cause: io::Error },
    #[error("zstd: {0}")]
    Zstd(io::Error),
    #[error("no committed image to apply a delta to")]
    NoBase,
    #[error("delta without a base image in its offer")]
    DeltaWithoutBase,
    #[error("{0}")]
    Delta(crate::delta::DeltaError),
    #[error("{0}")]
    Slot(SlotError),
    #[error("decoded image hashes to {actual}, the manifest says {expected}")]
    Decoded { actual: Hash, expected: Hash },
    #[error("reading slot {slot} back: {cause}")]
    ReadBack { slot: SlotId, cause: io::Error },
    #[error("slot {slot} reads back as {actual} ({length} bytes), the manifest says {expected} ({expected_length} bytes)")]
    Written {
        slot: SlotId,
        actual: Hash,
        length: u64,
        expected: Hash,
        expected_length: u64,
    },
}

impl InstallError {
    /// A fault of this device (disk full, I/O), not of the release: worth trying again later.
    pub fn is_local(&self) -> bool {
        match self {
            Self::NotStored(_)
            | Self::Open { .. }
            | Self::ReadBack { .. }
            | Self::Written { .. } => true,
            Self::Slot(SlotError::Source(e)) | Self::Zstd(e) => {
                e.kind() != io::ErrorKind::InvalidData
            }
            Self::Slot(_) => true,
            Self::Delta(crate::delta::DeltaError::Io(_)) => true,
            Self::Delta(_) | Self::NoBase | Self::DeltaWithoutBase | Self::Decoded { .. } => false,
        }
    }
}

/// Decodes the stored artifact into `slot`, then reads the slot back and checks the image's BLAKE3.
pub(super) fn install(
    store: &Store,
    slots: &dyn Slots,
    o: &Offer,
    slot: SlotId,
    base: Option<(SlotId, u64)>,
    hook: SourceHook,
) -> Result<(), InstallError> {
    let entry = store
        .get(&o.artifact)
        .filter(|e| e.is_complete())
        .ok_or(InstallError::NotStored(o.artifact))?;
    let path = entry.data_path();
    let open = || {
        File::open(&path).map_err(|cause| InstallError::Open {
            path: path.clone(),
            cause,
        })
    };
    let source: Box<dyn Read> = match o.kind {
        Kind::Full => match o.compression {
            Compression::Zstd => Box::new(zstd::Decoder::new(open()?).map_err(InstallError::Zstd)?),
            Compression::None => Box::new(open()?),
        },
        Kind::Delta => {
            let want = o.base.ok_or(InstallError::DeltaWithoutBase)?;
            // The base is the committed slot; check it is the image the delta was made from
            // before anything is written.
            let (base_slot, base_len) = base.ok_or(InstallError::NoBase)?;
            let mut b = slots.open_seek(base_slot).map_err(InstallError::Slot)?;
            crate::delta::check_base(&mut b, base_len, &want).map_err(InstallError::Delta)?;
            open()?;
            Box::new(
                crate::delta::apply(|| File::open(&path), b, o.target_length)
                    .map_err(InstallError::Delta)?,
            )
        }
    };
    let mut h = Hashing {
        inner: hook(source),
        hasher: blake3::Hasher::new(),
    };
    slots
        .write(slot, &mut h, o.target_length)
        .map_err(InstallError::Slot)?;
    let streamed: Hash = h.hasher.finalize().into();
    if streamed != o.target {
        return Err(InstallError::Decoded {
            actual: streamed,
            expected: o.target,
        });
    }
    // Read back what the slot holds: catches a write the storage silently got wrong.
    let (written, n) = hash_reader(
        slots
            .open(slot, o.target_length)
            .map_err(InstallError::Slot)?,
    )
    .map_err(|cause| InstallError::ReadBack { slot, cause })?;
    if written != o.target || n != o.target_length {
        return Err(InstallError::Written {
            slot,
            actual: written,
            length: n,
            expected: o.target,
            expected_length: o.target_length,
        });
    }
    Ok(())
}
