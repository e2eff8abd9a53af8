//! The node actor: owns the libp2p `Swarm`, the admitted set ([`Members`]), the peers' outboxes,
//! the downloads (one [`crate::scheduler::Scheduler`] each, driven in [`super::fetch`]) and the
//! known manifests. Protocol handlers run as bounded tasks and report to it over one bounded channel
//! ([`Internal`]); applications talk to it through [`Handle`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use futures::StreamExt;
use libp2p::{
    identify, identity::Keypair, mdns, multiaddr::Protocol as Addr, swarm::SwarmEvent, Multiaddr,
    PeerId, Stream, Swarm,
};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    admission::{self, Members},
    announce, availability,
    caps::Cap,
    config::{Config, ConfigError},
    exchange::{self, PeerList},
    fetch::Download,
    handle::{AnnounceError, Command, Event, FetchReply, Handle, NodeError, TransportError},
    metrics::Metrics,
    policy::{self, HaveArtifact},
    revocation,
    streams::{self, Outbox},
    transfer,
    transport::{build_swarm, fresh_port, Behaviour, BehaviourEvent},
    wire::{Have, Protocol},
};
use crate::{
    groups::GroupSet,
    hash::Hash,
    manifest::SignedManifest,
    membership::{Certificate, Role},
    root::TrustRoot,
    scheduler::{Outcome, ReqId},
    seeding::SuperSeed,
    store::{Entry, Store, StoreError},
    time::Timestamp,
};

/// What the protocol handlers and transfer tasks share with the actor (read-only for them).
pub(super) struct Shared {
    pub cfg: Config,
    pub root: TrustRoot,
    /// Our certificate, as sent.
    pub cert: Vec<u8>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub upload: Cap,
    pub download: Cap,
    /// The admitted set; only the actor writes it.
    pub members: watch::Receiver<Members>,
    /// The revocation list held; only the actor writes it.
    pub revocations: watch::Receiver<revocation::Current>,
    /// Transfers served at once (`cfg.max_inbound_transfers` permits).
    pub serving: Arc<Semaphore>,
    /// Idle `transfer/2` streams to each peer, for our next request to it.
    pub links: transfer::Links,
    /// Receive buffers kept between transfers.
    pub buffers: Arc<transfer::Buffers>,
    /// To the actor.
    pub internal: mpsc::Sender<Internal>,
    pub shutdown: CancellationToken,
}

/// A fault on this node while fetching: never the peer's.
#[derive(Debug, Clone)]
pub(super) enum LocalFailure {
    Store(Arc<StoreError>),
    Task(String),
}

impl LocalFailure {
    pub(super) fn into_error(self, root: Hash) -> NodeError {
        match self {
            Self::Store(cause) => NodeError::Local { root, cause },
            Self::Task(cause) => NodeError::Task { root, cause },
        }
    }
}

/// What handlers and tasks tell the actor.
pub(super) enum Internal {
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
    Directive {
        peer: PeerId,
        body: Vec<u8>,
    },
    Peers {
        from: PeerId,
        list: PeerList,
    },
    Revocations {
        from: PeerId,
        bytes: Vec<u8>,
    },
    /// The store entry of a fetch is ready (created off the actor's task: it touches the disk).
    Created {
        root: Hash,
        entry: Result<Arc<Entry>, NodeError>,
    },
    /// Groups verified and stored, in order: as many as the decoder verified before it next waited.
    Progress {
        root: Hash,
        req: ReqId,
        groups: Vec<u64>,
    },
    Finished {
        root: Hash,
        req: ReqId,
        outcome: Outcome,
        local: Option<LocalFailure>,
    },
    /// A HAVE frame to `peer` was lost on its way out (its stream failed): `peer` gets our
    /// availability in full at the next round.
    HaveLost {
        peer: PeerId,
    },
}

