//! The node actor: owns the libp2p `Swarm`, drives one [`Scheduler`] per artifact being fetched, and
//! serves verified chunk groups. Applications hold a cloneable [`Handle`] that sends commands over a
//! bounded channel; replies come back on oneshots. A stopped actor is an error, never a panic.
//!
//! Admission is zero-trust: right after the noise handshake the dialer sends its membership
//! certificate and the listener answers with its own. Until a peer is admitted it can use only
//! identify, ping and admission: the have, announce and transfer handlers refuse it, nothing is sent
//! to it, and it is disconnected after `admission_timeout`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{self, Read, Write},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    connection_limits, identify,
    identity::Keypair,
    mdns,
    multiaddr::Protocol,
    noise, ping,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, Stream, Swarm,
};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    caps::{Cap, Schedule},
    metrics::{DirectionLabels, Metrics, TransferLabels},
    wire::{self, Get, Have, Status},
};
use crate::{
    groups::GroupSet,
    hash::Hash,
    manifest::SignedManifest,
    membership::{Certificate, Role},
    root::TrustRoot,
    scheduler::{self, Action, Input, Outcome, ReqId, Scheduler},
    seeding::{self, SuperSeed},
    store::{Entry, ReceiveError, Store},
    time::Timestamp,
};

/// Deliberate misbehaviour, for tests and simulations of hostile or broken peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve chunk groups with one byte flipped (a liar).
    CorruptServe,
    /// Accept transfer requests and never answer (a staller).
    StallServe,
}

/// Node settings. Every field has a default; `validate` checks rules that span fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (default `/ip4/0.0.0.0/tcp/0`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and redial while disconnected, with `/p2p/<peer id>` (e.g. the gateway).
    pub bootstrap: Vec<Multiaddr>,
    /// Discover ward peers by mDNS (default on).
    pub mdns: bool,
    /// How often mDNS re-queries (default 5 s; libp2p's 5-minute default is far too slow for a ward).
    pub mdns_query_interval: Duration,
    /// The ward this node belongs to; certificates for other wards are refused.
    pub ward: String,
    /// Upload cap schedule (default unlimited). A cap of zero makes the node leech only.
    pub upload: Schedule,
    /// Download cap schedule (default unlimited).
    pub download: Schedule,
    /// A peer that has not proved membership by then is disconnected (default 5 s).
    pub admission_timeout: Duration,
    /// Established connections in total (default 256).
    pub max_connections: u32,
    /// Established connections per peer (default 2: allows a simultaneous dial).
    pub max_connections_per_peer: u32,
    /// Transfers served at once (default 32); more are answered "limited, retry later".
    pub max_inbound_transfers: usize,
    /// Timeout of any one network operation: opening a stream, a read, a write (default 10 s).
    pub io_timeout: Duration,
    /// How often changed availability is pushed to peers (default 250 ms), with up to 8 admitted
    /// peers; see [`have_period`].
    pub have_interval: Duration,
    /// Scheduler tick (default 100 ms).
    pub tick: Duration,
    /// Scheduler policy.
    pub scheduler: scheduler::Config,
    /// Super-seeding (the ward gateway): show each device only groups no device has yet, so each byte
    /// leaves this node about once (default off; the gateway turns it on).
    pub seeding: Option<seeding::Config>,
    /// Fault injection (tests and simulations only).
    pub fault: Option<Fault>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/0.0.0.0/tcp/0"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty())],
            bootstrap: vec![],
            mdns: true,
            mdns_query_interval: Duration::from_secs(5),
            ward: "ward".into(),
            upload: Schedule::default(),
            download: Schedule::default(),
            admission_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_connections_per_peer: 2,
            max_inbound_transfers: 32,
            io_timeout: Duration::from_secs(10),
            have_interval: Duration::from_millis(250),
            tick: Duration::from_millis(100),
            scheduler: scheduler::Config::default(),
            seeding: None,
            fault: None,
        }
    }
}

impl Config {
    /// Checks rules that span fields.
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: &str| Err(NodeError::Config(m.into()));
        if self.listen.is_empty() {
            return bad("listen needs at least one address");
        }
        if self.max_connections_per_peer == 0 || self.max_connections == 0 {
            return bad("connection limits must be at least 1");
        }
        if self.io_timeout.is_zero() || self.tick.is_zero() || self.have_interval.is_zero() {
            return bad("timeouts and intervals must be positive");
        }
        if self.scheduler.max_request_groups == 0
            || self.scheduler.max_request_groups > wire::MAX_GET_GROUPS
        {
            return bad("scheduler.max_request_groups must be 1 to 4096");
        }
        for b in &self.bootstrap {
            if !b.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                return Err(NodeError::Config(format!(
                    "bootstrap address {b} needs /p2p/<peer id>"
                )));
            }
        }
        Ok(())
    }
}

/// Errors of the node and its handle.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid node configuration: {0}")]
    Config(String),
    #[error("network setup: {0}")]
    Transport(String),
    #[error("the node has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("announcement refused: {0}")]
    Announce(String),
    #[error("local store failure while fetching {root}: {reason}")]
    Local { root: Hash, reason: String },
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
    /// An admitted peer sent a status report (JSON, at most `wire::MAX_REPORT_FRAME` bytes).
    Report {
        peer: PeerId,
        device: String,
        body: Arc<Vec<u8>>,
    },
}

enum Command {
    Fetch {
        root: Hash,
        length: u64,
        reply: oneshot::Sender<Result<FetchReport, NodeError>>,
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
    },
    HaveChanged {
        root: Hash,
    },
    Report {
        body: Vec<u8>,
    },
    Manifests {
        reply: oneshot::Sender<Vec<Arc<Vec<u8>>>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    events: broadcast::Sender<Event>,
    metrics: Arc<Metrics>,
    upload: Cap,
    download: Cap,
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
            Command::Manifests { .. } => "Manifests",
            Command::Shutdown { .. } => "Shutdown",
        })
    }
}

