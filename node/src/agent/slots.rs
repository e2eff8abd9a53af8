//! A/B slots behind one trait, with two backends.
//!
//! * [`FileSlots`]: two image files and a small boot-state file that imitates a bootloader's
//!   boot-once logic (U-Boot's `bootcount`/`upgrade_available`, GRUB's `next_entry`). A "reboot" is a
//!   restart of the agent: [`Slots::boot`] plays the bootloader. For development, simulation and tests.
//! * [`BlockSlots`]: two block devices (or any files) written past the page cache and fsynced, and the boot
//!   switch done by configured shell commands, e.g. U-Boot's `fw_setenv` or GRUB's `grub-editenv`
//!   (see `docs/examples/device.toml`).
//!
//! The one rule both keep: the committed slot is never written. Only the other slot is, and it becomes
//! the committed slot only by [`Slots::commit`] after a health check passed in it.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read},
    path::{Path, PathBuf},
    process::Command,
};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotId {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl SlotId {
    /// The other slot.
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
    /// `a` or `b`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

impl std::fmt::Display for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SlotId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "a" | "A" => Ok(Self::A),
            "b" | "B" => Ok(Self::B),
            o => Err(format!("slot {o:?} is neither a nor b")),
        }
    }
}

/// What the bootloader did at the last boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// The slot running now.
    pub booted: SlotId,
    /// The committed slot (the bootloader's fallback).
    pub committed: SlotId,
}

/// A slot operation failed on this device.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot I/O on {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("boot command `{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("boot state {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("refusing to write slot {0}: it is the committed slot")]
    Committed(SlotId),
    #[error("image for slot {slot} is {actual} bytes, {expected} were expected")]
    Length {
        slot: SlotId,
        expected: u64,
        actual: u64,
    },
    #[error("image source: {0}")]
    Source(io::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SlotError + '_ {
    move |source| SlotError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

/// What a reboot does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// The backend cannot reboot the machine: the agent restarts itself (file backend).
    Simulated,
    /// The reboot command ran; the process will be killed by the shutdown.
    Requested,
}

/// A seekable reader (a slot read as a delta's base).
pub trait ReadSeek: Read + io::Seek + Send {}
impl<T: Read + io::Seek + Send> ReadSeek for T {}

/// The A/B slot backend. Every method is blocking; the agent calls them off the async runtime.
pub trait Slots: Send + Sync + std::fmt::Debug {
    /// Plays (file backend) or reads (block backend) the bootloader's decision for this boot.
    /// Called once per (simulated) boot, before anything else.
    fn boot(&self) -> Result<BootState, SlotError>;
    /// Writes an image of exactly `length` bytes into `slot` (never the committed one) and makes it
    /// durable. Returns the bytes written. Both backends write past the page cache (`O_DIRECT`)
    /// where the file system allows it ([`fsutil::ImageWriter`]).
    fn write(&self, slot: SlotId, image: &mut dyn Read, length: u64) -> Result<u64, SlotError>;
    /// The size of what `slot` holds (file length, or the block device's size).
    fn size(&self, slot: SlotId) -> Result<u64, SlotError>;
    /// Reads back `length` bytes of `slot`, for verification after writing: past the page cache
    /// where the file system allows it, so the check reads the medium ([`fsutil::DirectReader`]).
    fn open(&self, slot: SlotId, length: u64) -> Result<Box<dyn Read + Send>, SlotError>;
    /// Opens `slot` for random access (a delta reads its base from the committed slot).
    fn open_seek(&self, slot: SlotId) -> Result<Box<dyn ReadSeek>, SlotError>;
    /// Boots `slot` once at the next boot; if that boot does not commit, the bootloader falls back.
    fn activate_once(&self, slot: SlotId) -> Result<(), SlotError>;
    /// Makes `slot` the committed slot (idempotent).
    fn commit(&self, slot: SlotId) -> Result<(), SlotError>;
    /// Cancels any pending try-boot so the next boot runs the committed slot (idempotent).
    fn rollback(&self) -> Result<(), SlotError>;
    /// Reboots.
    fn reboot(&self) -> Result<Reboot, SlotError>;
}

