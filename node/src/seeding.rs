//! Super-seeding for the ward gateway: which of its groups to show each device, so that every byte
//! leaves the gateway about once and the devices spread it among themselves.
//!
//! The gateway's LAN upload is what the whole ward shares (Kumar and Ross: the ward cannot finish
//! sooner than F / u_s). If it announced everything it has, devices that start together ask it for the
//! same fresh groups and it uploads the artifact several times (3.4 to 3.9 copies for 12 devices,
//! measured before this module). So, like BitTorrent's super-seeding mode, it tells each device only
//! about a few groups that no device has yet and that it has not shown to another device recently;
//! once a device holds a group, the others fetch it from that device. When no fresh group is left, it
//! shows the rarest groups a device lacks: in an upload-bound ward the gateway's upload is part of the
//! capacity the bound counts on, and leaving it idle after one copy costs u_s / (u_s + Σu_i) of it.
//!
//! A pure state machine like [`crate::scheduler`]: the node feeds it what devices announce and asks it,
//! each availability round, what to announce to whom. No clock: the caller passes `now` in ms.
//!
//! Liveness: a device whose availability has not grown for `starve_ms` while it is incomplete (its
//! only source of some group left, or lied and was banned by it) is shown everything the gateway has,
//! so super-seeding can delay a device but never strand it.

use std::collections::BTreeMap;

use crate::groups::GroupSet;

/// Super-seeding settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Groups shown and not yet fetched, summed over devices (default 512 = 8 MiB): enough to keep the
    /// gateway's upload busy for about one availability round at tens of MB/s.
    pub ahead_groups: u64,
    /// Least shown-and-unfetched groups per device (default 8).
    pub min_window: u64,
    /// Most shown-and-unfetched groups per device (default 256 = 4 MiB).
    pub max_window: u64,
    /// Groups are shown in runs of at most this many (default 16), so one request fetches a run.
    pub run_groups: u64,
    /// A group shown to a device that has not fetched it after this long may be shown to another
    /// (default 3 s).
    pub stale_ms: u64,
    /// A device whose availability has not grown for this long is shown everything (default 4 s).
    pub starve_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ahead_groups: 512,
            min_window: 8,
            max_window: 256,
            run_groups: 16,
            stale_ms: 3_000,
            starve_ms: 4_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Device {
    has: GroupSet,
    shown: GroupSet,
    /// When `has` last grew (or the device appeared).
    grew_at: u64,
    /// The view last returned, to send only changes.
    sent: Option<GroupSet>,
}

/// Super-seeding state for one artifact on the gateway.
#[derive(Debug, Clone)]
pub struct SuperSeed<P: Ord + Clone> {
    cfg: Config,
    local: GroupSet,
    devices: BTreeMap<P, Device>,
    /// Devices holding each group.
    copies: Vec<u32>,
    /// Devices a group is shown to and that do not hold it yet.
    pending: Vec<u32>,
    /// When each group was last shown.
    shown_at: Vec<u64>,
    /// Where the next rarest-first scan starts, so devices are shown different rare groups.
    turn: u64,
}

impl<P: Ord + Clone> SuperSeed<P> {
    /// State for an artifact of `len` groups.
    pub fn new(cfg: Config, len: u64) -> Self {
        Self {
            cfg,
            local: GroupSet::new(len),
            devices: BTreeMap::new(),
            copies: vec![0; len as usize],
            pending: vec![0; len as usize],
            shown_at: vec![0; len as usize],
            turn: 0,
        }
    }

    /// The gateway's own verified groups (only these are ever shown).
    pub fn local_has(&mut self, groups: &GroupSet) {
        if groups.len() == self.local.len() {
            self.local = groups.clone();
        }
    }

    /// A device announced its verified groups (an empty announcement says it is fetching).
    pub fn peer_has(&mut self, now: u64, peer: P, groups: GroupSet) {
        if groups.len() != self.local.len() {
            return;
        }
        let len = self.local.len();
        let d = self.devices.entry(peer).or_insert_with(|| Device {
            has: GroupSet::new(len),
            shown: GroupSet::new(len),
            grew_at: now,
            sent: None,
        });
        let old = std::mem::replace(&mut d.has, groups);
        if d.has.count() > old.count() {
            d.grew_at = now;
        }
        for (w, (a, b)) in old.words().iter().zip(d.has.words()).enumerate() {
            let mut changed = a ^ b;
            while changed != 0 {
                let g = w as u64 * 64 + u64::from(changed.trailing_zeros());
                changed &= changed - 1;
                let i = g as usize;
                if d.has.contains(g) {
                    self.copies[i] += 1;
                    if d.shown.contains(g) {
                        self.pending[i] = self.pending[i].saturating_sub(1);
                    }
                } else {
                    self.copies[i] = self.copies[i].saturating_sub(1);
                    if d.shown.contains(g) {
                        self.pending[i] += 1;
                    }
                }
            }
        }
    }

