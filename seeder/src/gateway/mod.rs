//! The ward gateway: poll the origin, verify, work out what the ward needs, download each needed
//! artifact once over the capped WAN (resuming by HTTP range), verify every chunk group as it arrives
//! and seed it to the ward at once; collect device reports; serve the HTTP API and metrics.
//!
//! | module | what it owns |
//! |---|---|
//! | [`state`] | device and release records (enum statuses), the last verified index |
//! | `http` | the origin client: URLs, capped and conditional document GETs, WAN counters |
//! | `judge` | verifying the index and each manifest it names |
//! | [`plan`] | what the ward needs (a pure function) |
//! | `download` | the WAN loop and the ranged, verified, seeded download of one artifact |
//! | `reports` | device report intake |
//! | [`views`] | the API's views and the metrics |

pub mod directives;
mod download;
mod http;
mod judge;
pub mod plan;
mod reports;
pub mod state;
pub mod views;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use libp2p::identity::Keypair;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wardswarm_node::{
    membership::{Certificate, Role},
    net::{
        self,
        caps::{Cap, Schedule},
        Handle,
    },
    outboard::GROUP_BYTES,
    root::TrustRoot,
    store::Store,
    Timestamp,
};

pub use download::VERIFY_BATCH_BYTES;
/// The URL type of the origin setting.
pub use reqwest::Url;
pub use state::{DeviceRecord, ReleaseRecord, ReleaseStatus};
pub use views::{ApiState, ArtifactView, DeviceView, ReleaseView};

use crate::db::{Db, DbError, Table};

/// The API's TLS certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The origin's base URL (the folder holding `index.json`), ending in `/`.
    pub origin: reqwest::Url,
    /// How often to poll the origin's index (default 60 s).
    pub poll_interval: Duration,
    /// State folder: `store/`, `outboards/`, `gateway.redb`.
    pub dir: PathBuf,
    /// The WAN download cap and schedule (default unlimited).
    pub wan: Schedule,
    /// HTTP API address (`None`, the default: no API).
    pub api_listen: Option<SocketAddr>,
    /// Serve the API over TLS (rustls) with this certificate chain and key, PEM files (default:
    /// plain HTTP; keep it on the management network then).
    pub api_tls: Option<ApiTls>,
    /// The read routes (`/api/v1/devices`, `/releases`, `/metrics`) answer without a token
    /// (default off: every route needs a bearer token; see `docs/rollouts.md`).
    pub api_open_reads: bool,
    /// The ward swarm node.
    pub node: net::Config,
    /// Time limit for connecting and for each read from the origin (default 30 s).
    pub http_timeout: Duration,
    /// Slowest origin response tolerated, in bytes per second over `origin_rate_window` (default
    /// 16 KiB/s, or half the WAN cap if that is lower): an origin that drips bytes, each read in time,
    /// is cut off and tried again later instead of holding the download for good.
    pub origin_min_rate: u64,
    /// The window `origin_min_rate` is judged over (default 30 s).
    pub origin_rate_window: Duration,
    /// Bytes per range request, a multiple of the 16 KiB chunk group (default 4 MiB).
    pub range_bytes: u64,
    /// Download the newest release's full image before any device asks for it (default off).
    pub prefetch: bool,
    /// A device not heard from for this long counts as offline (`stale` in the API; default 60 s).
    pub offline_after: Duration,
    /// Super-seed the ward (default on): show each device only groups no device has yet, so each
    /// byte leaves the gateway about once (see `wardswarm_node::seeding`). Ignored if `node.seeding`
    /// is set already.
    pub super_seed: bool,
    /// Rollouts in this ward: the reboot limit and the ward's maintenance window.
    pub rollouts: wardswarm_node::rollout::WardPolicy,
    /// The clock directives' expiry is set by (the system clock; simulations shift it, with the
    /// devices' clocks, to a given day and hour).
    pub clock: wardswarm_node::agent::directed::Clock,
}

impl GatewayConfig {
    /// Defaults for everything but the origin, folder and node.
    pub fn new(origin: reqwest::Url, dir: impl Into<PathBuf>, node: net::Config) -> Self {
        Self {
            origin,
            poll_interval: Duration::from_secs(60),
            dir: dir.into(),
            wan: Schedule::fixed(None),
            api_listen: None,
            api_open_reads: false,
            api_tls: None,
            node,
            http_timeout: Duration::from_secs(30),
            origin_min_rate: 16 * 1024,
            origin_rate_window: Duration::from_secs(30),
            range_bytes: 4 << 20,
            prefetch: false,
            offline_after: Duration::from_secs(60),
            super_seed: true,
            rollouts: Default::default(),
            clock: Default::default(),
        }
    }