impl Handle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }
    /// Fetches an artifact (root and signed length) into the store; resolves when every group is verified.
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
    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.tx
            .send(Command::Dial { addr })
            .await
            .map_err(|_| NodeError::Stopped)
    }
    /// Tells the node a stored artifact changed outside a fetch (e.g. an import), so it re-announces.
    pub async fn have_changed(&self, root: Hash) -> Result<(), NodeError> {
        self.tx
            .send(Command::HaveChanged { root })
            .await
            .map_err(|_| NodeError::Stopped)
    }
    /// The verified manifests this node knows (announced to it or by it), at most the last 32.
    pub async fn manifests(&self) -> Result<Vec<Arc<Vec<u8>>>, NodeError> {
        self.call(|reply| Command::Manifests { reply }).await
    }
    /// Sends a status report (JSON) to every admitted gateway; best effort, bounded in size.
    pub async fn report(&self, body: Vec<u8>) -> Result<(), NodeError> {
        if body.len() > wire::MAX_REPORT_FRAME {
            return Err(NodeError::Config(format!(
                "status report of {} bytes is over the {}-byte cap",
                body.len(),
                wire::MAX_REPORT_FRAME
            )));
        }
        self.tx
            .send(Command::Report { body })
            .await
            .map_err(|_| NodeError::Stopped)
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

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
}

/// What the inbound handlers and transfer tasks share with the actor.
struct Shared {
    cfg: Config,
    root: TrustRoot,
    cert: Vec<u8>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    upload: Cap,
    download: Cap,
    admitted: RwLock<HashMap<PeerId, Role>>,
    inbound: Semaphore,
    internal: mpsc::Sender<Internal>,
    shutdown: CancellationToken,
}

impl Shared {
    fn role_of(&self, peer: &PeerId) -> Option<Role> {
        self.admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .copied()
    }
    /// Admitted peers, optionally only those with `role`.
    fn admitted_peers(&self, role: Option<Role>) -> Vec<PeerId> {
        self.admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, r)| role.is_none_or(|want| **r == want))
            .map(|(p, _)| *p)
            .collect()
    }
    fn source_label(role: Option<Role>) -> &'static str {
        match role {
            Some(Role::Gateway) => "gateway",
            _ => "peer",
        }
    }
}

enum Internal {
    Admitted {
        peer: PeerId,
        cert: Box<Certificate>,
    },
    Refused {
        peer: PeerId,
        reason: String,
    },
    Have {
        peer: PeerId,
        have: Have,
    },
    Announce {
        peer: PeerId,
        bytes: Vec<u8>,
    },
    Report {
        peer: PeerId,
        body: Vec<u8>,
    },
    Progress {
        root: Hash,
        req: ReqId,
        group: u64,
    },
    Finished {
        root: Hash,
        req: ReqId,
        outcome: Outcome,
        local_error: Option<String>,
    },
}

struct Download {
    sched: Scheduler<PeerId>,
    entry: Arc<Entry>,
    waiters: Vec<oneshot::Sender<Result<FetchReport, NodeError>>>,
    tasks: HashMap<ReqId, CancellationToken>,
    started: Instant,
    banned: HashSet<PeerId>,
}

struct PeerState {
    connected_at: Instant,
    cert: Option<Certificate>,
}

/// Most artifacts a peer's availability is remembered for.
const MAX_HAVES_PER_PEER: usize = 16;
/// Most manifests remembered (and re-announced to newcomers).
const MAX_MANIFESTS: usize = 32;

