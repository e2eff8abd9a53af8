//! Directives to devices: every [`TICK`] the gateway plans, with the pure
//! [`wardswarm_node::rollout::ward::plan`], the directive each connected targeted device should
//! hold and sends it over `/wardswarm/directive/1` when it changed, and again every [`REFRESH`] so a
//! device that missed one (or restarted) catches up and its directive does not expire while the
//! gateway is up. A directive is valid for [`VALID_FOR`]: a device cut off from its gateway keeps
//! following the last one (windows included) for that long, then holds.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use wardswarm_node::{
    agent::machine::DeviceState,
    rollout::{ward, DeviceNow, Directive},
};

use super::Shared;

/// How often directives are planned.
pub const TICK: Duration = Duration::from_secs(1);
/// An unchanged directive is sent again this often.
pub const REFRESH: Duration = Duration::from_secs(30);
/// The database key of the last directive sequence number sent.
const SEQ_KEY: &str = "directive_seq";
/// How long a directive stays valid on a device that hears nothing newer.
pub const VALID_FOR: Duration = Duration::from_secs(24 * 3600);

/// Runs until the gateway stops.
pub(super) async fn run(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: HashMap<String, (Directive, Instant)> = HashMap::new();
    let mut slots: BTreeSet<String> = BTreeSet::new();
    // Sequence numbers start at the clock's milliseconds or past the last one sent (kept in the
    // database), whichever is higher: they grow across restarts even if the clock went back.
    let clock_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let kept = s.db.meta(SEQ_KEY).ok().flatten().unwrap_or(0);
    let mut seq = clock_ms.max(kept.saturating_add(1));
    let mut saved = seq;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = s.stop.cancelled() => return,
        }
        let rollouts = s.control.rollouts();
        if rollouts.is_empty() {
            continue;
        }
        // Devices connected now, with what their last report says.
        let (devices, peers) = {
            let st = s.state.lock();
            let mut devices = BTreeMap::new();
            let mut peers = BTreeMap::new();
            for d in st.devices.values() {
                if !st.connected.contains(&d.peer) {
                    continue;
                }
                let r = &d.report;
                devices.insert(
                    d.id.clone(),
                    DeviceNow {
                        wants_reboot: r.gated.as_deref() == Some("reboot_limit"),
                        rebooting: matches!(
                            r.state,
                            DeviceState::Rebooting
                                | DeviceState::HealthCheck
                                | DeviceState::Committing
                                | DeviceState::RollingBack
                        ),
                        idle: r.state == DeviceState::Idle,
                    },
                );
                peers.insert(d.id.clone(), d.peer.clone());
            }
            (devices, peers)
        };
        let expires = s.cfg.clock.now().saturating_add(VALID_FOR);
        let plan = ward::plan(&rollouts, &devices, &s.cfg.rollouts, &mut slots, expires);
        for (device, mut d) in plan {
            let fresh = sent.get(&device).is_some_and(|(old, at)| {
                at.elapsed() < REFRESH && {
                    let mut o = old.clone();
                    (o.seq, o.expires) = (d.seq, d.expires);
                    o == d
                }
            });
            if fresh {
                continue;
            }
            let Some(peer) = peers.get(&device).and_then(|p| p.parse().ok()) else {
                continue;
            };
            seq += 1;
            d.seq = seq;
            let Ok(body) = serde_json::to_vec(&d) else {
                continue;
            };
            if sent.get(&device).is_none_or(|(old, _)| {
                (old.fetch, old.install, old.reboot, old.cancel, old.rollout)
                    != (d.fetch, d.install, d.reboot, d.cancel, d.rollout)
            }) {
                tracing::info!(%device, rollout = d.rollout, release = %d.release, fetch = d.fetch, install = d.install, reboot = d.reboot, cancel = d.cancel, "directive");
            }
            match s.node.direct(peer, body).await {
                Ok(()) => {
                    sent.insert(device, (d, Instant::now()));
                }
                Err(e) => tracing::warn!(%device, error = %e, "sending a directive failed"),
            }
        }
        sent.retain(|id, _| devices.contains_key(id));
        if seq != saved {
            match s.db.set_meta(SEQ_KEY, seq) {
                Ok(()) => saved = seq,
                Err(e) => tracing::warn!(error = %e, "saving the directive sequence failed"),
            }
        }
    }
}
