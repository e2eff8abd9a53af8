//! The WAN loop (poll the origin, plan, download what the ward needs; sleep until the next poll or a
//! device changes state) and the ranged download of one artifact: HTTP ranges of `range_bytes`,
//! resumed from what the store holds, under the WAN cap, each [`VERIFY_BATCH_BYTES`] verified
//! against the signed root and seeded to the ward at once.

use std::{sync::Arc, time::Duration};

use wardswarm_node::{
    fsutil,
    groups::GroupSet,
    outboard::{self, GROUP_BYTES},
    store::{Entry, ReceiveError},
    Timestamp,
};

use super::{
    http::{count_wan, get_doc, url, WanError},
    judge::poll_origin,
    plan::{self, Need},
    Shared,
};

/// The gateway verifies and seeds what arrives from the origin this many bytes at a time: large
/// enough that verification is cheap per byte, small enough that the ward starts fetching within a
/// second of the first bytes at a few MB/s. The model engine uses the same figure.
pub const VERIFY_BATCH_BYTES: u64 = 1 << 20;

/// What the ward needs now.
pub(super) fn needed(s: &Shared) -> Vec<Need> {
    let r = s.state.lock();
    let releases = plan::candidates(&r, Timestamp::now());
    let devices = r.devices.values().map(|d| (d.id.as_str(), &d.report));
    plan::needed(&releases, devices, s.cfg.prefetch)
}

fn groups_held(s: &Shared, need: &Need) -> u64 {
    s.store
        .get(&need.root)
        .map(|e| e.have().count())
        .unwrap_or(0)
}

/// The index poller: every `poll_interval` (or on `poll_now`), whatever the downloads are doing, so
/// a slow artifact never hides a new release or a stale index.
pub(super) async fn run_polls(s: Arc<Shared>) {
    loop {
        match poll_origin(&s).await {
            Ok(()) => s.wake.notify_one(),
            Err(WanError::Stopped) => return,
            Err(e) => {
                s.metrics.origin_errors.inc();
                tracing::warn!(error = %e, "origin poll failed; will retry");
            }
        }
        tokio::select! {
            _ = s.stop.cancelled() => return,
            _ = s.poll.notified() => {}
            _ = tokio::time::sleep(s.cfg.poll_interval) => {}
        }
    }
}

