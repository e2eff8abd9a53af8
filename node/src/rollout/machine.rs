//! The rollout state machine *(pure)*. Inputs: operator actions (approve, deny, start, pause,
//! resume, stop), each with who acts, and device status reports. It assigns devices to groups once,
//! at creation, runs one group at a time, and decides from each group's counts whether it succeeded
//! (start the next group, or hold for QA), failed (pause the rollout), or is still going.
//!
//! Semantics, following hawkBit where it has them (`docs/rollouts.md`):
//! - Four eyes: the creator of a rollout cannot approve or deny it.
//! - Success: finished devices ≥ the group's `success_percent` of its devices. A group whose devices
//!   have all ended below that is in `error`.
//! - Error: errors ≥ `percent` of the group or ≥ `count`, once `min_sample` devices have ended;
//!   the group goes to `error` and the rollout pauses. `gated` is never an error.
//! - Pause holds every device that has not activated (installing or rebooting); resume starts the
//!   next group if the running one is done (finished, or in error and so accepted by the operator).
//! - Stop cancels every device that has not ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{
    DeviceInfo, DeviceStatus, GroupSpec, GroupState, RolloutSpec, RolloutState, Selector,
    SuccessAction,
};

/// An action the rollout's state does not allow, or a rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("cannot {action} a rollout that is {state}")]
    Transition {
        action: &'static str,
        state: &'static str,
    },
    #[error("four eyes: {who} created this rollout, so someone else must approve or deny it")]
    FourEyes { who: String },
    #[error("rollout: {0}")]
    Invalid(String),
}

/// One group as it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Its definition.
    pub spec: GroupSpec,
    /// Its state.
    pub state: GroupState,
    /// Its devices and their statuses.
    pub devices: BTreeMap<String, DeviceStatus>,
}

impl Group {
    /// How many devices are in each status (every status listed, zeros included).
    pub fn statuses(&self) -> BTreeMap<&'static str, usize> {
        let mut m: BTreeMap<&'static str, usize> =
            DeviceStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for s in self.devices.values() {
            *m.entry(s.as_str()).or_default() += 1;
        }
        m
    }
    fn count(&self, s: DeviceStatus) -> usize {
        self.devices.values().filter(|d| **d == s).count()
    }
}

/// A decision on approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided.
    pub by: String,
    /// Approved (or denied).
    pub approved: bool,
    /// Their remark.
    pub remark: String,
}

/// A rollout: its definition, state, groups and who did what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Its id.
    pub id: u64,
    /// Its definition.
    pub spec: RolloutSpec,
    /// Its state.
    pub state: RolloutState,
    /// Who created it.
    pub created_by: String,
    /// The approval decision, once made.
    pub decision: Option<Decision>,
    /// The groups, in order.
    pub groups: Vec<Group>,
    /// Why it is paused, when it is.
    pub paused_reason: Option<String>,
    /// Devices whose clinical-use gate an admin overrode for this rollout.
    #[serde(default)]
    pub overrides: std::collections::BTreeSet<String>,
}

fn state_name(s: RolloutState) -> &'static str {
    match s {
        RolloutState::Creating => "creating",
        RolloutState::WaitingForApproval => "waiting_for_approval",
        RolloutState::ApprovalDenied => "approval_denied",
        RolloutState::Ready => "ready",
        RolloutState::Running => "running",
        RolloutState::Paused => "paused",
        RolloutState::Stopped => "stopped",
        RolloutState::Finished => "finished",
    }
}

fn selects(sel: &Selector, d: &DeviceInfo) -> bool {
    match sel {
        Selector::Devices { ids } => ids.contains(&d.id),
        Selector::Product { product } => d.product.as_deref() == Some(product),
        Selector::Hardware { hardware } => d.hardware == *hardware,
        Selector::Labels { labels } => labels.iter().all(|l| d.labels.contains(l)),
        Selector::Percent { .. } | Selector::Rest => true,
    }
}