    /// A device left: its copies and its pending groups no longer count.
    pub fn peer_gone(&mut self, peer: &P) {
        if let Some(d) = self.devices.remove(peer) {
            for g in d.has.iter() {
                self.copies[g as usize] = self.copies[g as usize].saturating_sub(1);
            }
            for g in d.shown.difference(&d.has).iter() {
                self.pending[g as usize] = self.pending[g as usize].saturating_sub(1);
            }
        }
    }

    /// Devices still missing groups.
    pub fn incomplete(&self) -> usize {
        self.devices.values().filter(|d| !d.has.is_full()).count()
    }

    /// What to announce to `peer` now; `None` if it is what was last announced (unless `force`).
    /// Shows more groups when the device has fetched what it was shown.
    pub fn view(&mut self, now: u64, peer: &P, force: bool) -> Option<GroupSet> {
        let incomplete = self.incomplete().max(1) as u64;
        let window =
            (self.cfg.ahead_groups / incomplete).clamp(self.cfg.min_window, self.cfg.max_window);
        let d = self.devices.get(peer)?;
        let view = if d.has.is_full() {
            d.has.clone()
        } else if now.saturating_sub(d.grew_at) >= self.cfg.starve_ms {
            // Starving: whatever stranded it, the gateway is the source of last resort.
            self.local.clone()
        } else {
            self.refill(now, peer, window);
            let d = &self.devices[peer];
            let mut v = d.shown.clone();
            for g in d.shown.iter() {
                if !self.local.contains(g) {
                    v.remove(g);
                }
            }
            v
        };
        let d = self.devices.get_mut(peer)?;
        if !force && d.sent.as_ref() == Some(&view) {
            return None;
        }
        d.sent = Some(view.clone());
        Some(view)
    }

    /// Shows `peer` fresh groups until it has `window` shown and unfetched.
    fn refill(&mut self, now: u64, peer: &P, window: u64) {
        let Some(d) = self.devices.get(peer) else {
            return;
        };
        let mut outstanding = d.shown.difference(&d.has).count();
        let n = self.local.len();
        // Two passes: groups shown to nobody, then groups whose showing went stale.
        for stale_pass in [false, true] {
            let mut g = 0;
            while outstanding < window && g < n {
                if !self.candidate(now, peer, g, stale_pass) {
                    g += 1;
                    continue;
                }
                let limit = (window - outstanding).min(self.cfg.run_groups);
                let start = g;
                while g < n && g - start < limit && self.candidate(now, peer, g, stale_pass) {
                    if let Some(d) = self.devices.get_mut(peer) {
                        d.shown.insert(g);
                    }
                    self.pending[g as usize] += 1;
                    self.shown_at[g as usize] = now;
                    outstanding += 1;
                    g += 1;
                }
            }
        }
        if outstanding < window {
            self.refill_rarest(now, peer, window - outstanding);
        }
    }

    /// Shows `peer` up to `room` of the groups it lacks that the fewest devices hold, in runs, starting
    /// at a rotating offset.
    fn refill_rarest(&mut self, now: u64, peer: &P, mut room: u64) {
        let n = self.local.len();
        let Some(d) = self.devices.get(peer) else {
            return;
        };
        let lacks = |g: u64| self.local.contains(g) && !d.has.contains(g) && !d.shown.contains(g);
        let Some(min) = (0..n)
            .filter(|g| lacks(*g))
            .map(|g| self.copies[g as usize])
            .min()
        else {
            return;
        };
        let start = self.turn % n.max(1);
        let mut picked = Vec::new();
        let mut k = 0;
        while k < n && room > 0 {
            let g = (start + k) % n;
            k += 1;
            if !lacks(g) || self.copies[g as usize] != min {
                continue;
            }
            // A run of up to run_groups from here.
            let mut h = g;
            while room > 0
                && h < n
                && h - g < self.cfg.run_groups
                && lacks(h)
                && self.copies[h as usize] == min
            {
                picked.push(h);
                room -= 1;
                h += 1;
            }
            k += h - g - 1;
        }
        self.turn = self.turn.wrapping_add(self.cfg.run_groups * 7 + 1);
        if let Some(d) = self.devices.get_mut(peer) {
            for g in picked {
                d.shown.insert(g);
                self.pending[g as usize] += 1;
                self.shown_at[g as usize] = now;
            }
        }
    }