/// Copies exactly `length` bytes from `image` into the slot `out` (at `path`), from its start: whole
/// blocks past the page cache where the file system allows it ([`fsutil::ImageWriter`]). The caller
/// syncs `out`.
fn copy_exact(
    slot: SlotId,
    image: &mut dyn Read,
    out: &File,
    length: u64,
    path: &Path,
) -> Result<u64, SlotError> {
    let mut buf = fsutil::AlignedBuf::new(1 << 20);
    let mut w = fsutil::ImageWriter::new(out, path);
    let mut n = 0u64;
    loop {
        // Fill the buffer whole (a source may return short reads) so every piece but the last is
        // whole blocks.
        let mut k = 0;
        let room = buf.as_mut_slice();
        while k < room.len() {
            match image.read(&mut room[k..]) {
                Ok(0) => break,
                Ok(r) => k += r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SlotError::Source(e)),
            }
        }
        if k == 0 {
            break;
        }
        n += k as u64;
        if n > length {
            return Err(SlotError::Length {
                slot,
                expected: length,
                actual: n,
            });
        }
        w.write(&buf.as_slice()[..k]).map_err(io_at(path))?;
        if k < buf.as_slice().len() {
            break;
        }
    }
    if n != length {
        return Err(SlotError::Length {
            slot,
            expected: length,
            actual: n,
        });
    }
    Ok(n)
}

/// The file backend's boot-state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootFile {
    committed: SlotId,
    /// Slot to try at the next boot(s).
    try_slot: Option<SlotId>,
    /// Boots left for `try_slot` before falling back.
    tries_left: u8,
    /// What the last boot ran.
    booted: SlotId,
}

/// Two image files and a boot-state file in one folder: `slot-a.img`, `slot-b.img`, `boot.json`.
#[derive(Debug, Clone)]
pub struct FileSlots {
    dir: PathBuf,
}

impl FileSlots {
    /// The slots in `dir`. A device starts with a factory image in `slot-a.img` (see [`Self::provision`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// Writes a factory image into slot A and commits it, as a production line would.
    pub fn provision(dir: &Path, image: &[u8]) -> Result<Self, SlotError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let s = Self::new(dir);
        let p = s.image_path(SlotId::A);
        fsutil::replace(&p, image, 0o644).map_err(io_at(&p))?;
        s.save(&BootFile {
            committed: SlotId::A,
            try_slot: None,
            tries_left: 0,
            booted: SlotId::A,
        })?;
        Ok(s)
    }
    /// The image file of a slot.
    pub fn image_path(&self, slot: SlotId) -> PathBuf {
        self.dir.join(format!("slot-{slot}.img"))
    }
    fn boot_path(&self) -> PathBuf {
        self.dir.join("boot.json")
    }
    fn load(&self) -> Result<BootFile, SlotError> {
        let p = self.boot_path();
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // First start: the factory image in slot A is the committed one.
                let a = self.image_path(SlotId::A);
                if !a.is_file() {
                    return Err(SlotError::Io {
                        path: a,
                        cause: io::Error::new(
                            io::ErrorKind::NotFound,
                            "no factory image: put the provisioned image in slot-a.img",
                        ),
                    });
                }
                let b = BootFile {
                    committed: SlotId::A,
                    try_slot: None,
                    tries_left: 0,
                    booted: SlotId::A,
                };
                self.save(&b)?;
                return Ok(b);
            }
            Err(e) => return Err(SlotError::Io { path: p, cause: e }),
        };
        serde_json::from_slice(&bytes).map_err(|e| SlotError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }
    fn save(&self, b: &BootFile) -> Result<(), SlotError> {
        let p = self.boot_path();
        let mut bytes = serde_json::to_vec(b).map_err(|e| SlotError::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        fsutil::replace(&p, &bytes, 0o644).map_err(io_at(&p))
    }
}

impl Slots for FileSlots {
    fn boot(&self) -> Result<BootState, SlotError> {
        let mut b = self.load()?;
        b.booted = match b.try_slot {
            Some(s) if b.tries_left > 0 => {
                b.tries_left -= 1;
                s
            }
            Some(_) => {
                // Tries used up without a commit: the bootloader falls back.
                b.try_slot = None;
                b.committed
            }
            None => b.committed,
        };
        self.save(&b)?;
        Ok(BootState {
            booted: b.booted,
            committed: b.committed,
        })
    }

