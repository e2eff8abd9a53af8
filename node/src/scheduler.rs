//! The swarm scheduler: which runs of chunk groups to ask which peer for, when to give up on a peer,
//! and the endgame. A pure state machine in the style of raft-rs' `RawNode`: inputs in, actions out, no
//! tokio, no libp2p, no clock (the caller passes `now` in milliseconds of any monotonic clock).
//!
//! Policy, in short:
//! - **Rarest first over runs.** For a peer with a free request slot, pick the needed, unrequested
//!   group that the fewest usable peers have (ties broken by a per-node seeded rotation so that nodes
//!   start in different places and can trade), then extend it forward into a run of up to
//!   `max_request_groups` groups that the same peer has. Runs keep bao proofs cheap.
//! - **Several requests per peer, several peers per artifact**, bounded by `max_in_flight_per_peer`.
//! - **Stalls:** a request without progress for `stall_timeout_ms` is cancelled, its remaining groups go
//!   back to the pool, and the peer backs off (doubling up to `max_backoff_ms`).
//! - **Liars:** a request that ends `Corrupt` bans the peer for this artifact; its requests are
//!   cancelled and its groups fetched elsewhere.
//! - **Gateway last:** a peer marked as a seed (the ward gateway, whose upload the whole ward shares) is
//!   offered work after the other peers. Which of its groups a device sees at all is the gateway's
//!   super-seeding policy ([`crate::seeding`]): fresh groups first, so one copy enters the ward and
//!   devices spread it, then the rarest, so its upload never idles while devices still need data.
//! - **Endgame:** once every needed group is in flight and at most `endgame_groups` remain, idle peers
//!   duplicate the oldest outstanding groups; the first copy to verify wins and the others are cancelled.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    ops::Range,
};

use crate::groups::GroupSet;

/// Identifies one request.
pub type ReqId = u64;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requests outstanding per peer (default 4): hides round trips; more costs memory at the sender.
    pub max_in_flight_per_peer: usize,
    /// Longest run per request, in 16 KiB groups (default 256 = 4 MiB): longer runs cut proof overhead
    /// (about 0.47 % at 1 MiB, 0.41 % at 4 MiB, measured) but make the tail lumpier. Slow peers get
    /// shorter runs anyway (see `target_queue_ms`).
    pub max_request_groups: u64,
    /// Groups a peer may have outstanding before its speed is known (default 8 = 128 KiB).
    pub initial_window_groups: u64,
    /// Outstanding work per peer is sized to this many milliseconds of its measured throughput
    /// (default 1,000): a slow or oversubscribed peer (a busy gateway) is not handed work that faster
    /// peers could do meanwhile.
    pub target_queue_ms: u64,
    /// A request with no verified group for this long is abandoned (default 8 s).
    pub stall_timeout_ms: u64,
    /// First back-off after a failure (default 500 ms); doubles per consecutive failure.
    pub backoff_ms: u64,
    /// Longest back-off (default 5 s): failures on a ward LAN are mostly transient.
    pub max_backoff_ms: u64,
    /// Endgame starts when at most this many needed groups remain, all in flight (default 32).
    pub endgame_groups: u64,
    /// Runs are picked within aligned pieces of this many groups (default 16 = 256 KiB), as
    /// BitTorrent picks pieces: a run starts at its piece's first open group that the peer has, so
    /// nodes come to hold whole pieces and later requests for them are whole pieces too.
    pub piece_groups: u64,
    /// Seed for tie-breaking, so different nodes start at different groups (deterministic per seed).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_in_flight_per_peer: 4,
            max_request_groups: 256,
            initial_window_groups: 8,
            target_queue_ms: 1_000,
            stall_timeout_ms: 8_000,
            backoff_ms: 500,
            max_backoff_ms: 5_000,
            endgame_groups: 32,
            piece_groups: 16,
            seed: 0,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every group of the request verified.
    Done,
    /// The peer sent data that failed verification: ban it for this artifact.
    Corrupt,
    /// The stream broke or ended early (transient network fault).
    Truncated,
    /// The peer refused for now (rate limited, busy): try it again after a back-off.
    Limited,
    /// The peer does not admit us (it does not see us as a ward member): forget what it offered
    /// until it announces again, which it does only once it admits us.
    Forbidden,
    /// The peer does not have what it announced.
    NotFound,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Self; 6] = [
        Self::Done,
        Self::Corrupt,
        Self::Truncated,
        Self::Limited,
        Self::Forbidden,
        Self::NotFound,
    ];
    /// Its name in metrics and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Corrupt => "corrupt",
            Self::Truncated => "truncated",
            Self::Limited => "limited",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Input<P> {
    /// A peer's full set of verified groups (replaces what it said before).
    PeerHas { peer: P, groups: GroupSet },
    /// A peer disconnected.
    PeerGone { peer: P },
    /// One group of a request verified and was stored.
    Progress { req: ReqId, group: u64 },
    /// A request ended.
    Finished { req: ReqId, outcome: Outcome },
    /// Time passed (check stalls, issue requests after back-offs).
    Tick,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Ask `peer` for the groups in `groups`, bao-encoded.
    Request {
        peer: P,
        req: ReqId,
        groups: Range<u64>,
    },
    /// Abandon a request (stalled, superseded in endgame, or its peer was banned).
    Cancel { peer: P, req: ReqId },
    /// The peer served corrupt data: disconnect it for this artifact and never ask it again.
    Ban { peer: P },
    /// Every group is verified.
    Complete,
}

