//! The ward gateway: poll the origin, verify, work out what the ward needs, download each needed
//! artifact once over the capped WAN (resuming by HTTP range), verify every chunk group as it arrives
//! and seed it to the ward at once; collect device reports; serve the HTTP API and metrics.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use libp2p::identity::Keypair;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wardswarm_node::{
    agent::runtime::Report,
    fsutil,
    hash::Hash,
    index::{Index, IndexEntry, INDEX_FILE},
    manifest::{Artifact, SignedManifest},
    membership::{Certificate, Role},
    net::{
        caps::{Cap, Schedule},
        node::{self, Event, Handle},
    },
    outboard::{self, GROUP_BYTES},
    root::TrustRoot,
    signed::DocKind,
    store::{ReceiveError, Store},
    Timestamp,
};

use crate::db::{Db, DbError, Table};

/// The URL type of the origin setting.
pub use reqwest::Url;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The origin's base URL (the folder holding `index.json`), ending in `/`.
    pub origin: reqwest::Url,
    /// How often to poll the origin's index.
    pub poll_interval: Duration,
    /// State folder: `store/`, `outboards/`, `gateway.redb`.
    pub dir: PathBuf,
    /// The WAN download cap and schedule.
    pub wan: Schedule,
    /// HTTP API address (`None`: no API).
    pub api_listen: Option<SocketAddr>,
    /// The ward swarm node.
    pub node: node::Config,
    /// Time limit for connecting and for each read from the origin.
    pub http_timeout: Duration,
    /// Bytes per range request (a multiple of the 16 KiB chunk group).
    pub range_bytes: u64,
    /// Download the newest release's full image before any device asks for it.
    pub prefetch: bool,
    /// A device not heard from for this long counts as offline (`stale` in the API).
    pub offline_after: Duration,
    /// Super-seed the ward (default on): show each device only groups no device has yet, so each
    /// byte leaves the gateway about once (see `wardswarm_node::seeding`). Ignored if `node.seeding`
    /// is set already.
    pub super_seed: bool,
}

impl GatewayConfig {
    /// Defaults for everything but the origin, folder and node.
    pub fn new(origin: reqwest::Url, dir: impl Into<PathBuf>, node: node::Config) -> Self {
        Self {
            origin,
            poll_interval: Duration::from_secs(60),
            dir: dir.into(),
            wan: Schedule::fixed(None),
            api_listen: None,
            node,
            http_timeout: Duration::from_secs(30),
            range_bytes: 4 << 20,
            prefetch: false,
            offline_after: Duration::from_secs(60),
            super_seed: true,
        }
    }
}

/// The gateway failed on this machine.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error(transparent)]
    Store(#[from] wardswarm_node::store::StoreError),
    #[error("gateway I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A fault reaching or reading the origin.
#[derive(Debug, thiserror::Error)]
enum WanError {
    #[error("origin request {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("origin {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("origin {url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("origin data for {root}: {reason}")]
    Corrupt { root: Hash, reason: String },
    #[error("{0}")]
    Local(String),
    #[error("stopping")]
    Stopped,
}

/// A device as the gateway knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device id (from its membership certificate).
    pub id: String,
    /// Its peer id.
    pub peer: String,
    /// Its last report.
    pub report: Report,
    /// When the last report arrived.
    pub last_seen: Timestamp,
}

/// A release as the gateway knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// Version.
    pub version: String,
    /// Counter.
    pub counter: u64,
    /// Path on the origin.
    pub path: String,
    /// Hash of the exact signed manifest.
    pub manifest: Hash,
    /// `verified` or `refused`.
    pub status: String,
    /// Why it was refused.
    pub reason: Option<String>,
    /// Hardware ids.
    pub hardware: Vec<String>,
    /// Expiry.
    pub expires: Option<Timestamp>,
    /// Refused for a transient reason (the origin did not answer): judged again at the next poll.
    #[serde(default)]
    pub retry: bool,
    /// The manifest bytes (verified releases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Gateway metrics (beside the node's own).