    fn write(&self, slot: SlotId, image: &mut dyn Read, length: u64) -> Result<u64, SlotError> {
        let b = self.load()?;
        if slot == b.committed {
            return Err(SlotError::Committed(slot));
        }
        let p = self.image_path(slot);
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&p)
            .map_err(io_at(&p))?;
        let n = copy_exact(slot, image, &f, length, &p)?;
        f.sync_all().map_err(io_at(&p))?;
        Ok(n)
    }

    fn size(&self, slot: SlotId) -> Result<u64, SlotError> {
        let p = self.image_path(slot);
        fs::metadata(&p).map(|m| m.len()).map_err(io_at(&p))
    }

    fn open(&self, slot: SlotId, length: u64) -> Result<Box<dyn Read + Send>, SlotError> {
        let p = self.image_path(slot);
        let f = fsutil::DirectReader::open(&p).map_err(io_at(&p))?;
        Ok(Box::new(f.take(length)))
    }

    fn open_seek(&self, slot: SlotId) -> Result<Box<dyn ReadSeek>, SlotError> {
        let p = self.image_path(slot);
        let f = File::open(&p).map_err(io_at(&p))?;
        Ok(Box::new(io::BufReader::with_capacity(
            crate::delta::BASE_BUFFER,
            f,
        )))
    }

    fn activate_once(&self, slot: SlotId) -> Result<(), SlotError> {
        let mut b = self.load()?;
        if slot == b.committed {
            return Err(SlotError::Committed(slot));
        }
        b.try_slot = Some(slot);
        b.tries_left = 1;
        self.save(&b)
    }

    fn commit(&self, slot: SlotId) -> Result<(), SlotError> {
        let mut b = self.load()?;
        b.committed = slot;
        b.try_slot = None;
        b.tries_left = 0;
        self.save(&b)
    }

    fn rollback(&self) -> Result<(), SlotError> {
        let mut b = self.load()?;
        b.try_slot = None;
        b.tries_left = 0;
        self.save(&b)
    }

    fn reboot(&self) -> Result<Reboot, SlotError> {
        Ok(Reboot::Simulated)
    }
}

/// Shell commands that drive a real bootloader. `{slot}` is replaced by `a` or `b`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootCommands {
    /// Prints the slot running now (`a` or `b`).
    pub booted: String,
    /// Prints the committed slot (`a` or `b`).
    pub committed: String,
    /// Sets `{slot}` to boot once (e.g. `fw_setenv boot_slot {slot} upgrade_available 1 bootcount 0`).
    pub activate_once: String,
    /// Makes `{slot}` the committed slot (e.g. `fw_setenv committed_slot {slot} upgrade_available 0`).
    pub commit: String,
    /// Cancels a pending try-boot.
    pub rollback: String,
    /// Reboots the machine.
    pub reboot: String,
}

/// Two block devices (or files) and a bootloader driven by [`BootCommands`].
#[derive(Debug, Clone)]
pub struct BlockSlots {
    /// Device of slot A, e.g. `/dev/mmcblk0p2`.
    pub a: PathBuf,
    /// Device of slot B, e.g. `/dev/mmcblk0p3`.
    pub b: PathBuf,
    /// The bootloader commands.
    pub commands: BootCommands,
}