#[derive(Debug, Clone)]
struct Request<P> {
    peer: P,
    groups: Range<u64>,
    remaining: u64,
    last_progress: u64,
}

#[derive(Debug, Clone)]
struct Peer {
    has: GroupSet,
    in_flight: BTreeSet<ReqId>,
    /// Groups requested from this peer and not yet received.
    outstanding: u64,
    banned: bool,
    /// A seed (the gateway): asked only for groups no other peer has, except in the tail.
    seed: bool,
    failures: u32,
    backoff_until: u64,
    delivered: u64,
    /// Throughput estimate, groups per second (None until measured).
    rate: Option<f64>,
    /// Start of the current measurement interval and groups received in it.
    sample_start: u64,
    sample_groups: u64,
}

impl Peer {
    fn new(len: u64) -> Self {
        Self {
            has: GroupSet::new(len),
            in_flight: BTreeSet::new(),
            outstanding: 0,
            banned: false,
            seed: false,
            failures: 0,
            backoff_until: 0,
            delivered: 0,
            rate: None,
            sample_start: 0,
            sample_groups: 0,
        }
    }
}

/// Counters for reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests issued.
    pub requests: u64,
    /// Requests abandoned for lack of progress.
    pub stalls: u64,
    /// Peers banned.
    pub bans: u64,
    /// Endgame duplicates issued (groups).
    pub duplicates: u64,
    /// Groups that verified while another copy had already arrived (endgame waste).
    pub wasted_groups: u64,
    /// Requests a peer answered "forbidden" (it does not admit us).
    pub forbidden: u64,
}

/// Which peers may have new work since the last assignment.
#[derive(Debug, Clone)]
enum Dirty<P> {
    None,
    Peers(BTreeSet<P>),
    All,
}

/// The scheduler for one artifact on one node.
#[derive(Debug, Clone)]
pub struct Scheduler<P: Ord + Clone + Debug> {
    cfg: Config,
    have: GroupSet,
    /// Outstanding request count per group (0, or more in endgame).
    requested: Vec<u8>,
    /// Number of usable peers that have each group.
    avail: Vec<u32>,
    /// Needed groups with no request outstanding (what `pick` chooses from).
    open: GroupSet,
    peers: BTreeMap<P, Peer>,
    reqs: BTreeMap<ReqId, Request<P>>,
    dirty: Dirty<P>,
    next_req: ReqId,
    completed: bool,
    stats: Stats,
    rotation: u64,
}

impl<P: Ord + Clone + Debug> Scheduler<P> {
    /// A scheduler for an artifact of `have.len()` chunk groups, of which `have` are already verified.
    pub fn new(cfg: Config, have: GroupSet) -> Self {
        let n = have.len();
        let rotation = if n == 0 { 0 } else { splitmix(cfg.seed) % n };
        Self {
            cfg,
            requested: vec![0; n as usize],
            avail: vec![0; n as usize],
            open: GroupSet::full(n).difference(&have),
            have,
            peers: BTreeMap::new(),
            reqs: BTreeMap::new(),
            dirty: Dirty::All,
            next_req: 1,
            completed: false,
            stats: Stats::default(),
            rotation,
        }
    }

