//! The origin: release directories and a signed `index.json` as plain static files.
//!
//! [`publish`] writes the signed index over the release directories under a folder; [`serve`] serves
//! the folder over HTTP with `Range` support (tower-http's `ServeDir`) for development and tests. In
//! production any static web server or CDN does the same job; the gateway needs nothing but `GET`
//! and byte ranges (checked against nginx in `tests/origin_nginx.rs`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;
use wardswarm_node::{
    fsutil,
    index::{Index, INDEX_FILE},
    release::read_manifest,
    signed::DocKind,
    SecretKey, Timestamp,
};

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {reason}")]
    Release { path: PathBuf, reason: String },
    #[error("index: {0}")]
    Index(wardswarm_node::index::IndexError),
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

// By hand, not `#[from]`: the message already prints the cause, so it is not also a `source()`.
impl From<wardswarm_node::index::IndexError> for PublishError {
    fn from(e: wardswarm_node::index::IndexError) -> Self {
        Self::Index(e)
    }
}

/// Finds release directories (folders with a `manifest.json`) up to three levels under `dir`.
fn find_releases(
    dir: &Path,
    rel: &str,
    depth: u32,
    out: &mut Vec<String>,
) -> Result<(), PublishError> {
    let io = |source| PublishError::Io {
        path: dir.into(),
        cause: source,
    };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if e.path().join("manifest.json").is_file() {
            out.push(path);
        } else if depth > 0 {
            find_releases(&e.path(), &path, depth - 1, out)?;
        }
    }
    Ok(())
}

/// What [`publish`] wrote.
#[derive(Debug)]
pub struct Published {
    /// The index.
    pub index: Index,
    /// Where.
    pub path: PathBuf,
}

/// Signs an index over every release directory under `dir` and writes `dir/index.json` atomically.
/// The version is one more than the existing index's (or 1). Each release's manifest is parsed (not
/// re-verified: `wardswarm release verify` does that) and must be for the same product.
pub fn publish(
    dir: &Path,
    keys: &[SecretKey],
    expires: Timestamp,
    now: Timestamp,
) -> Result<Published, PublishError> {
    if keys.is_empty() {
        return Err(PublishError::Usage(
            "at least one release key is needed".into(),
        ));
    }
    let mut paths = Vec::new();
    find_releases(dir, "", 2, &mut paths)?;
    if paths.is_empty() {
        return Err(PublishError::Usage(format!(
            "no release directories (with a manifest.json) under {}",
            dir.display()
        )));
    }
    let mut releases = Vec::new();
    let mut counters = std::collections::BTreeMap::new();
    let mut product = None;
    for p in &paths {
        let d = dir.join(p);
        let sm = read_manifest(&d).map_err(|e| PublishError::Release {
            path: d.clone(),
            reason: e.to_string(),
        })?;
        let prod = product.get_or_insert_with(|| sm.manifest.product.clone());
        if *prod != sm.manifest.product {
            return Err(PublishError::Release {
                path: d,
                reason: format!(
                    "release of {:?}, the others are of {prod:?}",
                    sm.manifest.product
                ),
            });
        }
        // Devices order releases by counter alone: two releases with one counter would be
        // interchangeable to every anti-rollback check.
        if let Some(other) = counters.insert(sm.manifest.counter, p.clone()) {
            return Err(PublishError::Release {
                path: d,
                reason: format!(
                    "counter {} is also the counter of {other}; every release needs a counter of its own",
                    sm.manifest.counter
                ),
            });
        }
        releases.push((p.clone(), sm.to_bytes()));
    }
    let index_path = dir.join(INDEX_FILE);
    let prev = match fsutil::read_capped(&index_path, DocKind::Index.max_bytes() as u64) {
        Ok(Ok(b)) => Index::parse(&b).map(|i| i.version).unwrap_or(0),
        _ => 0,
    };
    let index = Index::build(
        product.as_deref().unwrap_or_default(),
        prev + 1,
        now,
        expires,
        &releases,
        keys,
    )?;
    fsutil::replace(&index_path, &index.to_bytes(), 0o644).map_err(|source| PublishError::Io {
        path: index_path.clone(),
        cause: source,
    })?;
    Ok(Published {
        index,
        path: index_path,
    })
}

/// Serves `dir` over HTTP on `listener` until `stop` (GET and HEAD, byte ranges, no directory listings).
pub async fn serve(
    dir: PathBuf,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback_service(ServeDir::new(dir).append_index_html_on_directories(false))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Binds `addr` and serves `dir` in a background task; returns the bound address.
pub async fn spawn(
    dir: PathBuf,
    addr: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((a, tokio::spawn(serve(dir, l, stop))))
}
