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

/// An empty temporary file with permission `mode`, beside `path`.
fn temp_beside(path: &Path, mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(".wardswarm-")
        .tempfile_in(parent_dir(path))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(tmp)
}

/// Writes `bytes` to a new file at `path` with permission `mode`, atomically, refusing to replace an
/// existing file (`io::ErrorKind::AlreadyExists`). Nothing is left behind on failure.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = NewFile::create(path, mode)?;
    f.write_all(bytes)?;
    f.commit().map(drop)
}

/// Replaces (or creates) `path` with `bytes` atomically, keeping `mode`.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = temp_beside(path, mode)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(parent_dir(path))
}

/// A new file written as a stream, crash-safe: the bytes go to a temporary file beside `path`, which
/// [`NewFile::commit`] fsyncs and links into place only if nothing is at `path` by then, then fsyncs
/// the directory. Dropped without `commit` (an error, a panic), the temporary file is removed: a
/// reader never finds half an output at `path`. After a kill -9 a hidden `.wardswarm-*` file may
/// remain beside it, never at `path`.
#[derive(Debug)]
pub struct NewFile {
    path: std::path::PathBuf,
    w: io::BufWriter<tempfile::NamedTempFile>,
}

impl NewFile {
    /// Starts a new file at `path`, refusing at once if something is there already
    /// (`io::ErrorKind::AlreadyExists`), before any work goes into its bytes.
    pub fn create(path: &Path, mode: u32) -> io::Result<Self> {
        if fs::symlink_metadata(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the output exists; remove it or choose another path",
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            w: io::BufWriter::with_capacity(1 << 20, temp_beside(path, mode)?),
        })
    }

    /// Flushes and fsyncs the bytes, puts them at the path (refusing to replace a file that appeared
    /// there meanwhile) and fsyncs the directory. Returns the file's length.
    pub fn commit(self) -> io::Result<u64> {
        let tmp = self.w.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        let len = tmp.as_file().metadata()?.len();
        tmp.persist_noclobber(&self.path).map_err(|e| e.error)?;
        fsync_dir(parent_dir(&self.path))?;
        Ok(len)
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.w.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
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

/// Reads a whole file the user named, refusing anything but a regular file ([`open_regular`]):
/// an image or a delta, read whole where the work needs it all at once.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = open_regular(path)?;
    let mut buf = Vec::with_capacity(f.metadata()?.len() as usize);
    f.read_to_end(&mut buf)?;
    Ok(buf)
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

/// Memory, offset and length alignment for direct I/O (`O_DIRECT`): 4 KiB serves devices with
/// 512-byte and with 4 KiB logical blocks.
pub const DIRECT_ALIGN: usize = 4096;

/// A zeroed buffer whose start is aligned to [`DIRECT_ALIGN`], for direct I/O.
#[derive(Debug)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        Self { raw, start, len }
    }
    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
    /// The aligned bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Opens an existing file or block device for direct I/O (`O_DIRECT`), or `None` where its file
/// system refuses it (tmpfs, some FUSE and network file systems): callers then use the page cache.
pub fn open_direct(path: &Path, write: bool) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Whether an error is direct I/O refused (misaligned for this device, or not supported here), so
/// the same bytes may go through the page cache instead.
pub fn direct_refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Writes an image from its start, whole [`DIRECT_ALIGN`] blocks past the page cache where the file
/// system allows it: an install neither copies the image through the page cache nor evicts the
/// running system's cached files to make room for it (on a device with little memory, the clinical
/// application's). A tail shorter than a block, and everything on a file system without direct
/// I/O, goes through `file`. Durable only after `file.sync_all()`, which flushes both.
#[derive(Debug)]
pub struct ImageWriter<'a> {
    file: &'a File,
    direct: Option<File>,
    at: u64,
    direct_bytes: u64,
}

impl<'a> ImageWriter<'a> {
    /// A writer into `file` (opened for writing, at `path`) from offset 0.
    pub fn new(file: &'a File, path: &Path) -> Self {
        Self {
            file,
            direct: open_direct(path, true),
            at: 0,
            direct_bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.at
    }

    /// Bytes written past the page cache.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    /// Writes `data` at the current offset. `data` comes from an [`AlignedBuf`]; only the image's last
    /// piece may be a length that is not a whole number of blocks.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.at.is_multiple_of(DIRECT_ALIGN as u64) {
            // An earlier piece ended mid-block: no more direct writes.
            self.direct = None;
        }
        while let Some(d) = &self.direct {
            let whole = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
            if whole == 0 {
                break;
            }
            match d.write_at(&data[..whole], self.at) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the device took no more bytes",
                    ))
                }
                Ok(n) => {
                    self.at += n as u64;
                    self.direct_bytes += n as u64;
                    data = &data[n..];
                    if !n.is_multiple_of(DIRECT_ALIGN) {
                        self.direct = None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if direct_refused(&e) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(data, self.at)?;
        self.at += data.len() as u64;
        Ok(())
    }
}