#[derive(Debug, Default)]
struct GatewayMetrics {
    wan_bytes: Counter,
    origin_errors: Counter,
    origin_corrupt: Counter,
    releases_refused: Counter,
    devices: Family<StateLabel, Gauge>,
}

/// The gateway's shared state.
#[derive(Debug)]
struct Shared {
    cfg: GatewayConfig,
    root: TrustRoot,
    store: Arc<Store>,
    node: Handle,
    db: Db,
    http: reqwest::Client,
    wan_cap: Cap,
    wan_bytes: AtomicU64,
    wan_metadata_bytes: AtomicU64,
    devices: Mutex<BTreeMap<String, DeviceRecord>>,
    releases: Mutex<BTreeMap<Hash, ReleaseRecord>>,
    metrics: GatewayMetrics,
    registry: Mutex<Registry>,
    index_validators: Mutex<Option<Validators>>,
    index_expires: Mutex<Option<Timestamp>>,
    wake: Notify,
    stop: CancellationToken,
}

/// A running gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    api_addr: Option<SocketAddr>,
}

/// A snapshot for the API and the demo.
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
    pub state: String,
    /// Release in progress.
    pub target: Option<String>,
    /// Fetch progress, 0 to 1.
    pub progress: Option<f64>,
    /// Last outcome.
    pub last_result: Option<String>,
    /// Why the last attempt failed.
    pub last_reason: Option<String>,
    /// When last heard from.
    pub last_seen: Timestamp,
    /// Seconds since then.
    pub seconds_since_seen: u64,
    /// Not heard from within `offline_after`.
    pub stale: bool,
    /// Bytes from the gateway, from peers (current artifact).
    pub bytes_from_gateway: u64,
    /// Bytes from peers.
    pub bytes_from_peers: u64,
}

/// An artifact's download state.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactView {
    /// Bao root.
    pub root: Hash,
    /// `full` or `delta`.
    pub kind: String,
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
    /// `verified` or `refused`.
    pub status: String,
    /// Why refused.
    pub reason: Option<String>,
    /// Hardware.
    pub hardware: Vec<String>,
    /// Expiry.
    pub expires: Option<Timestamp>,
    /// Artifacts (verified releases).
    pub artifacts: Vec<ArtifactView>,
}

