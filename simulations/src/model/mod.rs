//! The model engine: a discrete-event simulation in virtual time that drives the real, pure
//! [`Scheduler`] (every device) and [`SuperSeed`] (every gateway) over a modelled network.
//!
//! What is modelled, and how the real node does the same thing:
//! - **Connections** as the node forms them: every device connects to its gateway and dials other
//!   members in an order of its own until it has `target_peers`; availability and requests go only
//!   over connections ([`Ward::connect`]).
//! - **Availability rounds** every 250 ms per node (random phase): a device sends its verified set to
//!   every admitted peer it is connected to when it changed (and in full every 2 s); the gateway
//!   sends each device its super-seeding view. Like `broadcast_haves`.
//! - **Requests** go to the serving node after the one-way latency. It answers not-found if it lacks a
//!   group, "limited" if it serves 32 transfers already or its upload cap is 0, otherwise it streams.
//! - **Bandwidth:** every transfer is a fluid flow limited by the sender's upload cap and the
//!   receiver's download cap, shared max-min fairly (progressive filling), recomputed when flows change
//!   and advanced in 5 ms steps. Unlimited caps are a 1 Gbit/s port. Each group costs its bytes plus
//!   64 B of bao proof, as measured on the wire.
//! - **WAN:** the gateway downloads the outboard, then the artifact in order at its WAN cap, and a
//!   group is usable once its 1 MiB verify batch is complete, as in the gateway.
//! - **Faults:** crashes (the store survives), late joins, cap changes, corrupt and stalling peers,
//!   non-members (never admitted), the gateway leaving.
//!
//! Not modelled: TCP slow start and CPU time, disk time, the install after download. Completion is the
//! moment a device holds every verified group. Deterministic for a seed.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap},
    ops::Range,
};

use std::time::Duration;

use wardswarm_node::{
    groups::GroupSet,
    membership::Role,
    net::{
        config::defaults,
        policy::{self, HaveArtifact, ServeRequest},
        wire::Status,
    },
    outboard::GROUP_BYTES,
    scheduler::{self, Action, Input, Outcome as ReqOutcome, ReqId, Scheduler},
    seeding::{self, SuperSeed},
    testkit::Rng,
};
use wardswarm_seeder::gateway::VERIFY_BATCH_BYTES;

mod flows;

use flows::{Flow, Flows};

use crate::{
    report::{CapSample, DeviceOutcome, RunOutcome, Series},
    scenario::{Behaviour, CapTarget, Event, Installed, Scenario},
};

/// Bytes per chunk group, as the node's.
const GROUP: u64 = GROUP_BYTES;
/// Proof bytes per group on the wire (one 64-byte parent per group in a run).
const PROOF: u64 = 64;
/// A port without a cap: 1 Gbit/s.
const PORT: f64 = 125e6;
/// Network step, µs.
const STEP: u64 = 5_000;
/// The node's availability round and scheduler tick, µs.
const HAVE_EVERY: u64 = defaults::HAVE_INTERVAL.as_micros() as u64;
const TICK_EVERY: u64 = defaults::TICK.as_micros() as u64;
const SAMPLE_EVERY: u64 = 500_000;
/// Transfers a node serves at once, as the node's default.
const MAX_INBOUND: usize = defaults::MAX_INBOUND_TRANSFERS;
/// The gateway's verify-and-seed batch.
const VERIFY_BATCH: u64 = VERIFY_BATCH_BYTES;

#[derive(Debug)]
enum Ev {
    HaveRound(usize),
    Tick(usize),
    Have {
        from: usize,
        to: usize,
        groups: GroupSet,
    },
    Request {
        client: usize,
        server: usize,
        req: ReqId,
        groups: Range<u64>,
    },
    Reply {
        client: usize,
        req: ReqId,
        outcome: ReqOutcome,
    },
    Join(usize),
    Crash(usize, Option<u64>),
    Cap(CapTarget, Option<u64>),
    GatewayLeaves,
    Net,
    Sample,
}

