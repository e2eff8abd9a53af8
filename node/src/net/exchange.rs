//! Peer exchange (`/wardswarm/peers/1`): admitted members tell each other where the other admitted
//! members listen, so a ward whose devices know only the gateway's address (hospital VLANs often
//! block mDNS multicast) still forms a swarm: each node dials the members it learns of until it
//! has `target_peers` connections (default 8), in an order of its own, so a ward is a random
//! graph of bounded degree with the gateway connected to every device, not a full mesh.
//!
//! The model is BitTorrent's peer exchange (PEX): peers already in the swarm gossip the addresses of
//! the others. A standard libp2p mechanism was weighed and not taken: a rendezvous server answers
//! DISCOVER from any connected peer, before and without admission, and identify push carries only a
//! node's own addresses. Here a list goes only to admitted members and names only admitted members
//! with the addresses they announced themselves (identify's listen addresses). A listed address is
//! only a hint: dialing it leads to the usual admission, so a wrong or forged entry costs one failed
//! dial, never membership.
//!
//! Goals: a connected swarm of bounded degree from one bootstrap address; bounded work per list.
//! Non-goals: NAT traversal, peers outside the ward's LAN.

use std::{sync::Arc, time::Instant};

use libp2p::{multiaddr::Protocol as Addr, Multiaddr, PeerId, Stream};

use super::{
    actor::{Actor, Internal, PeerState, Shared},
    availability::member_frame,
    wire::Protocol,
};

/// Peers one list names at most: a ward's devices, with room to spare; more are left out.
pub const MAX_PEERS: usize = 256;
/// Addresses per peer at most (a device listens on a few interfaces).
pub const MAX_ADDRS: usize = 8;
/// Longest address, in bytes (an `/ip6/…/tcp/…` address is under 30).
const MAX_ADDR_BYTES: usize = 128;
/// Largest list frame.
pub const MAX_FRAME: usize = 2 + MAX_PEERS * (1 + 64 + 1 + MAX_ADDRS * (1 + MAX_ADDR_BYTES));

/// Where admitted members listen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerList(pub Vec<(PeerId, Vec<Multiaddr>)>);

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("peer list: {msg}"))
}

impl PeerList {
    /// The frame body: a count, then per peer its id and addresses, each length-prefixed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let peers: Vec<_> = self.0.iter().take(MAX_PEERS).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&(peers.len() as u16).to_be_bytes());
        for (p, addrs) in peers {
            let id = p.to_bytes();
            b.push(id.len() as u8);
            b.extend_from_slice(&id);
            let addrs: Vec<Vec<u8>> = addrs
                .iter()
                .map(|a| a.to_vec())
                .filter(|a| a.len() <= MAX_ADDR_BYTES)
                .take(MAX_ADDRS)
                .collect();
            b.push(addrs.len() as u8);
            for a in addrs {
                b.push(a.len() as u8);
                b.extend_from_slice(&a);
            }
        }
        b
    }

    /// Parses a frame body, refusing anything over the caps or malformed.
    pub fn from_bytes(b: &[u8]) -> std::io::Result<Self> {
        let mut r = b;
        let mut take = |n: usize| -> std::io::Result<&[u8]> {
            if r.len() < n {
                return Err(invalid("truncated"));
            }
            let (h, t) = r.split_at(n);
            r = t;
            Ok(h)
        };
        let count = u16::from_be_bytes([take(1)?[0], take(1)?[0]]) as usize;
        if count > MAX_PEERS {
            return Err(invalid("too many peers"));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let n = take(1)?[0] as usize;
            let peer = PeerId::from_bytes(take(n)?).map_err(|_| invalid("bad peer id"))?;
            let k = take(1)?[0] as usize;
            if k > MAX_ADDRS {
                return Err(invalid("too many addresses"));
            }
            let mut addrs = Vec::with_capacity(k);
            for _ in 0..k {
                let n = take(1)?[0] as usize;
                if n > MAX_ADDR_BYTES {
                    return Err(invalid("address too long"));
                }
                addrs.push(
                    Multiaddr::try_from(take(n)?.to_vec()).map_err(|_| invalid("bad address"))?,
                );
            }
            out.push((peer, addrs));
        }
        if !r.is_empty() {
            return Err(invalid("trailing bytes"));
        }
        Ok(Self(out))
    }
}

/// An inbound peer list from an admitted member.
pub(super) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(b) = member_frame(&s, &peer, &mut st, MAX_FRAME).await {
        let _ = deliver(&s, peer, &b).await;
    }
}