impl Gateway {
    /// Starts the node, the origin poller and downloader, the report collector and the API.
    pub async fn start(
        cfg: GatewayConfig,
        keypair: Keypair,
        cert: &Certificate,
        root: TrustRoot,
    ) -> Result<Self, GatewayError> {
        if cert.role != Role::Gateway {
            return Err(GatewayError::Config(format!(
                "the certificate for {} has role {}, a gateway needs role gateway",
                cert.device,
                cert.role.as_str()
            )));
        }
        if cfg.range_bytes == 0 || cfg.range_bytes % GROUP_BYTES != 0 {
            return Err(GatewayError::Config(format!(
                "range_bytes must be a positive multiple of {GROUP_BYTES}"
            )));
        }
        let io = |p: &std::path::Path| {
            let p = p.to_path_buf();
            move |source| GatewayError::Io { path: p, source }
        };
        std::fs::create_dir_all(cfg.dir.join("outboards")).map_err(io(&cfg.dir))?;
        let store = Arc::new(Store::open(cfg.dir.join("store"))?);
        let db = Db::open(&cfg.dir.join("gateway.redb"))?;
        let mut ncfg = cfg.node.clone();
        if cfg.super_seed && ncfg.seeding.is_none() {
            ncfg.seeding = Some(Default::default());
        }
        let (node, _join) = node::spawn(ncfg, keypair, cert, root.clone(), store.clone())?;
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.http_timeout)
            .read_timeout(cfg.http_timeout)
            .user_agent(concat!("wardswarm-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GatewayError::Config(format!("HTTP client: {e}")))?;
        let wan_bytes = db.meta("wan_bytes")?.unwrap_or(0);
        let devices = db
            .all::<DeviceRecord>(Table::Devices)?
            .into_iter()
            .collect();
        let releases = db
            .all::<ReleaseRecord>(Table::Releases)?
            .into_iter()
            .map(|(_, r)| (r.manifest, r))
            .collect();
        let metrics = GatewayMetrics::default();
        metrics.wan_bytes.inc_by(wan_bytes);
        let mut registry = Registry::default();
        node.metrics().register(&mut registry);
        {
            let r = registry.sub_registry_with_prefix("wardswarm_gateway");
            r.register(
                "wan",
                "Bytes downloaded from the origin (HTTP bodies)",
                metrics.wan_bytes.clone(),
            );
            r.register(
                "origin_errors",
                "Failed origin requests",
                metrics.origin_errors.clone(),
            );
            r.register(
                "origin_corrupt",
                "Origin responses that failed verification",
                metrics.origin_corrupt.clone(),
            );
            r.register(
                "releases_refused",
                "Releases on the origin refused (signature, expiry, index)",
                metrics.releases_refused.clone(),
            );
            r.register(
                "devices",
                "Ward devices by update state",
                metrics.devices.clone(),
            );
        }
        let now = Timestamp::now().as_unix();
        let shared = Arc::new(Shared {
            wan_cap: Cap::new(cfg.wan.rate_at(now)),
            cfg,
            root,
            store,
            node,
            db,
            http,
            wan_bytes: AtomicU64::new(wan_bytes),
            wan_metadata_bytes: AtomicU64::new(0),
            devices: Mutex::new(devices),
            releases: Mutex::new(releases),
            metrics,
            registry: Mutex::new(registry),
            index_validators: Mutex::new(None),
            index_expires: Mutex::new(None),
            wake: Notify::new(),
            stop: CancellationToken::new(),
        });
        // Re-announce releases verified before a restart, so devices hear of them at once.
        let known: Vec<String> = lock(&shared.releases)
            .values()
            .filter_map(|r| r.bytes.clone())
            .collect();
        for b in known {
            if let Err(e) = shared.node.announce(b.into_bytes()).await {
                tracing::info!(error = %e, "a stored release is no longer announced");
            }
        }
        tokio::spawn(collect_reports(shared.clone()));
        tokio::spawn(run_wan(shared.clone()));
        tokio::spawn(run_schedule(shared.clone()));
        let api_addr = match shared.cfg.api_listen {
            Some(a) => Some(
                crate::api::spawn(shared_api(shared.clone()), a, shared.stop.clone())
                    .await
                    .map_err(|source| GatewayError::Io {
                        path: PathBuf::from(a.to_string()),
                        source,
                    })?,
            ),
            None => None,
        };
        Ok(Self { shared, api_addr })
    }

    /// The swarm node.
    pub fn node(&self) -> &Handle {
        &self.shared.node
    }
    /// The API's bound address.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }
    /// Bytes downloaded from the origin so far (all restarts).
    pub fn wan_bytes(&self) -> u64 {
        self.shared.wan_bytes.load(Ordering::Relaxed)
    }
    /// Of those, bytes of index, manifests and outboards since this start.
    pub fn wan_metadata_bytes(&self) -> u64 {
        self.shared.wan_metadata_bytes.load(Ordering::Relaxed)
    }
    /// Devices.
    pub fn devices(&self) -> Vec<DeviceView> {
        devices_view(&self.shared)
    }
    /// Releases.
    pub fn releases(&self) -> Vec<ReleaseView> {
        releases_view(&self.shared)
    }
    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        metrics_text(&self.shared)
    }
    /// Polls the origin now.
    pub fn poll_now(&self) {
        self.shared.wake.notify_one();
    }
    /// Stops everything.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        let _ = self.shared.node.shutdown().await;
        for e in self.shared.store.list() {
            let _ = e.sync();
        }
        let _ = self
            .shared
            .db
            .set_meta("wan_bytes", self.shared.wan_bytes.load(Ordering::Relaxed));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The API's view of the gateway.
#[derive(Debug, Clone)]
pub struct ApiState(Arc<Shared>);

fn shared_api(s: Arc<Shared>) -> ApiState {
    ApiState(s)
}

impl ApiState {
    /// Devices.
    pub fn devices(&self) -> Vec<DeviceView> {
        devices_view(&self.0)
    }
    /// Releases.
    pub fn releases(&self) -> Vec<ReleaseView> {
        releases_view(&self.0)
    }
    /// Metrics text.
    pub fn metrics(&self) -> String {
        metrics_text(&self.0)
    }
}

fn devices_view(s: &Shared) -> Vec<DeviceView> {
    let now = Timestamp::now().as_unix();
    lock(&s.devices)
        .values()
        .map(|d| {
            let since = now.saturating_sub(d.last_seen.as_unix());
            DeviceView {
                id: d.id.clone(),
                peer: d.peer.clone(),
                installed: d.report.version.clone(),
                counter: d.report.counter,
                hardware: d.report.hardware.clone(),
                state: d.report.state.clone(),
                target: d.report.target.clone(),
                progress: d
                    .report
                    .progress
                    .filter(|p| p.total > 0)
                    .map(|p| p.have as f64 / p.total as f64),
                last_result: d.report.last.as_ref().map(|l| l.result.clone()),
                last_reason: d.report.last.as_ref().and_then(|l| l.reason.clone()),
                last_seen: d.last_seen,
                seconds_since_seen: since,
                stale: since > s.cfg.offline_after.as_secs(),
                bytes_from_gateway: d.report.bytes_from_gateway,
                bytes_from_peers: d.report.bytes_from_peers,
            }
        })
        .collect()
}

fn releases_view(s: &Shared) -> Vec<ReleaseView> {
    let needed = needed_artifacts(s);
    let mut v: Vec<ReleaseView> = lock(&s.releases)
        .values()
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
                                kind: a.kind_str().into(),
                                length: a.length,
                                groups_have: have,
                                groups_total: total,
                                needed: needed.iter().any(|(_, n)| n.root == a.root),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            ReleaseView {
                version: r.version.clone(),
                counter: r.counter,
                path: r.path.clone(),
                manifest: r.manifest,
                status: r.status.clone(),
                reason: r.reason.clone(),
                hardware: r.hardware.clone(),
                expires: r.expires,
                artifacts,
            }
        })
        .collect();
    v.sort_by_key(|r| r.counter);
    v
}