/// Messages from handlers and tasks waiting for the actor. Progress arrives at most once per verified
/// group (64 per MiB): 4,096 is a second of a fast transfer, and past it handlers wait, they are not
/// lost.
const INTERNAL_QUEUE: usize = 4096;
/// Events buffered for a slow subscriber before it starts missing them.
const EVENT_QUEUE: usize = 1024;

pub(super) struct PeerState {
    connected_at: Instant,
    pub(super) cert: Option<Certificate>,
    /// Frames to this peer (admitted peers only).
    pub(super) outbox: Option<Outbox>,
    /// Where it says it listens (identify), for peer exchange.
    pub(super) addrs: Vec<Multiaddr>,
    /// It reached us over loopback: loopback addresses are of use to it.
    pub(super) loopback: bool,
    /// Its admission ended with a notice: disconnect it at this time.
    pub(super) parting: Option<Instant>,
    /// Digest of the last peer list sent to it: an unchanged list is not sent again.
    pub(super) pex_sent: Option<blake3::Hash>,
    /// We started admission on a connection we dialed.
    admitting: bool,
    /// When it is next sent our availability in full (admitted peers only).
    pub(super) have_refresh: Option<policy::Refresh>,
}

impl PeerState {
    /// Does this connection count toward `target_peers`? An admitted member does, and so does a
    /// peer we dialed ourselves while its admission runs; a peer that dialed us counts once it is
    /// admitted, so sockets from non-members cannot keep a node from dialing its ward.
    pub(super) fn counts_toward_target(&self) -> bool {
        self.cert.is_some() || self.admitting
    }
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
        return Err(ConfigError::CertificateForAnotherPeer {
            certificate: cert.peer.clone(),
            key: peer_id.to_string(),
        }
        .into());
    }
    let mut swarm = build_swarm(&cfg, keypair)?;
    for a in &cfg.listen {
        swarm
            .listen_on(a.clone())
            .map_err(|cause| TransportError::Listen {
                addr: a.clone(),
                cause,
            })?;
    }
    let now = Timestamp::now().as_unix();
    let upload = Cap::new(cfg.upload.rate_at(now));
    let download = Cap::new(cfg.download.rate_at(now));
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = mpsc::channel(super::handle::COMMAND_QUEUE);
    let (internal_tx, internal_rx) = mpsc::channel(INTERNAL_QUEUE);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let (members, members_rx) = watch::channel(Members::default());
    let (revocations, revocations_rx) = watch::channel(revocation::load(&cfg, &root));
    let shared = Arc::new(Shared {
        serving: Arc::new(Semaphore::new(cfg.max_inbound_transfers)),
        links: transfer::Links::default(),
        buffers: Arc::default(),
        cfg,
        root,
        cert: cert.to_bytes(),
        store,
        metrics: metrics.clone(),
        upload: upload.clone(),
        download: download.clone(),
        members: members_rx,
        revocations: revocations_rx,
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
        members,
        revocations,
        rx,
        internal_rx,
        events,
        peers: HashMap::new(),
        creating: HashMap::new(),
        downloads: HashMap::new(),
        peer_haves: HashMap::new(),
        have_dirty: HashSet::new(),
        last_have: 0,
        seeds: HashMap::new(),
        manifests: BTreeMap::new(),
        listen_addrs: vec![],
        epoch: Instant::now(),
        peer_id,
        pex_dirty: false,
        pex_next: Instant::now(),
        pex_refresh: Instant::now(),
        pex_members: HashMap::new(),
        revoked_self: false,
        bootstrap_dialed: Instant::now(),
    };
    actor.revoked_self = revocation::revokes_us(&actor);
    actor.start_inbound()?;
    // The operator named these peers: we show them our certificate first.
    actor.members.send_modify(|m| {
        for b in &actor.shared.cfg.bootstrap {
            if let Some(Addr::P2p(p)) = b.iter().find(|p| matches!(p, Addr::P2p(_))) {
                m.vouch(p);
            }
        }
    });
    for b in actor.shared.cfg.bootstrap.clone() {
        let _ = actor.swarm.dial(fresh_port(b));
    }
    let span = tracing::info_span!("node", id = %peer_id);
    let join = tokio::spawn(tracing::Instrument::instrument(actor.run(), span));
    Ok((handle, join))
}

