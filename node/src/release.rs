//! Release directories: build (atomically, in bounded memory), verify, summarise.
//!
//! Layout of a release directory:
//!
//! ```text
//! DIR/manifest.json          the signed manifest (canonical bytes)
//! DIR/artifacts/<root-hex>   each artifact's bytes (the full image, zstd-compressed)
//! DIR/artifacts/<root-hex>.obao   its bao outboard: pre-order, 16 KiB chunk groups, no length prefix
//! ```
//!
//! `build` writes everything into a hidden temporary directory beside `DIR`, fsyncs it, checks it with
//! the same code `verify` uses, and renames it to `DIR` at the end: a failure (a bad input, a full disk)
//! leaves nothing at `DIR`, and the temporary directory is removed. Only a kill -9 during a build can
//! leave a hidden `.DIR.partial-*` directory behind, which is never mistaken for a release.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use crate::{
    fsutil,
    hash::Hash,
    keys::SecretKey,
    manifest::{
        Artifact, ArtifactKind, Compression, Manifest, ManifestError, SignedManifest, Target,
    },
    outboard::{self, ArtifactError},
    root::{RootError, TrustRoot},
    time::Timestamp,
};

/// File name of the manifest inside a release directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Folder of artifacts inside a release directory.
pub const ARTIFACTS_DIR: &str = "artifacts";
/// Suffix of an outboard file.
pub const OUTBOARD_SUFFIX: &str = ".obao";

/// I/O block for streaming images: large enough for throughput, small enough to bound memory.
const IO_BLOCK: usize = 1 << 20;

/// A release failed to build or to verify: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {fault}", path.display())]
pub struct ReleaseError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub fault: Fault,
}

/// The fault behind a [`ReleaseError`].
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("already exists; refusing to overwrite a release")]
    Exists,
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("release {version} expired at {expires}")]
    Expired { version: String, expires: Timestamp },
    #[error("decompressed image is {0}")]
    Target(String),
    #[error("{0}")]
    Invalid(String),
}

fn err(path: impl Into<PathBuf>, fault: impl Into<Fault>) -> ReleaseError {
    ReleaseError {
        path: path.into(),
        fault: fault.into(),
    }
}

/// What `build` needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The new image.
    pub target: PathBuf,
    /// Product name.
    pub product: String,
    /// Hardware ids.
    pub hardware: Vec<String>,
    /// Human version.
    pub version: String,
    /// Release counter.
    pub counter: u64,
    /// Build time (written as `created`).
    pub created: Timestamp,
    /// Expiry.
    pub expires: Timestamp,
    /// Release keys that sign the manifest.
    pub keys: Vec<SecretKey>,
    /// The release directory to create.
    pub out: PathBuf,
    /// zstd level for the full image (1 to 19); higher is smaller and slower.
    pub zstd_level: i32,
    /// zstd worker threads (0 = compress on the calling thread).
    pub zstd_workers: u32,
    /// If given, the manifest must meet this root's release threshold before anything is written.
    pub root: Option<TrustRoot>,
    /// Older images to publish deltas from (one delta artifact per base, when it pays).
    pub bases: Vec<PathBuf>,
    /// How the deltas are written: [`Codec::MODELED`](crate::delta::Codec::MODELED) (format 4 where
    /// it pays), or an older format for a fleet whose agents predate it (`docs/deltas.md`).
    pub delta_codec: crate::delta::Codec,
    /// Which formats past 4 deltas may be, where they apply and are smaller
    /// ([`Methods`](crate::delta::Methods)): format 5 (gzip streams diffed inflated) for agents from
    /// format 5 on, format 6 (LZMA2 against the base) for agents from format 6 on.
    pub delta_methods: crate::delta::Methods,
}

/// A delta is published only when it is at most this fraction of the compressed full image; otherwise
/// devices on that base take the full image.
pub const DELTA_MAX_FRACTION: f64 = 0.9;