/// An inbound `peers/2` stream: peer lists one after another (see
/// [`super::availability::member_frames`]); a malformed list ends it.
pub(super) async fn inbound_stream(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let s2 = s.clone();
    super::availability::member_frames(&s, peer, &mut st, MAX_FRAME, |b| {
        let s = s2.clone();
        async move { deliver(&s, peer, &b).await }
    })
    .await;
}

/// Passes one peer list to the actor; `false` if it is malformed.
async fn deliver(s: &Shared, peer: PeerId, b: &[u8]) -> bool {
    match PeerList::from_bytes(b) {
        Ok(list) => {
            let _ = s.internal.send(Internal::Peers { from: peer, list }).await;
            true
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad peer list");
            false
        }
    }
}

/// Whether an address a peer announced is worth passing on: not a wildcard, and dialable by TCP.
pub(super) fn shareable(a: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut it = a.iter();
    let host_ok = match it.next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified() && !ip.is_multicast(),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified() && !ip.is_multicast(),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => true,
        _ => false,
    };
    host_ok && matches!(it.next(), Some(Protocol::Tcp(p)) if p != 0)
}

/// The actor's side of peer exchange.
impl Actor {
    /// Peer exchange: after a change, tells each admitted member where the others listen (loopback
    /// addresses only to a member that reached us over loopback).
    ///
    /// Bounded chatter: a member is sent a list only when its list differs from the last one it was
    /// sent, and lists go out at most once per availability period, so the changes of a ward forming
    /// coalesce. Sending every member its whole list on every change cost the live 50-device ward
    /// 43,390 `peers/1` streams (of 52,761 streams in all) for a 1 MiB artifact.
    pub(super) fn send_peer_lists(&mut self) {
        let now = Instant::now();
        // Now and then every member is sent its list again, changed or not: a list can be lost
        // (a full outbox, a stream reset) and a member may have missed a dial.
        let refresh = now >= self.pex_refresh;
        if !self.shared.cfg.peer_exchange || !(self.pex_dirty || refresh) || now < self.pex_next {
            return;
        }
        if refresh {
            self.pex_refresh = now + PEX_REFRESH;
            for st in self.peers.values_mut() {
                st.pex_sent = None;
            }
        }
        self.pex_dirty = false;
        let members = self.members.borrow().peers(None);
        self.pex_next =
            now + super::policy::have_period(self.shared.cfg.have_interval, members.len());
        let known: Vec<(PeerId, &PeerState)> = members
            .iter()
            .filter_map(|p| self.peers.get(p).map(|s| (*p, s)))
            .filter(|(_, s)| !s.addrs.is_empty())
            .collect();
        let mut frames = Vec::new();
        for to in &members {
            let loopback_ok = self.peers.get(to).is_some_and(|s| s.loopback);
            let list = PeerList(
                known
                    .iter()
                    .filter(|(p, _)| p != to)
                    .map(|(p, s)| {
                        let addrs = s
                            .addrs
                            .iter()
                            .filter(|a| loopback_ok || !is_loopback(a))
                            .cloned()
                            .collect::<Vec<_>>();
                        (*p, addrs)
                    })
                    .filter(|(_, a)| !a.is_empty())
                    .take(MAX_PEERS)
                    .collect(),
            );
            if !list.0.is_empty() {
                frames.push((*to, Arc::new(list.to_bytes())));
            }
        }
        for (to, body) in frames {
            let digest = blake3::hash(&body);
            if self
                .peers
                .get(&to)
                .is_none_or(|st| st.pex_sent == Some(digest))
            {
                continue;
            }
            if self.send_to(&to, Protocol::Peers, body) {
                if let Some(st) = self.peers.get_mut(&to) {
                    st.pex_sent = Some(digest);
                }
            }
        }
    }

    /// Dials the members a member told us of (admission follows, as for any connection).
    pub(super) fn on_peer_list(&mut self, from: PeerId, list: PeerList) {
        if !self.shared.cfg.peer_exchange || self.role_of(&from).is_none() {
            return;
        }
        // An admitted member vouches for the members it lists.
        self.members.send_if_modified(|m| {
            let mut changed = false;
            for (p, _) in &list.0 {
                changed |= m.vouch(*p);
            }
            changed
        });
        // Remembered, and dialed while not connected: a list is sent once, not every round, so a
        // dial that fails (a listener at its pending-connection limit while a ward starts) must be
        // retried from memory, not by the next list.
        let now = Instant::now();
        for (peer, addrs) in list.0 {
            self.learn_member(peer, addrs, now);
        }
        tracing::trace!(via = %from, "peer list received");
        self.dial_members();
    }

