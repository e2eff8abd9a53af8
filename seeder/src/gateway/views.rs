//! What the gateway shows: the API's views of devices and releases, and its Prometheus metrics.

use std::{collections::BTreeMap, sync::Arc};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;
use wardswarm_node::{
    agent::machine::{DeviceState, UpdateResult},
    hash::Hash,
    manifest::{Kind, SignedManifest},
    outboard, Timestamp,
};

use super::{download, state::ReleaseStatus, Shared};

/// A device for the API and the demo.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// Device id.
    pub id: String,
    /// Peer id.
    pub peer: String,
    /// Installed (committed) release.
    pub installed: String,
    /// Its counter.
    pub counter: u64,
    /// Hardware id.
    pub hardware: String,
    /// Update state.
    pub state: DeviceState,
    /// Release in progress.
    pub target: Option<String>,
    /// Fetch progress, 0 to 1.
    pub progress: Option<f64>,
    /// Last outcome.
    pub last_result: Option<UpdateResult>,
    /// Why the last attempt failed.
    pub last_reason: Option<String>,
    /// When last heard from.
    pub last_seen: Timestamp,
    /// Seconds since then.
    pub seconds_since_seen: u64,
    /// Connected to the gateway now.
    pub online: bool,
    /// Offline: its connection to the gateway closed, or no report came within `offline_after`
    /// (default 60 s; a device reports every `report_interval`, default 5 s).
    pub stale: bool,
    /// Bytes from the gateway, from peers (current artifact).
    pub bytes_from_gateway: u64,
    /// Bytes from peers.
    pub bytes_from_peers: u64,
    /// Why it may not go on, while it may not: `in_use`, `window_closed`, `reboot_limit`,
    /// `awaiting_consent`.
    pub gated: Option<String>,
    /// What its gate or window said, for people.
    pub gated_detail: Option<String>,
    /// Held by its rollout: `no_directive`, `not_yet`, `download_only`, `expired`.
    pub held: Option<String>,
    /// Seconds it has spent gated since its agent started.
    pub gated_seconds: f64,
    /// Its labels.
    pub labels: Vec<String>,
}

/// An artifact's download state.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactView {
    /// Bao root.
    pub root: Hash,
    /// `full` or `delta`.
    pub kind: Kind,
    /// Length.
    pub length: u64,
    /// Verified chunk groups held.
    pub groups_have: u64,
    /// All groups.
    pub groups_total: u64,
    /// Needed by some device (or prefetch).
    pub needed: bool,
}