    /// Checks rules that span fields.
    pub fn validate(&self) -> Result<(), GatewayError> {
        if self.range_bytes == 0 || !self.range_bytes.is_multiple_of(GROUP_BYTES) {
            return Err(GatewayError::Config(format!(
                "range_bytes must be a positive multiple of {GROUP_BYTES}"
            )));
        }
        Ok(())
    }
}

/// The gateway failed on this machine.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Db(DbError),
    #[error("{0}")]
    Node(net::NodeError),
    #[error("{0}")]
    Store(wardswarm_node::store::StoreError),
    #[error("gateway I/O on {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "api_listen {addr}: {cause} (set api_listen to a free address, or stop what holds it)"
    )]
    ApiListen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
}

impl From<DbError> for GatewayError {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}
impl From<net::NodeError> for GatewayError {
    fn from(e: net::NodeError) -> Self {
        Self::Node(e)
    }
}
impl From<wardswarm_node::store::StoreError> for GatewayError {
    fn from(e: wardswarm_node::store::StoreError) -> Self {
        Self::Store(e)
    }
}

/// What the gateway's tasks share.
#[derive(Debug)]
struct Shared {
    cfg: GatewayConfig,
    root: TrustRoot,
    store: Arc<Store>,
    node: Handle,
    db: Db,
    http: reqwest::Client,
    wan_cap: Cap,
    /// WAN bytes, all restarts (persisted as `wan_bytes`).
    wan_bytes: AtomicU64,
    /// Of those, index, manifests and outboards since this start.
    wan_metadata_bytes: AtomicU64,
    state: state::State,
    /// Tokens, rollouts and the gateway's audit log.
    control: crate::control::Control,
    metrics: views::Metrics,
    /// Wakes the download loop (a device changed state, a poll found something, `poll_now`).
    wake: Notify,
    /// Wakes the index poller (`poll_now`).
    poll: Notify,
    stop: CancellationToken,
}

/// A running gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    api_addr: Option<SocketAddr>,
}

fn checked_certificate(cert: &Certificate) -> Result<(), GatewayError> {
    if cert.role != Role::Gateway {
        return Err(GatewayError::Config(format!(
            "the certificate for {} has role {}, a gateway needs role gateway",
            cert.device,
            cert.role.as_str()
        )));
    }
    Ok(())
}

/// Opens the state folder: the store, the database and what it remembers.
fn open_state(dir: &Path) -> Result<(Arc<Store>, Db, state::Records, u64), GatewayError> {
    let outboards = dir.join("outboards");
    std::fs::create_dir_all(&outboards).map_err(|cause| GatewayError::Io {
        path: outboards,
        cause,
    })?;
    let store = Arc::new(Store::open(dir.join("store"))?);
    let db = Db::open(&dir.join("gateway.redb"))?;
    let wan_bytes = db.meta("wan_bytes")?.unwrap_or(0);
    let records = state::Records {
        devices: db
            .all::<DeviceRecord>(Table::Devices)?
            .into_iter()
            .collect(),
        releases: db
            .all::<ReleaseRecord>(Table::Releases)?
            .into_iter()
            .map(|(_, r)| (r.manifest, r))
            .collect(),
        index: Default::default(),
        connected: Default::default(),
    };
    Ok((store, db, records, wan_bytes))
}

