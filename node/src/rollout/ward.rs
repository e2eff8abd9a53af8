//! The ward's side of directives *(pure)*: from the rollouts and what each device last reported,
//! which [`Directive`] each targeted device should hold, and which devices hold the ward's reboot
//! slots. The gateway runs it every second and sends what changed; the simulations run the same
//! code for thousands of devices.
//!
//! Which rollout directs a device: the newest one that is running or paused and in which the device
//! has not ended; failing that, the newest stopped one that canceled it (so it drops what it had
//! not activated). Reboot slots: at most `reboot_limit` devices of the ward are granted one at a
//! time; a device keeps its slot until its status in the rollout is final or it reports idle, and a
//! device found rebooting without a grant (a gateway restarted mid-rollout) takes one.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    directive::Directive,
    machine::Rollout,
    model::{DeviceStatus, RolloutState},
    window::WindowSpec,
};
use crate::time::Timestamp;

/// The ward's rollout settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WardPolicy {
    /// Most devices rebooting into a new release at once.
    pub reboot_limit: usize,
    /// The ward's maintenance window, for rollouts that set none.
    pub window: Option<WindowSpec>,
}

impl Default for WardPolicy {
    fn default() -> Self {
        Self {
            reboot_limit: 2,
            window: None,
        }
    }
}

/// What the planner needs of a device's last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceNow {
    /// It waits for a reboot slot (`gated: reboot_limit`).
    pub wants_reboot: bool,
    /// It is past activation: rebooting, checking its health, committing or rolling back.
    pub rebooting: bool,
    /// It reports idle (nothing in progress).
    pub idle: bool,
}

/// Which rollout directs `device`, if any.
fn directing<'a>(rollouts: &'a [Rollout], device: &str) -> Option<&'a Rollout> {
    let live = rollouts
        .iter()
        .filter(|r| matches!(r.state, RolloutState::Running | RolloutState::Paused))
        .filter(|r| {
            r.group_of(device)
                .is_some_and(|g| !g.devices[device].is_final())
        })
        .max_by_key(|r| r.id);
    live.or_else(|| {
        rollouts
            .iter()
            .filter(|r| r.state == RolloutState::Stopped)
            .filter(|r| {
                r.group_of(device)
                    .is_some_and(|g| g.devices[device] == DeviceStatus::Canceled)
            })
            .max_by_key(|r| r.id)
    })
}