#[derive(Debug)]
struct Node {
    behaviour: Behaviour,
    measured: bool,
    alive: bool,
    admitted: bool,
    up: Option<u64>,
    down: Option<u64>,
    has: GroupSet,
    sched: Option<Scheduler<usize>>,
    /// Requests the scheduler has outstanding (a request arriving for another one is dropped).
    live: BTreeSet<ReqId>,
    known: BTreeMap<usize, GroupSet>,
    /// The nodes it has a connection to (symmetric), as the node forms them
    /// ([`Ward::connect`]).
    links: BTreeSet<usize>,
    sent: Option<GroupSet>,
    /// When each peer is next sent this node's availability in full, as the node's
    /// ([`policy::Refresh`]; the model loses no frame).
    refresh: BTreeMap<usize, policy::Refresh>,
    serving: usize,
    completed: Option<u64>,
    from_gateway: u64,
    from_peers: u64,
    uploaded: u64,
    sample_uploaded: u64,
    banned: BTreeSet<usize>,
}

struct Ward<'a> {
    sc: &'a Scenario,
    ward: usize,
    groups: u64,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    nodes: Vec<Node>,
    flows: Flows,
    dirty: bool,
    seed: SuperSeed<usize>,
    wan_rate: Option<u64>,
    wan_bytes: f64,
    wan_meta: u64,
    gateway_left: Option<u64>,
    leave_after_copy: bool,
    /// Measured devices not complete yet.
    remaining: usize,
    rng: Rng,
    /// Transfers by how they ended; groups requested.
    transfers: BTreeMap<String, u64>,
    groups_requested: u64,
    series: Series,
    caps: CapSample,
}

/// Runs every ward of the scenario in the model. Wards are independent (each has its own gateway and
/// seed), so they run on all cores; the result does not depend on how many.
pub fn run(sc: &Scenario) -> RunOutcome {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(sc.wards);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut wards: Vec<(usize, RunOutcome)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let w = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if w >= sc.wards {
                            break done;
                        }
                        let mut out = RunOutcome::new("model", sc);
                        let mut ward = Ward::new(sc, w);
                        ward.run();
                        ward.finish(&mut out);
                        done.push((w, out));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    wards.sort_by_key(|(w, _)| *w);
    let mut out = RunOutcome::new("model", sc);
    for (w, o) in wards {
        out.devices.extend(o.devices);
        out.wan_per_ward.extend(o.wan_per_ward);
        out.gateway_upload_per_ward
            .extend(o.gateway_upload_per_ward);
        out.gateway_left_s = out.gateway_left_s.or(o.gateway_left_s);
        out.refused_admission += o.refused_admission;
        out.caps.merge(&o.caps);
        for (k, v) in o.transfers {
            *out.transfers.entry(k).or_default() += v;
        }
        for (k, v) in o.streams_opened {
            *out.streams_opened.entry(k).or_default() += v;
        }
        out.groups_requested += o.groups_requested;
        out.elapsed_s = out.elapsed_s.max(o.elapsed_s);
        if w == 0 {
            out.series = o.series;
        }
    }
    if let Some(ro) = &sc.rollout {
        rollout_over(sc, ro, &mut out);
    }
    out
}

/// The scenario's rollout, replayed per ward over the download times the flows gave: each
/// measured device's `updated_s` becomes when it committed; the first ward's rollout is reported.
fn rollout_over(sc: &Scenario, ro: &crate::rollout::RolloutScenario, out: &mut RunOutcome) {
    for w in 0..sc.wards {
        let idx: Vec<usize> = (0..out.devices.len())
            .filter(|&i| out.devices[i].ward == w && out.devices[i].measured)
            .collect();
        // Device ids within a ward, so the scenario's selectors (`w01-d001`, ...) name the same
        // devices in every engine; the scenario's device numbers index the ward's devices.
        let ids: Vec<String> = idx
            .iter()
            .map(|&i| {
                let id = &out.devices[i].id;
                format!("w01{}", &id[3..])
            })
            .collect();
        let done: Vec<Option<f64>> = idx.iter().map(|&i| out.devices[i].completed_s).collect();
        let positions: Vec<usize> = idx
            .iter()
            .map(|&i| {
                out.devices[i].id[5..]
                    .parse::<usize>()
                    .unwrap_or(1)
                    .saturating_sub(1)
            })
            .collect();
        let mut ro = ro.clone();
        // The scenario numbers devices among all of the ward's; the replay, among the measured.
        let pos = |d: usize| positions.iter().position(|p| *p == d);
        ro.failing = ro.failing.iter().filter_map(|d| pos(*d)).collect();
        ro.in_use = ro
            .in_use
            .iter()
            .filter_map(|(d, a, b)| pos(*d).map(|p| (p, *a, *b)))
            .collect();
        let (r, committed) = crate::rollout::replay(&ro, &ids, &done, sc.timeout.as_secs_f64());
        for (k, &i) in idx.iter().enumerate() {
            out.devices[i].updated_s = committed[k];
        }
        if w == 0 {
            out.elapsed_s = out.elapsed_s.max(r.fleet_s.unwrap_or(0.0));
            out.rollout = Some(r);
        }
    }
}