/// Starts a node. It listens, dials its bootstrap peers, and runs until `Handle::shutdown`.
pub fn spawn(
    cfg: Config,
    keypair: Keypair,
    cert: &Certificate,
    root: TrustRoot,
    store: Arc<Store>,
) -> Result<(Handle, tokio::task::JoinHandle<()>), NodeError> {
    cfg.validate()?;
    let peer_id = keypair.public().to_peer_id();
    if cert.peer != peer_id.to_string() {
        return Err(NodeError::Config(format!(
            "certificate is for peer {}, this key is {peer_id}",
            cert.peer
        )));
    }
    let mdns_cfg = mdns::Config {
        query_interval: cfg.mdns_query_interval,
        ..Default::default()
    };
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
        .with_max_pending_incoming(Some(64));
    let use_mdns = cfg.mdns;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_behaviour(|key| {
            let mdns = if use_mdns {
                mdns::tokio::Behaviour::new(mdns_cfg, key.public().to_peer_id()).ok()
            } else {
                None
            };
            Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/wardswarm/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
                stream: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    for a in &cfg.listen {
        swarm
            .listen_on(a.clone())
            .map_err(|e| NodeError::Transport(format!("listen on {a}: {e}")))?;
    }
    let now = Timestamp::now().as_unix();
    let upload = Cap::new(cfg.upload.rate_at(now));
    let download = Cap::new(cfg.download.rate_at(now));
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = mpsc::channel(64);
    let (internal_tx, internal_rx) = mpsc::channel(4096);
    let (events, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        inbound: Semaphore::new(cfg.max_inbound_transfers),
        cfg,
        root,
        cert: cert.to_bytes(),
        store,
        metrics: metrics.clone(),
        upload: upload.clone(),
        download: download.clone(),
        admitted: RwLock::new(HashMap::new()),
        internal: internal_tx,
        shutdown: CancellationToken::new(),
    });
    let control = swarm.behaviour().stream.new_control();
    let handle = Handle {
        tx,
        peer_id,
        events: events.clone(),
        metrics,
        upload,
        download,
    };
    let mut actor = Actor {
        swarm,
        control,
        shared,
        rx,
        internal_rx,
        events,
        peers: HashMap::new(),
        downloads: HashMap::new(),
        peer_haves: HashMap::new(),
        have_dirty: HashSet::new(),
        have_force: false,
        last_have: 0,
        seeds: HashMap::new(),
        manifests: BTreeMap::new(),
        listen_addrs: vec![],
        epoch: Instant::now(),
        peer_id,
    };
    actor.start_inbound()?;
    for b in actor.shared.cfg.bootstrap.clone() {
        let _ = actor.swarm.dial(b);
    }
    let span = tracing::info_span!("node", id = %peer_id);
    let join = tokio::spawn(tracing::Instrument::instrument(actor.run(), span));
    Ok((handle, join))
}

struct Actor {
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    internal_rx: mpsc::Receiver<Internal>,
    events: broadcast::Sender<Event>,
    peers: HashMap<PeerId, PeerState>,
    downloads: HashMap<Hash, Download>,
    peer_haves: HashMap<PeerId, HashMap<Hash, Have>>,
    have_dirty: HashSet<Hash>,
    /// Resend every availability in full at the next round (heals lost HAVE frames).
    have_force: bool,
    /// When the last availability round went out (ms since `epoch`).
    last_have: u64,
    /// Super-seeding state per artifact (gateway only).
    seeds: HashMap<Hash, SuperSeed<PeerId>>,
    manifests: BTreeMap<Hash, Arc<Vec<u8>>>,
    listen_addrs: Vec<Multiaddr>,
    epoch: Instant,
    peer_id: PeerId,
}

impl Actor {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Accept loops: they only spawn, so libp2p-stream never drops a stream for want of a reader.
    fn start_inbound(&mut self) -> Result<(), NodeError> {
        for proto in [
            wire::ADMISSION,
            wire::HAVE,
            wire::ANNOUNCE,
            wire::TRANSFER,
            wire::REPORT,
        ] {
            let mut incoming = self
                .control
                .accept(proto.clone())
                .map_err(|e| NodeError::Transport(format!("{proto}: {e}")))?;
            let shared = self.shared.clone();
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        n = incoming.next() => n,
                        _ = shared.shutdown.cancelled() => None,
                    };
                    let Some((peer, stream)) = next else { break };
                    let s = shared.clone();
                    let p = proto.clone();
                    tokio::spawn(async move {
                        if p == wire::ADMISSION {
                            inbound_admission(s, peer, stream).await;
                        } else if p == wire::HAVE {
                            inbound_have(s, peer, stream).await;
                        } else if p == wire::ANNOUNCE {
                            inbound_announce(s, peer, stream).await;
                        } else if p == wire::REPORT {
                            inbound_report(s, peer, stream).await;
                        } else {
                            inbound_transfer(s, peer, stream).await;
                        }
                    });
                }
            });
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.shared.cfg.tick);
        let mut have_tick = tokio::time::interval(self.shared.cfg.have_interval);
        let mut slow_tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = self.rx.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown { reply }) => {
                        self.stop();
                        let _ = reply.send(());
                        break;
                    }
                    Some(c) => self.on_command(c),
                },
                Some(i) = self.internal_rx.recv() => self.on_internal(i),
                _ = tick.tick() => self.on_tick(),
                _ = have_tick.tick() => self.broadcast_haves(),
                _ = slow_tick.tick() => self.on_slow_tick(),
            }
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.cancel();
        for d in self.downloads.values_mut() {
            for t in d.tasks.values() {
                t.cancel();
            }
            for w in d.waiters.drain(..) {
                let _ = w.send(Err(NodeError::Stopped));
            }
        }
        for e in self.shared.store.list() {
            let _ = e.sync();
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with_p2p(self.peer_id).unwrap_or_else(|a| a);
                tracing::info!(addr = %full, "listening");
                self.listen_addrs.push(full);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                self.peers.entry(peer_id).or_insert(PeerState {
                    connected_at: Instant::now(),
                    cert: None,
                });
                let admitted = self.shared.role_of(&peer_id).is_some();
                if endpoint.is_dialer() && !admitted && num_established.get() == 1 {
                    let s = self.shared.clone();
                    let control = self.control.clone();
                    tokio::spawn(outbound_admission(s, control, peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.peer_gone(peer_id),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                for (peer, addr) in list {
                    if peer != self.peer_id && !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr.with_p2p(peer).unwrap_or_else(|a| a));
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }

    fn peer_gone(&mut self, peer: PeerId) {
        let was = self.peers.remove(&peer).is_some_and(|p| p.cert.is_some());
        self.peer_haves.remove(&peer);
        for seed in self.seeds.values_mut() {
            seed.peer_gone(&peer);
        }
        self.shared
            .admitted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
        if was {
            self.shared.metrics.peers_admitted.dec();
        }
        let now = self.now_ms();
        let roots: Vec<Hash> = self.downloads.keys().copied().collect();
        for r in roots {
            self.drive(r, now, Input::PeerGone { peer });
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Fetch {
                root,
                length,
                reply,
            } => self.start_fetch(root, length, reply),
            Command::Announce { bytes, reply } => {
                let r = self.accept_manifest(bytes, None);
                let _ = reply.send(r.map(|_| ()));
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Peers { reply } => {
                let v = self
                    .peers
                    .iter()
                    .filter_map(|(p, s)| s.cert.as_ref().map(|c| (*p, c.role, c.device.clone())))
                    .collect();
                let _ = reply.send(v);
            }
            Command::Dial { addr } => {
                let _ = self.swarm.dial(addr);
            }
            Command::HaveChanged { root } => {
                self.have_dirty.insert(root);
            }
            Command::Manifests { reply } => {
                let _ = reply.send(self.manifests.values().cloned().collect());
            }
            Command::Report { body } => {
                let gateways = self.shared.admitted_peers(Some(Role::Gateway));
                for p in gateways {
                    tokio::spawn(send_frame(
                        self.shared.clone(),
                        self.control.clone(),
                        p,
                        wire::REPORT,
                        body.clone(),
                    ));
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn start_fetch(
        &mut self,
        root: Hash,
        length: u64,
        reply: oneshot::Sender<Result<FetchReport, NodeError>>,
    ) {
        if let Some(d) = self.downloads.get_mut(&root) {
            d.waiters.push(reply);
            return;
        }
        let entry = match self.shared.store.create(root, length) {
            Ok(e) => e,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        if entry.is_complete() {
            let _ = reply.send(Ok(FetchReport {
                root,
                seconds: 0.0,
                stats: Default::default(),
                banned: vec![],
            }));
            return;
        }
        let mut cfg = self.shared.cfg.scheduler.clone();
        cfg.seed ^= u64::from_le_bytes(self.peer_id.to_bytes()[2..10].try_into().unwrap_or([0; 8]));
        let sched = Scheduler::new(cfg, entry.have());
        tracing::info!(%root, length, have = entry.have().count(), "fetch started");
        // Even an empty HAVE tells a super-seeding gateway that we are fetching.
        self.have_dirty.insert(root);
        self.downloads.insert(
            root,
            Download {
                sched,
                entry,
                waiters: vec![reply],
                tasks: HashMap::new(),
                started: Instant::now(),
                banned: HashSet::new(),
            },
        );
        let known: Vec<(PeerId, Have)> = self
            .peer_haves
            .iter()
            .filter_map(|(p, m)| m.get(&root).map(|h| (*p, h.clone())))
            .collect();
        let now = self.now_ms();
        for (peer, h) in known {
            if h.length == length {
                if self.shared.role_of(&peer) == Some(Role::Gateway) {
                    if let Some(d) = self.downloads.get_mut(&root) {
                        d.sched.mark_seed(peer);
                    }
                }
                self.drive(
                    root,
                    now,
                    Input::PeerHas {
                        peer,
                        groups: h.groups,
                    },
                );
            }
        }
        self.drive(root, now, Input::Tick);
    }

    /// Feeds the scheduler of `root` and carries out its actions.
    fn drive(&mut self, root: Hash, now: u64, input: Input<PeerId>) {
        let Some(d) = self.downloads.get_mut(&root) else {
            return;
        };
        if let Input::PeerHas { peer, .. } = &input {
            if d.banned.contains(peer) {
                return;
            }
        }
        let stalls_before = d.sched.stats().stalls;
        let actions = d.sched.step(now, input);
        if d.sched.stats().stalls > stalls_before {
            self.emit(Event::Stalled { root });
        }
        for a in actions {
            match a {
                Action::Request { peer, req, groups } => {
                    let token = CancellationToken::new();
                    let Some(d) = self.downloads.get_mut(&root) else {
                        return;
                    };
                    d.tasks.insert(req, token.clone());
                    let get = Get {
                        root,
                        length: d.entry.length(),
                        runs: vec![groups],
                    };
                    tokio::spawn(request_task(
                        self.shared.clone(),
                        self.control.clone(),
                        d.entry.clone(),
                        peer,
                        req,
                        get,
                        token,
                    ));
                }
                Action::Cancel { req, .. } => {
                    if let Some(t) = self
                        .downloads
                        .get_mut(&root)
                        .and_then(|d| d.tasks.remove(&req))
                    {
                        t.cancel();
                    }
                }
                Action::Ban { peer } => {
                    if let Some(d) = self.downloads.get_mut(&root) {
                        d.banned.insert(peer);
                    }
                    self.shared.metrics.peers_banned.inc();
                    tracing::warn!(target: "wardswarm::security", %peer, %root, "peer served corrupt data: banned for this artifact");
                    self.emit(Event::PeerBanned { peer, root });
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Action::Complete => self.complete(root),
            }
        }
    }

    fn complete(&mut self, root: Hash) {
        let Some(mut d) = self.downloads.remove(&root) else {
            return;
        };
        for t in d.tasks.values() {
            t.cancel();
        }
        let sync = d.entry.sync();
        let report = FetchReport {
            root,
            seconds: d.started.elapsed().as_secs_f64(),
            stats: d.sched.stats(),
            banned: d.banned.iter().copied().collect(),
        };
        tracing::info!(%root, seconds = report.seconds, "fetch complete");
        for w in d.waiters.drain(..) {
            let r = match &sync {
                Ok(()) => Ok(report.clone()),
                Err(e) => Err(NodeError::Local {
                    root,
                    reason: e.to_string(),
                }),
            };
            let _ = w.send(r);
        }
        self.have_dirty.insert(root);
        self.emit(Event::Complete { root });
    }

    fn on_internal(&mut self, i: Internal) {
        let now = self.now_ms();
        match i {
            Internal::Admitted { peer, cert } => {
                let role = cert.role;
                // The admission tasks already put the peer in `admitted`; count it once here.
                let newly = self.peers.get(&peer).is_some_and(|p| p.cert.is_none());
                self.shared
                    .admitted
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(peer, role);
                if newly {
                    self.shared.metrics.peers_admitted.inc();
                }
                tracing::info!(%peer, device = %cert.device, role = role.as_str(), "peer admitted");
                self.emit(Event::PeerAdmitted {
                    peer,
                    role,
                    device: cert.device.clone(),
                });
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.cert = Some(*cert);
                }
                // Tell the newcomer what we have (a super-seeding gateway shows it its view at the
                // next round instead) and what we know.
                if self.shared.cfg.seeding.is_none() {
                    for e in self.shared.store.list() {
                        let have = Have {
                            root: e.root(),
                            length: e.length(),
                            groups: self.announced(&e),
                        };
                        if !have.groups.is_empty() || self.downloads.contains_key(&have.root) {
                            tokio::spawn(send_frame(
                                self.shared.clone(),
                                self.control.clone(),
                                peer,
                                wire::HAVE,
                                have.to_bytes(),
                            ));
                        }
                    }
                }
                for m in self.manifests.values() {
                    tokio::spawn(send_frame(
                        self.shared.clone(),
                        self.control.clone(),
                        peer,
                        wire::ANNOUNCE,
                        m.to_vec(),
                    ));
                }
            }
            Internal::Refused { peer, reason } => {
                self.shared.metrics.admission_refused.inc();
                tracing::warn!(target: "wardswarm::security", %peer, %reason, "admission refused");
                self.emit(Event::PeerRefused { peer, reason });
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Internal::Have { peer, have } => {
                if self.shared.role_of(&peer).is_none() {
                    return;
                }
                let m = self.peer_haves.entry(peer).or_default();
                if m.len() >= MAX_HAVES_PER_PEER && !m.contains_key(&have.root) {
                    return;
                }
                m.insert(have.root, have.clone());
                if self.shared.cfg.seeding.is_some()
                    && self.shared.role_of(&peer) == Some(Role::Device)
                {
                    if let Some(seed) = self.seed(have.root) {
                        seed.peer_has(now, peer, have.groups.clone());
                    }
                }
                let gateway = self.shared.role_of(&peer) == Some(Role::Gateway);
                if let Some(d) = self.downloads.get_mut(&have.root) {
                    if d.entry.length() == have.length {
                        if gateway {
                            d.sched.mark_seed(peer);
                        }
                        self.drive(
                            have.root,
                            now,
                            Input::PeerHas {
                                peer,
                                groups: have.groups,
                            },
                        );
                    }
                }
            }
            Internal::Announce { peer, bytes } => {
                if self.shared.role_of(&peer).is_some() {
                    if let Err(e) = self.accept_manifest(bytes, Some(peer)) {
                        self.shared.metrics.announcements_refused.inc();
                        tracing::warn!(target: "wardswarm::security", %peer, error = %e, "announcement refused");
                    }
                }
            }
            Internal::Report { peer, body } => {
                let device = self
                    .peers
                    .get(&peer)
                    .and_then(|p| p.cert.as_ref())
                    .map(|c| c.device.clone());
                if let Some(device) = device {
                    self.emit(Event::Report {
                        peer,
                        device,
                        body: Arc::new(body),
                    });
                }
            }
            Internal::Progress { root, req, group } => {
                self.shared.metrics.groups_verified.inc();
                self.have_dirty.insert(root);
                self.drive(root, now, Input::Progress { req, group });
                if let Some(d) = self.downloads.get(&root) {
                    let have = d.sched.have();
                    self.emit(Event::Progress {
                        root,
                        have: have.count(),
                        total: have.len(),
                    });
                }
            }
            Internal::Finished {
                root,
                req,
                outcome,
                local_error,
            } => {
                if outcome == Outcome::Corrupt {
                    self.shared.metrics.verification_failures.inc();
                }
                if let Some(d) = self.downloads.get_mut(&root) {
                    d.tasks.remove(&req);
                }
                if let Some(err) = local_error {
                    // Our disk failed: do not blame the peer; stop and tell the application.
                    if let Some(mut d) = self.downloads.remove(&root) {
                        for t in d.tasks.values() {
                            t.cancel();
                        }
                        for w in d.waiters.drain(..) {
                            let _ = w.send(Err(NodeError::Local {
                                root,
                                reason: err.clone(),
                            }));
                        }
                    }
                    return;
                }
                self.drive(root, now, Input::Finished { req, outcome });
            }
        }
    }

    /// Verifies a manifest (format, signatures, expiry), remembers it and floods it to admitted peers.
    fn accept_manifest(&mut self, bytes: Vec<u8>, from: Option<PeerId>) -> Result<bool, NodeError> {
        let sm = SignedManifest::parse(&bytes).map_err(|e| NodeError::Announce(e.to_string()))?;
        sm.check_signatures(&self.shared.root)
            .map_err(|e| NodeError::Announce(e.to_string()))?;
        if Timestamp::now() >= sm.manifest.expires {
            return Err(NodeError::Announce(format!(
                "release {} expired at {}",
                sm.manifest.version, sm.manifest.expires
            )));
        }
        let id = sm.id();
        if self.manifests.contains_key(&id) {
            return Ok(false);
        }
        if self.manifests.len() >= MAX_MANIFESTS {
            if let Some(oldest) = self.manifests.keys().next().copied() {
                self.manifests.remove(&oldest);
            }
        }
        let bytes = Arc::new(bytes);
        self.manifests.insert(id, bytes.clone());
        let peers = self.shared.admitted_peers(None);
        for p in peers.into_iter().filter(|p| Some(*p) != from) {
            tokio::spawn(send_frame(
                self.shared.clone(),
                self.control.clone(),
                p,
                wire::ANNOUNCE,
                bytes.to_vec(),
            ));
        }
        self.emit(Event::Manifest { bytes, from });
        Ok(true)
    }

    fn on_tick(&mut self) {
        let now = self.now_ms();
        let roots: Vec<Hash> = self.downloads.keys().copied().collect();
        for r in roots {
            self.drive(r, now, Input::Tick);
        }
        // Peers that did not prove membership in time are disconnected.
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, s)| {
                s.cert.is_none()
                    && self.shared.role_of(p).is_none()
                    && s.connected_at.elapsed() > self.shared.cfg.admission_timeout
            })
            .map(|(p, _)| *p)
            .collect();
        for p in late {
            self.shared.metrics.admission_refused.inc();
            tracing::warn!(target: "wardswarm::security", peer = %p, "no membership proof in time: disconnecting");
            self.emit(Event::PeerRefused {
                peer: p,
                reason: "no membership certificate in time".into(),
            });
            self.peers.remove(&p);
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    fn on_slow_tick(&mut self) {
        // Availability is re-sent in full every few seconds, so a dropped HAVE heals by itself.
        for e in self.shared.store.list() {
            if !e.have().is_empty() || self.downloads.contains_key(&e.root()) {
                self.have_dirty.insert(e.root());
            }
        }
        self.have_force = true;
        // Redial bootstrap peers we lost (the gateway restarts; a device reboots).
        for b in self.shared.cfg.bootstrap.clone() {
            let peer = b.iter().find_map(|p| {
                if let Protocol::P2p(id) = p {
                    Some(id)
                } else {
                    None
                }
            });
            if let Some(peer) = peer {
                if !self.swarm.is_connected(&peer) {
                    let _ = self.swarm.dial(b);
                }
            }
        }
        // Caps follow their schedules.
        let now = Timestamp::now().as_unix();
        self.shared.upload.set(self.shared.cfg.upload.rate_at(now));
        self.shared
            .download
            .set(self.shared.cfg.download.rate_at(now));
    }

    /// What we announce of an artifact: our verified groups, or none if we do not upload (leech only).
    fn announced(&self, e: &Entry) -> GroupSet {
        if self.shared.upload.rate() == Some(0) {
            GroupSet::new(e.have().len())
        } else {
            e.have()
        }
    }

    /// Super-seeding state for `root`, if we seed and hold (part of) it.
    fn seed(&mut self, root: Hash) -> Option<&mut SuperSeed<PeerId>> {
        let cfg = self.shared.cfg.seeding.clone()?;
        if !self.seeds.contains_key(&root) {
            let e = self.shared.store.get(&root)?;
            self.seeds.insert(root, SuperSeed::new(cfg, e.have().len()));
        }
        self.seeds.get_mut(&root)
    }

    /// One availability round: changed HAVEs to every admitted peer; a super-seeding gateway sends each
    /// device its own view, every round (views grow as devices fetch).
    fn broadcast_haves(&mut self) {
        let now = self.now_ms();
        let period = have_period(
            self.shared.cfg.have_interval,
            self.shared.admitted_peers(None).len(),
        );
        if now.saturating_sub(self.last_have) < period.as_millis() as u64 {
            return;
        }
        self.last_have = now;
        let force = std::mem::take(&mut self.have_force);
        let dirty = std::mem::take(&mut self.have_dirty);
        let mut roots: Vec<Hash> = dirty.iter().copied().collect();
        roots.extend(self.seeds.keys().filter(|r| !dirty.contains(r)).copied());
        if roots.is_empty() {
            return;
        }
        let peers = self.shared.admitted_peers(None);
        let mut frames: Vec<(PeerId, Vec<u8>)> = Vec::new();
        for root in roots {
            let Some(e) = self.shared.store.get(&root) else {
                self.seeds.remove(&root);
                continue;
            };
            let mine = self.announced(&e);
            if mine.is_empty() && !self.downloads.contains_key(&root) {
                continue;
            }
            let length = e.length();
            let frame = |groups: GroupSet| {
                Have {
                    root,
                    length,
                    groups,
                }
                .to_bytes()
            };
            let seeding = self.shared.upload.rate() != Some(0) && self.seed(root).is_some();
            if !seeding {
                if dirty.contains(&root) || force {
                    let bytes = frame(mine);
                    frames.extend(peers.iter().map(|p| (*p, bytes.clone())));
                }
                continue;
            }
            let devices: Vec<PeerId> = peers
                .iter()
                .filter(|p| self.shared.role_of(p) == Some(Role::Device))
                .copied()
                .collect();
            let full = frame(mine.clone());
            let Some(seed) = self.seeds.get_mut(&root) else {
                continue;
            };
            seed.local_has(&mine);
            for p in &peers {
                if devices.contains(p) {
                    // A device that has not said it fetches this artifact is shown nothing yet.
                    if let Some(v) = seed.view(now, p, force) {
                        frames.push((*p, frame(v)));
                    }
                } else if dirty.contains(&root) || force {
                    frames.push((*p, full.clone()));
                }
            }
        }
        for (p, bytes) in frames {
            tokio::spawn(send_frame(
                self.shared.clone(),
                self.control.clone(),
                p,
                wire::HAVE,
                bytes,
            ));
        }
    }
}

/// How often a node with `peers` admitted peers sends availability: `base` up to 8 peers, then
/// proportionally longer, so the HAVE streams a node opens stay about 32 per second however large
/// the ward (each HAVE is a stream; 50 devices at 250 ms opened 10,000 streams per second and the
/// live 50-device ward ran at a tenth of its bound).
pub fn have_period(base: Duration, peers: usize) -> Duration {
    base * peers.div_ceil(8).max(1) as u32
}

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))?
}

async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    proto: libp2p::StreamProtocol,
    t: Duration,
) -> io::Result<Stream> {
    timed(t, async {
        control
            .open_stream(peer, proto)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    })
    .await
}

/// Sends one frame on a fresh stream (HAVE, ANNOUNCE) and closes it.
async fn send_frame(
    s: Arc<Shared>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    proto: libp2p::StreamProtocol,
    body: Vec<u8>,
) {
    let t = s.cfg.io_timeout;
    let r = async {
        let mut st = open(&mut control, peer, proto.clone(), t).await?;
        timed(t, wire::write_frame(&mut st, &body)).await?;
        timed(t, st.close()).await
    }
    .await;
    if let Err(e) = r {
        tracing::debug!(%peer, %proto, error = %e, "send failed");
    }
}

fn check_cert(s: &Shared, peer: PeerId, bytes: &[u8]) -> Result<Certificate, String> {
    let c = Certificate::parse(bytes).map_err(|e| e.to_string())?;
    c.verify(&s.root, &peer.to_string(), &s.cfg.ward, Timestamp::now())
        .map_err(|e| e.to_string())?;
    Ok(c)
}

async fn outbound_admission(s: Arc<Shared>, mut control: libp2p_stream::Control, peer: PeerId) {
    let t = s.cfg.io_timeout;
    let r = async {
        let mut st = open(&mut control, peer, wire::ADMISSION, t).await?;
        timed(t, wire::write_frame(&mut st, &s.cert)).await?;
        let theirs = timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await?;
        let _ = st.close().await;
        Ok::<_, io::Error>(theirs)
    }
    .await;
    let msg = match r {
        Ok(bytes) => match check_cert(&s, peer, &bytes) {
            Ok(cert) => {
                // Admit at once: the peer may already be sending us HAVE and ANNOUNCE frames.
                s.admitted
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(peer, cert.role);
                Internal::Admitted {
                    peer,
                    cert: Box::new(cert),
                }
            }
            Err(reason) => Internal::Refused { peer, reason },
        },
        Err(e) => Internal::Refused {
            peer,
            reason: format!("admission exchange failed: {e}"),
        },
    };
    let _ = s.internal.send(msg).await;
}

async fn inbound_admission(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let t = s.cfg.io_timeout;
    let bytes = match timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await {
        Ok(b) => b,
        Err(e) => {
            let _ = s
                .internal
                .send(Internal::Refused {
                    peer,
                    reason: format!("admission exchange failed: {e}"),
                })
                .await;
            return;
        }
    };
    match check_cert(&s, peer, &bytes) {
        Ok(cert) => {
            // Admit before answering, so the dialer's first requests find us ready.
            s.admitted
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(peer, cert.role);
            let _ = s
                .internal
                .send(Internal::Admitted {
                    peer,
                    cert: Box::new(cert),
                })
                .await;
            let _ = timed(t, wire::write_frame(&mut st, &s.cert)).await;
            let _ = timed(t, st.close()).await;
        }
        Err(reason) => {
            let _ = s.internal.send(Internal::Refused { peer, reason }).await;
        }
    }
}

/// A peer's first frames race its admission on our side: it admitted us, answered with its
/// certificate and at once sent HAVE or ANNOUNCE while we were still checking that certificate.
/// Wait (bounded) for the admission rather than drop them; a non-member gets nothing.
async fn admitted_role(s: &Shared, peer: &PeerId) -> Option<Role> {
    let end = Instant::now() + s.cfg.admission_timeout.min(Duration::from_secs(5));
    loop {
        if let Some(r) = s.role_of(peer) {
            return Some(r);
        }
        if Instant::now() >= end || s.shutdown.is_cancelled() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn inbound_have(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(b) = member_frame(&s, &peer, &mut st, wire::MAX_HAVE_FRAME).await {
        match Have::from_bytes(&b) {
            Ok(have) => {
                let _ = s.internal.send(Internal::Have { peer, have }).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "bad HAVE"),
        }
    }
}

/// The one frame of a one-way stream from an admitted peer (`None` for a non-member or a bad frame).
async fn member_frame(s: &Shared, peer: &PeerId, st: &mut Stream, max: usize) -> Option<Vec<u8>> {
    admitted_role(s, peer).await?;
    timed(s.cfg.io_timeout, wire::read_frame(st, max))
        .await
        .ok()
}

async fn inbound_announce(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(bytes) = member_frame(&s, &peer, &mut st, wire::MAX_ANNOUNCE_FRAME).await {
        let _ = s.internal.send(Internal::Announce { peer, bytes }).await;
    }
}

async fn inbound_report(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(body) = member_frame(&s, &peer, &mut st, wire::MAX_REPORT_FRAME).await {
        let _ = s.internal.send(Internal::Report { peer, body }).await;
    }
}

async fn inbound_transfer(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let t = s.cfg.io_timeout;
    let Ok(get) = timed(t, wire::read_get(&mut st)).await else {
        return;
    };
    let role = admitted_role(&s, &peer).await;
    let entry = s.store.get(&get.root).filter(|e| {
        let have = e.have();
        e.length() == get.length && get.groups().all(|g| have.contains(g))
    });
    let status = if role.is_none() {
        Status::Forbidden
    } else if s.upload.rate() == Some(0) {
        Status::Limited
    } else if entry.is_some() {
        Status::Ok
    } else {
        Status::NotFound
    };
    let permit = if status == Status::Ok {
        s.inbound.try_acquire().ok()
    } else {
        None
    };
    let status = if status == Status::Ok && permit.is_none() {
        Status::Limited
    } else {
        status
    };
    if status == Status::Ok && s.cfg.fault == Some(Fault::StallServe) {
        // A staller: accepts and never answers.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {},
            _ = s.shutdown.cancelled() => {},
        }
        return;
    }
    if timed(t, wire::write_status(&mut st, status)).await.is_err() || status != Status::Ok {
        let _ = st.close().await;
        return;
    }
    let Some(entry) = entry else {
        return;
    };
    let label = TransferLabels {
        artifact: get.root.short(),
        source: Shared::source_label(role).into(),
    };
    // The encoder reads the store on a blocking thread and hands the bao stream over in large
    // buffers; this task passes them to the peer under the upload cap. One thread handoff per
    // `PIPE_BUF` bytes, not one per cap slice.
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    let encoder = tokio::task::spawn_blocking(move || {
        let mut w = PipeWriter::new(tx);
        entry
            .serve(&get.runs, &mut w)
            .map_err(|e| e.to_string())
            .and(w.flush().map_err(|e| e.to_string()))
    });
    let sent = send_pipe(&s, &mut st, rx, &label).await;
    let encoded = encoder.await;
    drop(permit);
    match (encoded, sent) {
        (Ok(Err(e)), _) => tracing::debug!(%peer, error = %e, "serving stopped"),
        (Err(e), _) => tracing::debug!(%peer, error = %e, "serving task failed"),
        (_, Err(e)) => tracing::debug!(%peer, error = %e, "serving stopped: the stream failed"),
        _ => {}
    }
}

/// Bytes move between a blocking bao encoder or decoder and the async stream in buffers of this size.
const PIPE_BUF: usize = 64 * 1024;
/// Buffers in flight per transfer, each way: with `PIPE_BUF`, at most 256 KiB per transfer.
const PIPE_DEPTH: usize = 4;

/// The blocking encoder's output: fills `PIPE_BUF` buffers and hands them to `send_pipe`.
struct PipeWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(PIPE_BUF),
        }
    }

    fn hand_over(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_BUF));
        self.tx.blocking_send(full).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream to the peer closed before the response was sent",
            )
        })
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIPE_BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIPE_BUF {
            self.hand_over()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.hand_over()
        }
    }
}