/// Figures from a build.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The signed manifest written.
    pub manifest: SignedManifest,
    /// Seconds spent.
    pub seconds: f64,
}

/// Builds a release directory atomically. See the module docs.
pub fn build(req: &BuildRequest) -> Result<BuildReport, ReleaseError> {
    let start = Instant::now();
    if req.keys.is_empty() {
        return Err(err(
            &req.out,
            Fault::Invalid("at least one release key (--key) is needed to sign".into()),
        ));
    }
    if fs::symlink_metadata(&req.out).is_ok() {
        return Err(err(&req.out, Fault::Exists));
    }
    let parent = fsutil::parent_dir(&req.out);
    // `--out origin/releases/4.2.1` in a fresh folder: make the folders it names.
    fsutil::create_dirs(parent).map_err(|e| err(parent, e))?;
    let name = req
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "release".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(parent)
        .map_err(|e| err(parent, e))?;
    let art_dir = tmp.path().join(ARTIFACTS_DIR);
    fs::create_dir(&art_dir).map_err(|e| err(&art_dir, e))?;

    // 1. Stream the image once: hash it and compress it.
    let partial = art_dir.join(".full.partial");
    let (target, full_len) = compress_and_hash(req, &partial)?;

    // 2. Outboard of the compressed artifact, then content-addressed names.
    let (root, ob_path) = write_outboard(&partial, full_len, &art_dir)?;
    let data_path = art_dir.join(root.to_hex());
    fs::rename(&partial, &data_path).map_err(|e| err(&data_path, e))?;
    fs::rename(
        &ob_path,
        art_dir.join(format!("{}{OUTBOARD_SUFFIX}", root.to_hex())),
    )
    .map_err(|e| err(&ob_path, e))?;

    // 2b. Deltas from older images, each only if clearly smaller than the full artifact.
    let mut artifacts = vec![Artifact {
        kind: ArtifactKind::Full,
        compression: Compression::Zstd,
        length: full_len,
        root,
    }];
    if !req.bases.is_empty() {
        let t = &req.target;
        let new = fsutil::read_regular(t).map_err(|e| err(t, e))?;
        for b in &req.bases {
            if let Some(a) = build_delta(
                req.delta_codec,
                req.delta_methods,
                b,
                &new,
                &target,
                full_len,
                &art_dir,
            )? {
                artifacts.push(a);
            }
        }
    }

    // 3. The signed manifest.
    let manifest = Manifest {
        product: req.product.clone(),
        hardware: req.hardware.clone(),
        version: req.version.clone(),
        counter: req.counter,
        created: req.created,
        expires: req.expires,
        target,
        artifacts,
    };
    let mpath = req.out.join(MANIFEST_FILE);
    let mut sm = SignedManifest::new(manifest).map_err(|e| err(&mpath, e))?;
    for k in &req.keys {
        sm.sign(k);
    }
    if let Some(r) = &req.root {
        sm.check_signatures(r).map_err(|e| err(&mpath, e))?;
    }
    let tmp_manifest = tmp.path().join(MANIFEST_FILE);
    write_synced(&tmp_manifest, &sm.to_bytes()).map_err(|e| err(&mpath, e))?;

    // 4. Check the result with the verifier before publishing it (catches disk and code faults).
    verify_dir(tmp.path(), req.root.as_ref(), None).map_err(|e| ReleaseError {
        path: req
            .out
            .join(e.path.strip_prefix(tmp.path()).unwrap_or(&e.path)),
        fault: e.fault,
    })?;

    // 5. Publish: fsync the tree, rename into place, fsync the parent.
    fsutil::fsync_dir(&art_dir).map_err(|e| err(&art_dir, e))?;
    fsutil::fsync_dir(tmp.path()).map_err(|e| err(tmp.path(), e))?;
    let tmp_path = tmp.keep();
    if fs::symlink_metadata(&req.out).is_ok() {
        let _ = fs::remove_dir_all(&tmp_path);
        return Err(err(&req.out, Fault::Exists));
    }
    if let Err(e) = fs::rename(&tmp_path, &req.out) {
        let _ = fs::remove_dir_all(&tmp_path);
        return Err(err(&req.out, e));
    }
    fsutil::fsync_dir(parent).map_err(|e| err(parent, e))?;
    Ok(BuildReport {
        manifest: sm,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Builds the delta from one base into `art_dir`; `None` when it would not pay (or the base is the
/// target, or another base with the same bytes came first).
fn build_delta(
    codec: crate::delta::Codec,
    methods: crate::delta::Methods,
    base_path: &Path,
    new: &[u8],
    target: &Target,
    full_len: u64,
    art_dir: &Path,
) -> Result<Option<Artifact>, ReleaseError> {
    let old = fsutil::read_regular(base_path).map_err(|e| err(base_path, e))?;
    let base = Hash::of(&old);
    if base == target.hash {
        return Ok(None);
    }
    let partial = art_dir.join(".delta.partial");
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| err(&partial, e))?;
    let mut w = io::BufWriter::with_capacity(IO_BLOCK, file);
    // The base is given up (a large pair's format-5 delta expands it in place); the target
    // serves every base.
    crate::delta::create_from(old.into(), new.into(), codec, methods, &mut w)
        .map_err(|e| err(base_path, e))?;
    let file = w.into_inner().map_err(|e| err(&partial, e.into_error()))?;
    file.sync_all().map_err(|e| err(&partial, e))?;
    let len = file.metadata().map_err(|e| err(&partial, e))?.len();
    if len as f64 > full_len as f64 * DELTA_MAX_FRACTION {
        let _ = fs::remove_file(&partial);
        return Ok(None);
    }
    // Check it applies before publishing it.
    let applied = crate::delta::apply(
        || File::open(&partial),
        io::BufReader::new(fsutil::open_regular(base_path).map_err(|e| err(base_path, e))?),
        target.length,
    )
    .map_err(|e| err(&partial, Fault::Invalid(e.to_string())))?;
    let (h, n) = crate::hash::hash_reader(applied).map_err(|e| err(&partial, e))?;
    if h != target.hash || n != target.length {
        return Err(err(
            &partial,
            Fault::Invalid("the delta does not reproduce the target".into()),
        ));
    }
    let (root, ob_path) = write_outboard(&partial, len, art_dir)?;
    let data_path = art_dir.join(root.to_hex());
    if data_path.exists() {
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_file(&ob_path);
        return Ok(None);
    }
    fs::rename(&partial, &data_path).map_err(|e| err(&data_path, e))?;
    fs::rename(
        &ob_path,
        art_dir.join(format!("{}{OUTBOARD_SUFFIX}", root.to_hex())),
    )
    .map_err(|e| err(&ob_path, e))?;
    Ok(Some(Artifact {
        kind: ArtifactKind::Delta { base },
        compression: Compression::Zstd,
        length: len,
        root,
    }))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn compress_and_hash(req: &BuildRequest, out: &Path) -> Result<(Target, u64), ReleaseError> {
    let t = &req.target;
    let mut src = fsutil::open_regular(t).map_err(|e| err(t, e))?;
    let src_len = src.metadata().map_err(|e| err(t, e))?.len();
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| err(out, e))?;
    let mut enc = zstd::stream::write::Encoder::new(
        io::BufWriter::with_capacity(IO_BLOCK, file),
        req.zstd_level,
    )
    .map_err(|e| err(out, e))?;
    // bao covers integrity; a zstd checksum would be redundant.
    enc.include_checksum(false).map_err(|e| err(out, e))?;
    enc.set_pledged_src_size(Some(src_len))
        .map_err(|e| err(out, e))?;
    if req.zstd_workers > 0 {
        enc.multithread(req.zstd_workers).map_err(|e| err(out, e))?;
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IO_BLOCK];
    let mut n = 0u64;
    loop {
        let k = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(t, e)),
        };
        hasher.update(&buf[..k]);
        enc.write_all(&buf[..k]).map_err(|e| err(out, e))?;
        n += k as u64;
    }
    if n != src_len {
        return Err(err(
            t,
            Fault::Invalid(format!(
                "image changed while it was read ({src_len} then {n} bytes)"
            )),
        ));
    }
    let w = enc.finish().map_err(|e| err(out, e))?;
    let file = w.into_inner().map_err(|e| err(out, e.into_error()))?;
    file.sync_all().map_err(|e| err(out, e))?;
    let len = file.metadata().map_err(|e| err(out, e))?.len();
    Ok((
        Target {
            hash: hasher.finalize().into(),
            length: n,
        },
        len,
    ))
}

fn write_outboard(data_path: &Path, len: u64, dir: &Path) -> Result<(Hash, PathBuf), ReleaseError> {
    let ob_path = dir.join(".outboard.partial");
    let ob = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&ob_path)
        .map_err(|e| err(&ob_path, e))?;
    let data = fsutil::open_regular(data_path).map_err(|e| err(data_path, e))?;
    let root = outboard::create(data, len, &ob).map_err(|e| err(&ob_path, e))?;
    ob.sync_all().map_err(|e| err(&ob_path, e))?;
    Ok((root, ob_path))
}