impl<'a> Ward<'a> {
    fn new(sc: &'a Scenario, ward: usize) -> Self {
        let groups = sc.artifact.div_ceil(GROUP);
        let mut nodes = vec![Node::new(
            Behaviour::Honest,
            false,
            sc.gateway.upload,
            None,
            groups,
        )];
        for d in &sc.devices {
            let mut n = Node::new(d.behaviour, d.measured(), d.upload, d.download, groups);
            if d.installed == Installed::New {
                n.has = GroupSet::full(groups);
            }
            nodes.push(n);
        }
        let outboard = (groups.saturating_sub(1)) * 64;
        let mut w = Self {
            sc,
            ward,
            groups,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes,
            flows: Flows::default(),
            dirty: false,
            seed: SuperSeed::new(seeding::Config::default(), groups),
            wan_rate: sc.gateway.wan,
            wan_bytes: 0.0,
            // Index, manifest and outboard come first.
            wan_meta: outboard + 8 * 1024,
            gateway_left: None,
            leave_after_copy: false,
            remaining: sc.measured(),
            transfers: BTreeMap::new(),
            groups_requested: 0,
            rng: Rng::from_state(
                sc.seed ^ (ward as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed,
            ),
            series: Series::new(SAMPLE_EVERY as f64 / 1e6),
            caps: CapSample::default(),
        };
        w.nodes[0].alive = true;
        w.nodes[0].admitted = true;
        w.nodes[0].has = GroupSet::new(groups);
        for i in 0..w.nodes.len() {
            let phase = w.rand() % HAVE_EVERY;
            w.push(phase, Ev::HaveRound(i));
            let phase = w.rand() % TICK_EVERY;
            w.push(phase, Ev::Tick(i));
        }
        for (i, d) in sc.devices.iter().enumerate() {
            w.push(d.join.as_micros() as u64, Ev::Join(i + 1));
        }
        for e in &sc.events {
            match e {
                Event::Crash {
                    at,
                    device,
                    restart_after,
                } => w.push(
                    at.as_micros() as u64,
                    Ev::Crash(device + 1, restart_after.map(|d| d.as_micros() as u64)),
                ),
                Event::Cap { at, target, rate } => {
                    w.push(at.as_micros() as u64, Ev::Cap(*target, *rate))
                }
                Event::GatewayLeaves { at: Some(at) } => {
                    w.push(at.as_micros() as u64, Ev::GatewayLeaves)
                }
                Event::GatewayLeaves { at: None } => w.leave_after_copy = true,
            }
        }
        w.push(STEP, Ev::Net);
        w.push(SAMPLE_EVERY, Ev::Sample);
        w
    }

    fn rand(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn lat(&self) -> u64 {
        self.sc.latency.as_micros() as u64
    }

    fn group_bytes(&self, g: u64) -> u64 {
        let len = if g + 1 == self.groups {
            self.sc.artifact - g * GROUP
        } else {
            GROUP
        };
        len + PROOF
    }

    fn done(&self) -> bool {
        self.remaining == 0
    }

    fn run(&mut self) {
        let limit = self.sc.timeout.as_micros() as u64;
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            if at > limit || self.done() {
                self.now = self.now.max(at.min(limit));
                break;
            }
            self.now = at;
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.handle(ev);
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::HaveRound(i) => {
                self.have_round(i);
                // As the node: longer rounds in larger wards (`node::have_period`).
                let peers = self.peers_of(i).len();
                let period = policy::have_period(Duration::from_micros(HAVE_EVERY), peers);
                self.push(now + period.as_micros() as u64, Ev::HaveRound(i));
            }
            Ev::Tick(i) => {
                if self.nodes[i].sched.is_some() {
                    self.drive(i, Input::Tick);
                }
                self.push(now + TICK_EVERY, Ev::Tick(i));
            }
            Ev::Have { from, to, groups } => self.on_have(from, to, groups),
            Ev::Request {
                client,
                server,
                req,
                groups,
            } => self.on_request(client, server, req, groups),
            Ev::Reply {
                client,
                req,
                outcome,
            } => {
                if self.nodes[client].live.contains(&req) {
                    *self.transfers.entry(outcome.as_str().into()).or_default() += 1;
                    self.drive(client, Input::Finished { req, outcome });
                }
            }
            Ev::Join(i) => self.join(i),
            Ev::Crash(i, restart) => {
                self.leave(i);
                if let Some(after) = restart {
                    self.push(now + after, Ev::Join(i));
                }
            }
            Ev::Cap(target, rate) => {
                let n = self.nodes.len();
                match target {
                    CapTarget::GatewayWan => self.wan_rate = rate,
                    CapTarget::GatewayUpload => self.nodes[0].up = rate,
                    CapTarget::DevicesUpload => (1..n).for_each(|i| self.nodes[i].up = rate),
                    CapTarget::DevicesDownload => (1..n).for_each(|i| self.nodes[i].down = rate),
                }
                self.dirty = true;
            }
            Ev::GatewayLeaves => {
                if self.gateway_left.is_none() {
                    self.gateway_left = Some(now);
                    self.leave(0);
                }
            }
            Ev::Net => {
                self.net_step();
                // As the live harness: the gateway leaves as soon as one copy is in the ward, not
                // at its next availability round (which could come after the last device finished).
                if self.leave_after_copy && self.gateway_left.is_none() && self.seeded_once() {
                    self.gateway_left = Some(now);
                    self.leave(0);
                }
                self.push(now + STEP, Ev::Net);
            }
            Ev::Sample => {
                self.sample();
                self.push(now + SAMPLE_EVERY, Ev::Sample);
            }
        }
    }

    /// A node comes up (first join or restart): admission, then availability both ways.
    fn join(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.alive = true;
        n.admitted = n.behaviour != Behaviour::NonMember;
        n.sent = None;
        n.refresh.clear();
        // Admitted anew: every peer's refresh schedule for it starts again.
        for other in &mut self.nodes {
            other.refresh.remove(&i);
        }
        self.connect(i);
        if !self.nodes[i].admitted {
            return;
        }
        // It hears the release announcement and starts fetching (a hostile member fetches honestly
        // too, as in the live engine: it misbehaves only when serving).
        let n = &mut self.nodes[i];
        if n.completed.is_none() && !n.has.is_full() {
            let cfg = scheduler::Config {
                seed: self.sc.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
                ..Default::default()
            };
            let mut s = Scheduler::new(cfg, n.has.clone());
            s.mark_seed(0);
            n.sched = Some(s);
            n.live.clear();
            let known: Vec<(usize, GroupSet)> =
                n.known.iter().map(|(k, v)| (*k, v.clone())).collect();
            for (peer, groups) in known {
                if self.nodes[peer].alive {
                    self.drive(i, Input::PeerHas { peer, groups });
                }
            }
            self.drive(i, Input::Tick);
        }
    }

    /// A node goes away: its transfers end and every peer sees it gone.
    fn leave(&mut self, i: usize) {
        if !self.nodes[i].alive {
            return;
        }
        self.nodes[i].alive = false;
        self.nodes[i].sched = None;
        self.nodes[i].live.clear();
        self.nodes[i].known.clear();
        let former = std::mem::take(&mut self.nodes[i].links);
        for &p in &former {
            self.nodes[p].links.remove(&i);
        }
        let gone: Vec<usize> = self
            .flows
            .keys()
            .into_iter()
            .filter(|k| {
                self.flows
                    .get(*k)
                    .is_some_and(|f| f.server == i || f.client == i)
            })
            .collect();
        for k in gone {
            if let Some(f) = self.flows.remove(k) {
                self.nodes[f.server].serving = self.nodes[f.server].serving.saturating_sub(1);
            }
        }
        self.dirty = true;
        self.seed.peer_gone(&i);
        for p in 1..self.nodes.len() {
            if p != i && self.nodes[p].alive {
                self.nodes[p].known.remove(&i);
                if self.nodes[p].sched.is_some() {
                    self.drive(p, Input::PeerGone { peer: i });
                }
            }
        }
        // Its peers under their target dial others (the node's slow tick).
        for p in former {
            if p != 0 && self.nodes[p].alive && self.nodes[p].admitted {
                self.top_up(p);
            }
        }
    }

    /// The connections a node comes up with, as the node makes them (`exchange::dial_members`):
    /// every device dials its gateway; an admitted one then dials the admitted members it knows
    /// (the gateway's peer lists name them all), in an order of its own, until it has
    /// `target_peers` connections, and accepts inbound ones beyond that. Members still under
    /// their target dial the newcomer when they learn of it.
    fn connect(&mut self, i: usize) {
        if i != 0 && self.nodes[0].alive {
            self.link(0, i);
        }
        if i == 0 || !self.nodes[i].admitted {
            return;
        }
        self.top_up(i);
        for p in 1..self.nodes.len() {
            if p != i
                && self.nodes[p].alive
                && self.nodes[p].admitted
                && self.nodes[p].links.len() < defaults::TARGET_PEERS
            {
                self.top_up(p);
            }
        }
    }

    /// A member under its target dials members it is not connected to, in its own order.
    fn top_up(&mut self, i: usize) {
        let seed = self.sc.seed;
        let mut candidates: Vec<(u64, usize)> = (1..self.nodes.len())
            .filter(|&p| {
                p != i
                    && self.nodes[p].alive
                    && self.nodes[p].admitted
                    && !self.nodes[i].links.contains(&p)
            })
            .map(|p| (dial_rank(seed, i, p), p))
            .collect();
        candidates.sort_unstable();
        for (_, p) in candidates {
            if self.nodes[i].links.len() >= defaults::TARGET_PEERS {
                break;
            }
            self.link(i, p);
        }
    }

    /// A new connection: once both are admitted, each device tells the other what it has (the
    /// gateway shows a device its view once it asks, in its availability rounds).
    fn link(&mut self, a: usize, b: usize) {
        if !self.nodes[a].links.insert(b) {
            return;
        }
        self.nodes[b].links.insert(a);
        let admitted = |n: &Node| n.alive && n.admitted;
        if a == 0 || !admitted(&self.nodes[a]) || !admitted(&self.nodes[b]) {
            return;
        }
        let at = self.now + 2 * self.lat();
        for (from, to) in [(a, b), (b, a)] {
            let groups = self.announced(from);
            if !groups.is_empty() {
                self.push(at, Ev::Have { from, to, groups });
            }
        }
    }

    /// The admitted, running nodes `i` is connected to.
    fn peers_of(&self, i: usize) -> Vec<usize> {
        self.nodes[i]
            .links
            .iter()
            .copied()
            .filter(|&p| self.nodes[p].alive && self.nodes[p].admitted)
            .collect()
    }

    /// Does every group exist on some honest, running device (one copy is in the ward)? The scenario
    /// harness knows who is honest; the gateway does not, so this is not the gateway's own test.
    fn seeded_once(&self) -> bool {
        let mut union = GroupSet::new(self.groups);
        for n in self.nodes.iter().skip(1) {
            if n.alive && n.behaviour == Behaviour::Honest {
                union.union_with(&n.has);
            }
        }
        union.is_full()
    }

    fn announced(&self, i: usize) -> GroupSet {
        let n = &self.nodes[i];
        if n.up == Some(0) {
            GroupSet::new(self.groups)
        } else {
            n.has.clone()
        }
    }

    fn have_round(&mut self, i: usize) {
        if !self.nodes[i].alive || !self.nodes[i].admitted {
            return;
        }
        let at = self.now + self.lat();
        let now_ms = self.now / 1000;
        let peers: Vec<(usize, Role)> = self
            .peers_of(i)
            .into_iter()
            .map(|p| (p, if p == 0 { Role::Gateway } else { Role::Device }))
            .collect();
        // A peer's schedule starts when it is first seen admitted, and again after it was gone.
        let refresh = &mut self.nodes[i].refresh;
        refresh.retain(|p, _| peers.iter().any(|(q, _)| q == p));
        for (p, _) in &peers {
            refresh
                .entry(*p)
                .or_insert_with(|| policy::Refresh::new(now_ms));
        }
        let due: BTreeSet<usize> = refresh
            .iter()
            .filter(|(_, r)| r.is_due(now_ms))
            .map(|(p, _)| *p)
            .collect();
        for p in &due {
            if let Some(r) = refresh.get_mut(p) {
                r.sent(now_ms);
            }
        }
        let mine = if i == 0 {
            self.nodes[0].has.clone()
        } else {
            self.announced(i)
        };
        let changed = self.nodes[i].sent.as_ref() != Some(&mine);
        let fetching = self.nodes[i].sched.is_some();
        // The gateway super-seeds (the node's `seed` for an uploading gateway).
        let known = &self.nodes[i].known;
        let holders: BTreeSet<usize> = peers
            .iter()
            .filter(|(p, _)| known.get(p).is_some_and(|k| mine.is_subset(k)))
            .map(|(p, _)| *p)
            .collect();
        let seed = (i == 0).then_some(&mut self.seed);
        let frames = policy::have_round(
            now_ms,
            |p| due.contains(p),
            |p| holders.contains(p),
            HaveArtifact {
                mine: &mine,
                changed,
                fetching,
                seed,
            },
            &peers,
        );
        if !frames.is_empty() && i != 0 {
            self.nodes[i].sent = Some(mine);
        }
        for (to, groups) in frames {
            self.push(
                at,
                Ev::Have {
                    from: i,
                    to,
                    groups,
                },
            );
        }
    }

    fn on_have(&mut self, from: usize, to: usize, groups: GroupSet) {
        if !self.nodes[to].alive || !self.nodes[from].alive {
            return;
        }
        if to == 0 {
            self.seed.peer_has(self.now / 1000, from, groups);
            return;
        }
        self.nodes[to].known.insert(from, groups.clone());
        if self.nodes[to].sched.is_some() && !self.nodes[to].banned.contains(&from) {
            self.drive(to, Input::PeerHas { peer: from, groups });
        }
    }

    fn on_request(&mut self, client: usize, server: usize, req: ReqId, groups: Range<u64>) {
        if !self.nodes[client].live.contains(&req) {
            return; // cancelled meanwhile
        }
        let s = &self.nodes[server];
        if s.alive && s.behaviour == Behaviour::Stall {
            return; // accepts and never answers: the client's stall timer ends it
        }
        let status = policy::serve(ServeRequest {
            admitted: self.nodes[client].admitted,
            uploads: s.up != Some(0),
            holds: groups.clone().all(|g| s.has.contains(g)),
            serving: s.serving,
            max_serving: MAX_INBOUND,
        });
        let reply = match status {
            _ if !s.alive => Some(ReqOutcome::Truncated),
            Status::Ok => None,
            Status::NotFound => Some(ReqOutcome::NotFound),
            Status::Limited => Some(ReqOutcome::Limited),
            Status::Forbidden => Some(ReqOutcome::Forbidden),
        };
        if let Some(outcome) = reply {
            let at = self.now + self.lat();
            self.push(
                at,
                Ev::Reply {
                    client,
                    req,
                    outcome,
                },
            );
            return;
        }
        self.nodes[server].serving += 1;
        self.flows.insert(Flow {
            server,
            client,
            req,
            next: groups.start,
            end: groups.end,
            // The first group also carries the proof from the root down to the run.
            got: -(PROOF as f64 * (64 - self.groups.leading_zeros()) as f64),
            rate: 0.0,
        });
        self.dirty = true;
    }

    /// Feeds a device's scheduler and carries out its actions.
    fn drive(&mut self, i: usize, input: Input<usize>) {
        let now_ms = self.now / 1000;
        if let Input::Finished { req, .. } = &input {
            self.nodes[i].live.remove(req);
        }
        let Some(s) = self.nodes[i].sched.as_mut() else {
            return;
        };
        let actions = s.step(now_ms, input);
        for a in actions {
            match a {
                Action::Request { peer, req, groups } => {
                    self.nodes[i].live.insert(req);
                    self.groups_requested += groups.end - groups.start;
                    let at = self.now + self.lat();
                    self.push(
                        at,
                        Ev::Request {
                            client: i,
                            server: peer,
                            req,
                            groups,
                        },
                    );
                }
                Action::Cancel { req, .. } => {
                    if self.nodes[i].live.remove(&req) {
                        *self
                            .transfers
                            .entry(wardswarm_node::net::metrics::CANCELLED.into())
                            .or_default() += 1;
                    }
                    let k = self.flows.find(i, req);
                    if let Some(f) = k.and_then(|k| self.flows.remove(k)) {
                        self.nodes[f.server].serving =
                            self.nodes[f.server].serving.saturating_sub(1);
                        self.dirty = true;
                    }
                }
                Action::Ban { peer } => {
                    self.nodes[i].banned.insert(peer);
                }
                Action::Complete => {
                    let n = &mut self.nodes[i];
                    n.completed = Some(self.now);
                    if n.measured {
                        self.remaining -= 1;
                    }
                    n.sched = None;
                    n.live.clear();
                    return;
                }
            }
        }
    }

    fn sample(&mut self) {
        let secs = SAMPLE_EVERY as f64 / 1e6;
        let mut dev = Vec::new();
        let mut gateway = 0.0;
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let rate = n.sample_uploaded as f64 / secs;
            n.sample_uploaded = 0;
            if let Some(cap) = n.up.filter(|c| *c > 0) {
                let what = if i == 0 {
                    "gateway upload"
                } else {
                    "device upload"
                };
                self.caps
                    .observe(what, self.now as f64 / 1e6, rate / cap as f64);
            }
            if i == 0 {
                gateway = rate;
            } else if n.alive && n.admitted {
                dev.push(rate);
            }
        }
        if self.ward == 0 {
            let done = self
                .nodes
                .iter()
                .filter(|n| n.measured && n.completed.is_some())
                .count();
            let t = self.now as f64 / 1e6;
            self.series
                .push(t, gateway, &dev, self.wan_bytes as u64, done);
        }
    }

