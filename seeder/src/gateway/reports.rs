//! Device report intake: status reports arrive over the swarm (`/wardswarm/report/1`), update the
//! device's record, are persisted on a state change (else at most every 10 s per device), and wake
//! the WAN loop when a device's needs may have changed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::broadcast::error::RecvError;
use wardswarm_node::{
    agent::{machine::DeviceState, runtime::Report},
    net::Event,
    rollout::DeviceStatus,
    Timestamp,
};

use super::{state::DeviceRecord, Shared};
use crate::db::Table;

/// A device's record is written at least this often while it reports without a state change, so a
/// restart loses little progress.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// Runs until the gateway stops.
pub(super) async fn collect(s: Arc<Shared>) {
    let mut rx = s.node.subscribe();
    let mut last_saved: BTreeMap<String, (DeviceState, std::time::Instant)> = BTreeMap::new();
    loop {
        let ev = tokio::select! {
            e = rx.recv() => e,
            _ = s.stop.cancelled() => return,
        };
        let (peer, device, body) = match ev {
            Ok(Event::Report { peer, device, body }) => (peer, device, body),
            Ok(Event::PeerLeft { peer }) => {
                s.state.lock().connected.remove(&peer.to_string());
                continue;
            }
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let report: Report = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "unreadable status report");
                continue;
            }
        };
        let state = report.state;
        let rec = DeviceRecord {
            id: device.clone(),
            peer: peer.to_string(),
            report,
            last_seen: Timestamp::now(),
        };
        let changed = {
            let mut st = s.state.lock();
            let old = st
                .devices
                .get(&device)
                .map(|r| (r.report.state, r.report.counter, r.report.image));
            let changed = old != Some((state, rec.report.counter, rec.report.image));
            st.devices.insert(device.clone(), rec.clone());
            st.connected.insert(rec.peer.clone());
            changed
        };
        let due = last_saved
            .get(&device)
            .is_none_or(|(st, t)| *st != state || t.elapsed() > SAVE_EVERY);
        if due {
            if let Err(e) = s.db.put(Table::Devices, &device, &rec) {
                tracing::error!(error = %e, "cannot save device state");
            }
            last_saved.insert(device, (state, std::time::Instant::now()));
        }
        if changed {
            s.wake.notify_one();
        }
        if let Some((release, status)) = rollout_status(&rec.report) {
            s.control.device_status(&s.db, &rec.id, &release, status);
        }
    }
}

/// What a report says of the device's progress on a release, in rollout terms.
fn rollout_status(r: &Report) -> Option<(String, DeviceStatus)> {
    use wardswarm_node::agent::status::{DeviceState as D, UpdateResult as U};
    let busy = |s| r.target.clone().map(|t| (t, s));
    if r.gated.is_some() {
        return busy(DeviceStatus::Gated);
    }
    match r.state {
        D::Fetching => busy(DeviceStatus::Downloading),
        // Fetched, and held by its rollout (its group waits, a pause, download only).
        D::Installing | D::Activating if r.held.is_some() => busy(DeviceStatus::Downloaded),
        D::Installing | D::Activating => busy(DeviceStatus::Installing),
        D::Rebooting | D::HealthCheck | D::Committing => busy(DeviceStatus::Rebooting),
        D::Idle => r.last.as_ref().map(|o| {
            let s = match o.result {
                U::Committed => DeviceStatus::Finished,
                U::RolledBack | U::Failed => DeviceStatus::Error,
                U::Canceled => DeviceStatus::Canceled,
            };
            (o.version.clone(), s)
        }),
        _ => None,
    }
}