    fn candidate(&self, now: u64, peer: &P, g: u64, stale_pass: bool) -> bool {
        let i = g as usize;
        if !self.local.contains(g) || self.copies[i] > 0 {
            return false;
        }
        let Some(d) = self.devices.get(peer) else {
            return false;
        };
        if d.shown.contains(g) || d.has.contains(g) {
            return false;
        }
        if stale_pass {
            self.pending[i] > 0 && now.saturating_sub(self.shown_at[i]) >= self.cfg.stale_ms
        } else {
            self.pending[i] == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            ahead_groups: 64,
            min_window: 4,
            max_window: 16,
            run_groups: 4,
            stale_ms: 1_000,
            starve_ms: 5_000,
        }
    }

    #[test]
    fn each_group_is_shown_to_one_device_until_it_goes_stale() {
        let mut s = SuperSeed::new(cfg(), 64);
        s.local_has(&GroupSet::full(64));
        for p in 0..4u32 {
            s.peer_has(0, p, GroupSet::new(64));
        }
        let views: Vec<GroupSet> = (0..4u32)
            .map(|p| s.view(0, &p, false).expect("first view"))
            .collect();
        // 64 / 4 devices = 16 each; disjoint, covering everything.
        let mut union = GroupSet::new(64);
        for v in &views {
            assert_eq!(v.count(), 16);
            for g in v.iter() {
                assert!(!union.contains(g), "group {g} shown twice");
            }
            union.union_with(v);
        }
        assert!(union.is_full());
        // Unchanged views are not resent.
        assert!(s.view(10, &0, false).is_none());
        // Device 0 fetched its groups: they are its; nothing fresh is left to show anyone.
        s.peer_has(20, 0, views[0].clone());
        assert!(s.view(20, &1, false).is_none());
        // After the stale time, device 1's unfetched groups may go to device 0 as well.
        let v = s.view(1_500, &0, false).expect("stale groups shown");
        assert!(v.count() > 16);
        assert!(v.iter().any(|g| views[1].contains(g)));
    }

    #[test]
    fn only_groups_the_gateway_has_and_no_device_holds_are_shown() {
        let mut s = SuperSeed::new(cfg(), 32);
        let mut local = GroupSet::new(32);
        local.insert_range(0..8);
        s.local_has(&local);
        let mut held = GroupSet::new(32);
        held.insert_range(0..4);
        s.peer_has(0, 1u32, held);
        s.peer_has(0, 2u32, GroupSet::new(32));
        let v = s.view(0, &2, false).expect("view");
        // The fresh groups 4..8 first; nothing fresh is left, so then the rarest it lacks (0..4, held by
        // one device); never 8.., which the gateway does not have.
        assert_eq!(v.runs().collect::<Vec<_>>(), vec![0..8]);
        // More arrives from the WAN: more is shown.
        local.insert_range(8..16);
        s.local_has(&local);
        let v = s.view(0, &2, false).expect("view");
        assert!(v.contains(8));
    }

    #[test]
    fn a_starving_device_is_shown_everything_and_departures_release_copies() {
        let mut s = SuperSeed::new(cfg(), 16);
        s.local_has(&GroupSet::full(16));
        // A liar claims everything: nothing is fresh, yet the honest device is shown the rarest groups
        // (up to its window), so a liar cannot silence the gateway...
        s.peer_has(0, 9u32, GroupSet::full(16));
        s.peer_has(0, 1u32, GroupSet::new(16));
        let first = s.view(0, &1, false).map_or(0, |v| v.count());
        assert!(first > 0, "shown nothing");
        // ...and a device whose availability stops growing is shown everything.
        assert_eq!(s.view(5_000, &1, true).map(|v| v.count()), Some(16));
        // The liar leaves: its copies no longer count and groups are fresh again.
        s.peer_gone(&9);
        let mut part = GroupSet::new(16);
        part.insert(0);
        s.peer_has(5_001, 1, part);
        let v = s.view(5_001, &1, true).expect("view");
        assert!(v.count() > 1 && v.count() <= 16);
    }
}