    /// Marks a peer as a seed (the ward gateway): it is offered work after the other peers. Call
    /// before or after its first `PeerHas`.
    pub fn mark_seed(&mut self, peer: P) {
        let len = self.have.len();
        self.peers
            .entry(peer)
            .or_insert_with(|| Peer::new(len))
            .seed = true;
    }

    /// Verified groups.
    pub fn have(&self) -> &GroupSet {
        &self.have
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Is every group verified?
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }
    /// Peers banned for this artifact.
    pub fn banned(&self) -> impl Iterator<Item = &P> {
        self.peers.iter().filter(|(_, p)| p.banned).map(|(k, _)| k)
    }
    /// Is this peer banned for this artifact?
    pub fn is_banned(&self, peer: &P) -> bool {
        self.peers.get(peer).is_some_and(|p| p.banned)
    }
    /// Requests outstanding.
    pub fn in_flight(&self) -> usize {
        self.reqs.len()
    }
    /// The peer a request went to.
    pub fn request_peer(&self, req: ReqId) -> Option<&P> {
        self.reqs.get(&req).map(|r| &r.peer)
    }
    /// The earliest instant at which a `Tick` could change anything (a stall or a back-off ending).
    pub fn next_deadline(&self) -> Option<u64> {
        let stalls = self
            .reqs
            .values()
            .map(|r| r.last_progress + self.cfg.stall_timeout_ms);
        let backoffs = self
            .peers
            .values()
            .filter(|p| !p.banned && p.backoff_until > 0)
            .map(|p| p.backoff_until);
        stalls.chain(backoffs).min()
    }

    fn mark(&mut self, peer: &P) {
        match &mut self.dirty {
            Dirty::All => {}
            Dirty::None => self.dirty = Dirty::Peers(BTreeSet::from([peer.clone()])),
            Dirty::Peers(s) => {
                s.insert(peer.clone());
            }
        }
    }

