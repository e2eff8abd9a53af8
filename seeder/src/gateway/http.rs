//! The origin client: URLs under the origin, capped document GETs (conditional for the index), and
//! the WAN byte counters. Errors separate the origin's faults (network, status, refused, corrupt)
//! from this gateway's own ([`WanError::is_local`]).

use std::{path::PathBuf, sync::atomic::Ordering};

use wardswarm_node::{hash::Hash, store::StoreError};

use super::{state::Validators, Shared};
use crate::db::DbError;

/// A fault reaching or reading the origin, or storing what it sent.
#[derive(Debug, thiserror::Error)]
pub(super) enum WanError {
    #[error("origin request {url}: {cause}")]
    Network { url: String, cause: reqwest::Error },
    #[error("origin {url}: {reason}")]
    Cut { url: String, reason: String },
    #[error("origin {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("origin {url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("origin data for {root}: {reason}")]
    Corrupt { root: Hash, reason: String },
    #[error("origin URL for {path}: {cause}")]
    Url { path: String, cause: UrlError },
    #[error("{0}")]
    Store(StoreError),
    #[error("{0}")]
    Db(DbError),
    #[error("gateway file {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Task(String),
    #[error("stopping")]
    Stopped,
}

/// Why a path did not join the origin URL (the `url` crate's error, named through reqwest).
pub(super) type UrlError = <reqwest::Url as std::str::FromStr>::Err;

impl WanError {
    /// A fault of this gateway (disk, database, a task), not of the origin or the network.
    pub(super) fn is_local(&self) -> bool {
        matches!(
            self,
            Self::Store(_) | Self::Db(_) | Self::Io { .. } | Self::Task(_) | Self::Url { .. }
        )
    }
}

/// `path` under the origin's base URL.
pub(super) fn url(s: &Shared, path: &str) -> Result<reqwest::Url, WanError> {
    s.cfg.origin.join(path).map_err(|cause| WanError::Url {
        path: path.into(),
        cause,
    })
}

/// Counts bytes that crossed the WAN.
pub(super) fn count_wan(s: &Shared, n: u64) {
    s.wan_bytes.fetch_add(n, Ordering::Relaxed);
    s.metrics.wan_bytes.inc_by(n);
}

/// Index, manifests and outboards: WAN bytes that are not artifact data.
fn count_wan_metadata(s: &Shared, n: u64) {
    count_wan(s, n);
    s.wan_metadata_bytes.fetch_add(n, Ordering::Relaxed);
}

/// GETs a small document whole, refusing one over `max` bytes.
pub(super) async fn get_doc(s: &Shared, path: &str, max: usize) -> Result<Vec<u8>, WanError> {
    get_doc_if_changed(s, path, max, None)
        .await
        .map(|(b, _)| b.unwrap_or_default())
}

/// GETs a document; with validators, a `304 Not Modified` returns `None` (no body crossed the WAN).
pub(super) async fn get_doc_if_changed(
    s: &Shared,
    path: &str,
    max: usize,
    cond: Option<&Validators>,
) -> Result<(Option<Vec<u8>>, Validators), WanError> {
    let u = url(s, path)?;
    let net = |cause: reqwest::Error| WanError::Network {
        url: u.to_string(),
        cause,
    };
    let mut req = s.http.get(u.clone());
    if let Some(e) = cond.and_then(|v| v.etag.as_ref()) {
        req = req.header(reqwest::header::IF_NONE_MATCH, e);
    }
    let mut resp = tokio::select! {
        r = req.send() => r.map_err(net)?,
        _ = s.stop.cancelled() => return Err(WanError::Stopped),
    };
    let validators = Validators {
        etag: resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    };
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED && cond.is_some() {
        return Ok((None, validators));
    }
    if !resp.status().is_success() {
        return Err(WanError::Status {
            url: u.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let too_big = || WanError::Refused {
        url: u.to_string(),
        reason: format!("larger than the {max}-byte cap"),
    };
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(net)? {
        count_wan_metadata(s, c.len() as u64);
        body.extend_from_slice(&c);
        if body.len() > max {
            return Err(too_big());
        }
    }
    Ok((Some(body), validators))
}