    fn finish(&mut self, out: &mut RunOutcome) {
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let spec = &self.sc.devices[i - 1];
            out.devices.push(DeviceOutcome {
                ward: self.ward,
                id: format!("w{:02}-d{:03}", self.ward + 1, i),
                behaviour: spec.behaviour,
                measured: n.measured,
                completed_s: n.completed.map(|t| t as f64 / 1e6),
                updated_s: None,
                from_gateway: n.from_gateway,
                from_peers: n.from_peers,
                uploaded: n.uploaded,
                banned: n.banned.len(),
            });
        }
        out.wan_per_ward.push(self.wan_bytes.round() as u64);
        out.gateway_upload_per_ward.push(self.nodes[0].uploaded);
        out.transfers = std::mem::take(&mut self.transfers);
        out.groups_requested = self.groups_requested;
        // No streams: the model moves requests, not libp2p streams (`transfer/2` carries many
        // requests a stream), so `streams_opened` stays empty rather than guessed.
        out.gateway_left_s = out
            .gateway_left_s
            .or(self.gateway_left.map(|t| t as f64 / 1e6));
        out.refused_admission += self
            .nodes
            .iter()
            .filter(|n| n.behaviour == Behaviour::NonMember)
            .count();
        out.caps.merge(&self.caps);
        out.elapsed_s = out.elapsed_s.max(self.now as f64 / 1e6);
        if self.ward == 0 {
            out.series = std::mem::take(&mut self.series);
        }
    }
}