/// The directive each device reached by a rollout should hold now (`seq` 0: the sender numbers
/// them), updating `slots`, the devices holding a reboot slot.
pub fn plan(
    rollouts: &[Rollout],
    devices: &BTreeMap<String, DeviceNow>,
    policy: &WardPolicy,
    slots: &mut BTreeSet<String>,
    expires: Timestamp,
) -> BTreeMap<String, Directive> {
    let mut out = BTreeMap::new();
    let mut want = Vec::new();
    for (id, now) in devices {
        let Some(r) = directing(rollouts, id) else {
            slots.remove(id);
            continue;
        };
        let status = r.group_of(id).map(|g| g.devices[id]);
        let done = status.is_none_or(DeviceStatus::is_final);
        let install = r.may_install(id);
        if done || (now.idle && slots.contains(id)) {
            slots.remove(id);
        }
        if now.rebooting && !done {
            slots.insert(id.clone());
        }
        if now.wants_reboot && install && !slots.contains(id) {
            want.push(id.clone());
        }
        out.insert(
            id.clone(),
            Directive {
                device: id.clone(),
                seq: 0,
                rollout: r.id,
                release: r.spec.release.clone(),
                action: r.spec.action,
                fetch: r.may_fetch(id),
                install,
                reboot: false,
                cancel: status == Some(DeviceStatus::Canceled),
                window: r.spec.window.clone().or_else(|| policy.window.clone()),
                override_gate: r.overrides.contains(id),
                expires,
            },
        );
    }
    // Devices that left the ward give their slots back.
    slots.retain(|id| devices.contains_key(id));
    for id in want {
        if slots.len() >= policy.reboot_limit.max(1) {
            break;
        }
        slots.insert(id);
    }
    for id in slots.iter() {
        if let Some(d) = out.get_mut(id) {
            d.reboot = d.install;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::model::{DeviceInfo, RolloutSpec};

    fn rollout(n: usize) -> Rollout {
        let spec: RolloutSpec = serde_json::from_value(serde_json::json!({
            "name": "r", "release": "2.0.0",
            "groups": [{"name": "all", "select": {"by": "rest"}}]
        }))
        .expect("spec");
        let targets: Vec<DeviceInfo> = (0..n)
            .map(|i| DeviceInfo {
                id: format!("pump-{i}"),
                product: None,
                hardware: "h".into(),
                labels: vec![],
            })
            .collect();
        let mut r = Rollout::new(1, spec, "op", &targets, false).expect("rollout");
        r.start().expect("start");
        r
    }

    #[test]
    fn at_most_k_devices_hold_a_reboot_slot_and_slots_pass_on() {
        let mut r = rollout(4);
        let policy = WardPolicy {
            reboot_limit: 2,
            window: None,
        };
        let waiting = DeviceNow {
            wants_reboot: true,
            ..Default::default()
        };
        let mut devices: BTreeMap<String, DeviceNow> =
            (0..4).map(|i| (format!("pump-{i}"), waiting)).collect();
        let mut slots = BTreeSet::new();
        let exp = Timestamp::from_unix(2_000_000_000);
        let p = plan(&[r.clone()], &devices, &policy, &mut slots, exp);
        let granted: Vec<_> = p.values().filter(|d| d.reboot).map(|d| &d.device).collect();
        assert_eq!(granted, ["pump-0", "pump-1"]);
        assert!(p.values().all(|d| d.fetch && d.install && !d.cancel));
        // pump-0 finishes: its slot goes to pump-2.
        r.report("pump-0", DeviceStatus::Finished);
        devices.insert(
            "pump-0".into(),
            DeviceNow {
                idle: true,
                ..Default::default()
            },
        );
        devices.insert(
            "pump-1".into(),
            DeviceNow {
                rebooting: true,
                ..Default::default()
            },
        );
        let p = plan(&[r.clone()], &devices, &policy, &mut slots, exp);
        let granted: Vec<_> = p.values().filter(|d| d.reboot).map(|d| &d.device).collect();
        assert_eq!(granted, ["pump-1", "pump-2"]);
        assert!(
            !p.contains_key("pump-0"),
            "a finished device is directed no more"
        );
        // Paused: nobody not yet activated may install, and no new slot is granted.
        r.pause("qa").expect("pause");
        let p = plan(&[r.clone()], &devices, &policy, &mut slots, exp);
        assert!(!p["pump-3"].install && !p["pump-3"].reboot);
        // Stopped: the rest are canceled.
        r.stop().expect("stop");
        let p = plan(&[r.clone()], &devices, &policy, &mut slots, exp);
        assert!(p["pump-3"].cancel && !p["pump-3"].fetch);
    }

    #[test]
    fn a_gateway_restarted_mid_reboot_counts_the_devices_already_rebooting() {
        let r = rollout(3);
        let policy = WardPolicy {
            reboot_limit: 1,
            window: None,
        };
        let mut devices = BTreeMap::new();
        devices.insert(
            "pump-0".to_string(),
            DeviceNow {
                wants_reboot: true,
                ..Default::default()
            },
        );
        devices.insert(
            "pump-2".to_string(),
            DeviceNow {
                rebooting: true,
                ..Default::default()
            },
        );
        let mut slots = BTreeSet::new();
        let p = plan(
            &[r],
            &devices,
            &policy,
            &mut slots,
            Timestamp::from_unix(2_000_000_000),
        );
        assert!(!p["pump-0"].reboot, "the one slot is pump-2's");
        assert!(p["pump-2"].reboot);
        assert!(!p.contains_key("pump-1"), "not heard from: no directive");
    }
}