    /// Remembers where a member (or, from mDNS, a would-be member) listens, to be dialed by
    /// [`Self::dial_members`] under `target_peers` and in this node's order.
    pub(super) fn learn_member(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) {
        if peer == self.peer_id || addrs.is_empty() {
            return;
        }
        if let Some(m) = self.pex_members.get_mut(&peer) {
            m.addrs = addrs;
        } else if self.pex_members.len() < MAX_PEERS {
            // Two members usually learn of each other in the same round. The one with the smaller
            // peer id dials at once; the other waits `PEX_DEFER` and dials only if no connection
            // came (its peer was at its target, or the dial failed). Both dialing at once left
            // most pairs of a ward with two connections, each with its own yamux, noise and pings
            // (74 connections for 36 pairs in the live ward-8).
            let next = if self.peer_id > peer {
                now + PEX_DEFER
            } else {
                now
            };
            self.pex_members.insert(
                peer,
                PexMember {
                    addrs,
                    next,
                    failures: 0,
                },
            );
        }
    }

    /// Redials bootstrap peers we lost (the gateway restarts; a device reboots), unless the ward
    /// revoked us. Not within a second of the last round: the first tick comes at once, while the
    /// start-up dials are in flight, and a second dial then opened a second connection to every
    /// bootstrap peer. Later rounds may overlap a dial still in its handshake, on purpose: on a
    /// loaded, shaped LAN a handshake can lose packets and time out, and the next attempt should
    /// not wait for it.
    pub(super) fn redial_bootstrap(&mut self) {
        if self.revoked_self || self.bootstrap_dialed.elapsed() < super::policy::SLOW_TICK / 2 {
            return;
        }
        self.bootstrap_dialed = Instant::now();
        for b in self.shared.cfg.bootstrap.clone() {
            match b.iter().find(|p| matches!(p, Addr::P2p(_))) {
                Some(Addr::P2p(peer)) if !self.swarm.is_connected(&peer) => {
                    let _ = self.swarm.dial(super::transport::fresh_port(b));
                }
                _ => {}
            }
        }
    }

    /// Dials the remembered members that are not connected and are due, while this node has
    /// fewer than `target_peers` connections (dials in flight counted, and connections as
    /// [`PeerState::counts_toward_target`] says), at most
    /// `PEX_DIALS_PER_LIST` at a time and none above half the connection limit; each dial pushes
    /// that member's next attempt back (2 s, doubling to 8 s) until it connects. Which members
    /// are dialed first is a hash of the two peer ids: every node prefers different members, so
    /// a ward forms a random graph of bounded degree instead of a full mesh, and no member is
    /// everyone's first choice. Inbound connections are accepted up to `max_connections`.
    pub(super) fn dial_members(&mut self) {
        if self.revoked_self {
            return;
        }
        let now = Instant::now();
        let pending = self
            .swarm
            .network_info()
            .connection_counters()
            .num_pending_outgoing() as usize;
        let busy = self.connected_toward_target() + pending;
        let room = (self.shared.cfg.max_connections as usize / 2)
            .min(self.shared.cfg.target_peers)
            .saturating_sub(busy)
            .min(PEX_DIALS_PER_LIST);
        let swarm = &self.swarm;
        // A member gone for good (switched off, moved ward) is forgotten after a minute or so of
        // trying; a list that names it again brings it back.
        self.pex_members.retain(|peer, m| {
            if swarm.is_connected(peer) {
                m.failures = 0;
                m.next = now;
            }
            m.failures < PEX_GIVE_UP
        });
        if room == 0 {
            return;
        }
        let me = self.peer_id.to_bytes();
        let mut due: Vec<([u8; 32], PeerId)> = self
            .pex_members
            .iter()
            .filter(|(peer, m)| m.next <= now && !self.swarm.is_connected(peer))
            .filter(|(peer, _)| super::revocation::revoked(&self.shared, peer).is_none())
            .map(|(peer, _)| (dial_rank(&me, peer), *peer))
            .collect();
        due.sort_unstable();
        for (_, peer) in due.into_iter().take(room) {
            let Some(m) = self.pex_members.get_mut(&peer) else {
                continue;
            };
            m.next = now + PEX_RETRY * (1u32 << m.failures.min(2));
            m.failures = m.failures.saturating_add(1);
            tracing::debug!(%peer, "dialing a member learned by peer exchange");
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(m.addrs.clone())
                .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                // See `transport::fresh_port`: both ends of a list dial each other at once.
                .allocate_new_port()
                .build();
            let _ = self.swarm.dial(opts);
        }
    }