/// The download loop: fetch what the ward needs; sleep until a device changes state, a poll finds
/// something new, or a back-off after a failure ends.
pub(super) async fn run_downloads(s: Arc<Shared>) {
    let mut failures = 0u32;
    let mut local_failures = 0u32;
    loop {
        let mut local_pause = None;
        let mut wait = s.cfg.poll_interval;
        for need in needed(&s) {
            if s.store.get(&need.root).is_some_and(|e| e.is_complete()) {
                continue;
            }
            tracing::info!(root = %need.root, length = need.length, why = %need.why, "downloading artifact from the origin");
            let had = groups_held(&s, &need);
            let r = download(&s, &need).await;
            if groups_held(&s, &need) > had {
                // Progress before the fault: retry soon, the link works.
                failures = 0;
            }
            match r {
                Ok(()) => {
                    failures = 0;
                    local_failures = 0;
                    tracing::info!(root = %need.root, "artifact complete and verified");
                }
                Err(WanError::Stopped) => return,
                Err(e) => {
                    failures += 1;
                    if matches!(e, WanError::Corrupt { .. }) {
                        s.metrics.origin_corrupt.inc();
                        tracing::warn!(target: "wardswarm::security", error = %e, "origin served data that fails verification");
                    } else if e.is_local() {
                        // A full or failing disk here: downloading again at once would only spend
                        // WAN on bytes that cannot be stored.
                        local_failures += 1;
                        let pause = LOCAL_RETRY
                            .saturating_mul(1 << (local_failures - 1).min(5))
                            .min(LOCAL_RETRY_MAX);
                        local_pause = Some(pause);
                        tracing::error!(error = %e, retry_in = %humantime::format_duration(pause), "download stopped by a local fault (disk full?); retrying later");
                    } else {
                        s.metrics.origin_errors.inc();
                        tracing::warn!(error = %e, "download interrupted; resuming after a pause");
                    }
                    wait = wait.min(Duration::from_millis(500 * u64::from(failures.min(60))));
                    break;
                }
            }
        }
        if let Some(pause) = local_pause {
            // Not cut short by device reports or polls: only time (or stopping) ends it.
            tokio::select! {
                _ = s.stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            continue;
        }
        tokio::select! {
            _ = s.stop.cancelled() => return,
            _ = s.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// First pause after a local fault (full disk, I/O error); it doubles per consecutive fault.
const LOCAL_RETRY: Duration = Duration::from_secs(30);
/// Longest pause after local faults.
const LOCAL_RETRY_MAX: Duration = Duration::from_secs(15 * 60);

/// The slowest rate tolerated from the origin: `origin_min_rate`, or half the WAN cap if lower (we
/// must not cut off an origin for our own throttling).
fn min_rate(s: &Shared) -> u64 {
    let cap = s.wan_cap.rate().map_or(u64::MAX, |c| c / 2);
    s.cfg.origin_min_rate.min(cap)
}

/// The origin's outboard for an artifact, kept beside the store so a restart does not fetch it again.
/// Untrusted: every group is checked against the signed root when it is received.
async fn outboard_for(s: &Shared, need: &Need) -> Result<Vec<u8>, WanError> {
    let want = outboard::outboard_size(need.length);
    let p = s
        .cfg
        .dir
        .join("outboards")
        .join(format!("{}.obao", need.root.to_hex()));
    if let Ok(b) = std::fs::read(&p) {
        if b.len() as u64 == want {
            return Ok(b);
        }
    }
    let path = format!("{}/artifacts/{}.obao", need.path, need.root.to_hex());
    let b = get_doc(s, &path, want as usize).await?;
    if b.len() as u64 != want {
        return Err(WanError::Corrupt {
            root: need.root,
            reason: format!("outboard is {} bytes, {want} expected", b.len()),
        });
    }
    fsutil::replace(&p, &b, 0o644).map_err(|cause| WanError::Io { path: p, cause })?;
    Ok(b)
}

/// Downloads the missing groups of one artifact by HTTP range, verifying and seeding as it goes.
async fn download(s: &Arc<Shared>, need: &Need) -> Result<(), WanError> {
    let (root, length) = (need.root, need.length);
    let store = s.store.clone();
    let entry = tokio::task::spawn_blocking(move || store.create(root, length))
        .await
        .map_err(|e| WanError::Task(format!("creating the store entry: {e}")))?
        .map_err(WanError::Store)?;
    if entry.is_complete() {
        return Ok(());
    }
    let ob = Arc::new(outboard_for(s, need).await?);
    let have = entry.have();
    let missing: Vec<_> = GroupSet::full(have.len())
        .difference(&have)
        .runs()
        .collect();
    let per_req = s.cfg.range_bytes / GROUP_BYTES;
    let u = url(
        s,
        &format!("{}/artifacts/{}", need.path, need.root.to_hex()),
    )?;
    let batch = VERIFY_BATCH_BYTES;
    'runs: for run in missing {
        let mut g = run.start;
        while g < run.end {
            let end_g = (g + per_req).min(run.end);
            let start = g * GROUP_BYTES;
            let end = (end_g * GROUP_BYTES).min(need.length);
            let net = |cause: reqwest::Error| WanError::Network {
                url: u.to_string(),
                cause,
            };
            let req = s
                .http
                .get(u.clone())
                .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1));
            let mut resp = tokio::select! {
                r = req.send() => r.map_err(net)?,
                _ = s.stop.cancelled() => return Err(WanError::Stopped),
            };
            // A server without range support sends the whole file (200). Asking again per range would
            // restart from byte 0 each time (9.5 x the artifact for 64 MiB): take this one response
            // whole instead, from the first byte to the last.
            let whole = match resp.status().as_u16() {
                206 => false,
                200 => true,
                st => {
                    return Err(WanError::Status {
                        url: u.to_string(),
                        status: st,
                    })
                }
            };
            let (first, want) = if whole {
                (0, need.length)
            } else {
                (g, end - start)
            };
            let mut buf: Vec<u8> = Vec::with_capacity(batch as usize);
            let mut buf_group = first;
            let mut got = 0u64;
            let mut cut = None;
            let floor = min_rate(s);
            let mut window = (tokio::time::Instant::now(), 0u64);
            loop {
                if window.0.elapsed() >= s.cfg.origin_rate_window {
                    let secs = window.0.elapsed().as_secs_f64();
                    if (window.1 as f64) < floor as f64 * secs {
                        cut = Some(format!(
                            "{} bytes in {secs:.0} s, below the {floor} B/s floor (origin_min_rate)",
                            window.1
                        ));
                        break;
                    }
                    window = (tokio::time::Instant::now(), 0);
                }
                let chunk = tokio::select! {
                    c = resp.chunk() => c,
                    _ = s.stop.cancelled() => return Err(WanError::Stopped),
                };
                let c = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        cut = Some(e.to_string());
                        break;
                    }
                };
                count_wan(s, c.len() as u64);
                window.1 += c.len() as u64;
                tokio::select! {
                    _ = s.wan_cap.acquire_bytes(c.len() as u64) => {}
                    _ = s.stop.cancelled() => return Err(WanError::Stopped),
                }
                let room = (want - got) as usize;
                let take = c.len().min(room);
                buf.extend_from_slice(&c[..take]);
                got += take as u64;
                while buf.len() as u64 >= batch {
                    let rest = buf.split_off(batch as usize);
                    receive(s, &entry, buf_group, std::mem::replace(&mut buf, rest), &ob).await?;
                    buf_group += batch / GROUP_BYTES;
                }
                if got >= want {
                    break;
                }
            }
            if got < want {
                // Keep the whole groups that did arrive; the rest is fetched on the next attempt.
                let whole = buf.len() as u64 / GROUP_BYTES * GROUP_BYTES;
                if whole > 0 {
                    buf.truncate(whole as usize);
                    receive(s, &entry, buf_group, buf, &ob).await?;
                }
                return Err(WanError::Cut {
                    url: u.to_string(),
                    reason: format!(
                        "connection ended after {got} of {want} bytes{}",
                        cut.map(|c| format!(": {c}")).unwrap_or_default()
                    ),
                });
            }
            if !buf.is_empty() {
                receive(s, &entry, buf_group, buf, &ob).await?;
            }
            if whole {
                break 'runs;
            }
            g = end_g;
        }
    }
    let e = entry.clone();
    tokio::task::spawn_blocking(move || e.sync())
        .await
        .map_err(|e| WanError::Task(format!("syncing the artifact: {e}")))?
        .map_err(WanError::Store)?;
    if !entry.is_complete() {
        return Err(WanError::Task(format!(
            "artifact {} is still missing groups after its download",
            need.root
        )));
    }
    Ok(())
}

/// Verifies a batch of groups from the origin into the store and tells the ward.
async fn receive(
    s: &Arc<Shared>,
    entry: &Arc<Entry>,
    first_group: u64,
    data: Vec<u8>,
    ob: &Arc<Vec<u8>>,
) -> Result<(), WanError> {
    let e = entry.clone();
    let ob = ob.clone();
    let root = e.root();
    // Keep the WAN counter across a kill, written before the batch it paid for can be marked
    // verified: after a kill -9 the counter is never behind the data the store holds.
    let _ = s.db.set_meta(
        "wan_bytes",
        s.wan_bytes.load(std::sync::atomic::Ordering::Relaxed),
    );
    let r = tokio::task::spawn_blocking(move || e.receive_plain(first_group, &data, &ob, |_| {}))
        .await
        .map_err(|e| WanError::Task(format!("verifying origin data: {e}")))?;
    match r {
        Ok(_) => {
            let _ = s.node.have_changed(root).await;
            Ok(())
        }
        Err(ReceiveError::Local(e)) => Err(WanError::Store(e)),
        Err(e) => Err(WanError::Corrupt {
            root,
            reason: e.to_string(),
        }),
    }
}
