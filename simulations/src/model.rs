//! The model engine: a discrete-event simulation in virtual time that drives the real, pure
//! [`Scheduler`] (every device) and [`SuperSeed`] (every gateway) over a modelled network.
//!
//! What is modelled, and how the real node does the same thing:
//! - **Availability rounds** every 250 ms per node (random phase): a device sends its verified set to
//!   every admitted peer when it changed (and in full every 2 s); the gateway sends each device its
//!   super-seeding view. Like `broadcast_haves`.
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
    net::node::have_period,
    scheduler::{self, Action, Input, Outcome as ReqOutcome, ReqId, Scheduler},
    seeding::{self, SuperSeed},
};

use crate::{
    report::{CapSample, DeviceOutcome, RunOutcome, Series},
    scenario::{Behaviour, CapTarget, Event, Installed, Scenario},
};

/// Bytes per chunk group.
const GROUP: u64 = 16 * 1024;
/// Proof bytes per group on the wire (one 64-byte parent per group in a run).
const PROOF: u64 = 64;
/// A port without a cap: 1 Gbit/s.
const PORT: f64 = 125e6;
/// Network step, µs.
const STEP: u64 = 5_000;
const HAVE_EVERY: u64 = 250_000;
const TICK_EVERY: u64 = 100_000;
const SAMPLE_EVERY: u64 = 500_000;
const MAX_INBOUND: usize = 32;
const VERIFY_BATCH: u64 = 1 << 20;

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
    sent: Option<GroupSet>,
    rounds: u64,
    serving: usize,
    completed: Option<u64>,
    from_gateway: u64,
    from_peers: u64,
    uploaded: u64,
    sample_uploaded: u64,
    banned: BTreeSet<usize>,
}

/// Transfers in progress: a slab, with an index by (client, request).
#[derive(Debug, Default)]
struct Flows {
    slots: Vec<Option<Flow>>,
    free: Vec<usize>,
    by_req: HashMap<(usize, ReqId), usize>,
}

impl Flows {
    fn insert(&mut self, f: Flow) {
        let key = (f.client, f.req);
        let k = match self.free.pop() {
            Some(k) => {
                self.slots[k] = Some(f);
                k
            }
            None => {
                self.slots.push(Some(f));
                self.slots.len() - 1
            }
        };
        self.by_req.insert(key, k);
    }
    fn remove(&mut self, k: usize) -> Option<Flow> {
        let f = self.slots.get_mut(k)?.take()?;
        self.free.push(k);
        self.by_req.remove(&(f.client, f.req));
        Some(f)
    }
    fn get(&self, k: usize) -> Option<&Flow> {
        self.slots.get(k)?.as_ref()
    }
    fn get_mut(&mut self, k: usize) -> Option<&mut Flow> {
        self.slots.get_mut(k)?.as_mut()
    }
    fn find(&self, client: usize, req: ReqId) -> Option<usize> {
        self.by_req.get(&(client, req)).copied()
    }
    fn keys(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|k| self.slots[*k].is_some())
            .collect()
    }
    fn is_empty(&self) -> bool {
        self.by_req.is_empty()
    }
}