impl Node {
    fn new(
        behaviour: Behaviour,
        measured: bool,
        up: Option<u64>,
        down: Option<u64>,
        groups: u64,
    ) -> Self {
        Self {
            behaviour,
            measured,
            alive: false,
            admitted: false,
            up,
            down,
            has: GroupSet::new(groups),
            sched: None,
            live: BTreeSet::new(),
            known: BTreeMap::new(),
            links: BTreeSet::new(),
            sent: None,
            refresh: BTreeMap::new(),
            serving: 0,
            completed: None,
            from_gateway: 0,
            from_peers: 0,
            uploaded: 0,
            sample_uploaded: 0,
            banned: BTreeSet::new(),
        }
    }
}

/// A node's order of preference among the members it could dial (the node hashes the two peer
/// ids; the model, the two indices and the scenario's seed).
fn dial_rank(seed: u64, a: usize, b: usize) -> u64 {
    scheduler::splitmix(
        seed ^ (a as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (b as u64).rotate_left(32),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ward_of(devices: usize) -> Scenario {
        Scenario::parse(&format!(
            "name = \"t\"\nseed = 3\nartifact = \"1MiB\"\n[gateway]\nwan = \"10MB\"\nupload = \"4MB\"\n\
             [[devices]]\ncount = {devices}\nupload = \"1MB\"\ndownload = \"4MB\"\n"
        ))
        .expect("scenario")
    }

    /// Joins every device, as the scenario's join events would.
    fn joined(sc: &Scenario) -> Ward<'_> {
        let mut w = Ward::new(sc, 0);
        for i in 1..w.nodes.len() {
            w.join(i);
        }
        w
    }

    /// Is every node reachable from device 1 without the gateway?
    fn devices_connected(w: &Ward<'_>) -> bool {
        let mut seen = BTreeSet::from([1]);
        let mut todo = vec![1];
        while let Some(i) = todo.pop() {
            for &p in &w.nodes[i].links {
                if p != 0 && w.nodes[p].alive && seen.insert(p) {
                    todo.push(p);
                }
            }
        }
        seen.len() == (1..w.nodes.len()).filter(|&i| w.nodes[i].alive).count()
    }

    #[test]
    fn devices_connect_to_the_gateway_and_up_to_their_target() {
        let sc = ward_of(50);
        let w = joined(&sc);
        let gateway = &w.nodes[0].links;
        assert_eq!(
            gateway.len(),
            50,
            "every device is connected to its gateway"
        );
        let edges: usize = (1..=50)
            .map(|i| w.nodes[i].links.iter().filter(|&&p| p != 0).count())
            .sum::<usize>()
            / 2;
        for i in 1..=50 {
            assert!(
                w.nodes[i].links.len() >= defaults::TARGET_PEERS,
                "device {i} has {} links",
                w.nodes[i].links.len()
            );
        }
        // Each device dials at most TARGET_PEERS - 1 devices beside its gateway.
        assert!(edges <= 50 * (defaults::TARGET_PEERS - 1), "{edges} links");
        assert!(edges < 50 * 49 / 2, "not a full mesh");
        assert!(devices_connected(&w), "the devices form one graph");
    }

    #[test]
    fn peers_of_a_device_that_leaves_dial_others() {
        let sc = ward_of(20);
        let mut w = joined(&sc);
        let former: Vec<usize> = w.nodes[5]
            .links
            .iter()
            .copied()
            .filter(|&p| p != 0)
            .collect();
        w.leave(5);
        assert!(w.nodes[5].links.is_empty());
        for p in former {
            assert!(!w.nodes[p].links.contains(&5));
            assert!(
                w.nodes[p].links.len() >= defaults::TARGET_PEERS,
                "device {p} topped up to its target: {} links",
                w.nodes[p].links.len()
            );
        }
        w.join(5);
        assert!(w.nodes[5].links.len() >= defaults::TARGET_PEERS);
        assert!(devices_connected(&w));
    }

    #[test]
    fn a_ward_smaller_than_the_target_is_a_full_mesh() {
        let sc = ward_of(5);
        let w = joined(&sc);
        for i in 1..=5 {
            assert_eq!(
                w.nodes[i].links.len(),
                5,
                "device {i}: gateway and four devices"
            );
        }
    }
}