pub(super) struct Actor {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) control: libp2p_stream::Control,
    pub(super) shared: Arc<Shared>,
    /// The one writer of the admitted set.
    pub(super) members: watch::Sender<Members>,
    /// The one writer of the revocation list held.
    pub(super) revocations: watch::Sender<revocation::Current>,
    rx: mpsc::Receiver<Command>,
    internal_rx: mpsc::Receiver<Internal>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) peers: HashMap<PeerId, PeerState>,
    /// Fetches waiting for their store entry.
    pub(super) creating: HashMap<Hash, (u64, Vec<FetchReply>)>,
    pub(super) downloads: HashMap<Hash, Download>,
    pub(super) peer_haves: HashMap<PeerId, HashMap<Hash, Have>>,
    pub(super) have_dirty: HashSet<Hash>,
    /// When the last availability round went out (ms since `epoch`).
    last_have: u64,
    /// Super-seeding state per artifact (gateway only).
    seeds: HashMap<Hash, SuperSeed<PeerId>>,
    manifests: BTreeMap<Hash, Arc<Vec<u8>>>,
    listen_addrs: Vec<Multiaddr>,
    epoch: Instant,
    pub(super) peer_id: PeerId,
    /// Members or their addresses changed since the last peer lists went out.
    pub(super) pex_dirty: bool,
    /// Peer lists go out at most once per availability period (longer in larger wards).
    pub(super) pex_next: Instant,
    /// When every member is next sent its peer list even if unchanged.
    pub(super) pex_refresh: Instant,
    /// Members learned by peer exchange, dialed while not connected, with a back-off
    /// (`exchange::dial_members`).
    pub(super) pex_members: HashMap<PeerId, exchange::PexMember>,
    /// The revocation list we hold names this node: redialing the ward only fills its logs.
    pub(super) revoked_self: bool,
    /// When bootstrap peers were last dialed: the first tick, at once, must not dial them again.
    pub(super) bootstrap_dialed: Instant,
}

async fn dispatch(s: Arc<Shared>, proto: Protocol, peer: PeerId, stream: Stream) {
    match proto {
        Protocol::Admission => admission::inbound(s, peer, stream).await,
        Protocol::Have => availability::inbound(s, peer, stream).await,
        Protocol::HaveStream => availability::inbound_stream(s, peer, stream).await,
        Protocol::Announce => announce::inbound_announce(s, peer, stream).await,
        Protocol::Report => announce::inbound_report(s, peer, stream).await,
        Protocol::ReportStream => announce::inbound_report_stream(s, peer, stream).await,
        Protocol::Transfer => transfer::server::inbound(s, peer, stream).await,
        Protocol::TransferSession => transfer::server::inbound_session(s, peer, stream).await,
        Protocol::Peers => exchange::inbound(s, peer, stream).await,
        Protocol::PeersStream => exchange::inbound_stream(s, peer, stream).await,
        Protocol::Revocations => revocation::inbound(s, peer, stream).await,
        Protocol::Directive => announce::inbound_directive(s, peer, stream).await,
    }
}

impl Actor {
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    pub(super) fn role_of(&self, peer: &PeerId) -> Option<Role> {
        self.members.borrow().role_of(peer)
    }