fn metrics_text(s: &Shared) -> String {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for d in devices_view(s) {
        let st = if d.stale {
            "offline".to_string()
        } else {
            d.state
        };
        *counts.entry(st).or_default() += 1;
    }
    for st in [
        "idle",
        "fetching",
        "installing",
        "activating",
        "rebooting",
        "health_check",
        "committing",
        "rolling_back",
        "offline",
    ] {
        s.metrics
            .devices
            .get_or_create(&StateLabel { state: st.into() })
            .set(counts.remove(st).unwrap_or(0));
    }
    for (st, n) in counts {
        s.metrics
            .devices
            .get_or_create(&StateLabel { state: st })
            .set(n);
    }
    let mut out = String::new();
    let reg = lock(&s.registry);
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// Device reports over the swarm.
async fn collect_reports(s: Arc<Shared>) {
    let mut rx = s.node.subscribe();
    let mut last_saved: BTreeMap<String, (String, std::time::Instant)> = BTreeMap::new();
    loop {
        let ev = tokio::select! {
            e = rx.recv() => e,
            _ = s.stop.cancelled() => return,
        };
        match ev {
            Ok(Event::Report { peer, device, body }) => {
                let report: Report = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "unreadable status report");
                        continue;
                    }
                };
                let state_changed = {
                    let mut d = lock(&s.devices);
                    let old = d
                        .get(&device)
                        .map(|r| (r.report.state.clone(), r.report.counter, r.report.image));
                    let changed = old != Some((report.state.clone(), report.counter, report.image));
                    d.insert(
                        device.clone(),
                        DeviceRecord {
                            id: device.clone(),
                            peer: peer.to_string(),
                            report,
                            last_seen: Timestamp::now(),
                        },
                    );
                    changed
                };
                // Persist on a state change, else at most every 10 s per device.
                let rec = lock(&s.devices).get(&device).cloned();
                if let Some(rec) = rec {
                    let due = last_saved
                        .get(&device)
                        .map(|(st, t)| {
                            *st != rec.report.state || t.elapsed() > Duration::from_secs(10)
                        })
                        .unwrap_or(true);
                    if due {
                        if let Err(e) = s.db.put(Table::Devices, &device, &rec) {
                            tracing::error!(error = %e, "cannot save device state");
                        }
                        last_saved.insert(
                            device.clone(),
                            (rec.report.state.clone(), std::time::Instant::now()),
                        );
                    }
                }
                if state_changed {
                    s.wake.notify_one();
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// Applies the WAN schedule every 30 s.
async fn run_schedule(s: Arc<Shared>) {
    let mut t = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = t.tick() => s.wan_cap.set(s.cfg.wan.rate_at(Timestamp::now().as_unix())),
            _ = s.stop.cancelled() => return,
        }
    }
}

/// One needed artifact and where it lives on the origin.
#[derive(Debug, Clone)]
struct Need {
    path: String,
    root: Hash,
    length: u64,
}

/// What the ward needs: for each device, the newest verified release for its hardware above its
/// counter, as a delta from the image it reports if the release has one, else the full image.
fn needed_artifacts(s: &Shared) -> Vec<(String, Need)> {
    let now = Timestamp::now();
    let releases: Vec<(ReleaseRecord, SignedManifest)> = lock(&s.releases)
        .values()
        .filter(|r| r.status == "verified" && r.expires.is_none_or(|e| now < e))
        .filter_map(|r| {
            let sm = SignedManifest::parse(r.bytes.as_deref()?.as_bytes()).ok()?;
            Some((r.clone(), sm))
        })
        .collect();
    let mut out: Vec<(String, Need)> = Vec::new();
    let mut add = |why: String, path: &str, a: &Artifact| {
        if !out.iter().any(|(_, n)| n.root == a.root) {
            out.push((
                why,
                Need {
                    path: path.into(),
                    root: a.root,
                    length: a.length,
                },
            ));
        }
    };
    for d in lock(&s.devices).values() {
        let best = releases
            .iter()
            .filter(|(_, sm)| {
                sm.manifest.counter > d.report.counter
                    && sm.manifest.hardware.contains(&d.report.hardware)
            })
            .max_by_key(|(_, sm)| sm.manifest.counter);
        if let Some((r, sm)) = best {
            let m = &sm.manifest;
            if let Some(a) = m.delta_from(&d.report.image).or_else(|| m.full()) {
                add(format!("device {}", d.id), &r.path, a);
            }
        }
    }
    if s.cfg.prefetch {
        let mut hw: BTreeSet<&str> = BTreeSet::new();
        for (_, sm) in &releases {
            hw.extend(sm.manifest.hardware.iter().map(String::as_str));
        }
        for h in hw {
            if let Some((r, sm)) = releases
                .iter()
                .filter(|(_, sm)| sm.manifest.hardware.iter().any(|x| x == h))
                .max_by_key(|(_, sm)| sm.manifest.counter)
            {
                if let Some(a) = sm.manifest.full() {
                    add(format!("prefetch for {h}"), &r.path, a);
                }
            }
        }
    }
    out
}

/// The WAN loop: poll, plan, download; sleep until the next poll or a device changes state.
async fn run_wan(s: Arc<Shared>) {
    let mut next_poll = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        if tokio::time::Instant::now() >= next_poll {
            match poll_origin(&s).await {
                Ok(()) => failures = 0,
                Err(WanError::Stopped) => return,
                Err(e) => {
                    s.metrics.origin_errors.inc();
                    tracing::warn!(error = %e, "origin poll failed; will retry");
                }
            }
            next_poll = tokio::time::Instant::now() + s.cfg.poll_interval;
        }
        let mut wait = s.cfg.poll_interval;
        for (why, need) in needed_artifacts(&s) {
            if s.store.get(&need.root).is_some_and(|e| e.is_complete()) {
                continue;
            }
            tracing::info!(root = %need.root, length = need.length, %why, "downloading artifact from the origin");
            let had = s
                .store
                .get(&need.root)
                .map(|e| e.have().count())
                .unwrap_or(0);
            let r = download(&s, &need).await;
            let has = s
                .store
                .get(&need.root)
                .map(|e| e.have().count())
                .unwrap_or(0);
            if has > had {
                // Progress before the fault: retry soon, the link works.
                failures = 0;
            }
            match r {
                Ok(()) => {
                    failures = 0;
                    tracing::info!(root = %need.root, "artifact complete and verified");
                }
                Err(WanError::Stopped) => return,
                Err(e) => {
                    failures += 1;
                    if matches!(e, WanError::Corrupt { .. }) {
                        s.metrics.origin_corrupt.inc();
                        tracing::warn!(target: "wardswarm::security", error = %e, "origin served data that fails verification");
                    } else {
                        s.metrics.origin_errors.inc();
                        tracing::warn!(error = %e, "download interrupted; resuming after a pause");
                    }
                    wait = wait.min(Duration::from_millis(500 * u64::from(failures.min(60))));
                    break;
                }
            }
        }
        tokio::select! {
            _ = s.stop.cancelled() => return,
            _ = s.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::time::sleep_until(next_poll) => {}
        }
    }
}