/// Reads a file or block device from its start, past the page cache where its file system allows
/// it: a check that reads back what an install wrote then reads the medium, not the page cache's
/// copy of what was written, and fills no cache with it.
#[derive(Debug)]
pub struct DirectReader {
    plain: File,
    direct: Option<File>,
    buf: AlignedBuf,
    filled: usize,
    at: usize,
    offset: u64,
}

impl DirectReader {
    /// Buffer of each direct read.
    const BUF: usize = 1 << 20;

    /// Opens `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            plain: File::open(path)?,
            direct: open_direct(path, false),
            buf: AlignedBuf::new(Self::BUF),
            filled: 0,
            at: 0,
            offset: 0,
        })
    }

    fn refill(&mut self) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            let r = match &self.direct {
                Some(d) => d.read_at(self.buf.as_mut_slice(), self.offset),
                None => self.plain.read_at(self.buf.as_mut_slice(), self.offset),
            };
            match r {
                Ok(n) => {
                    if !n.is_multiple_of(DIRECT_ALIGN) {
                        // Short of a whole block: the end (or a device that reads in odd
                        // pieces); what follows, if anything, is read through the page cache.
                        self.direct = None;
                    }
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct.is_some() && direct_refused(&e) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.filled {
            self.filled = self.refill()?;
            self.at = 0;
        }
        let n = out.len().min(self.filled - self.at);
        out[..n].copy_from_slice(&self.buf.as_slice()[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
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
        let e = read_regular(&p).expect_err("a FIFO");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(read_regular(d.path()).is_err(), "a directory");
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

    #[test]
    fn a_new_file_appears_whole_on_commit_and_not_at_all_otherwise() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("out");
        // Dropped before commit (as on an error): nothing at the path, nothing left beside it.
        {
            let mut f = NewFile::create(&p, 0o644)?;
            f.write_all(&[7u8; 3 << 20])?;
            assert!(!p.exists(), "no half output while it is written");
        }
        assert!(!p.exists());
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            0,
            "the temporary file is removed"
        );
        // Committed: all of it, with its mode.
        let mut f = NewFile::create(&p, 0o640)?;
        f.write_all(b"whole")?;
        assert_eq!(f.commit()?, 5);
        assert_eq!(fs::read(&p)?, b"whole");
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o640);
        // An existing output is refused before any work, and kept.
        let e = NewFile::create(&p, 0o644).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        // A file that appears while the new one is written is not replaced.
        let q = dir.path().join("raced");
        let mut f = NewFile::create(&q, 0o644)?;
        f.write_all(b"mine")?;
        fs::write(&q, b"theirs")?;
        assert_eq!(
            f.commit().expect_err("raced").kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&q)?, b"theirs");
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            2,
            "out and raced, no temporary"
        );
        Ok(())
    }

    /// An empty file at `p`, open for writing, as the slot backends open one.
    fn new_file(p: &Path) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(p)
    }

    #[test]
    fn an_image_written_and_read_back_past_the_page_cache_is_the_same_bytes() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        // Lengths around block and buffer boundaries, pieces of a whole buffer and a tail.
        for len in [0usize, 1, 4095, 4096, 4097, (1 << 20) + 513, 3 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let p = d.path().join(format!("img-{len}"));
            let f = new_file(&p)?;
            let mut w = ImageWriter::new(&f, &p);
            let mut buf = AlignedBuf::new(1 << 20);
            for piece in data.chunks(1 << 20) {
                buf.as_mut_slice()[..piece.len()].copy_from_slice(piece);
                w.write(&buf.as_slice()[..piece.len()])?;
            }
            assert_eq!(w.written(), len as u64);
            if open_direct(&p, true).is_some() {
                let whole = (len / DIRECT_ALIGN * DIRECT_ALIGN) as u64;
                assert_eq!(
                    w.direct_bytes(),
                    whole,
                    "{len} bytes: whole blocks go direct"
                );
            }
            f.sync_all()?;
            assert_eq!(fs::read(&p)?, data, "{len} bytes written");
            let mut back = Vec::new();
            let mut r = DirectReader::open(&p)?;
            r.read_to_end(&mut back)?;
            assert_eq!(back, data, "{len} bytes read back");
        }
        Ok(())
    }

    #[test]
    fn an_unaligned_piece_ends_direct_writes_and_the_rest_still_lands() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("img");
        let f = new_file(&p)?;
        let mut w = ImageWriter::new(&f, &p);
        let mut buf = AlignedBuf::new(3 * DIRECT_ALIGN);
        let data: Vec<u8> = (0..3 * DIRECT_ALIGN).map(|i| (i % 251) as u8).collect();
        buf.as_mut_slice().copy_from_slice(&data);
        // A caller that breaks the contract (a mid-block piece before the last) still gets its
        // bytes where they belong, through the page cache.
        w.write(&buf.as_slice()[..100])?;
        w.write(&buf.as_slice()[100..])?;
        assert_eq!(
            w.direct_bytes(),
            0,
            "nothing direct after a piece that is not whole blocks"
        );
        f.sync_all()?;
        assert_eq!(fs::read(&p)?, data);
        Ok(())
    }
}
