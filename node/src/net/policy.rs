//! The swarm's decisions as pure functions, called by the node and by the simulations' model engine
//! alike, so a simulated ward and a real one decide the same way:
//!
//! - [`serve`]: answer a transfer request with data, "limited, retry later", "not found" or
//!   "forbidden";
//! - [`have_round`]: which groups of an artifact to show which peer in one availability round;
//! - [`have_period`]: how long availability rounds are in a ward of a given size;
//! - [`Refresh`]: when a peer is next sent our availability in full, changed or not.
//!
//! No clock, no I/O: the caller passes what it knows.

use std::time::Duration;

use super::wire::Status;
use crate::{groups::GroupSet, membership::Role, seeding::SuperSeed};

/// A newly admitted peer is sent our availability in full again, changed or not, this long after
/// its admission, and then at doubling gaps up to [`HAVE_REFRESH_MAX`] ([`Refresh`]): a HAVE frame
/// lost while a connection starts (libp2p-stream drops streams in a burst of opens) heals within
/// seconds. Re-sending every set to every peer every 2 s forever was most of a settled ward's
/// traffic: 1,275 frames a second on the ward-50 once every device was done.
pub const HAVE_REFRESH: Duration = Duration::from_secs(2);
/// The longest gap between full refreshes to a peer: what heals a HAVE frame lost without the
/// sender noticing (one it noticed is re-sent at the next round, [`Refresh::lost`]). Under the 30 s
/// after which an idle `have/2` stream is closed (`availability::IDLE`), so a settled ward keeps its
/// streams instead of opening one per refresh.
pub const HAVE_REFRESH_MAX: Duration = Duration::from_secs(20);
/// A node's housekeeping round: redials, certificate expiry, cap schedules.
pub const SLOW_TICK: Duration = Duration::from_secs(2);

/// When one peer is next sent our availability in full, changed or not: [`HAVE_REFRESH`] after its
/// admission, then at doubling gaps up to [`HAVE_REFRESH_MAX`]; at the next round after a frame to
/// it was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    due_ms: u64,
    gap_ms: u64,
}

impl Refresh {
    /// The schedule of a peer admitted at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        let gap_ms = HAVE_REFRESH.as_millis() as u64;
        Self {
            due_ms: now_ms.saturating_add(gap_ms),
            gap_ms,
        }
    }

    /// A full refresh is due at `now_ms`.
    pub fn is_due(&self, now_ms: u64) -> bool {
        now_ms >= self.due_ms
    }

    /// A full refresh went out at `now_ms`: the next after twice the last gap.
    pub fn sent(&mut self, now_ms: u64) {
        self.gap_ms = (self.gap_ms.saturating_mul(2)).min(HAVE_REFRESH_MAX.as_millis() as u64);
        self.due_ms = now_ms.saturating_add(self.gap_ms);
    }

    /// A HAVE frame to this peer was lost: refresh at the next round, and the gaps start again.
    pub fn lost(&mut self, now_ms: u64) {
        self.gap_ms = HAVE_REFRESH.as_millis() as u64 / 2;
        self.due_ms = now_ms;
    }
}

/// What a node knows when a transfer request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeRequest {
    /// The requester proved ward membership.
    pub admitted: bool,
    /// Our upload cap is not zero (a zero cap makes a node leech only).
    pub uploads: bool,
    /// We hold every requested group, at the requested length.
    pub holds: bool,
    /// Transfers we serve right now.
    pub serving: usize,
    /// Transfers we serve at most (`Config::max_inbound_transfers`).
    pub max_serving: usize,
}

/// The answer to a transfer request. A non-member learns nothing else; "limited" (retry later, not
/// the requester's fault) is kept apart from "forbidden" (the requester is not a member here).
pub fn serve(r: ServeRequest) -> Status {
    if !r.admitted {
        Status::Forbidden
    } else if !r.uploads {
        Status::Limited
    } else if !r.holds {
        Status::NotFound
    } else if r.serving >= r.max_serving {
        Status::Limited
    } else {
        Status::Ok
    }
}