/// What `verify_dir` checked.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The manifest, parsed (signatures checked if a root was given).
    pub manifest: SignedManifest,
    /// Artifacts whose bytes, outboards and decoded images were checked.
    pub artifacts_checked: usize,
}

/// Reads and parses `DIR/manifest.json` (size cap, canonical form), without checking signatures.
pub fn read_manifest(dir: &Path) -> Result<SignedManifest, ReleaseError> {
    let p = dir.join(MANIFEST_FILE);
    let bytes = match fsutil::read_capped(&p, crate::signed::DocKind::Release.max_bytes() as u64)
        .map_err(|e| err(&p, e))?
    {
        Ok(b) => b,
        Err(len) => {
            let max = crate::signed::DocKind::Release.max_bytes();
            return Err(err(
                &p,
                ManifestError::Document(crate::signed::DocError::TooLarge {
                    kind: "wardswarm/release",
                    len: len as usize,
                    max,
                }),
            ));
        }
    };
    SignedManifest::parse(&bytes).map_err(|e| err(&p, e))
}

/// Verifies a release directory: the manifest (and, with a root, its signatures, the root's freshness
/// and the manifest's expiry at `now`), every artifact against its bao root and outboard, and that each
/// full image decompresses to exactly the signed target. Extra files are refused.
pub fn verify_dir(
    dir: &Path,
    root: Option<&TrustRoot>,
    now: Option<Timestamp>,
) -> Result<VerifyReport, ReleaseError> {
    let sm = read_manifest(dir)?;
    let mpath = dir.join(MANIFEST_FILE);
    if let Some(r) = root {
        if let Some(now) = now {
            r.check_fresh(now).map_err(|e| err(&mpath, e))?;
        }
        sm.check_signatures(r).map_err(|e| err(&mpath, e))?;
    }
    let m = &sm.manifest;
    if let Some(now) = now {
        if now >= m.expires {
            return Err(err(
                &mpath,
                Fault::Expired {
                    version: m.version.clone(),
                    expires: m.expires,
                },
            ));
        }
    }
    let art_dir = dir.join(ARTIFACTS_DIR);
    let mut expected = std::collections::BTreeSet::new();
    for a in &m.artifacts {
        let dp = art_dir.join(a.file_name());
        let op = art_dir.join(format!("{}{OUTBOARD_SUFFIX}", a.file_name()));
        expected.insert(a.file_name());
        expected.insert(format!("{}{OUTBOARD_SUFFIX}", a.file_name()));
        let data = fsutil::open_regular(&dp).map_err(|e| err(&dp, e))?;
        let ob = fsutil::open_regular(&op).map_err(|e| err(&op, e))?;
        outboard::verify_files(&data, &ob, a).map_err(|e| match e {
            ArtifactError::OutboardLength { .. } | ArtifactError::OutboardCorrupt { .. } => {
                err(&op, e)
            }
            other => err(&dp, other),
        })?;
        if a.kind == ArtifactKind::Full {
            check_full_image(&dp, a, &m.target)?;
        }
    }
    for entry in fs::read_dir(&art_dir).map_err(|e| err(&art_dir, e))? {
        let entry = entry.map_err(|e| err(&art_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) {
            return Err(err(
                entry.path(),
                Fault::Invalid("file is not part of this release's manifest".into()),
            ));
        }
    }
    Ok(VerifyReport {
        artifacts_checked: m.artifacts.len(),
        manifest: sm,
    })
}

/// Decodes a full-image artifact and checks the image's length and hash against the manifest.
fn check_full_image(path: &Path, a: &Artifact, target: &Target) -> Result<(), ReleaseError> {
    let f = fsutil::open_regular(path).map_err(|e| err(path, e))?;
    let reader: Box<dyn Read> = match a.compression {
        Compression::None => Box::new(BufReader::with_capacity(IO_BLOCK, f)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(IO_BLOCK, f))
                .map_err(|e| err(path, e))?,
        ),
    };
    let (hash, n) = crate::hash::hash_reader(reader.take(target.length.saturating_add(1)))
        .map_err(|e| err(path, Fault::Target(format!("not decodable: {e}"))))?;
    if n != target.length {
        return Err(err(
            path,
            Fault::Target(format!("{n} bytes, the manifest says {}", target.length)),
        ));
    }
    if hash != target.hash {
        return Err(err(
            path,
            Fault::Target(format!("hash {hash}, the manifest says {}", target.hash)),
        ));
    }
    Ok(())
}