/// A release for the API.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    /// Version.
    pub version: String,
    /// Counter.
    pub counter: u64,
    /// Origin path.
    pub path: String,
    /// Manifest hash.
    pub manifest: Hash,
    /// Verified or refused.
    pub status: ReleaseStatus,
    /// Why refused.
    pub reason: Option<String>,
    /// Hardware.
    pub hardware: Vec<String>,
    /// Expiry.
    pub expires: Option<Timestamp>,
    /// Artifacts (verified releases).
    pub artifacts: Vec<ArtifactView>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Gateway metrics (beside the node's own), and the registry that exposes both.
#[derive(Debug)]
pub(super) struct Metrics {
    pub wan_bytes: Counter,
    pub origin_errors: Counter,
    pub origin_corrupt: Counter,
    pub releases_refused: Counter,
    devices: Family<StateLabel, Gauge>,
    registry: std::sync::Mutex<Registry>,
}

impl Metrics {
    /// The gateway's metrics, registered beside the node's.
    pub fn new(node: &wardswarm_node::net::metrics::Metrics) -> Self {
        let m = Self {
            wan_bytes: Counter::default(),
            origin_errors: Counter::default(),
            origin_corrupt: Counter::default(),
            releases_refused: Counter::default(),
            devices: Family::default(),
            registry: Default::default(),
        };
        let mut registry = Registry::default();
        node.register(&mut registry);
        let r = registry.sub_registry_with_prefix("wardswarm_gateway");
        r.register(
            "wan",
            "Bytes downloaded from the origin (HTTP bodies)",
            m.wan_bytes.clone(),
        );
        r.register(
            "origin_errors",
            "Failed origin requests",
            m.origin_errors.clone(),
        );
        r.register(
            "origin_corrupt",
            "Origin responses that failed verification",
            m.origin_corrupt.clone(),
        );
        r.register(
            "releases_refused",
            "Releases on the origin refused (signature, expiry, index)",
            m.releases_refused.clone(),
        );
        r.register("devices", "Ward devices by update state", m.devices.clone());
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }
}

/// The API's view of the gateway.
#[derive(Debug, Clone)]
pub struct ApiState(pub(super) Arc<Shared>);

impl ApiState {
    /// Devices.
    pub fn devices(&self) -> Vec<DeviceView> {
        devices(&self.0)
    }
    /// Releases.
    pub fn releases(&self) -> Vec<ReleaseView> {
        releases(&self.0)
    }
    /// Metrics text.
    pub fn metrics(&self) -> String {
        metrics_text(&self.0)
    }
    /// Whether the read routes answer without a token.
    pub fn open_reads(&self) -> bool {
        self.0.cfg.api_open_reads
    }
    /// Tokens, rollouts and the audit log.
    pub fn control(&self) -> &crate::control::Control {
        &self.0.control
    }
    /// The database the control plane persists to.
    pub fn db(&self) -> &crate::db::Db {
        &self.0.db
    }
    /// The devices a release may go to (matching hardware and product), as rollouts select them;
    /// `None` if the gateway has not verified a release of that version.
    pub fn targets_of(&self, version: &str) -> Option<Vec<wardswarm_node::rollout::DeviceInfo>> {
        let st = self.0.state.lock();
        let rel = st
            .releases
            .values()
            .find(|r| r.version == version && r.status == super::ReleaseStatus::Verified)?;
        Some(
            st.devices
                .values()
                .filter(|d| rel.hardware.contains(&d.report.hardware))
                .map(|d| wardswarm_node::rollout::DeviceInfo {
                    id: d.id.clone(),
                    product: d.report.product.clone(),
                    hardware: d.report.hardware.clone(),
                    labels: d.report.labels.clone(),
                })
                .collect(),
        )
    }
}

pub(super) fn devices(s: &Shared) -> Vec<DeviceView> {
    let now = Timestamp::now().as_unix();
    let st = s.state.lock();
    st.devices
        .values()
        .map(|d| {
            let since = now.saturating_sub(d.last_seen.as_unix());
            let online = st.connected.contains(&d.peer);
            DeviceView {
                id: d.id.clone(),
                peer: d.peer.clone(),
                installed: d.report.version.clone(),
                counter: d.report.counter,
                hardware: d.report.hardware.clone(),
                state: d.report.state,
                target: d.report.target.clone(),
                progress: d
                    .report
                    .progress
                    .filter(|p| p.total > 0)
                    .map(|p| p.have as f64 / p.total as f64),
                last_result: d.report.last.as_ref().map(|l| l.result),
                last_reason: d.report.last.as_ref().and_then(|l| l.reason.clone()),
                last_seen: d.last_seen,
                seconds_since_seen: since,
                online,
                stale: !online || since > s.cfg.offline_after.as_secs(),
                bytes_from_gateway: d.report.bytes_from_gateway,
                bytes_from_peers: d.report.bytes_from_peers,
                gated: d.report.gated.clone(),
                gated_detail: d.report.gated_detail.clone(),
                held: d.report.held.clone(),
                gated_seconds: d.report.gated_ms as f64 / 1000.0,
                labels: d.report.labels.clone(),
            }
        })
        .collect()
}

pub(super) fn releases(s: &Shared) -> Vec<ReleaseView> {
    let needed = download::needed(s);
    let records: Vec<_> = s.state.lock().releases.values().cloned().collect();
    let mut v: Vec<ReleaseView> = records
        .into_iter()
        .map(|r| {
            let artifacts = r
                .bytes
                .as_deref()
                .and_then(|b| SignedManifest::parse(b.as_bytes()).ok())
                .map(|sm| {
                    sm.manifest
                        .artifacts
                        .iter()
                        .map(|a| {
                            let (have, total) = match s.store.get(&a.root) {
                                Some(e) => (e.have().count(), e.group_count()),
                                None => (0, outboard::groups(a.length)),
                            };
                            ArtifactView {
                                root: a.root,
                                kind: a.kind_name(),
                                length: a.length,
                                groups_have: have,
                                groups_total: total,
                                needed: needed.iter().any(|n| n.root == a.root),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            ReleaseView {
                version: r.version,
                counter: r.counter,
                path: r.path,
                manifest: r.manifest,
                status: r.status,
                reason: r.reason,
                hardware: r.hardware,
                expires: r.expires,
                artifacts,
            }
        })
        .collect();
    v.sort_by_key(|r| r.counter);
    v
}

/// The label of devices not heard from within `offline_after`.
const OFFLINE: &str = "offline";

pub(super) fn metrics_text(s: &Shared) -> String {
    let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
    for d in devices(s) {
        let st = if d.stale { OFFLINE } else { d.state.as_str() };
        *counts.entry(st).or_default() += 1;
    }
    let labels = DeviceState::ALL
        .iter()
        .map(|st| st.as_str())
        .chain([DeviceState::Unknown.as_str(), OFFLINE]);
    for st in labels {
        s.metrics
            .devices
            .get_or_create(&StateLabel { state: st.into() })
            .set(counts.get(st).copied().unwrap_or(0));
    }
    let mut out = String::new();
    let reg = s.metrics.registry.lock().unwrap_or_else(|e| e.into_inner());
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}