/// Waits until `bytes` may pass `cap`, and counts the time held up as throttled in `direction`.
async fn pass_cap(s: &Shared, cap: &Cap, direction: &str, bytes: u64) {
    let waited = cap.acquire_bytes(bytes).await;
    if !waited.is_zero() {
        s.metrics
            .throttled_seconds
            .get_or_create(&DirectionLabels {
                direction: direction.into(),
            })
            .inc_by(waited.as_secs_f64());
    }
}

/// Sends the encoder's buffers to the peer in cap slices, then closes the stream. Returns when the
/// encoder is done (its sender dropped) or the stream fails; dropping `rx` then stops the encoder.
async fn send_pipe(
    s: &Shared,
    st: &mut Stream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    label: &TransferLabels,
) -> io::Result<()> {
    let t = s.cfg.io_timeout;
    while let Some(mut buf) = rx.recv().await {
        if s.cfg.fault == Some(Fault::CorruptServe) && buf.len() >= 1024 {
            // Flip a byte deep in the payload: the receiver's verification must catch it.
            let i = buf.len() / 2;
            buf[i] ^= 0x5a;
        }
        let mut at = 0;
        while at < buf.len() {
            // Small slices keep the rate over any second close to the cap (see `Cap::slice_bytes`).
            let end = buf.len().min(at + s.upload.slice_bytes());
            let n = (end - at) as u64;
            pass_cap(s, &s.upload, "upload", n).await;
            timed(t, st.write_all(&buf[at..end])).await?;
            s.metrics.sent_bytes.get_or_create(label).inc_by(n);
            s.metrics.sent_all.inc_by(n);
            at = end;
        }
    }
    timed(t, st.flush()).await?;
    timed(t, st.close()).await
}

