//! What applications hold: a cloneable [`Handle`] that sends [`Command`]s over a bounded channel to
//! the actor, the [`Event`]s the node broadcasts, and the errors of both. A stopped actor is
//! [`NodeError::Stopped`], never a panic.

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    caps::Cap,
    config::ConfigError,
    metrics::Metrics,
    wire::{self},
};
use crate::{
    hash::Hash,
    manifest::ManifestError,
    membership::Role,
    revocation::{RevocationError, RevocationList},
    scheduler,
    store::StoreError,
    time::Timestamp,
};

/// The node could not be set up on this machine (not a peer's fault).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TCP with noise: {0}")]
    Noise(libp2p::noise::Error),
    #[error("listening on {addr}: {cause}")]
    Listen {
        addr: Multiaddr,
        cause: libp2p::TransportError<std::io::Error>,
    },
    #[error("protocol {protocol} is registered twice")]
    Protocol { protocol: StreamProtocol },
}

/// A release announcement (ours or a peer's) that this node refuses.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("{0}")]
    Manifest(ManifestError),
    #[error("release {version} expired at {expires}")]
    Expired { version: String, expires: Timestamp },
}

/// Errors of the node and its handle.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid node configuration: {0}")]
    Config(ConfigError),
    #[error("network setup: {0}")]
    Transport(TransportError),
    #[error("the node has stopped")]
    Stopped,
    #[error("{0}")]
    Store(StoreError),
    #[error("announcement refused: {0}")]
    Announce(AnnounceError),
    #[error("revocation list refused: {0}")]
    Revocation(RevocationError),
    /// Our own disk failed while fetching; the peers are not to blame.
    #[error("local store failure while fetching {root}: {cause}")]
    Local { root: Hash, cause: Arc<StoreError> },
    /// A background task of the node failed (a panic in a blocking task).
    #[error("local task failure while fetching {root}: {cause}")]
    Task { root: Hash, cause: String },
}

// Conversions by hand: the cause is part of the message, so it is not also a `source()` (printing a
// chain would repeat it).
impl From<ConfigError> for NodeError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}
impl From<TransportError> for NodeError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}
impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}
impl From<RevocationError> for NodeError {
    fn from(e: RevocationError) -> Self {
        Self::Revocation(e)
    }
}
impl From<AnnounceError> for NodeError {
    fn from(e: AnnounceError) -> Self {
        Self::Announce(e)
    }
}

/// What a finished fetch reports.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The artifact.
    pub root: Hash,
    /// Seconds from the fetch command to the last verified group.
    pub seconds: f64,
    /// Scheduler counters.
    pub stats: scheduler::Stats,
    /// Peers banned while fetching.
    pub banned: Vec<PeerId>,
}

/// Things the node tells applications.
#[derive(Debug, Clone)]
pub enum Event {
    /// A peer proved ward membership.
    PeerAdmitted {
        peer: PeerId,
        role: Role,
        device: String,
    },
    /// A peer was refused admission.
    PeerRefused { peer: PeerId, reason: String },
    /// An admitted peer is no member any more: its last connection closed, or its admission ended.
    PeerLeft { peer: PeerId },
    /// A verified, signed manifest arrived (from a peer or via `announce`).
    Manifest {
        bytes: Arc<Vec<u8>>,
        from: Option<PeerId>,
    },
    /// A group of an artifact being fetched verified.
    Progress { root: Hash, have: u64, total: u64 },
    /// A peer served corrupt data and was banned for an artifact.
    PeerBanned { peer: PeerId, root: Hash },
    /// A request made no progress for the stall timeout and was abandoned; its groups go elsewhere.
    Stalled { root: Hash },
    /// An artifact is complete in the store.
    Complete { root: Hash },
    /// A newer certificate revocation list was adopted (given through the handle, or from `from`);
    /// admitted peers it names were disconnected. `revokes_us`: it names this node.
    Revocations {
        serial: u64,
        revoked: usize,
        from: Option<PeerId>,
        revokes_us: bool,
    },
    /// The ward's gateway sent this device a rollout directive (JSON, unparsed; see
    /// [`crate::rollout::directive`]). One from any other member is refused and never emitted.
    Directive { peer: PeerId, body: Arc<Vec<u8>> },
    /// An admitted peer sent a status report (JSON, at most `wire::MAX_REPORT_FRAME` bytes).
    Report {
        peer: PeerId,
        device: String,
        body: Arc<Vec<u8>>,
    },
}

pub(super) type FetchReply = oneshot::Sender<Result<FetchReport, NodeError>>;