/// One-screen summary of a manifest.
#[derive(Debug)]
pub struct Summary<'a>(pub &'a SignedManifest);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0.manifest;
        writeln!(
            f,
            "release   {} {} (counter {})",
            m.product, m.version, m.counter
        )?;
        writeln!(f, "hardware  {}", m.hardware.join(", "))?;
        writeln!(f, "created   {}", m.created)?;
        writeln!(f, "expires   {}", m.expires)?;
        writeln!(f, "target    {} ({} bytes)", m.target.hash, m.target.length)?;
        writeln!(f, "artifacts")?;
        for a in &m.artifacts {
            let base = a
                .base()
                .map(|b| format!(" from base {}", b.short()))
                .unwrap_or_default();
            writeln!(
                f,
                "  {:<5} {:>14} bytes  {}  {}{}",
                a.kind_name().as_str(),
                a.length,
                a.compression.as_str(),
                a.root,
                base
            )?;
        }
        write!(f, "signed by")?;
        for s in self.0.signers() {
            write!(f, " {s}")?;
        }
        Ok(())
    }
}

/// The JSON form of `release show --json`.
pub fn summary_json(sm: &SignedManifest) -> serde_json::Value {
    let m = &sm.manifest;
    serde_json::json!({
        "manifest_id": sm.id().to_string(),
        "product": m.product,
        "version": m.version,
        "counter": m.counter,
        "hardware": m.hardware,
        "created": m.created.to_string(),
        "expires": m.expires.to_string(),
        "target": { "hash": m.target.hash.to_string(), "length": m.target.length },
        "artifacts": m.artifacts.iter().map(|a| serde_json::json!({
            "kind": a.kind_name().as_str(),
            "base": a.base().map(|b| b.to_string()),
            "compression": a.compression.as_str(),
            "length": a.length,
            "root": a.root.to_string(),
            "file": format!("{ARTIFACTS_DIR}/{}", a.file_name()),
            "outboard": format!("{ARTIFACTS_DIR}/{}{OUTBOARD_SUFFIX}", a.file_name()),
        })).collect::<Vec<_>>(),
        "signers": sm.signers().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
    })
}