/// The blocking decoder's input: buffers filled by `receive_pipe`. The end of the channel is the end
/// of the stream; a stream error arrives as an error.
struct PipeReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    at: usize,
}

impl PipeReader {
    fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `receive_pipe` hands bytes to the decoder once it holds this many: one chunk group, the least the
/// decoder can verify. Handing over less would wake the decoder's thread for nothing, and progress
/// lags the wire by at most one group.
const HANDOVER_BYTES: usize = crate::outboard::GROUP_BYTES as usize;

/// Reads a response from the peer under the download cap and hands it to the decoder a group or more
/// at a time. Stops at the end of the stream, or on a stream error (passed on to the decoder).
async fn receive_pipe(
    s: &Shared,
    st: &mut Stream,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    label: &TransferLabels,
) {
    let t = s.cfg.io_timeout;
    let mut buf = vec![0u8; PIPE_BUF];
    let mut filled = 0;
    loop {
        let end = PIPE_BUF.min(filled + s.download.slice_bytes());
        let (n, failed) = match timed(t, st.read(&mut buf[filled..end])).await {
            Ok(n) => (n, None),
            Err(e) => (0, Some(e)),
        };
        if n > 0 {
            filled += n;
            s.metrics
                .received_bytes
                .get_or_create(label)
                .inc_by(n as u64);
            s.metrics.received_all.inc_by(n as u64);
            pass_cap(s, &s.download, "download", n as u64).await;
        }
        let ended = n == 0;
        if filled > 0 && (filled >= HANDOVER_BYTES || ended) {
            let out = buf[..filled].to_vec();
            filled = 0;
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
        }
        if let Some(e) = failed {
            let _ = tx.send(Err(e)).await;
        }
        if ended {
            return;
        }
    }
}

/// One GET to one peer: open, ask, verify group by group into the store, report.
async fn request_task(
    s: Arc<Shared>,
    mut control: libp2p_stream::Control,
    entry: Arc<Entry>,
    peer: PeerId,
    req: ReqId,
    get: Get,
    cancel: CancellationToken,
) {
    let root = get.root;
    let t = s.cfg.io_timeout;
    // libp2p-stream buffers one inbound stream per connection: a burst of opens can see a stream dropped
    // by the responder before it is read. That is not the peer's fault; retry a few times, jittered.
    let mut attempt = 0u64;
    let opened = loop {
        let r = tokio::select! {
            r = async {
                let mut st = open(&mut control, peer, wire::TRANSFER, t).await?;
                let status = timed(t, wire::send_get(&mut st, &get)).await?;
                Ok::<_, io::Error>((st, status))
            } => r,
            _ = cancel.cancelled() => return,
        };
        attempt += 1;
        match r {
            Err(e) if attempt < 5 && e.kind() != io::ErrorKind::TimedOut => {
                tokio::time::sleep(Duration::from_millis(5 + (req * 7 + attempt * 13) % 40)).await;
            }
            other => break other,
        }
    };
    let finish = |outcome, local_error| Internal::Finished {
        root,
        req,
        outcome,
        local_error,
    };
    let (mut st, status) = match opened {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(%peer, %root, error = %e, "transfer request failed");
            let _ = s.internal.send(finish(Outcome::Truncated, None)).await;
            return;
        }
    };
    tracing::debug!(%peer, %root, ?status, runs = get.runs.len(), "transfer status");
    match status {
        Status::Ok => {}
        Status::NotFound => {
            let _ = s.internal.send(finish(Outcome::NotFound, None)).await;
            return;
        }
        Status::Limited | Status::Forbidden => {
            let _ = s.internal.send(finish(Outcome::Refused, None)).await;
            return;
        }
    }
    let label = TransferLabels {
        artifact: root.short(),
        source: Shared::source_label(s.role_of(&peer)).into(),
    };
    let progress = s.internal.clone();
    let runs = get.runs.clone();
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    let decoder = tokio::task::spawn_blocking(move || {
        entry.receive(&runs, PipeReader::new(rx), |group| {
            let _ = progress.blocking_send(Internal::Progress { root, req, group });
        })
    });
    // Cancelling drops the pipe's sender: the decoder sees the stream end and stops. A decoder that
    // stops first (all verified, or a corrupt group) closes the pipe, and reading stops at once.
    let watch = tx.clone();
    tokio::select! {
        _ = receive_pipe(&s, &mut st, tx, &label) => {},
        _ = watch.closed() => {},
        _ = cancel.cancelled() => {},
    }
    drop(watch);
    let result = decoder.await;
    if cancel.is_cancelled() {
        return;
    }
    let msg = match result {
        Ok(Ok(_)) => finish(Outcome::Done, None),
        Ok(Err(ReceiveError::Corrupt(detail))) => {
            tracing::warn!(target: "wardswarm::security", %peer, %root, %detail, "peer sent data that does not verify");
            finish(Outcome::Corrupt, None)
        }
        Ok(Err(ReceiveError::Truncated(e))) => {
            tracing::debug!(%peer, %root, error = %e, "transfer truncated");
            finish(Outcome::Truncated, None)
        }
        Ok(Err(ReceiveError::Local(e))) => finish(Outcome::Truncated, Some(e.to_string())),
        Err(e) => finish(
            Outcome::Truncated,
            Some(format!("receive task failed: {e}")),
        ),
    };
    let _ = s.internal.send(msg).await;
}