    /// Feeds one input; returns the actions to carry out, in order.
    pub fn step(&mut self, now: u64, input: Input<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        match input {
            Input::PeerHas { peer, groups } => self.peer_has(peer, groups),
            Input::PeerGone { peer } => {
                let banned = self.peers.get(&peer).is_some_and(|p| p.banned);
                // A banned peer stays banned for this artifact if it comes back.
                let removed = if banned {
                    None
                } else {
                    self.peers.remove(&peer)
                };
                if let Some(p) = removed {
                    let empty = GroupSet::new(self.have.len());
                    self.adjust_avail(&p.has, &empty);
                    for req in p.in_flight {
                        self.drop_request(req);
                    }
                }
            }
            Input::Progress { req, group } => self.progress(now, req, group, &mut out),
            Input::Finished { req, outcome } => self.finished(now, req, outcome, &mut out),
            Input::Tick => {
                self.check_stalls(now, &mut out);
                let ended: Vec<P> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| !p.banned && p.backoff_until > 0 && now >= p.backoff_until)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in ended {
                    if let Some(p) = self.peers.get_mut(&k) {
                        p.backoff_until = 0;
                    }
                    self.mark(&k);
                }
            }
        }
        if self.have.is_full() {
            if !self.completed {
                self.completed = true;
                let reqs: Vec<ReqId> = self.reqs.keys().copied().collect();
                for req in reqs {
                    if let Some(r) = self.drop_request(req) {
                        out.push(Action::Cancel { peer: r.peer, req });
                    }
                }
                out.push(Action::Complete);
            }
            return out;
        }
        let dirty = std::mem::replace(&mut self.dirty, Dirty::None);
        match dirty {
            Dirty::None => {}
            Dirty::All => {
                let all: Vec<P> = self.peers.keys().cloned().collect();
                self.assign(now, all, &mut out);
            }
            Dirty::Peers(s) => self.assign(now, s.into_iter().collect(), &mut out),
        }
        out
    }

    fn peer_has(&mut self, peer: P, groups: GroupSet) {
        if groups.len() != self.have.len() {
            return; // announced for another length: cannot be this artifact
        }
        let len = self.have.len();
        let entry = self
            .peers
            .entry(peer.clone())
            .or_insert_with(|| Peer::new(len));
        if entry.banned {
            return;
        }
        let old = std::mem::replace(&mut entry.has, groups);
        let new = entry.has.clone();
        self.adjust_avail(&old, &new);
        self.mark(&peer);
    }

    /// Updates availability counts for the groups that differ between `old` and `new`.
    fn adjust_avail(&mut self, old: &GroupSet, new: &GroupSet) {
        for (w, (a, b)) in old.words().iter().zip(new.words()).enumerate() {
            let mut changed = a ^ b;
            while changed != 0 {
                let bit = changed.trailing_zeros() as u64;
                changed &= changed - 1;
                let g = w as u64 * 64 + bit;
                let add = b & (1 << bit) != 0;
                let bump = |c: &mut u32| {
                    *c = if add {
                        c.saturating_add(1)
                    } else {
                        c.saturating_sub(1)
                    }
                };
                if let Some(c) = self.avail.get_mut(g as usize) {
                    bump(c);
                }
            }
        }
    }

    /// A group verified and was stored. It counts even if its request was cancelled meanwhile (a
    /// transfer can verify a group between our cancel and its noticing): the store has it, so the
    /// scheduler must too, or it would ask for it forever.
    fn progress(&mut self, now: u64, req: ReqId, group: u64, out: &mut Vec<Action<P>>) {
        if group >= self.have.len() {
            return;
        }
        let mut own = false;
        let peer = match self.reqs.get_mut(&req) {
            Some(r) if r.groups.contains(&group) => {
                r.last_progress = now;
                r.remaining = r.remaining.saturating_sub(1);
                own = true;
                Some(r.peer.clone())
            }
            _ => None,
        };
        if let Some(p) = peer.and_then(|peer| self.peers.get_mut(&peer)) {
            p.delivered += 1;
            p.failures = 0;
            p.outstanding = p.outstanding.saturating_sub(1);
            // Throughput: groups per second over intervals of at least 250 ms, smoothed.
            if p.sample_groups == 0 {
                p.sample_start = now;
            }
            p.sample_groups += 1;
            let elapsed = now.saturating_sub(p.sample_start);
            if elapsed >= 250 {
                let sample = p.sample_groups as f64 * 1000.0 / elapsed as f64;
                p.rate = Some(p.rate.map_or(sample, |r| 0.7 * r + 0.3 * sample));
                p.sample_start = now;
                p.sample_groups = 0;
            }
        }
        if !self.have.insert(group) {
            self.stats.wasted_groups += 1;
            return;
        }
        self.open.remove(group);
        // Endgame (or a late group of a cancelled request): cancel other requests whose every group
        // has now arrived.
        if self.requested[group as usize] > u8::from(own) {
            let redundant: Vec<ReqId> = self
                .reqs
                .iter()
                .filter(|(id, o)| {
                    **id != req
                        && o.groups.contains(&group)
                        && o.groups.clone().all(|g| self.have.contains(g))
                })
                .map(|(id, _)| *id)
                .collect();
            for id in redundant {
                if let Some(o) = self.drop_request(id) {
                    out.push(Action::Cancel {
                        peer: o.peer,
                        req: id,
                    });
                }
            }
        }
    }

    fn finished(&mut self, now: u64, req: ReqId, outcome: Outcome, out: &mut Vec<Action<P>>) {
        let Some(r) = self.drop_request(req) else {
            return;
        };
        let peer = r.peer.clone();
        self.mark(&peer);
        match outcome {
            Outcome::Done => {}
            Outcome::Corrupt => self.ban(&peer, out),
            Outcome::Truncated | Outcome::Limited => self.back_off(now, &peer),
            Outcome::Forbidden => {
                self.stats.forbidden += 1;
                self.forget(&peer);
                self.back_off(now, &peer);
            }
            Outcome::NotFound => {
                // It does not have what it said: forget its availability until it announces again.
                self.forget(&peer);
                self.back_off(now, &peer);
            }
        }
    }

    /// Forgets what `peer` said it has, until it announces again.
    fn forget(&mut self, peer: &P) {
        let len = self.have.len();
        if let Some(p) = self.peers.get_mut(peer) {
            let has = std::mem::replace(&mut p.has, GroupSet::new(len));
            self.adjust_avail(&has, &GroupSet::new(len));
        }
    }

    fn ban(&mut self, peer: &P, out: &mut Vec<Action<P>>) {
        let len = self.have.len();
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.banned {
            return;
        }
        p.banned = true;
        let has = std::mem::replace(&mut p.has, GroupSet::new(len));
        let reqs: Vec<ReqId> = p.in_flight.iter().copied().collect();
        self.adjust_avail(&has, &GroupSet::new(len));
        self.stats.bans += 1;
        for id in reqs {
            if self.drop_request(id).is_some() {
                out.push(Action::Cancel {
                    peer: peer.clone(),
                    req: id,
                });
            }
        }
        out.push(Action::Ban { peer: peer.clone() });
    }

    fn back_off(&mut self, now: u64, peer: &P) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.failures = p.failures.saturating_add(1);
            let d = self
                .cfg
                .backoff_ms
                .saturating_mul(1u64 << (p.failures - 1).min(16))
                .min(self.cfg.max_backoff_ms);
            p.backoff_until = now + d;
            // Its speed is unknown again.
            p.rate = None;
            p.sample_groups = 0;
        }
    }

    fn check_stalls(&mut self, now: u64, out: &mut Vec<Action<P>>) {
        let stalled: Vec<ReqId> = self
            .reqs
            .iter()
            .filter(|(_, r)| now >= r.last_progress + self.cfg.stall_timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            if let Some(r) = self.drop_request(id) {
                self.stats.stalls += 1;
                self.back_off(now, &r.peer);
                out.push(Action::Cancel {
                    peer: r.peer,
                    req: id,
                });
            }
        }
    }

    /// Forgets a request; its missing groups return to the pool (and every peer may get work).
    fn drop_request(&mut self, req: ReqId) -> Option<Request<P>> {
        let r = self.reqs.remove(&req)?;
        let mut reopened = false;
        for g in r.groups.clone() {
            let c = &mut self.requested[g as usize];
            *c = c.saturating_sub(1);
            if *c == 0 && !self.have.contains(g) {
                self.open.insert(g);
                reopened = true;
            }
        }
        if let Some(p) = self.peers.get_mut(&r.peer) {
            p.in_flight.remove(&req);
            p.outstanding = p.outstanding.saturating_sub(r.remaining);
        }
        if reopened {
            self.dirty = Dirty::All;
        }
        Some(r)
    }

    /// Groups this peer may still be asked for: its measured throughput times the target queue time.
    fn window(&self, p: &Peer) -> u64 {
        let cap = self.cfg.max_request_groups * self.cfg.max_in_flight_per_peer as u64;
        let w = match p.rate {
            None => self.cfg.initial_window_groups,
            Some(r) => ((r * self.cfg.target_queue_ms as f64 / 1000.0).ceil() as u64).max(2),
        };
        w.min(cap).saturating_sub(p.outstanding)
    }

    /// The least free window worth a further request to a peer that already has one outstanding:
    /// half its window, at most half a piece. Topping a window up as each group arrives would issue
    /// a request per group (each a stream and its round trips); this keeps two or so in flight.
    fn top_up(&self, p: &Peer) -> u64 {
        let full = self.window(p) + p.outstanding;
        full.min(self.cfg.piece_groups).div_ceil(2).max(1)
    }

    fn usable(&self, p: &Peer, now: u64) -> bool {
        !p.banned && now >= p.backoff_until && p.in_flight.len() < self.cfg.max_in_flight_per_peer
    }

    fn assign(&mut self, now: u64, candidates: Vec<P>, out: &mut Vec<Action<P>>) {
        let missing = self.have.len() - self.have.count();
        if self.open.is_empty() && missing > self.cfg.endgame_groups {
            return;
        }
        // Other peers before seeds, then those that delivered most; ties in key order (deterministic).
        let mut order: Vec<(bool, u64, P)> = candidates
            .into_iter()
            .filter_map(|k| {
                self.peers
                    .get(&k)
                    .filter(|p| self.usable(p, now))
                    .map(|p| (!p.seed, p.delivered, k))
            })
            .collect();
        order.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)).then_with(|| a.2.cmp(&b.2)));
        loop {
            let mut issued = false;
            for (_, _, peer) in &order {
                let Some(p) = self.peers.get(peer) else {
                    continue;
                };
                if !self.usable(p, now) {
                    continue;
                }
                let limit = self.window(p).min(self.cfg.max_request_groups);
                if limit == 0 || (!p.in_flight.is_empty() && limit < self.top_up(p)) {
                    continue;
                }
                let run = self
                    .pick(p, limit)
                    .or_else(|| self.endgame_pick(peer, p, limit));
                if let Some(groups) = run {
                    self.issue(now, peer.clone(), groups, out);
                    issued = true;
                }
            }
            if !issued {
                break;
            }
        }
    }

    fn issue(&mut self, now: u64, peer: P, groups: Range<u64>, out: &mut Vec<Action<P>>) {
        let req = self.next_req;
        self.next_req += 1;
        let mut remaining = 0;
        for g in groups.clone() {
            if self.requested[g as usize] > 0 {
                self.stats.duplicates += 1;
            }
            self.requested[g as usize] = self.requested[g as usize].saturating_add(1);
            self.open.remove(g);
            remaining += u64::from(!self.have.contains(g));
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight.insert(req);
            p.outstanding += remaining;
        }
        self.reqs.insert(
            req,
            Request {
                peer: peer.clone(),
                groups: groups.clone(),
                remaining,
                last_progress: now,
            },
        );
        self.stats.requests += 1;
        out.push(Action::Request { peer, req, groups });
    }

    /// Rarest needed, unrequested group this peer has, extended forward into a run of at most `limit`.
    /// Ties go to the first group at or after this node's rotation, so nodes start in different places.
    fn pick(&self, p: &Peer, limit: u64) -> Option<Range<u64>> {
        let n = self.have.len();
        // Scan open groups this peer has, a word at a time, in rotated order; a group only this peer
        // has (availability 1) cannot be beaten by a later one.
        let mut best: Option<(u32, u64)> = None; // (availability, group)
        'scan: for range in [self.rotation..n, 0..self.rotation] {
            let (open, has) = (self.open.words(), p.has.words());
            let mut w = (range.start / 64) as usize;
            while (w as u64) * 64 < range.end {
                let mut bits = open[w] & has[w];
                while bits != 0 {
                    let g = w as u64 * 64 + u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    if g < range.start || g >= range.end {
                        continue;
                    }
                    let a = self.avail[g as usize];
                    if best.is_none_or(|(b, _)| a < b) {
                        best = Some((a, g));
                        if a <= 1 {
                            break 'scan;
                        }
                    }
                }
                w += 1;
            }
        }
        let (_, g) = best?;
        // Back to the first group of its piece that is open and that the peer has, contiguously.
        let piece_start = g - g % self.cfg.piece_groups.max(1);
        let mut start = g;
        while start > piece_start
            && g + 1 - start < limit
            && p.has.contains(start - 1)
            && self.open.contains(start - 1)
        {
            start -= 1;
        }
        let mut end = start + 1;
        while end < n && end - start < limit && p.has.contains(end) && self.open.contains(end) {
            end += 1;
        }
        Some(start..end)
    }

    /// Endgame: duplicate outstanding groups from another peer when little is left.
    fn endgame_pick(&self, peer: &P, p: &Peer, limit: u64) -> Option<Range<u64>> {
        let missing = self.have.len() - self.have.count();
        if missing == 0 || missing > self.cfg.endgame_groups || !self.open.is_empty() {
            return None;
        }
        // The oldest request to another peer with a group this peer has and nobody duplicated yet.
        for r in self.reqs.values() {
            if &r.peer == peer {
                continue;
            }
            let Some(g) = r.groups.clone().find(|g| {
                !self.have.contains(*g) && self.requested[*g as usize] < 2 && p.has.contains(*g)
            }) else {
                continue;
            };
            let mut end = g + 1;
            while end < r.groups.end
                && end - g < limit
                && !self.have.contains(end)
                && self.requested[end as usize] < 2
                && p.has.contains(end)
            {
                end += 1;
            }
            return Some(g..end);
        }
        None
    }
}

/// SplitMix64: a well-mixed 64-bit value from any input (seeds, orders of preference).
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
