//! Downloads: the actor's side of fetching an artifact. Each download is one pure
//! [`Scheduler`]; this file feeds it what the swarm reports (availability, verified groups, ended
//! requests, peers gone, ticks) and carries out its actions (request, cancel, ban, complete).
//! Disk work (creating the store entry, the fsync at completion) runs off the actor's task.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use super::{
    actor::{Actor, Internal, LocalFailure},
    handle::{Event, FetchReply, FetchReport, NodeError},
    transfer::client::{self, Request},
    wire::{Get, Have},
};
use crate::{
    hash::Hash,
    membership::Role,
    scheduler::{Action, Input, Outcome, ReqId, Scheduler},
    store::Entry,
};

/// One artifact being fetched.
pub(super) struct Download {
    sched: Scheduler<PeerId>,
    entry: Arc<Entry>,
    pub(super) waiters: Vec<FetchReply>,
    tasks: HashMap<ReqId, CancellationToken>,
    started: Instant,
    banned: HashSet<PeerId>,
}

impl Download {
    /// Cancels every request in flight.
    pub(super) fn cancel_all(&self) {
        for t in self.tasks.values() {
            t.cancel();
        }
    }
}

impl Actor {
    pub(super) fn start_fetch(&mut self, root: Hash, length: u64, reply: FetchReply) {
        if let Some(d) = self.downloads.get_mut(&root) {
            d.waiters.push(reply);
            return;
        }
        if let Some((_, waiters)) = self.creating.get_mut(&root) {
            waiters.push(reply);
            return;
        }
        self.creating.insert(root, (length, vec![reply]));
        let store = self.shared.store.clone();
        let internal = self.shared.internal.clone();
        tokio::spawn(async move {
            let entry = match tokio::task::spawn_blocking(move || store.create(root, length)).await
            {
                Ok(r) => r.map_err(NodeError::from),
                Err(e) => Err(NodeError::Task {
                    root,
                    cause: format!("creating the store entry: {e}"),
                }),
            };
            let _ = internal.send(Internal::Created { root, entry }).await;
        });
    }