fn run(template: &str, slot: Option<SlotId>) -> Result<String, SlotError> {
    let cmd = match slot {
        Some(s) => template.replace("{slot}", s.as_str()),
        None => template.to_string(),
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .map_err(|e| SlotError::Command {
            command: cmd.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SlotError::Command {
            command: cmd,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl BlockSlots {
    fn device(&self, slot: SlotId) -> &Path {
        match slot {
            SlotId::A => &self.a,
            SlotId::B => &self.b,
        }
    }
    fn slot_of(&self, template: &str) -> Result<SlotId, SlotError> {
        let out = run(template, None)?;
        out.parse().map_err(|reason| SlotError::Command {
            command: template.into(),
            reason,
        })
    }
}

impl Slots for BlockSlots {
    fn boot(&self) -> Result<BootState, SlotError> {
        Ok(BootState {
            booted: self.slot_of(&self.commands.booted)?,
            committed: self.slot_of(&self.commands.committed)?,
        })
    }

    fn write(&self, slot: SlotId, image: &mut dyn Read, length: u64) -> Result<u64, SlotError> {
        if slot == self.slot_of(&self.commands.committed)? {
            return Err(SlotError::Committed(slot));
        }
        let p = self.device(slot);
        // A block device is not truncated; a regular file (for tests) is.
        let is_file = fs::metadata(p).map(|m| m.is_file()).unwrap_or(true);
        let f = OpenOptions::new()
            .create(is_file)
            .write(true)
            .truncate(is_file)
            .open(p)
            .map_err(io_at(p))?;
        let n = copy_exact(slot, image, &f, length, p)?;
        f.sync_all().map_err(io_at(p))?;
        Ok(n)
    }

    fn size(&self, slot: SlotId) -> Result<u64, SlotError> {
        use std::io::Seek;
        let p = self.device(slot);
        let mut f = File::open(p).map_err(io_at(p))?;
        f.seek(io::SeekFrom::End(0)).map_err(io_at(p))
    }

    fn open(&self, slot: SlotId, length: u64) -> Result<Box<dyn Read + Send>, SlotError> {
        let p = self.device(slot);
        let f = fsutil::DirectReader::open(p).map_err(io_at(p))?;
        Ok(Box::new(f.take(length)))
    }

    fn open_seek(&self, slot: SlotId) -> Result<Box<dyn ReadSeek>, SlotError> {
        let p = self.device(slot);
        let f = File::open(p).map_err(io_at(p))?;
        Ok(Box::new(io::BufReader::with_capacity(
            crate::delta::BASE_BUFFER,
            f,
        )))
    }

    fn activate_once(&self, slot: SlotId) -> Result<(), SlotError> {
        run(&self.commands.activate_once, Some(slot)).map(drop)
    }

    fn commit(&self, slot: SlotId) -> Result<(), SlotError> {
        run(&self.commands.commit, Some(slot)).map(drop)
    }

    fn rollback(&self) -> Result<(), SlotError> {
        run(&self.commands.rollback, None).map(drop)
    }

    fn reboot(&self) -> Result<Reboot, SlotError> {
        run(&self.commands.reboot, None).map(|_| Reboot::Requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_slots_boot_once_then_fall_back() -> Result<(), SlotError> {
        let d = tempfile::tempdir().map_err(SlotError::Source)?;
        // A folder with only a factory image starts committed on slot A; an empty one is an error.
        let bare = FileSlots::new(d.path().join("bare"));
        assert!(bare.boot().is_err());
        fs::create_dir_all(d.path().join("bare")).map_err(SlotError::Source)?;
        fs::write(bare.image_path(SlotId::A), b"img").map_err(SlotError::Source)?;
        assert_eq!(bare.boot()?.committed, SlotId::A);
        let s = FileSlots::provision(d.path(), b"factory")?;
        assert_eq!(s.boot()?.booted, SlotId::A);
        assert!(matches!(
            s.write(SlotId::A, &mut &b"x"[..], 1),
            Err(SlotError::Committed(SlotId::A))
        ));
        s.write(SlotId::B, &mut &b"new"[..], 3)?;
        assert!(matches!(
            s.write(SlotId::B, &mut &b"toolong"[..], 3),
            Err(SlotError::Length { .. })
        ));
        s.write(SlotId::B, &mut &b"new"[..], 3)?;
        s.activate_once(SlotId::B)?;
        assert_eq!(s.boot()?.booted, SlotId::B, "first boot tries B");
        let st = s.boot()?;
        assert_eq!(
            (st.booted, st.committed),
            (SlotId::A, SlotId::A),
            "no commit: the second boot falls back to A"
        );
        s.activate_once(SlotId::B)?;
        assert_eq!(s.boot()?.booted, SlotId::B);
        s.commit(SlotId::B)?;
        let st = s.boot()?;
        assert_eq!((st.booted, st.committed), (SlotId::B, SlotId::B));
        let mut back = String::new();
        s.open(SlotId::B, 3)?
            .read_to_string(&mut back)
            .map_err(SlotError::Source)?;
        assert_eq!(back, "new");
        Ok(())
    }

    #[test]
    fn block_slots_drive_the_configured_commands() -> Result<(), SlotError> {
        // A fake bootloader environment in a folder, as fw_setenv would keep it.
        let d = tempfile::tempdir().map_err(SlotError::Source)?;
        let env = d.path().display().to_string();
        fs::write(d.path().join("boot_slot"), "a").map_err(SlotError::Source)?;
        fs::write(d.path().join("committed"), "a").map_err(SlotError::Source)?;
        let s = BlockSlots {
            a: d.path().join("p2"),
            b: d.path().join("p3"),
            commands: BootCommands {
                booted: format!("cat {env}/boot_slot"),
                committed: format!("cat {env}/committed"),
                activate_once: format!("printf {{slot}} > {env}/boot_slot"),
                commit: format!("printf {{slot}} > {env}/committed"),
                rollback: format!("cp {env}/committed {env}/boot_slot"),
                reboot: "true".into(),
            },
        };
        assert!(matches!(
            s.write(SlotId::A, &mut &b"x"[..], 1),
            Err(SlotError::Committed(SlotId::A))
        ));
        s.write(SlotId::B, &mut &b"image"[..], 5)?;
        s.activate_once(SlotId::B)?;
        assert_eq!(s.boot()?.booted, SlotId::B);
        s.commit(SlotId::B)?;
        assert_eq!(s.boot()?.committed, SlotId::B);
        assert_eq!(s.reboot()?, Reboot::Requested);
        let bad = BlockSlots {
            commands: BootCommands {
                activate_once: "exit 3".into(),
                ..s.commands.clone()
            },
            ..s.clone()
        };
        assert!(matches!(
            bad.activate_once(SlotId::A),
            Err(SlotError::Command { .. })
        ));
        Ok(())
    }
}
