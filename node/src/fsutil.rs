//! Crash-safe file writes: write a temporary file beside the target, fsync it, rename or link it
//! into place, fsync the directory. A reader sees the old file or the new one, never half of one.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
};

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` and any missing parents, fsyncing each new entry's parent so the folders survive a
/// power cut.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(up) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(up)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fsync_dir(parent_dir(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory so that a rename or a new entry in it survives a power cut.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A synced temporary file with `bytes` and permission `mode`, beside `path`.
fn synced_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".wardswarm-")
        .tempfile_in(parent_dir(path))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Writes `bytes` to a new file at `path` with permission `mode`, atomically, refusing to replace an
/// existing file (`io::ErrorKind::AlreadyExists`). Nothing is left behind on failure.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    synced_temp(path, bytes, mode)?
        .persist_noclobber(path)
        .map_err(|e| e.error)?;
    fsync_dir(parent_dir(path))
}

/// Replaces (or creates) `path` with `bytes` atomically, keeping `mode`.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    synced_temp(path, bytes, mode)?
        .persist(path)
        .map_err(|e| e.error)?;
    fsync_dir(parent_dir(path))
}

/// Reads a whole file, refusing (before reading it all) one larger than `max` bytes.
/// Returns `Ok(Err(len))` when the file is over the cap so callers can build their own error.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Result<Vec<u8>, u64>> {
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Ok(Err(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    // `take` guards against a file that grows between the stat and the read.
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Ok(Err(buf.len() as u64));
    }
    Ok(Ok(buf))
}

/// Opens a file the user named for reading, refusing anything but a regular file: a FIFO would
/// block the read until a writer appears (or forever), a device or a directory is not a document.
/// The open itself is non-blocking, so even a FIFO is refused at once.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a directory)",
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_not_read() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("fifo");
        // coreutils' mkfifo: libc's would need `unsafe`, which this workspace forbids.
        let made = std::process::Command::new("mkfifo").arg(&p).status()?;
        assert!(made.success(), "mkfifo failed");
        let e = read_capped(&p, 1024).expect_err("a FIFO");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(open_regular(d.path()).is_err(), "a directory");
        Ok(())
    }

    #[test]
    fn write_new_refuses_overwrite_and_sets_mode() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("k");
        write_new(&p, b"one", 0o600)?;
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        let err = write_new(&p, b"two", 0o600).expect_err("must refuse");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p)?, b"one");
        // No temporary files are left beside it.
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        replace(&p, b"three", 0o644)?;
        assert_eq!(fs::read(&p)?, b"three");
        assert!(matches!(read_capped(&p, 4)?, Err(5)));
        Ok(())
    }
}