    pub(super) fn on_created(&mut self, root: Hash, entry: Result<Arc<Entry>, NodeError>) {
        let Some((length, waiters)) = self.creating.remove(&root) else {
            return;
        };
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let msg = e.to_string();
                let mut waiters = waiters.into_iter();
                if let Some(w) = waiters.next() {
                    let _ = w.send(Err(e));
                }
                for w in waiters {
                    let _ = w.send(Err(NodeError::Task {
                        root,
                        cause: msg.clone(),
                    }));
                }
                return;
            }
        };
        if entry.is_complete() {
            for w in waiters {
                let _ = w.send(Ok(FetchReport {
                    root,
                    seconds: 0.0,
                    stats: Default::default(),
                    banned: vec![],
                }));
            }
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
                waiters,
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
        for (peer, h) in known {
            if let Some(role) = self.role_of(&peer) {
                self.download_peer_has(peer, role, h);
            }
        }
        let now = self.now_ms();
        self.drive(root, now, Input::Tick);
    }

    /// A member's availability of an artifact we may be fetching.
    pub(super) fn download_peer_has(&mut self, peer: PeerId, role: Role, have: Have) {
        let Some(d) = self.downloads.get_mut(&have.root) else {
            return;
        };
        if d.entry.length() != have.length {
            return;
        }
        if role == Role::Gateway {
            d.sched.mark_seed(peer);
        }
        let now = self.now_ms();
        self.drive(
            have.root,
            now,
            Input::PeerHas {
                peer,
                groups: have.groups,
            },
        );
    }

    pub(super) fn downloads_peer_gone(&mut self, peer: PeerId) {
        let now = self.now_ms();
        let roots: Vec<Hash> = self.downloads.keys().copied().collect();
        for r in roots {
            self.drive(r, now, Input::PeerGone { peer });
        }
    }

    pub(super) fn downloads_tick(&mut self) {
        let now = self.now_ms();
        // A fetch nobody waits for any more (its caller dropped the future: a rollout canceled the
        // update) stops: its requests are cancelled, the groups it verified stay in the store.
        let abandoned: Vec<Hash> = self
            .downloads
            .iter_mut()
            .filter_map(|(r, d)| {
                d.waiters.retain(|w| !w.is_closed());
                d.waiters.is_empty().then_some(*r)
            })
            .collect();
        for r in abandoned {
            if let Some(d) = self.downloads.remove(&r) {
                d.cancel_all();
                tracing::info!(root = %r.short(), "fetch abandoned by its caller: stopped");
            }
        }
        let roots: Vec<Hash> = self.downloads.keys().copied().collect();
        for r in roots {
            self.drive(r, now, Input::Tick);
        }
    }

    pub(super) fn on_progress(&mut self, root: Hash, req: ReqId, groups: &[u64]) {
        self.shared
            .metrics
            .groups_verified
            .inc_by(groups.len() as u64);
        self.have_dirty.insert(root);
        let now = self.now_ms();
        for &group in groups {
            self.drive(root, now, Input::Progress { req, group });
        }
        if let Some(d) = self.downloads.get(&root) {
            let have = d.sched.have();
            self.emit(Event::Progress {
                root,
                have: have.count(),
                total: have.len(),
            });
        }
    }

    pub(super) fn on_finished(
        &mut self,
        root: Hash,
        req: ReqId,
        outcome: Outcome,
        local: Option<LocalFailure>,
    ) {
        if outcome == Outcome::Corrupt {
            self.shared.metrics.verification_failures.inc();
        }
        if let Some(d) = self.downloads.get_mut(&root) {
            d.tasks.remove(&req);
        }
        if let Some(fault) = local {
            // Our disk failed: do not blame the peer; stop and tell the application.
            if let Some(mut d) = self.downloads.remove(&root) {
                d.cancel_all();
                for w in d.waiters.drain(..) {
                    let _ = w.send(Err(fault.clone().into_error(root)));
                }
            }
            return;
        }
        let now = self.now_ms();
        self.drive(root, now, Input::Finished { req, outcome });
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
                    let Some(d) = self.downloads.get_mut(&root) else {
                        return;
                    };
                    let cancel = CancellationToken::new();
                    d.tasks.insert(req, cancel.clone());
                    let get = Get {
                        root,
                        length: d.entry.length(),
                        runs: vec![groups],
                    };
                    let r = Request {
                        entry: d.entry.clone(),
                        peer,
                        req,
                        get,
                        cancel,
                    };
                    tokio::spawn(client::run(self.shared.clone(), self.control.clone(), r));
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

    /// Every group verified: answer the waiters once the data is on disk (fsync off the actor).
    fn complete(&mut self, root: Hash) {
        let Some(mut d) = self.downloads.remove(&root) else {
            return;
        };
        d.cancel_all();
        let report = FetchReport {
            root,
            seconds: d.started.elapsed().as_secs_f64(),
            stats: d.sched.stats(),
            banned: d.banned.iter().copied().collect(),
        };
        tracing::info!(
            %root,
            seconds = report.seconds,
            requests = report.stats.requests,
            stalls = report.stats.stalls,
            duplicates = report.stats.duplicates,
            "fetch complete"
        );
        self.have_dirty.insert(root);
        let waiters = std::mem::take(&mut d.waiters);
        let entry = d.entry.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let synced = match tokio::task::spawn_blocking(move || entry.sync()).await {
                Ok(r) => r.map_err(|e| LocalFailure::Store(Arc::new(e))),
                Err(e) => Err(LocalFailure::Task(format!("syncing the artifact: {e}"))),
            };
            for w in waiters {
                let r = match &synced {
                    Ok(()) => Ok(report.clone()),
                    Err(f) => Err(f.clone().into_error(root)),
                };
                let _ = w.send(r);
            }
            if synced.is_ok() {
                let _ = events.send(Event::Complete { root });
            }
        });
    }
}