impl Gateway {
    /// Starts the node, the origin poller and downloader, the report collector and the API.
    pub async fn start(
        cfg: GatewayConfig,
        keypair: Keypair,
        cert: &Certificate,
        root: TrustRoot,
    ) -> Result<Self, GatewayError> {
        checked_certificate(cert)?;
        cfg.validate()?;
        // The API's address first: a taken port must not leave a state folder behind.
        let api = match cfg.api_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|cause| GatewayError::ApiListen { addr, cause })?,
            ),
            None => None,
        };
        // And its certificate: a bad one must not leave a state folder either.
        let tls = match (&cfg.api_tls, &api) {
            (Some(t), Some(_)) => Some(crate::api::tls_config(t).await?),
            _ => None,
        };
        let (store, db, records, wan_bytes) = open_state(&cfg.dir)?;
        let mut ncfg = cfg.node.clone();
        if cfg.super_seed && ncfg.seeding.is_none() {
            ncfg.seeding = Some(Default::default());
        }
        let revocations = ncfg
            .revocations_file
            .get_or_insert_with(|| cfg.dir.join(REVOCATIONS_FILE))
            .clone();
        let (node, _join) = net::spawn(ncfg, keypair, cert, root.clone(), store.clone())?;
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.http_timeout)
            .read_timeout(cfg.http_timeout)
            .user_agent(concat!("wardswarm-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GatewayError::Config(format!("HTTP client: {e}")))?;
        let control = crate::control::Control::open(&cfg.dir, &db).map_err(|e| {
            GatewayError::Config(format!("control plane in {}: {e}", cfg.dir.display()))
        })?;
        let metrics = views::Metrics::new(&node.metrics());
        metrics.wan_bytes.inc_by(wan_bytes);
        let shared = Arc::new(Shared {
            wan_cap: Cap::new(cfg.wan.rate_at(Timestamp::now().as_unix())),
            cfg,
            root,
            store,
            node,
            db,
            http,
            wan_bytes: AtomicU64::new(wan_bytes),
            wan_metadata_bytes: AtomicU64::new(0),
            state: state::State::new(records),
            control,
            metrics,
            wake: Notify::new(),
            poll: Notify::new(),
            stop: CancellationToken::new(),
        });
        // Re-announce releases verified before a restart, so devices hear of them at once.
        let known: Vec<String> = shared
            .state
            .lock()
            .releases
            .values()
            .filter_map(|r| r.bytes.clone())
            .collect();
        for b in known {
            if let Err(e) = shared.node.announce(b.into_bytes()).await {
                tracing::info!(error = %e, "a stored release is no longer announced");
            }
        }
        tokio::spawn(reports::collect(shared.clone()));
        tokio::spawn(download::run_polls(shared.clone()));
        tokio::spawn(download::run_downloads(shared.clone()));
        tokio::spawn(run_schedule(shared.clone()));
        tokio::spawn(directives::run(shared.clone()));
        tokio::spawn(watch_revocations(shared.clone(), revocations));
        let api_addr = match api {
            Some(l) => Some(
                crate::api::serve(ApiState(shared.clone()), l, shared.stop.clone(), tls).map_err(
                    |cause| GatewayError::Io {
                        path: PathBuf::from("api_listen"),
                        cause,
                    },
                )?,
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
    /// The API's URL scheme: `https` with `api_tls`, else `http`.
    pub fn api_scheme(&self) -> &'static str {
        if self.shared.cfg.api_tls.is_some() {
            "https"
        } else {
            "http"
        }
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
        views::devices(&self.shared)
    }
    /// Releases.
    pub fn releases(&self) -> Vec<ReleaseView> {
        views::releases(&self.shared)
    }
    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        views::metrics_text(&self.shared)
    }
    /// Polls the origin now.
    pub fn poll_now(&self) {
        self.shared.poll.notify_one();
        self.shared.wake.notify_one();
    }
    /// Stops everything.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        let _ = self.shared.node.shutdown().await;
        let store = self.shared.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for e in store.list() {
                let _ = e.sync();
            }
        })
        .await;
        let _ = self
            .shared
            .db
            .set_meta("wan_bytes", self.shared.wan_bytes.load(Ordering::Relaxed));
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

/// The revocation list's file in the state folder, unless `node.revocations_file` names another.
pub const REVOCATIONS_FILE: &str = "revocations.json";
/// How often the gateway looks for a new list an operator put in place of its file.
const REVOCATIONS_POLL: Duration = Duration::from_secs(2);

fn stamp(p: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Puts in force a revocation list the operator wrote over the list file (`wardswarm cert revoke`
/// replaces it atomically): the node verifies it, disconnects the peers it names and passes it to
/// the ward. A list that does not verify or is not newer changes nothing, and the one in force stays.
async fn watch_revocations(s: Arc<Shared>, path: PathBuf) {
    let mut seen = stamp(&path);
    let mut t = tokio::time::interval(REVOCATIONS_POLL);
    loop {
        tokio::select! {
            _ = t.tick() => {}
            _ = s.stop.cancelled() => return,
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        if now.is_none() {
            continue;
        }
        let max = wardswarm_node::signed::DocKind::Revocations.max_bytes() as u64;
        let bytes = match wardswarm_node::fsutil::read_capped(&path, max) {
            Ok(Ok(b)) => b,
            Ok(Err(len)) => {
                tracing::warn!(path = %path.display(), len, max, "revocation list file is over the size cap: the list in force stays");
                continue;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "reading the revocation list failed: the list in force stays");
                continue;
            }
        };
        match s.node.set_revocations(bytes).await {
            Ok(true) => tracing::info!(path = %path.display(), "new revocation list in force"),
            Ok(false) => {
                tracing::debug!(path = %path.display(), "revocation list file unchanged in substance")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "revocation list refused: the list in force stays")
            }
        }
    }
}