fn url(s: &Shared, path: &str) -> Result<reqwest::Url, WanError> {
    s.cfg
        .origin
        .join(path)
        .map_err(|e| WanError::Local(format!("origin URL for {path}: {e}")))
}

fn count_wan(s: &Shared, n: u64) {
    s.wan_bytes.fetch_add(n, Ordering::Relaxed);
    s.metrics.wan_bytes.inc_by(n);
}

/// Index, manifests and outboards: WAN bytes that are not artifact data.
fn count_wan_metadata(s: &Shared, n: u64) {
    count_wan(s, n);
    s.wan_metadata_bytes.fetch_add(n, Ordering::Relaxed);
}

/// GETs a small document whole, refusing one over `max` bytes.
async fn get_doc(s: &Shared, path: &str, max: usize) -> Result<Vec<u8>, WanError> {
    get_doc_if_changed(s, path, max, None)
        .await
        .map(|(b, _)| b.unwrap_or_default())
}

/// The validator of the last index response, for a conditional GET. Only an ETag is used:
/// Last-Modified has one-second resolution, and an index re-published within the same second would
/// be missed for good.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Validators {
    etag: Option<String>,
}

/// GETs a document; with validators, a `304 Not Modified` returns `None` (no body crossed the WAN).
async fn get_doc_if_changed(
    s: &Shared,
    path: &str,
    max: usize,
    cond: Option<&Validators>,
) -> Result<(Option<Vec<u8>>, Validators), WanError> {
    let u = url(s, path)?;
    let net = |e: reqwest::Error| WanError::Network {
        url: u.to_string(),
        reason: e.to_string(),
    };
    let mut req = s.http.get(u.clone());
    if let Some(v) = cond {
        if let Some(e) = &v.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, e);
        }
    }
    let mut resp = tokio::select! {
        r = req.send() => r.map_err(net)?,
        _ = s.stop.cancelled() => return Err(WanError::Stopped),
    };
    let header = |n: reqwest::header::HeaderName| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let validators = Validators {
        etag: header(reqwest::header::ETAG),
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
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Err(WanError::Refused {
            url: u.to_string(),
            reason: format!("larger than the {max}-byte cap"),
        });
    }
    let mut body = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(net)? {
        count_wan_metadata(s, c.len() as u64);
        body.extend_from_slice(&c);
        if body.len() > max {
            return Err(WanError::Refused {
                url: u.to_string(),
                reason: format!("larger than the {max}-byte cap"),
            });
        }
    }
    Ok((Some(body), validators))
}