    /// Connections that count toward `target_peers` ([`PeerState::counts_toward_target`]).
    fn connected_toward_target(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.counts_toward_target())
            .count()
    }
}

/// The order in which a node dials the members it knows: a hash of its own and the member's peer
/// id, so each node has its own order (a random graph) and it is the same on every run.
fn dial_rank(me: &[u8], peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("wardswarm peer exchange dial order v1");
    h.update(me);
    h.update(&peer.to_bytes());
    *h.finalize().as_bytes()
}

/// A member learned by peer exchange.
#[derive(Debug)]
pub(super) struct PexMember {
    /// Where it said it listens (the newest list wins).
    addrs: Vec<Multiaddr>,
    /// When to dial it next if it is not connected.
    next: Instant,
    /// Dials since it was last connected.
    failures: u32,
}

/// How often every member is sent its peer list again, changed or not.
const PEX_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// First retry of a member that did not connect; doubles up to 4 × (8 s). Longer back-offs left
/// devices whose first dials failed while a 50-process ward started on 2 cores without peers for
/// the whole transfer (netns ward-50).
const PEX_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the member with the larger peer id waits before dialing a member it just learned of,
/// so that the two do not both dial (see `on_peer_list`).
const PEX_DEFER: std::time::Duration = std::time::Duration::from_secs(1);

/// Dials after which a member that never connected is forgotten (2 + 4 + 8 × 6 s ≈ a minute).
const PEX_GIVE_UP: u32 = 8;

/// Members a node dials at once at most (on a list, or each slow tick): enough for a ward, well
/// inside the connection limit.
const PEX_DIALS_PER_LIST: usize = 64;

fn is_loopback(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Addr::Ip4(ip) => ip.is_loopback(),
        Addr::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(seed: u8) -> PeerId {
        crate::SecretKey::from_seed([seed; 32])
            .to_libp2p()
            .public()
            .to_peer_id()
    }

    /// Every node has an order of its own over the same members, stable across runs: in a ward of
    /// 50, the members each node would dial first are spread over the ward, not the same few.
    #[test]
    fn each_node_prefers_different_members() {
        let members: Vec<PeerId> = (1..=50).map(peer).collect();
        let first_choice = |me: &PeerId| {
            let me = me.to_bytes();
            members
                .iter()
                .filter(|p| p.to_bytes() != me)
                .min_by_key(|p| dial_rank(&me, p))
                .copied()
                .expect("members")
        };
        assert_eq!(first_choice(&members[0]), first_choice(&members[0]));
        let distinct: std::collections::HashSet<PeerId> =
            members.iter().map(first_choice).collect();
        assert!(
            distinct.len() >= 20,
            "50 nodes' first choices fall on {} members",
            distinct.len()
        );
    }

    proptest! {
        #[test]
        fn peer_lists_round_trip(n in 0usize..20, k in 0usize..MAX_ADDRS, port in 1u16..) {
            let list = PeerList((0..n).map(|i| {
                let addrs = (0..k).map(|j| format!("/ip4/10.0.{i}.{j}/tcp/{port}").parse().expect("addr")).collect();
                (peer(i as u8 + 1), addrs)
            }).collect());
            prop_assert_eq!(PeerList::from_bytes(&list.to_bytes()).expect("valid"), list);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = PeerList::from_bytes(&b);
        }
    }

    #[test]
    fn malformed_lists_are_refused_and_only_dialable_addresses_are_shared() {
        let list = PeerList(vec![(
            peer(1),
            vec!["/ip4/10.0.0.1/tcp/4001".parse().expect("a")],
        )]);
        let b = list.to_bytes();
        assert!(
            PeerList::from_bytes(&b[..b.len() - 1]).is_err(),
            "truncated"
        );
        let mut long = b.clone();
        long.push(0);
        assert!(PeerList::from_bytes(&long).is_err(), "trailing");
        assert!(
            PeerList::from_bytes(&[0xff, 0xff]).is_err(),
            "over the peer cap"
        );
        let ok = |s: &str| shareable(&s.parse().expect("addr"));
        assert!(ok("/ip4/10.0.0.1/tcp/4001"));
        assert!(ok("/ip4/127.0.0.1/tcp/4001"));
        assert!(!ok("/ip4/0.0.0.0/tcp/4001"));
        assert!(!ok("/ip4/10.0.0.1/tcp/0"));
        assert!(!ok("/ip4/10.0.0.1/udp/4001/quic-v1"));
    }
}