    /// One accept loop per protocol. A loop only takes a permit and spawns, so libp2p-stream never
    /// drops a stream for want of a reader; past the protocol's limit a stream is dropped here.
    fn start_inbound(&mut self) -> Result<(), NodeError> {
        for proto in Protocol::ALL {
            #[cfg(feature = "test-faults")]
            if proto.is_later_version() && self.shared.cfg.fault == Some(super::Fault::V1Only) {
                continue;
            }
            let mut incoming =
                self.control
                    .accept(proto.id())
                    .map_err(|_| TransportError::Protocol {
                        protocol: proto.id(),
                    })?;
            let shared = self.shared.clone();
            let limit = Arc::new(Semaphore::new(streams::inbound_limit(proto, &shared.cfg)));
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        n = incoming.next() => n,
                        _ = shared.shutdown.cancelled() => None,
                    };
                    let Some((peer, stream)) = next else { break };
                    shared.metrics.stream_opened(proto.id().as_ref(), "inbound");
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        shared.metrics.inbound_streams_dropped.inc();
                        tracing::debug!(%peer, %proto, "too many inbound streams: dropped");
                        continue;
                    };
                    let s = shared.clone();
                    tokio::spawn(async move {
                        dispatch(s, proto, peer, stream).await;
                        drop(permit);
                    });
                }
            });
        }
        Ok(())
    }

    async fn run(mut self) {
        // On the process-wide grid of wake-ups (`grid`): one wake-up serves them all.
        let mut tick = super::grid::interval(self.shared.cfg.tick);
        let mut have_tick = super::grid::interval(self.shared.cfg.have_interval);
        let mut slow_tick = super::grid::interval(policy::SLOW_TICK);
        let reply = loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = self.rx.recv() => match cmd {
                    None => break None,
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(c) => self.on_command(c),
                },
                Some(i) = self.internal_rx.recv() => self.on_internal(i),
                _ = tick.tick() => self.on_tick(),
                _ = have_tick.tick() => {
                    // Membership changes reach the members within a round.
                    self.send_peer_lists();
                    self.broadcast_haves();
                }
                _ = slow_tick.tick() => self.on_slow_tick(),
            }
        };
        self.stop().await;
        if let Some(r) = reply {
            let _ = r.send(());
        }
    }

    async fn stop(&mut self) {
        self.shared.shutdown.cancel();
        for d in self.downloads.values_mut() {
            d.cancel_all();
            for w in d.waiters.drain(..) {
                let _ = w.send(Err(NodeError::Stopped));
            }
        }
        for (_, (_, waiters)) in self.creating.drain() {
            for w in waiters {
                let _ = w.send(Err(NodeError::Stopped));
            }
        }
        // The fsyncs run on a blocking thread: the runtime's other tasks go on meanwhile.
        let store = self.shared.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for e in store.list() {
                if let Err(e) = e.sync() {
                    tracing::warn!(error = %e, "syncing the store at stop failed");
                }
            }
        })
        .await;
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
                self.shared.metrics.connections_open.inc();
                let remote = endpoint.get_remote_address();
                tracing::debug!(%peer_id, dialer = endpoint.is_dialer(), num_established, %remote, "connection established");
                let loopback = remote.iter().any(|p| match p {
                    Addr::Ip4(ip) => ip.is_loopback(),
                    Addr::Ip6(ip) => ip.is_loopback(),
                    _ => false,
                });
                let admitted = self.role_of(&peer_id).is_some();
                let st = self.peers.entry(peer_id).or_insert(PeerState {
                    connected_at: Instant::now(),
                    cert: None,
                    outbox: None,
                    addrs: vec![],
                    loopback,
                    parting: None,
                    pex_sent: None,
                    admitting: false,
                    have_refresh: None,
                });
                // The first connection we dialed starts admission, even if the peer's own dial to
                // us was established first (both learned of each other by peer exchange at once):
                // waiting for "the first connection" there left both sides waiting for the other.
                if endpoint.is_dialer() && !admitted && !st.admitting {
                    st.admitting = true;
                    tokio::spawn(admission::outbound(
                        self.shared.clone(),
                        self.control.clone(),
                        peer_id,
                    ));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                self.shared.metrics.connections_open.dec();
                if num_established == 0 {
                    self.peer_gone(peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                // Remembered and dialed like members from peer lists: under `target_peers`, in
                // this node's own order (every device hears the same answers in the same order:
                // dialing them as they came made the first few responders everyone's peers), and
                // with the same retry, tie-break and bound.
                let mut found: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in list {
                    if peer != self.peer_id && !self.swarm.is_connected(&peer) {
                        let addrs = found.entry(peer).or_default();
                        if addrs.len() < exchange::MAX_ADDRS {
                            addrs.push(addr);
                        }
                    }
                }
                if !found.is_empty() {
                    tracing::debug!(new = found.len(), "mDNS answers from peers not connected");
                }
                let now = Instant::now();
                for (peer, addrs) in found {
                    self.learn_member(peer, addrs, now);
                }
                self.dial_members();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    let addrs: Vec<Multiaddr> = info
                        .listen_addrs
                        .into_iter()
                        .filter(exchange::shareable)
                        .take(exchange::MAX_ADDRS)
                        .collect();
                    if p.addrs != addrs {
                        p.addrs = addrs;
                        self.pex_dirty = true;
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
        self.peers.remove(&peer);
        self.shared.links.forget(&peer);
        self.peer_haves.remove(&peer);
        for seed in self.seeds.values_mut() {
            seed.peer_gone(&peer);
        }
        if self.members.send_if_modified(|m| m.remove(&peer)) {
            self.shared.metrics.peers_admitted.dec();
            self.pex_dirty = true;
            self.emit(Event::PeerLeft { peer });
        }
        self.downloads_peer_gone(peer);
    }

    /// Queues a frame for an admitted peer; `false` if it was not queued (not admitted, or its
    /// outbox is full: the frame is dropped and counted).
    pub(super) fn send_to(&self, peer: &PeerId, proto: Protocol, body: Arc<Vec<u8>>) -> bool {
        let Some(outbox) = self.peers.get(peer).and_then(|p| p.outbox.as_ref()) else {
            return false;
        };
        let queued = outbox.push(proto, body);
        if !queued {
            self.shared.metrics.outbound_frames_dropped.inc();
            tracing::debug!(%peer, %proto, "outbox full: frame dropped");
        }
        queued
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
            Command::Dial { addr, vouch } => {
                if let (true, Some(Addr::P2p(p))) = (vouch, addr.iter().last()) {
                    self.members.send_modify(|m| {
                        m.vouch(p);
                    });
                }
                let _ = self.swarm.dial(fresh_port(addr));
            }
            Command::HaveChanged { root } => {
                self.have_dirty.insert(root);
            }
            Command::Manifests { reply } => {
                let _ = reply.send(self.manifests.values().cloned().collect());
            }
            Command::Report { body } => {
                let body = Arc::new(body);
                let gateways = self.members.borrow().peers(Some(Role::Gateway));
                for p in gateways {
                    self.send_to(&p, Protocol::Report, body.clone());
                }
            }
            Command::Directive { peer, body } => {
                if self.role_of(&peer).is_some() {
                    self.send_to(&peer, Protocol::Directive, Arc::new(body));
                }
            }
            Command::SetRevocations { bytes, reply } => {
                let _ = reply.send(self.adopt_revocations(bytes, None));
            }
            Command::Revocations { reply } => {
                let _ = reply.send(self.revocations.borrow().clone());
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn on_internal(&mut self, i: Internal) {
        match i {
            Internal::Admitted { peer, cert } => self.on_admitted(peer, *cert),
            Internal::Refused { peer, reason } => {
                self.shared.metrics.admission_refused.inc();
                tracing::warn!(target: "wardswarm::security", %peer, %reason, "admission refused");
                self.emit(Event::PeerRefused { peer, reason });
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Internal::Have { peer, have } => self.on_have(peer, have),
            Internal::Announce { peer, bytes } => {
                if self.role_of(&peer).is_some() {
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
            Internal::Directive { peer, body } => match self.role_of(&peer) {
                Some(Role::Gateway) => self.emit(Event::Directive {
                    peer,
                    body: Arc::new(body),
                }),
                role => {
                    self.shared.metrics.directives_refused.inc();
                    tracing::warn!(target: "wardswarm::security", %peer, ?role, "rollout directive refused: only the ward's gateway directs devices");
                }
            },
            Internal::Peers { from, list } => self.on_peer_list(from, list),
            Internal::Revocations { from, bytes } => self.on_revocations(from, bytes),
            Internal::Created { root, entry } => self.on_created(root, entry),
            Internal::Progress { root, req, groups } => self.on_progress(root, req, &groups),
            Internal::Finished {
                root,
                req,
                outcome,
                local,
            } => self.on_finished(root, req, outcome, local),
            Internal::HaveLost { peer } => self.have_lost(&peer),
        }
    }

    /// A HAVE frame to `peer` was lost: it gets our availability in full at the next round.
    fn have_lost(&mut self, peer: &PeerId) {
        let now = self.now_ms();
        if let Some(r) = self
            .peers
            .get_mut(peer)
            .and_then(|p| p.have_refresh.as_mut())
        {
            r.lost(now);
        }
    }

    fn on_admitted(&mut self, peer: PeerId, cert: Certificate) {
        let now = self.now_ms();
        if !self.peers.contains_key(&peer) {
            // Its connection closed while its certificate was being checked.
            return;
        }
        let role = cert.role;
        tracing::info!(%peer, device = %cert.device, role = role.as_str(), "peer admitted");
        self.emit(Event::PeerAdmitted {
            peer,
            role,
            device: cert.device.clone(),
        });
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.cert = Some(cert);
        if state.have_refresh.is_none() {
            state.have_refresh = Some(policy::Refresh::new(now));
        }
        if state.outbox.is_none() {
            state.outbox = Some(Outbox::spawn(
                self.shared.clone(),
                self.control.clone(),
                peer,
            ));
        }
        if !self.members.send_if_modified(|m| m.insert(peer, role)) {
            return;
        }
        self.shared.metrics.peers_admitted.inc();
        self.pex_dirty = true;
        // Tell the newcomer what we have (a super-seeding gateway shows it its view at the next
        // round instead) and what we know.
        if self.shared.cfg.seeding.is_none() {
            for e in self.shared.store.list() {
                let have = Have {
                    root: e.root(),
                    length: e.length(),
                    groups: self.announced(&e),
                };
                if !have.groups.is_empty() || self.downloads.contains_key(&have.root) {
                    self.send_to(&peer, Protocol::Have, Arc::new(have.to_bytes()));
                }
            }
        }
        for m in self.manifests.values() {
            self.send_to(&peer, Protocol::Announce, m.clone());
        }
        self.send_revocations_to(&peer);
    }

    fn on_have(&mut self, peer: PeerId, have: Have) {
        let Some(role) = self.role_of(&peer) else {
            return;
        };
        let m = self.peer_haves.entry(peer).or_default();
        if m.len() >= MAX_HAVES_PER_PEER && !m.contains_key(&have.root) {
            return;
        }
        m.insert(have.root, have.clone());
        if self.shared.cfg.seeding.is_some() && role == Role::Device {
            let now = self.now_ms();
            if let Some(seed) = self.seed(have.root) {
                seed.peer_has(now, peer, have.groups.clone());
            }
        }
        self.download_peer_has(peer, role, have);
    }

    /// Verifies a manifest (format, signatures, expiry), remembers it and floods it to admitted peers.
    fn accept_manifest(&mut self, bytes: Vec<u8>, from: Option<PeerId>) -> Result<bool, NodeError> {
        let sm = SignedManifest::parse(&bytes).map_err(AnnounceError::Manifest)?;
        sm.check_signatures(&self.shared.root)
            .map_err(AnnounceError::Manifest)?;
        if Timestamp::now() >= sm.manifest.expires {
            return Err(AnnounceError::Expired {
                version: sm.manifest.version.clone(),
                expires: sm.manifest.expires,
            }
            .into());
        }
        let id = sm.release_id();
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
        let peers = self.members.borrow().peers(None);
        for p in peers.iter().filter(|p| Some(**p) != from) {
            self.send_to(p, Protocol::Announce, bytes.clone());
        }
        self.emit(Event::Manifest { bytes, from });
        Ok(true)
    }

    fn on_tick(&mut self) {
        self.downloads_tick();
        self.expire_certificates(Timestamp::now());
        // Members whose admission ended go once their notice had time to leave.
        let now = Instant::now();
        let parted: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.parting.is_some_and(|t| now >= t))
            .map(|(p, _)| *p)
            .collect();
        for p in parted {
            self.peers.remove(&p);
            let _ = self.swarm.disconnect_peer_id(p);
        }
        // Peers that did not prove membership in time are disconnected.
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, s)| {
                s.cert.is_none()
                    && s.parting.is_none()
                    && self.role_of(p).is_none()
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
        self.redial_bootstrap();
        self.dial_members();
        // Caps follow their schedules.
        let now = Timestamp::now().as_unix();
        self.shared.upload.set(self.shared.cfg.upload.rate_at(now));
        self.shared
            .download
            .set(self.shared.cfg.download.rate_at(now));
    }

    /// What we announce of an artifact: our verified groups, or none if we do not upload (leech only).
    pub(super) fn announced(&self, e: &Entry) -> GroupSet {
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

    /// One availability round ([`policy::have_round`] per artifact), at most once per
    /// [`policy::have_period`].
    fn broadcast_haves(&mut self) {
        let now = self.now_ms();
        let peers = self.members.borrow().with_roles();
        let period = policy::have_period(self.shared.cfg.have_interval, peers.len());
        if now.saturating_sub(self.last_have) < period.as_millis() as u64 {
            return;
        }
        self.last_have = now;
        // Peers whose full refresh is due get every artifact we hold or fetch, changed or not.
        let due: HashSet<PeerId> = peers
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| {
                self.peers
                    .get(p)
                    .and_then(|s| s.have_refresh)
                    .is_some_and(|r| r.is_due(now))
            })
            .collect();
        let dirty = std::mem::take(&mut self.have_dirty);
        let mut roots: Vec<Hash> = dirty.iter().copied().collect();
        if due.is_empty() {
            roots.extend(self.seeds.keys().filter(|r| !dirty.contains(r)).copied());
        } else {
            roots.extend(
                self.shared
                    .store
                    .list()
                    .iter()
                    .filter(|e| !e.have().is_empty() || self.downloads.contains_key(&e.root()))
                    .map(|e| e.root())
                    .filter(|r| !dirty.contains(r)),
            );
        }
        let uploads = self.shared.upload.rate() != Some(0);
        let mut lost = Vec::new();
        for root in roots {
            let Some(e) = self.shared.store.get(&root) else {
                self.seeds.remove(&root);
                continue;
            };
            let mine = self.announced(&e);
            let fetching = self.downloads.contains_key(&root);
            // Devices whose last HAVE of this artifact holds all we would announce.
            let holders: HashSet<PeerId> = peers
                .iter()
                .filter(|(p, _)| {
                    self.peer_haves
                        .get(p)
                        .and_then(|m| m.get(&root))
                        .is_some_and(|h| h.length == e.length() && mine.is_subset(&h.groups))
                })
                .map(|(p, _)| *p)
                .collect();
            let seed = if uploads { self.seed(root) } else { None };
            let a = HaveArtifact {
                mine: &mine,
                changed: dirty.contains(&root),
                fetching,
                seed,
            };
            for (p, groups) in
                policy::have_round(now, |p| due.contains(p), |p| holders.contains(p), a, &peers)
            {
                let frame = Have {
                    root,
                    length: e.length(),
                    groups,
                };
                if !self.send_to(&p, Protocol::Have, Arc::new(frame.to_bytes())) {
                    lost.push(p);
                }
            }
        }
        for p in due {
            if let Some(r) = self.peers.get_mut(&p).and_then(|s| s.have_refresh.as_mut()) {
                r.sent(now);
            }
        }
        for p in lost {
            self.have_lost(&p);
        }
    }
}