impl Rollout {
    /// Creates a rollout over `targets` (the devices the release is for), assigning them to groups
    /// in order, each from the targets no earlier group took. It waits for approval if
    /// `approval_required`, else it is ready.
    pub fn new(
        id: u64,
        spec: RolloutSpec,
        created_by: &str,
        targets: &[DeviceInfo],
        approval_required: bool,
    ) -> Result<Self, RolloutError> {
        if spec.groups.is_empty() {
            return Err(RolloutError::Invalid(
                "a rollout needs at least one group".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for g in &spec.groups {
            if !names.insert(g.name.as_str()) {
                return Err(RolloutError::Invalid(format!(
                    "group name {:?} is used twice",
                    g.name
                )));
            }
            if g.success_percent.is_some_and(|p| p > 100) {
                return Err(RolloutError::Invalid(format!(
                    "group {:?}: success_percent is over 100",
                    g.name
                )));
            }
            if let Selector::Percent { percent } = g.select {
                if !(percent > 0.0 && percent <= 100.0) {
                    return Err(RolloutError::Invalid(format!(
                        "group {:?}: percent must be above 0 and at most 100",
                        g.name
                    )));
                }
            }
        }
        let mut remaining: Vec<&DeviceInfo> = targets.iter().collect();
        remaining.sort_by(|a, b| a.id.cmp(&b.id));
        remaining.dedup_by(|a, b| a.id == b.id);
        let mut groups = Vec::with_capacity(spec.groups.len());
        for g in &spec.groups {
            let take: Vec<String> = match g.select {
                Selector::Percent { percent } => {
                    let n = ((remaining.len() as f64) * percent / 100.0).ceil() as usize;
                    remaining.iter().take(n).map(|d| d.id.clone()).collect()
                }
                ref sel => remaining
                    .iter()
                    .filter(|d| selects(sel, d))
                    .map(|d| d.id.clone())
                    .collect(),
            };
            remaining.retain(|d| !take.contains(&d.id));
            groups.push(Group {
                spec: g.clone(),
                state: GroupState::Scheduled,
                devices: take
                    .into_iter()
                    .map(|id| (id, DeviceStatus::Scheduled))
                    .collect(),
            });
        }
        Ok(Self {
            id,
            spec,
            state: if approval_required {
                RolloutState::WaitingForApproval
            } else {
                RolloutState::Ready
            },
            created_by: created_by.into(),
            decision: None,
            groups,
            paused_reason: None,
            overrides: Default::default(),
        })
    }

    fn refuse(&self, action: &'static str) -> RolloutError {
        RolloutError::Transition {
            action,
            state: state_name(self.state),
        }
    }

    fn decide(&mut self, by: &str, approved: bool, remark: &str) -> Result<(), RolloutError> {
        let action = if approved { "approve" } else { "deny" };
        if self.state != RolloutState::WaitingForApproval {
            return Err(self.refuse(action));
        }
        if by == self.created_by {
            return Err(RolloutError::FourEyes { who: by.into() });
        }
        self.decision = Some(Decision {
            by: by.into(),
            approved,
            remark: remark.into(),
        });
        self.state = if approved {
            RolloutState::Ready
        } else {
            RolloutState::ApprovalDenied
        };
        Ok(())
    }

    /// Approves (by anyone but the creator).
    pub fn approve(&mut self, by: &str, remark: &str) -> Result<(), RolloutError> {
        self.decide(by, true, remark)
    }

    /// Denies (by anyone but the creator); the rollout becomes read-only.
    pub fn deny(&mut self, by: &str, remark: &str) -> Result<(), RolloutError> {
        self.decide(by, false, remark)
    }

    /// Starts a ready rollout: its first group runs.
    pub fn start(&mut self) -> Result<(), RolloutError> {
        if self.state != RolloutState::Ready {
            return Err(self.refuse("start"));
        }
        self.state = RolloutState::Running;
        self.advance();
        Ok(())
    }

    /// Holds it: devices that have not activated wait.
    pub fn pause(&mut self, reason: &str) -> Result<(), RolloutError> {
        if self.state != RolloutState::Running {
            return Err(self.refuse("pause"));
        }
        self.state = RolloutState::Paused;
        self.paused_reason = Some(reason.into());
        Ok(())
    }

    /// Goes on after a pause, a QA hold or an error pause (which accepts the errored group).
    pub fn resume(&mut self) -> Result<(), RolloutError> {
        if self.state != RolloutState::Paused {
            return Err(self.refuse("resume"));
        }
        self.state = RolloutState::Running;
        self.paused_reason = None;
        self.advance();
        Ok(())
    }

    /// Stops it: every device that has not ended is canceled.
    pub fn stop(&mut self) -> Result<(), RolloutError> {
        if !matches!(
            self.state,
            RolloutState::Ready | RolloutState::Running | RolloutState::Paused
        ) {
            return Err(self.refuse("stop"));
        }
        self.state = RolloutState::Stopped;
        for g in &mut self.groups {
            for s in g.devices.values_mut() {
                if !s.is_final() {
                    *s = DeviceStatus::Canceled;
                }
            }
        }
        Ok(())
    }

    /// Overrides `device`'s clinical-use gate for this rollout (an admin's act, audited by the
    /// caller): it installs and reboots without asking its gate. Only for a targeted device that
    /// has not ended, in a rollout that has not ended.
    pub fn override_gate(&mut self, device: &str) -> Result<(), RolloutError> {
        if !matches!(
            self.state,
            RolloutState::Ready | RolloutState::Running | RolloutState::Paused
        ) {
            return Err(self.refuse("override"));
        }
        match self.group_of(device).map(|g| g.devices[device]) {
            None => Err(RolloutError::Invalid(format!(
                "device {device:?} is not a target of rollout {}",
                self.id
            ))),
            Some(s) if s.is_final() => Err(RolloutError::Invalid(format!(
                "device {device:?} has ended in rollout {} ({})",
                self.id,
                s.as_str()
            ))),
            Some(_) => {
                self.overrides.insert(device.into());
                Ok(())
            }
        }
    }

    /// The group a device is in, if targeted.
    pub fn group_of(&self, device: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.devices.contains_key(device))
    }

    /// Whether `device` may install now, as far as the rollout goes (its window and gate are the
    /// device's to judge): the rollout runs, its group runs, it has not ended, and the action type
    /// installs. A paused rollout lets an activated device go on.
    pub fn may_install(&self, device: &str) -> bool {
        let Some(g) = self.group_of(device) else {
            return false;
        };
        let status = g.devices[device];
        // A group that has started stays open to its devices that have not ended: one that reached
        // its success threshold, or an error the operator accepted by resuming, lets its
        // stragglers go on.
        let running = match self.state {
            RolloutState::Running => g.state != GroupState::Scheduled,
            RolloutState::Paused => status.is_activated(),
            _ => false,
        };
        running && !status.is_final() && self.spec.action != super::model::ActionType::DownloadOnly
    }

    /// Whether `device` may fetch the artifact: its rollout has started and not ended for it.
    pub fn may_fetch(&self, device: &str) -> bool {
        matches!(self.state, RolloutState::Running | RolloutState::Paused)
            && self
                .group_of(device)
                .is_some_and(|g| !g.devices[device].is_final())
    }

    /// A device reported `status`. Reports from devices not in the rollout, repeats of its current
    /// status, and reports that would take an ended device back are ignored (`false`); otherwise
    /// the thresholds are evaluated.
    pub fn report(&mut self, device: &str, status: DeviceStatus) -> bool {
        let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| g.devices.contains_key(device))
        else {
            return false;
        };
        let cur = g.devices[device];
        // A download-only rollout is done for a device once its bytes are staged (as in hawkBit);
        // a later rollout of the same release installs them.
        let status = match (self.spec.action, status) {
            (super::model::ActionType::DownloadOnly, DeviceStatus::Downloaded) => {
                DeviceStatus::Finished
            }
            _ => status,
        };
        // Reports repeat every few seconds: only a change is news (and worth a database write).
        if cur.is_final() || status == DeviceStatus::Scheduled || status == cur {
            return false;
        }
        g.devices.insert(device.into(), status);
        if self.state == RolloutState::Running {
            self.advance();
        }
        true
    }

    /// Evaluates the running group; starts the next one while groups succeed.
    fn advance(&mut self) {
        let default_error = self.spec.error;
        loop {
            let Some(i) = self
                .groups
                .iter()
                .position(|g| matches!(g.state, GroupState::Scheduled | GroupState::Running))
            else {
                // Every group has ended; the rollout has once its last straggler has too.
                let all_ended = self
                    .groups
                    .iter()
                    .all(|g| g.devices.values().all(|s| s.is_final()));
                if all_ended {
                    self.state = RolloutState::Finished;
                }
                return;
            };
            // A group in error before this one was accepted by the operator's resume.
            let last = i + 1 == self.groups.len();
            let g = &mut self.groups[i];
            if g.state == GroupState::Scheduled {
                g.state = GroupState::Running;
            }
            let total = g.devices.len();
            let finished = g.count(DeviceStatus::Finished);
            let errors = g.count(DeviceStatus::Error);
            let ended = g.devices.values().filter(|s| s.is_final()).count();
            let err = g.spec.error.unwrap_or(default_error);
            let by_percent = err
                .percent
                .is_some_and(|p| total > 0 && errors * 100 >= usize::from(p) * total);
            let by_count = err.count.is_some_and(|c| errors >= c as usize);
            if errors > 0 && ended >= err.min_sample as usize && (by_percent || by_count) {
                g.state = GroupState::Error;
                self.state = RolloutState::Paused;
                self.paused_reason = Some(format!(
                    "group {} reached its error threshold: {errors} of {total} devices failed",
                    g.spec.name
                ));
                return;
            }
            let need = usize::from(g.spec.success_percent.unwrap_or(100));
            if finished * 100 >= need * total {
                g.state = GroupState::Finished;
                if g.spec.success_action == SuccessAction::Pause && !last {
                    let name = g.spec.name.clone();
                    self.state = RolloutState::Paused;
                    self.paused_reason = Some(format!("QA hold after group {name}"));
                    return;
                }
                continue;
            }
            if ended == total {
                g.state = GroupState::Error;
                self.state = RolloutState::Paused;
                self.paused_reason = Some(format!(
                    "group {} ended below its success threshold: {finished} of {total} finished",
                    g.spec.name
                ));
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::model::{ActionType, ErrorCondition};

    fn devices(n: usize) -> Vec<DeviceInfo> {
        (0..n)
            .map(|i| DeviceInfo {
                id: format!("pump-{i:02}"),
                product: Some("infusion-pump".into()),
                hardware: if i % 2 == 0 { "rev-c" } else { "rev-d" }.into(),
                labels: if i < 3 { vec!["icu-3".into()] } else { vec![] },
            })
            .collect()
    }

    fn group(name: &str, select: Selector) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            select,
            success_percent: None,
            success_action: SuccessAction::NextGroup,
            error: None,
        }
    }

    fn spec(groups: Vec<GroupSpec>) -> RolloutSpec {
        RolloutSpec {
            name: "4.2.1 to the ward".into(),
            release: "4.2.1".into(),
            action: ActionType::Forced,
            groups,
            error: ErrorCondition::default(),
            window: None,
        }
    }

    fn canary() -> RolloutSpec {
        spec(vec![
            group(
                "canary",
                Selector::Devices {
                    ids: vec!["pump-05".into()],
                },
            ),
            group("quarter", Selector::Percent { percent: 25.0 }),
            group("rest", Selector::Rest),
        ])
    }

    fn finish(r: &mut Rollout, group: usize) {
        let ids: Vec<String> = r.groups[group].devices.keys().cloned().collect();
        for id in ids {
            r.report(&id, DeviceStatus::Downloading);
            r.report(&id, DeviceStatus::Finished);
        }
    }

    #[test]
    fn groups_take_their_devices_in_order_from_what_is_left() {
        let r = Rollout::new(1, canary(), "op", &devices(13), false).expect("valid");
        let sizes: Vec<usize> = r.groups.iter().map(|g| g.devices.len()).collect();
        // 1 canary; 25 % of the 12 left is 3; the 9 after that.
        assert_eq!(sizes, vec![1, 3, 9]);
        assert!(r.groups[0].devices.contains_key("pump-05"));
        assert!(!r.groups[1].devices.contains_key("pump-05"));
        let by_label = spec(vec![
            group(
                "icu",
                Selector::Labels {
                    labels: vec!["icu-3".into()],
                },
            ),
            group(
                "rev-d",
                Selector::Hardware {
                    hardware: "rev-d".into(),
                },
            ),
        ]);
        let r = Rollout::new(2, by_label, "op", &devices(6), false).expect("valid");
        assert_eq!(r.groups[0].devices.len(), 3, "pump-00..02");
        assert_eq!(
            r.groups[1].devices.keys().cloned().collect::<Vec<_>>(),
            vec!["pump-03".to_string(), "pump-05".to_string()],
            "rev-d, minus what the first group took"
        );
        assert_eq!(r.state, RolloutState::Ready);
    }

    #[test]
    fn four_eyes_and_every_transition() {
        let mut r = Rollout::new(1, canary(), "alice", &devices(8), true).expect("valid");
        assert_eq!(r.state, RolloutState::WaitingForApproval);
        assert!(matches!(r.start(), Err(RolloutError::Transition { .. })));
        assert!(matches!(
            r.approve("alice", "mine"),
            Err(RolloutError::FourEyes { .. })
        ));
        r.approve("bob", "looks right").expect("approve");
        assert_eq!(r.state, RolloutState::Ready);
        assert!(r.approve("carol", "").is_err(), "decided once");
        assert!(!r.may_fetch("pump-05"), "not started");
        r.start().expect("start");
        assert_eq!(r.state, RolloutState::Running);
        assert_eq!(r.groups[0].state, GroupState::Running);
        assert!(r.may_install("pump-05"));
        assert!(!r.may_install("pump-00"), "its group has not started");
        assert!(
            r.may_fetch("pump-00"),
            "every target fetches once its rollout runs"
        );
        r.pause("handover").expect("pause");
        assert!(!r.may_install("pump-05"), "held");
        assert!(r.pause("again").is_err());
        r.resume().expect("resume");
        finish(&mut r, 0);
        assert_eq!(r.groups[0].state, GroupState::Finished);
        assert_eq!(r.groups[1].state, GroupState::Running);
        finish(&mut r, 1);
        finish(&mut r, 2);
        assert_eq!(r.state, RolloutState::Finished);
        assert!(r.stop().is_err(), "finished");

        let mut d = Rollout::new(2, canary(), "alice", &devices(8), true).expect("valid");
        d.deny("bob", "wrong release").expect("deny");
        assert_eq!(d.state, RolloutState::ApprovalDenied);
        assert!(d.start().is_err() && d.approve("carol", "").is_err());

        let mut s = Rollout::new(3, canary(), "alice", &devices(8), false).expect("valid");
        s.start().expect("start");
        s.report("pump-05", DeviceStatus::Downloading);
        s.stop().expect("stop");
        assert_eq!(s.state, RolloutState::Stopped);
        assert!(s
            .groups
            .iter()
            .flat_map(|g| g.devices.values())
            .all(|st| *st == DeviceStatus::Canceled));
        assert!(!s.may_fetch("pump-05"));
    }

    #[test]
    fn the_error_threshold_pauses_and_resume_accepts_the_group() {
        let mut sp = spec(vec![
            group("first", Selector::Percent { percent: 50.0 }),
            group("rest", Selector::Rest),
        ]);
        sp.error = ErrorCondition {
            percent: Some(50),
            count: None,
            min_sample: 2,
        };
        let mut r = Rollout::new(1, sp, "op", &devices(8), false).expect("valid");
        r.start().expect("start");
        let first: Vec<String> = r.groups[0].devices.keys().cloned().collect();
        r.report(&first[0], DeviceStatus::Error);
        assert_eq!(r.state, RolloutState::Running, "below the minimum sample");
        r.report(&first[1], DeviceStatus::Error);
        assert_eq!(r.state, RolloutState::Paused);
        assert_eq!(r.groups[0].state, GroupState::Error);
        assert!(r
            .paused_reason
            .as_deref()
            .is_some_and(|p| p.contains("2 of 4")));
        assert!(!r.may_install(&first[2]), "held while paused");
        r.report(&first[2], DeviceStatus::Installing);
        assert!(
            !r.may_install(&first[2]),
            "writing its slot is not activated: held before the reboot"
        );
        // A device already rebooting finishes what it started.
        r.report(&first[3], DeviceStatus::Rebooting);
        assert!(
            r.may_install(&first[3]),
            "an activated device goes on while paused"
        );
        r.resume().expect("resume");
        assert_eq!(
            r.groups[1].state,
            GroupState::Running,
            "the operator accepted group one"
        );
        assert_eq!(r.groups[0].state, GroupState::Error);
        // The accepted group's stragglers go on, and the rollout finishes only once they end.
        assert!(
            r.may_install(&first[2]),
            "a straggler of the accepted group"
        );
        let rest: Vec<String> = r.groups[1].devices.keys().cloned().collect();
        for d in &rest {
            r.report(d, DeviceStatus::Finished);
        }
        assert_eq!(r.groups[1].state, GroupState::Finished);
        assert_eq!(
            r.state,
            RolloutState::Running,
            "two stragglers have not ended"
        );
        r.report(&first[2], DeviceStatus::Finished);
        r.report(&first[3], DeviceStatus::Finished);
        assert_eq!(r.state, RolloutState::Finished);
    }

    #[test]
    fn gated_is_never_an_error_and_a_qa_hold_pauses_between_groups() {
        let mut sp = spec(vec![
            GroupSpec {
                success_action: SuccessAction::Pause,
                ..group(
                    "canary",
                    Selector::Devices {
                        ids: vec!["pump-00".into()],
                    },
                )
            },
            group("rest", Selector::Rest),
        ]);
        sp.error = ErrorCondition {
            percent: Some(1),
            count: Some(1),
            min_sample: 1,
        };
        let mut r = Rollout::new(1, sp, "op", &devices(4), false).expect("valid");
        r.start().expect("start");
        assert!(r.report("pump-00", DeviceStatus::Gated));
        assert!(
            !r.report("pump-00", DeviceStatus::Gated),
            "a repeated report changes nothing"
        );
        assert_eq!(r.state, RolloutState::Running, "gated is no error");
        r.report("pump-00", DeviceStatus::Finished);
        assert_eq!(r.state, RolloutState::Paused);
        assert!(r
            .paused_reason
            .as_deref()
            .is_some_and(|p| p.contains("QA hold")));
        assert_eq!(r.groups[1].state, GroupState::Scheduled);
        r.resume().expect("resume");
        assert_eq!(r.groups[1].state, GroupState::Running);
        assert!(
            !r.report("pump-00", DeviceStatus::Downloading),
            "ended devices stay ended"
        );
        assert!(!r.report("nobody", DeviceStatus::Finished));
        let counts = r.groups[1].statuses();
        assert_eq!(counts["scheduled"], 3);
        assert_eq!(counts["gated"], 0);
    }

    #[test]
    fn a_group_that_ends_below_its_success_threshold_pauses() {
        let mut sp = spec(vec![group("all", Selector::Rest)]);
        sp.error = ErrorCondition {
            percent: Some(90),
            count: None,
            min_sample: 1,
        };
        let mut r = Rollout::new(1, sp, "op", &devices(4), false).expect("valid");
        r.start().expect("start");
        for (i, id) in ["pump-00", "pump-01", "pump-02", "pump-03"]
            .iter()
            .enumerate()
        {
            let s = if i == 0 {
                DeviceStatus::Error
            } else {
                DeviceStatus::Finished
            };
            r.report(id, s);
        }
        assert_eq!(r.state, RolloutState::Paused);
        assert_eq!(r.groups[0].state, GroupState::Error);
        let dl = RolloutSpec {
            action: ActionType::DownloadOnly,
            ..spec(vec![group("all", Selector::Rest)])
        };
        let mut r = Rollout::new(2, dl, "op", &devices(2), false).expect("valid");
        r.start().expect("start");
        assert!(r.may_fetch("pump-00") && !r.may_install("pump-00"));
    }

    #[test]
    fn bad_specs_are_refused() {
        let dup = spec(vec![group("a", Selector::Rest), group("a", Selector::Rest)]);
        assert!(Rollout::new(1, dup, "op", &devices(2), false).is_err());
        let none = spec(vec![]);
        assert!(Rollout::new(1, none, "op", &devices(2), false).is_err());
        let pct = spec(vec![group("a", Selector::Percent { percent: 0.0 })]);
        assert!(Rollout::new(1, pct, "op", &devices(2), false).is_err());
    }

    #[test]
    fn specs_read_the_documented_json() {
        let json = r#"{"name":"canary first","release":"4.2.1","action":"soft",
            "groups":[{"name":"canary","select":{"by":"devices","ids":["pump-05"]},"success_action":"pause"},
                      {"name":"icu","select":{"by":"labels","labels":["icu-3"]},"success_percent":90,
                       "error":{"percent":10,"min_sample":3}},
                      {"name":"rest","select":{"by":"rest"}}],
            "window":{"schedule":"0 22 * * *","duration":"6h","timezone":"Europe/Berlin"}}"#;
        let s: RolloutSpec = serde_json::from_str(json).expect("spec");
        assert_eq!(s.action, ActionType::Soft);
        assert_eq!(s.groups[1].success_percent, Some(90));
        assert!(s.window.is_some());
        let r = Rollout::new(1, s, "op", &devices(6), false).expect("valid");
        let back: Rollout =
            serde_json::from_str(&serde_json::to_string(&r).expect("encode")).expect("decode");
        assert_eq!(back, r, "a rollout survives its database round trip");
    }
}
