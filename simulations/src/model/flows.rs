//! The model's network: transfers as fluid flows between a sender's upload cap and a receiver's
//! download cap, shared max-min fairly (progressive filling), advanced in fixed steps.

use std::collections::HashMap;

use wardswarm_node::scheduler::{Input, Outcome as ReqOutcome, ReqId};

use super::*;

/// Transfers in progress: a slab, with an index by (client, request).
#[derive(Debug, Default)]
pub(super) struct Flows {
    slots: Vec<Option<Flow>>,
    free: Vec<usize>,
    by_req: HashMap<(usize, ReqId), usize>,
}

impl Flows {
    pub(super) fn insert(&mut self, f: Flow) {
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
    pub(super) fn remove(&mut self, k: usize) -> Option<Flow> {
        let f = self.slots.get_mut(k)?.take()?;
        self.free.push(k);
        self.by_req.remove(&(f.client, f.req));
        Some(f)
    }
    pub(super) fn get(&self, k: usize) -> Option<&Flow> {
        self.slots.get(k)?.as_ref()
    }
    pub(super) fn get_mut(&mut self, k: usize) -> Option<&mut Flow> {
        self.slots.get_mut(k)?.as_mut()
    }
    pub(super) fn find(&self, client: usize, req: ReqId) -> Option<usize> {
        self.by_req.get(&(client, req)).copied()
    }
    pub(super) fn keys(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|k| self.slots[*k].is_some())
            .collect()
    }
    pub(super) fn is_empty(&self) -> bool {
        self.by_req.is_empty()
    }
}

#[derive(Debug)]
pub(super) struct Flow {
    pub(super) server: usize,
    pub(super) client: usize,
    pub(super) req: ReqId,
    pub(super) next: u64,
    pub(super) end: u64,
    /// Bytes of the current group received so far.
    pub(super) got: f64,
    pub(super) rate: f64,
}

impl Ward<'_> {
    /// Max-min fair rates by progressive filling over each node's upload and download caps.
    pub(super) fn allocate(&mut self) {
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

    pub(super) fn net_step(&mut self) {
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
                    *self
                        .transfers
                        .entry(ReqOutcome::Done.as_str().into())
                        .or_default() += 1;
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

    pub(super) fn end_flow(&mut self, k: usize) {
        if let Some(f) = self.flows.remove(k) {
            self.nodes[f.server].serving = self.nodes[f.server].serving.saturating_sub(1);
            self.dirty = true;
        }
    }
}