#[derive(Debug)]
struct Flow {
    server: usize,
    client: usize,
    req: ReqId,
    next: u64,
    end: u64,
    /// Bytes of the current group received so far.
    got: f64,
    rate: f64,
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
    rng: u64,
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
        out.elapsed_s = out.elapsed_s.max(o.elapsed_s);
        if w == 0 {
            out.series = o.series;
        }
    }
    out
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
            rng: sc.seed ^ (ward as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed,
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
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
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
                let peers = (0..self.nodes.len())
                    .filter(|&p| p != i && self.nodes[p].alive && self.nodes[p].admitted)
                    .count();
                let period = have_period(Duration::from_micros(HAVE_EVERY), peers);
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
        n.rounds = 0;
        if !n.admitted {
            return;
        }
        // Peers tell the newcomer what they have (the gateway shows it its view once it asks).
        let peers: Vec<usize> = (1..self.nodes.len())
            .filter(|&p| p != i && self.nodes[p].alive && self.nodes[p].admitted)
            .collect();
        for p in peers {
            let g = self.announced(p);
            if !g.is_empty() {
                let at = self.now + 2 * self.lat();
                self.push(
                    at,
                    Ev::Have {
                        from: p,
                        to: i,
                        groups: g,
                    },
                );
            }
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
        self.nodes[i].rounds += 1;
        let force = self.nodes[i].rounds % 8 == 0;
        let at = self.now + self.lat();
        let now_ms = self.now / 1000;
        if i == 0 {
            if self.leave_after_copy && self.gateway_left.is_none() && self.seeded_once() {
                self.gateway_left = Some(self.now);
                self.leave(0);
                return;
            }
            let local = self.nodes[0].has.clone();
            self.seed.local_has(&local);
            for d in 1..self.nodes.len() {
                if self.nodes[d].alive && self.nodes[d].admitted {
                    if let Some(v) = self.seed.view(now_ms, &d, force) {
                        self.push(
                            at,
                            Ev::Have {
                                from: 0,
                                to: d,
                                groups: v,
                            },
                        );
                    }
                }
            }
            return;
        }
        let mine = self.announced(i);
        let fetching = self.nodes[i].sched.is_some();
        let changed = self.nodes[i].sent.as_ref() != Some(&mine);
        if !(changed || force) || (mine.is_empty() && !fetching) {
            return;
        }
        self.nodes[i].sent = Some(mine.clone());
        for p in 0..self.nodes.len() {
            if p != i && self.nodes[p].alive && self.nodes[p].admitted {
                self.push(
                    at,
                    Ev::Have {
                        from: i,
                        to: p,
                        groups: mine.clone(),
                    },
                );
            }
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
        let reply = if !s.alive {
            Some(ReqOutcome::Truncated)
        } else if s.behaviour == Behaviour::Stall {
            return; // accepts and never answers: the client's stall timer ends it
        } else if !groups.clone().all(|g| s.has.contains(g)) {
            Some(ReqOutcome::NotFound)
        } else if s.up == Some(0) || s.serving >= MAX_INBOUND {
            Some(ReqOutcome::Refused)
        } else {
            None
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
                    self.nodes[i].live.remove(&req);
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

    /// Max-min fair rates by progressive filling over each node's upload and download caps.
    fn allocate(&mut self) {
        let n = self.nodes.len();
        let cap = |c: Option<u64>| c.map_or(PORT, |r| r as f64);
        let mut rem: Vec<f64> = Vec::with_capacity(2 * n);
        for node in &self.nodes {
            rem.push(cap(node.up));
            rem.push(cap(node.down));
        }
        let keys = self.flows.keys();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); 2 * n];
        let ends: Vec<(usize, usize)> = keys
            .iter()
            .filter_map(|k| self.flows.get(*k).map(|f| (2 * f.server, 2 * f.client + 1)))
            .collect();
        for (fi, (u, d)) in ends.iter().enumerate() {
            users[*u].push(fi);
            users[*d].push(fi);
        }
        let mut count: Vec<usize> = users.iter().map(Vec::len).collect();
        let mut rate: Vec<Option<f64>> = vec![None; keys.len()];
        loop {
            let mut best: Option<(f64, usize)> = None;
            for c in 0..2 * n {
                if count[c] > 0 {
                    let share = rem[c].max(0.0) / count[c] as f64;
                    if best.is_none_or(|(b, _)| share < b) {
                        best = Some((share, c));
                    }
                }
            }
            let Some((share, c)) = best else { break };
            for &fi in &users[c] {
                if rate[fi].is_some() {
                    continue;
                }
                rate[fi] = Some(share);
                let (u, d) = ends[fi];
                let other = if u == c { d } else { u };
                rem[other] -= share;
                count[other] -= 1;
            }
            count[c] = 0;
        }
        for (k, r) in keys.iter().zip(rate) {
            if let Some(f) = self.flows.get_mut(*k) {
                f.rate = r.unwrap_or(0.0);
            }
        }
    }

    fn net_step(&mut self) {
        let dt = STEP as f64 / 1e6;
        // WAN: outboard first, then the artifact in order, usable per verified MiB.
        if self.nodes[0].alive && !self.nodes[0].has.is_full() {
            let total = (self.sc.artifact + self.wan_meta) as f64;
            let r = self.wan_rate.map_or(PORT, |r| r as f64);
            self.wan_bytes = (self.wan_bytes + r * dt).min(total);
            let payload = (self.wan_bytes - self.wan_meta as f64).max(0.0) as u64;
            let verified = if payload >= self.sc.artifact {
                self.groups
            } else {
                (payload / VERIFY_BATCH) * (VERIFY_BATCH / GROUP)
            };
            if verified > self.nodes[0].has.count() {
                self.nodes[0].has.insert_range(0..verified.min(self.groups));
            }
        }
        if self.flows.is_empty() {
            return;
        }
        if self.dirty {
            self.allocate();
            self.dirty = false;
        }
        for k in self.flows.keys() {
            let Some(f) = self.flows.get_mut(k) else {
                continue;
            };
            let bytes = f.rate * dt;
            f.got += bytes;
            let (server, client) = (f.server, f.client);
            self.nodes[server].uploaded += bytes as u64;
            self.nodes[server].sample_uploaded += bytes as u64;
            if server == 0 {
                self.nodes[client].from_gateway += bytes as u64;
            } else {
                self.nodes[client].from_peers += bytes as u64;
            }
            while let Some(f) = self.flows.get(k) {
                let need = self.group_bytes(f.next) as f64;
                if f.got < need {
                    break;
                }
                let (req, g, corrupt) = (
                    f.req,
                    f.next,
                    self.nodes[f.server].behaviour == Behaviour::Corrupt,
                );
                let last = g + 1 >= f.end;
                if let Some(f) = self.flows.get_mut(k) {
                    f.got -= need;
                    f.next += 1;
                }
                if corrupt {
                    self.end_flow(k);
                    self.drive(
                        client,
                        Input::Finished {
                            req,
                            outcome: ReqOutcome::Corrupt,
                        },
                    );
                    break;
                }
                self.nodes[client].has.insert(g);
                self.drive(client, Input::Progress { req, group: g });
                if last {
                    self.end_flow(k);
                    self.drive(
                        client,
                        Input::Finished {
                            req,
                            outcome: ReqOutcome::Done,
                        },
                    );
                    break;
                }
            }
        }
    }

    fn end_flow(&mut self, k: usize) {
        if let Some(f) = self.flows.remove(k) {
            self.nodes[f.server].serving = self.nodes[f.server].serving.saturating_sub(1);
            self.dirty = true;
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
            sent: None,
            rounds: 0,
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