/// How often a node with `peers` admitted peers sends availability: `base` up to 8 peers, then
/// proportionally longer, so the HAVE streams a node opens stay about 32 per second however large
/// the ward (each HAVE is a stream; 50 devices at 250 ms opened 10,000 streams per second and the
/// live 50-device ward ran at a tenth of its bound).
pub fn have_period(base: Duration, peers: usize) -> Duration {
    base * peers.div_ceil(8).max(1) as u32
}

/// One artifact as a node sees it at an availability round.
#[derive(Debug)]
pub struct HaveArtifact<'a, P: Ord + Clone> {
    /// The groups we announce (none when we do not upload).
    pub mine: &'a GroupSet,
    /// What we announce changed since the last round.
    pub changed: bool,
    /// We are fetching it (then even an empty set is worth sending: a super-seeding gateway waits
    /// for it before it shows us anything).
    pub fetching: bool,
    /// Super-seeding state, if we super-seed this artifact (the gateway, uploading).
    pub seed: Option<&'a mut SuperSeed<P>>,
}

/// Which groups of one artifact to show which admitted peer in this round: a device sends its set
/// when it changed to every peer, and to a peer whose full refresh is due (`refresh`) whether or
/// not it changed; a super-seeding gateway sends each device its own view when it changed (views
/// grow as devices fetch) or a refresh is due, and other gateways its full set.
///
/// A changed set is not sent to a device known to hold all of it already (`holds_all`, from that
/// device's own last HAVE): it could request nothing from us, so the frame would tell it nothing
/// it can use (libtorrent's "redundant HAVE"). What a peer said it holds only grows, so this never
/// keeps back a group the peer lacks; its refresh still goes out, and gateways get every change
/// (a super-seeding gateway plans on what each device holds).
pub fn have_round<P: Ord + Clone>(
    now_ms: u64,
    refresh: impl Fn(&P) -> bool,
    holds_all: impl Fn(&P) -> bool,
    a: HaveArtifact<'_, P>,
    peers: &[(P, Role)],
) -> Vec<(P, GroupSet)> {
    if a.mine.is_empty() && !a.fetching {
        return vec![];
    }
    let send_full = |p: &P| a.changed || refresh(p);
    let Some(seed) = a.seed else {
        return peers
            .iter()
            .filter(|(p, role)| {
                refresh(p) || (a.changed && (*role != Role::Device || !holds_all(p)))
            })
            .map(|(p, _)| (p.clone(), a.mine.clone()))
            .collect();
    };
    seed.local_has(a.mine);
    let mut out = Vec::new();
    for (p, role) in peers {
        if *role == Role::Device {
            // A device that has not said it fetches this artifact is shown nothing yet.
            if let Some(v) = seed.view(now_ms, p, refresh(p)) {
                out.push((p.clone(), v));
            }
        } else if send_full(p) {
            out.push((p.clone(), a.mine.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeding;

    fn ask() -> ServeRequest {
        ServeRequest {
            admitted: true,
            uploads: true,
            holds: true,
            serving: 0,
            max_serving: 2,
        }
    }

    #[test]
    fn serve_keeps_forbidden_limited_and_not_found_apart() {
        assert_eq!(serve(ask()), Status::Ok);
        let r = |f: fn(&mut ServeRequest)| {
            let mut a = ask();
            f(&mut a);
            serve(a)
        };
        assert_eq!(r(|a| a.admitted = false), Status::Forbidden);
        // A non-member learns nothing, not even whether we hold the data.
        assert_eq!(
            r(|a| {
                a.admitted = false;
                a.holds = false
            }),
            Status::Forbidden
        );
        assert_eq!(r(|a| a.uploads = false), Status::Limited);
        assert_eq!(r(|a| a.holds = false), Status::NotFound);
        assert_eq!(r(|a| a.serving = 2), Status::Limited);
    }

    #[test]
    fn have_periods_grow_with_the_ward() {
        let b = Duration::from_millis(250);
        assert_eq!(have_period(b, 0), b);
        assert_eq!(have_period(b, 8), b);
        assert_eq!(have_period(b, 9), b * 2);
        assert_eq!(have_period(b, 50), b * 7);
    }

    #[test]
    fn a_device_sends_changes_and_refreshes_and_a_gateway_sends_views() {
        let mut mine = GroupSet::new(8);
        mine.insert(1);
        let peers = [(1u32, Role::Device), (2, Role::Gateway)];
        let unchanged = HaveArtifact {
            mine: &mine,
            changed: false,
            fetching: true,
            seed: None,
        };
        assert!(have_round(0, |_| false, |_| false, unchanged, &peers).is_empty());
        let changed = HaveArtifact {
            mine: &mine,
            changed: true,
            fetching: true,
            seed: None,
        };
        assert_eq!(
            have_round(0, |_| false, |_| false, changed, &peers).len(),
            2
        );
        let nothing = GroupSet::new(8);
        let idle = HaveArtifact {
            mine: &nothing,
            changed: true,
            fetching: false,
            seed: None,
        };
        assert!(have_round(0, |_| true, |_| false, idle, &peers).is_empty());
        // An unchanged set goes only to the peers whose refresh is due.
        let unchanged = HaveArtifact {
            mine: &mine,
            changed: false,
            fetching: true,
            seed: None,
        };
        let out = have_round(0, |p| *p == 2, |_| false, unchanged, &peers);
        assert_eq!(out.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![2]);
        // A change is not sent to a device that holds all of it already, but is to a gateway that
        // does, and a refresh goes out whatever the peer holds.
        let three = [(1u32, Role::Device), (2, Role::Gateway), (3, Role::Device)];
        let changed = || HaveArtifact {
            mine: &mine,
            changed: true,
            fetching: true,
            seed: None,
        };
        let to = |out: Vec<(u32, GroupSet)>| out.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        let holders = |p: &u32| *p != 3;
        assert_eq!(
            to(have_round(0, |_| false, holders, changed(), &three)),
            [2, 3]
        );
        assert_eq!(
            to(have_round(0, |p| *p == 1, holders, changed(), &three)),
            [1, 2, 3]
        );

        // A gateway shows a device nothing until the device says it fetches; then a window of
        // fresh groups, not all it has.
        const N: u64 = 4096;
        let mut seed = SuperSeed::new(seeding::Config::default(), N);
        let full = GroupSet::full(N);
        let round = |seed: &mut SuperSeed<u32>, refresh: bool| {
            have_round(
                0,
                |_| refresh,
                |_| false,
                HaveArtifact {
                    mine: &full,
                    changed: false,
                    fetching: false,
                    seed: Some(seed),
                },
                &peers,
            )
        };
        assert!(round(&mut seed, false).is_empty());
        seed.peer_has(0, 1, GroupSet::new(N));
        let out = round(&mut seed, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 1);
        assert!(
            !out[0].1.is_empty() && out[0].1.count() < N,
            "a view, not all"
        );
        // Other gateways get the full set on a refresh round.
        assert!(round(&mut seed, true)
            .iter()
            .any(|(p, g)| *p == 2 && g.is_full()));
    }

    #[test]
    fn refreshes_back_off_to_the_longest_gap_and_come_at_once_after_a_loss() {
        let first = HAVE_REFRESH.as_millis() as u64;
        let max = HAVE_REFRESH_MAX.as_millis() as u64;
        let mut r = Refresh::new(1_000);
        assert!(!r.is_due(1_000 + first - 1));
        assert!(r.is_due(1_000 + first));
        // Sent at each due time: the gaps double up to the longest.
        let (mut now, mut gaps) = (1_000 + first, Vec::new());
        for _ in 0..8 {
            r.sent(now);
            let mut next = now;
            while !r.is_due(next) {
                next += 1;
            }
            gaps.push(next - now);
            now = next;
        }
        assert_eq!(
            gaps,
            vec![2 * first, 4 * first, 8 * first, max, max, max, max, max]
        );
        // A lost frame: due at once, and the gaps start again.
        r.lost(now + 5);
        assert!(r.is_due(now + 5));
        r.sent(now + 5);
        assert!(!r.is_due(now + 5 + first - 1));
        assert!(r.is_due(now + 5 + first));
    }
}
