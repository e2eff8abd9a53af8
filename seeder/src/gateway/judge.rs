//! Judging what the origin publishes: the signed index (version, expiry, signatures), then each
//! manifest it names (hash against the index, signatures, expiry, version and counter). A verified
//! release is announced to the ward; a refused one is logged under `wardswarm::security` and kept
//! with its reason.

use std::sync::Arc;

use wardswarm_node::{
    hash::Hash,
    index::{Index, IndexEntry, INDEX_FILE},
    manifest::SignedManifest,
    signed::DocKind,
    Timestamp,
};

use super::{
    http::{get_doc, get_doc_if_changed, url, WanError},
    state::{ReleaseRecord, ReleaseStatus},
    Shared,
};
use crate::db::Table;

fn record_release(s: &Shared, r: ReleaseRecord) {
    if let Err(e) = s.db.put(Table::Releases, &r.manifest.to_string(), &r) {
        tracing::error!(error = %e, "cannot save release state");
    }
    s.state.lock().releases.insert(r.manifest, r);
}

/// Fetches and verifies the index, then every manifest not yet judged.
pub(super) async fn poll_origin(s: &Arc<Shared>) -> Result<(), WanError> {
    let cond = s.state.lock().index.validators.clone();
    let (bytes, validators) =
        get_doc_if_changed(s, INDEX_FILE, DocKind::Index.max_bytes(), cond.as_ref()).await?;
    let Some(bytes) = bytes else {
        // Not modified: nothing new to judge, but the index we hold may have gone stale.
        let expires = s.state.lock().index.expires;
        if let Some(exp) = expires {
            if Timestamp::now() >= exp {
                s.state.lock().index.validators = None;
                return Err(WanError::Refused {
                    url: url(s, INDEX_FILE)?.to_string(),
                    reason: format!(
                        "the origin's index expired at {exp} and was not re-published (stale origin)"
                    ),
                });
            }
        }
        return Ok(());
    };
    let seen = s.db.meta("index_version").map_err(WanError::Db)?;
    let index = match Index::verify(&bytes, &s.root, Timestamp::now(), seen) {
        Ok(i) => i,
        Err(e) => {
            s.metrics.releases_refused.inc();
            tracing::warn!(target: "wardswarm::security", error = %e, "origin index refused");
            return Err(WanError::Refused {
                url: url(s, INDEX_FILE)?.to_string(),
                reason: e.to_string(),
            });
        }
    };
    {
        let mut st = s.state.lock();
        st.index.validators = Some(validators);
        st.index.expires = Some(index.expires);
    }
    if seen != Some(index.version) {
        s.db.set_meta("index_version", index.version)
            .map_err(WanError::Db)?;
        tracing::info!(
            version = index.version,
            releases = index.releases.len(),
            "origin index verified"
        );
    }
    // A release the origin no longer lists is no longer offered: forget it.
    let listed: std::collections::BTreeSet<Hash> =
        index.releases.iter().map(|e| e.manifest).collect();
    let gone: Vec<ReleaseRecord> = {
        let mut st = s.state.lock();
        let gone: Vec<Hash> = st
            .releases
            .keys()
            .filter(|h| !listed.contains(h))
            .copied()
            .collect();
        gone.iter().filter_map(|h| st.releases.remove(h)).collect()
    };
    for r in gone {
        tracing::info!(version = %r.version, path = %r.path, "release left the origin's index");
        if let Err(e) = s.db.delete(Table::Releases, &r.manifest.to_string()) {
            tracing::error!(error = %e, "cannot forget a release");
        }
    }
    for entry in &index.releases {
        // The index names manifests by hash: the same bytes get the same verdict, so a release is
        // judged once, unless its manifest could not be fetched.
        let known = s
            .state
            .lock()
            .releases
            .get(&entry.manifest)
            .map(|r| r.retry);
        if known == Some(false) {
            continue;
        }
        let rec = judge_release(s, entry).await?;
        match rec.status {
            ReleaseStatus::Verified => {
                tracing::info!(version = %rec.version, path = %rec.path, "release verified");
                if let Some(b) = &rec.bytes {
                    if let Err(e) = s.node.announce(b.clone().into_bytes()).await {
                        tracing::warn!(error = %e, "announcing the release to the ward failed");
                    }
                }
            }
            ReleaseStatus::Unavailable => {
                tracing::warn!(version = %rec.version, path = %rec.path, reason = rec.reason.as_deref().unwrap_or(""), "release manifest not served by the origin; trying again at the next poll");
            }
            ReleaseStatus::Refused => {
                s.metrics.releases_refused.inc();
                tracing::warn!(target: "wardswarm::security", version = %rec.version, path = %rec.path, reason = rec.reason.as_deref().unwrap_or(""), "release refused");
            }
        }
        record_release(s, rec);
    }
    Ok(())
}

async fn judge_release(s: &Shared, e: &IndexEntry) -> Result<ReleaseRecord, WanError> {
    let mut rec = ReleaseRecord {
        version: e.version.clone(),
        counter: e.counter,
        path: e.path.clone(),
        manifest: e.manifest,
        status: ReleaseStatus::Refused,
        reason: None,
        hardware: e.hardware.clone(),
        expires: None,
        bytes: None,
        retry: false,
    };
    let path = format!("{}/manifest.json", e.path);
    let bytes = match get_doc(s, &path, DocKind::Release.max_bytes()).await {
        Ok(b) => b,
        Err(WanError::Stopped) => return Err(WanError::Stopped),
        Err(err) => {
            // The origin did not serve it (a 404 while it is being re-published, a network fault):
            // nothing was judged, so nothing is refused; the next poll tries again.
            rec.retry = matches!(
                err,
                WanError::Network { .. } | WanError::Status { .. } | WanError::Cut { .. }
            );
            if rec.retry {
                rec.status = ReleaseStatus::Unavailable;
            }
            rec.reason = Some(err.to_string());
            return Ok(rec);
        }
    };
    if Hash::of(&bytes) != e.manifest {
        rec.reason = Some(format!(
            "manifest.json hashes to {}, the signed index says {} (mix-and-match or tampering)",
            Hash::of(&bytes),
            e.manifest
        ));
        return Ok(rec);
    }
    let sm = match SignedManifest::parse(&bytes) {
        Ok(sm) => sm,
        Err(err) => {
            rec.reason = Some(err.to_string());
            return Ok(rec);
        }
    };
    rec.expires = Some(sm.manifest.expires);
    if let Err(err) = sm.check_signatures(&s.root) {
        rec.reason = Some(err.to_string());
        return Ok(rec);
    }
    if Timestamp::now() >= sm.manifest.expires {
        rec.reason = Some(format!("release expired at {}", sm.manifest.expires));
        return Ok(rec);
    }
    if sm.manifest.version != e.version || sm.manifest.counter != e.counter {
        rec.reason = Some("manifest version or counter differs from the index".into());
        return Ok(rec);
    }
    rec.status = ReleaseStatus::Verified;
    rec.bytes = Some(String::from_utf8_lossy(&bytes).into_owned());
    Ok(rec)
}