/// What the handle asks of the actor.
pub(super) enum Command {
    Fetch {
        root: Hash,
        length: u64,
        reply: FetchReply,
    },
    Announce {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<(PeerId, Role, String)>>,
    },
    Dial {
        addr: Multiaddr,
        /// The application named this peer: show it our certificate first.
        vouch: bool,
    },
    HaveChanged {
        root: Hash,
    },
    Report {
        body: Vec<u8>,
    },
    Directive {
        peer: PeerId,
        body: Vec<u8>,
    },
    Manifests {
        reply: oneshot::Sender<Vec<Arc<Vec<u8>>>>,
    },
    SetRevocations {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<bool, NodeError>>,
    },
    Revocations {
        reply: oneshot::Sender<Option<Arc<RevocationList>>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Fetch { .. } => "Fetch",
            Command::Announce { .. } => "Announce",
            Command::ListenAddrs { .. } => "ListenAddrs",
            Command::Peers { .. } => "Peers",
            Command::Dial { .. } => "Dial",
            Command::HaveChanged { .. } => "HaveChanged",
            Command::Report { .. } => "Report",
            Command::Directive { .. } => "Directive",
            Command::Manifests { .. } => "Manifests",
            Command::SetRevocations { .. } => "SetRevocations",
            Command::Revocations { .. } => "Revocations",
            Command::Shutdown { .. } => "Shutdown",
        })
    }
}

/// Commands waiting for the actor: enough for bursts of application calls, small enough that a
/// stuck actor pushes back on its callers at once.
pub(super) const COMMAND_QUEUE: usize = 64;

/// A cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) peer_id: PeerId,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) upload: Cap,
    pub(super) download: Cap,
}

impl Handle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
    async fn send(&self, c: Command) -> Result<(), NodeError> {
        self.tx.send(c).await.map_err(|_| NodeError::Stopped)
    }
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }
    /// Fetches an artifact (root and signed length) into the store; resolves when every group is
    /// verified. Dropping the future stops the fetch (within a scheduler tick) once no other caller
    /// waits for the same artifact; the groups verified so far stay in the store.
    pub async fn fetch(&self, root: Hash, length: u64) -> Result<FetchReport, NodeError> {
        self.call(|reply| Command::Fetch {
            root,
            length,
            reply,
        })
        .await?
    }
    /// Verifies a signed manifest against the trust root and announces it to the ward.
    pub async fn announce(&self, manifest: Vec<u8>) -> Result<(), NodeError> {
        self.call(|reply| Command::Announce {
            bytes: manifest,
            reply,
        })
        .await?
    }
    /// Listen addresses with `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }
    /// Admitted peers: id, role, device id.
    pub async fn peers(&self) -> Result<Vec<(PeerId, Role, String)>, NodeError> {
        self.call(|reply| Command::Peers { reply }).await
    }
    /// Dials a peer the application names (with `/p2p/<peer id>`), as a bootstrap entry does: this
    /// node trusts that peer id enough to show it its certificate first.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.send(Command::Dial { addr, vouch: true }).await
    }
    /// Dials a peer found by discovery (as an mDNS answer is): the peer must prove membership
    /// before it sees this node's certificate, unless it is already known as a member.
    pub async fn dial_discovered(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.send(Command::Dial { addr, vouch: false }).await
    }
    /// Tells the node a stored artifact changed outside a fetch (e.g. an import), so it re-announces.
    pub async fn have_changed(&self, root: Hash) -> Result<(), NodeError> {
        self.send(Command::HaveChanged { root }).await
    }
    /// The verified manifests this node knows (announced to it or by it), at most the last 32.
    pub async fn manifests(&self) -> Result<Vec<Arc<Vec<u8>>>, NodeError> {
        self.call(|reply| Command::Manifests { reply }).await
    }
    /// Adopts a certificate revocation list (verified against the trust root and the ward) if its
    /// serial is higher than the one held: admitted peers it names are disconnected, and it goes to
    /// every admitted member. `Ok(false)`: not newer, nothing changed.
    pub async fn set_revocations(&self, bytes: Vec<u8>) -> Result<bool, NodeError> {
        self.call(|reply| Command::SetRevocations { bytes, reply })
            .await?
    }
    /// The revocation list this node holds, if any.
    pub async fn revocations(&self) -> Result<Option<Arc<RevocationList>>, NodeError> {
        self.call(|reply| Command::Revocations { reply }).await
    }
    /// Sends a status report (JSON) to every admitted gateway; best effort, bounded in size.
    pub async fn report(&self, body: Vec<u8>) -> Result<(), NodeError> {
        if body.len() > wire::MAX_REPORT_FRAME {
            return Err(ConfigError::ReportTooLarge {
                len: body.len(),
                max: wire::MAX_REPORT_FRAME,
            }
            .into());
        }
        self.send(Command::Report { body }).await
    }
    /// Sends a rollout directive (JSON) to one admitted peer; best effort, bounded in size. Only a
    /// gateway's directives are taken: a device refuses one from any other member.
    pub async fn direct(&self, peer: PeerId, body: Vec<u8>) -> Result<(), NodeError> {
        let max = crate::rollout::directive::MAX_DIRECTIVE_FRAME;
        if body.len() > max {
            return Err(ConfigError::ReportTooLarge {
                len: body.len(),
                max,
            }
            .into());
        }
        self.send(Command::Directive { peer, body }).await
    }
    /// Subscribes to node events (a slow subscriber misses events rather than blocking the node).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
    /// This node's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
    /// The live upload cap (changeable).
    pub fn upload_cap(&self) -> &Cap {
        &self.upload
    }
    /// The live download cap (changeable).
    pub fn download_cap(&self) -> &Cap {
        &self.download
    }
    /// Stops the node and waits until it has.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}