fn record_release(s: &Shared, r: ReleaseRecord) {
    if let Err(e) = s.db.put(Table::Releases, &r.manifest.to_string(), &r) {
        tracing::error!(error = %e, "cannot save release state");
    }
    lock(&s.releases).insert(r.manifest, r);
}

/// Fetches and verifies the index, then every manifest not yet judged.
async fn poll_origin(s: &Arc<Shared>) -> Result<(), WanError> {
    let cond = lock(&s.index_validators).clone();
    let (bytes, validators) =
        get_doc_if_changed(s, INDEX_FILE, DocKind::Index.max_bytes(), cond.as_ref()).await?;
    let Some(bytes) = bytes else {
        // Not modified: nothing new to judge, but the index we hold may have gone stale.
        if let Some(exp) = *lock(&s.index_expires) {
            if Timestamp::now() >= exp {
                *lock(&s.index_validators) = None;
                return Err(WanError::Refused {
                    url: url(s, INDEX_FILE)?.to_string(),
                    reason: format!("the origin's index expired at {exp} and was not re-published (stale origin)"),
                });
            }
        }
        return Ok(());
    };
    let seen =
        s.db.meta("index_version")
            .map_err(|e| WanError::Local(e.to_string()))?;
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
    *lock(&s.index_validators) = Some(validators);
    *lock(&s.index_expires) = Some(index.expires);
    if seen != Some(index.version) {
        s.db.set_meta("index_version", index.version)
            .map_err(|e| WanError::Local(e.to_string()))?;
        tracing::info!(
            version = index.version,
            releases = index.releases.len(),
            "origin index verified"
        );
    }
    for entry in &index.releases {
        // The index names manifests by hash: the same bytes get the same verdict, so a release is
        // judged once, unless its manifest could not be fetched.
        let known = lock(&s.releases).get(&entry.manifest).map(|r| r.retry);
        if known == Some(false) {
            continue;
        }
        let rec = judge_release(s, entry).await?;
        if rec.status == "verified" {
            tracing::info!(version = %rec.version, path = %rec.path, "release verified");
            if let Some(b) = &rec.bytes {
                if let Err(e) = s.node.announce(b.clone().into_bytes()).await {
                    tracing::warn!(error = %e, "announcing the release to the ward failed");
                }
            }
        } else {
            s.metrics.releases_refused.inc();
            tracing::warn!(target: "wardswarm::security", version = %rec.version, path = %rec.path, reason = ?rec.reason, "release refused");
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
        status: "refused".into(),
        reason: None,
        hardware: e.hardware.clone(),
        expires: None,
        bytes: None,
        retry: false,
    };
    let bytes = match get_doc(
        s,
        &format!("{}/manifest.json", e.path),
        DocKind::Release.max_bytes(),
    )
    .await
    {
        Ok(b) => b,
        Err(WanError::Stopped) => return Err(WanError::Stopped),
        Err(err) => {
            rec.retry = matches!(err, WanError::Network { .. } | WanError::Status { .. });
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
    rec.status = "verified".into();
    rec.bytes = Some(String::from_utf8_lossy(&bytes).into_owned());
    Ok(rec)
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
    fsutil::replace(&p, &b, 0o644).map_err(|e| WanError::Local(format!("{}: {e}", p.display())))?;
    Ok(b)
}

/// Downloads the missing groups of one artifact by HTTP range, verifying and seeding as it goes.
async fn download(s: &Arc<Shared>, need: &Need) -> Result<(), WanError> {
    let entry = s
        .store
        .create(need.root, need.length)
        .map_err(|e| WanError::Local(e.to_string()))?;
    if entry.is_complete() {
        return Ok(());
    }
    let ob = Arc::new(outboard_for(s, need).await?);
    let have = entry.have();
    let missing: Vec<_> = wardswarm_node::groups::GroupSet::full(have.len())
        .difference(&have)
        .runs()
        .collect();
    let per_req = s.cfg.range_bytes / GROUP_BYTES;
    let u = url(
        s,
        &format!("{}/artifacts/{}", need.path, need.root.to_hex()),
    )?;
    let batch_groups = 64u64; // verify and seed every 1 MiB
    for run in missing {
        let mut g = run.start;
        while g < run.end {
            let end_g = (g + per_req).min(run.end);
            let start = g * GROUP_BYTES;
            let end = (end_g * GROUP_BYTES).min(need.length);
            let net = |e: reqwest::Error| WanError::Network {
                url: u.to_string(),
                reason: e.to_string(),
            };
            let req = s
                .http
                .get(u.clone())
                .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1));
            let mut resp = tokio::select! {
                r = req.send() => r.map_err(net)?,
                _ = s.stop.cancelled() => return Err(WanError::Stopped),
            };
            let mut skip = match resp.status().as_u16() {
                206 => 0u64,
                // A server without range support sends the whole file: skip to our offset.
                200 => start,
                st => {
                    return Err(WanError::Status {
                        url: u.to_string(),
                        status: st,
                    })
                }
            };
            let mut buf: Vec<u8> = Vec::with_capacity((batch_groups * GROUP_BYTES) as usize);
            let mut buf_group = g;
            let want = end - start;
            let mut got = 0u64;
            let mut cut = None;
            loop {
                let chunk = tokio::select! {
                    c = resp.chunk() => c,
                    _ = s.stop.cancelled() => return Err(WanError::Stopped),
                };
                let mut c = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        cut = Some(e.to_string());
                        break;
                    }
                };
                count_wan(s, c.len() as u64);
                tokio::select! {
                    _ = s.wan_cap.acquire_bytes(c.len() as u64) => {}
                    _ = s.stop.cancelled() => return Err(WanError::Stopped),
                }
                if skip > 0 {
                    let k = skip.min(c.len() as u64) as usize;
                    skip -= k as u64;
                    c = c.slice(k..);
                }
                let room = (want - got) as usize;
                let take = c.len().min(room);
                buf.extend_from_slice(&c[..take]);
                got += take as u64;
                while buf.len() as u64 >= batch_groups * GROUP_BYTES {
                    let rest = buf.split_off((batch_groups * GROUP_BYTES) as usize);
                    receive(
                        s,
                        &entry,
                        buf_group,
                        std::mem::replace(&mut buf, rest),
                        ob.clone(),
                    )
                    .await?;
                    buf_group += batch_groups;
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
                    receive(s, &entry, buf_group, buf, ob.clone()).await?;
                }
                return Err(WanError::Network {
                    url: u.to_string(),
                    reason: format!(
                        "connection ended after {got} of {want} bytes{}",
                        cut.map(|c| format!(": {c}")).unwrap_or_default()
                    ),
                });
            }
            if !buf.is_empty() {
                receive(s, &entry, buf_group, buf, ob.clone()).await?;
            }
            g = end_g;
        }
    }
    entry.sync().map_err(|e| WanError::Local(e.to_string()))?;
    if !entry.is_complete() {
        return Err(WanError::Local(format!(
            "artifact {} is still missing groups after its download",
            need.root
        )));
    }
    Ok(())
}

/// Verifies a batch of groups from the origin into the store and tells the ward.
async fn receive(
    s: &Arc<Shared>,
    entry: &Arc<wardswarm_node::store::Entry>,
    first_group: u64,
    data: Vec<u8>,
    ob: Arc<Vec<u8>>,
) -> Result<(), WanError> {
    let e = entry.clone();
    let root = e.root();
    let r = tokio::task::spawn_blocking(move || e.receive_plain(first_group, &data, &ob, |_| {}))
        .await
        .map_err(|e| WanError::Local(e.to_string()))?;
    match r {
        Ok(_) => {
            let _ = s.node.have_changed(root).await;
            // Keep the WAN counter across a kill, at most one batch behind.
            let _ =
                s.db.set_meta("wan_bytes", s.wan_bytes.load(Ordering::Relaxed));
            Ok(())
        }
        Err(ReceiveError::Local(e)) => Err(WanError::Local(e.to_string())),
        Err(e) => Err(WanError::Corrupt {
            root,
            reason: e.to_string(),
        }),
    }
}
