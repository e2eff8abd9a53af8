//! The device's update state machine: a pure core. It takes [`Input`]s and returns [`Action`]s; the
//! agent ([`super::runtime`]) persists the new [`State`] *before* it performs the actions, performs them
//! (swarm fetch, slot writes, boot switch, health check) and feeds their results back in.
//!
//! ```text
//! idle ─offer→ fetching ─fetched→ installing ─installed→ activating ─activated→ trying ─(reboot)→
//!   booted the new slot → checking ─healthy→ committing ─committed→ idle (floor raised)
//!                                  └unhealthy→ rolling_back ─rolled_back→ (reboot) → idle
//!   booted the old slot (bootloader fell back) → idle, rolled back
//! ```
//!
//! Crash safety follows from two rules. The committed slot is never written, so any kill leaves a
//! bootable committed slot. And every phase can be re-entered after a restart: [`Input::Booted`]
//! re-issues the action of the phase the device died in (resume the fetch, rewrite the inactive slot,
//! set the try-boot again, commit again, roll back again); all of them are idempotent. The
//! anti-rollback floor rises only when the commit is done.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::slots::{BootState, SlotId};
use crate::{
    hash::Hash,
    manifest::{Compression, Kind},
};

pub use super::status::{DeviceState, UpdateResult};

/// A release the device accepted (signatures, expiry, hardware, counter all checked) and plans to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The release's id ([`crate::manifest::SignedManifest::release_id`]): the hash of the signed
    /// body, which a relay cannot change by dropping or reordering signatures.
    pub manifest: Hash,
    /// Release version.
    pub version: String,
    /// Release counter.
    pub counter: u64,
    /// The artifact to fetch (bao root).
    pub artifact: Hash,
    /// Its signed length.
    pub artifact_length: u64,
    /// `full` or `delta`.
    pub kind: Kind,
    /// `zstd` or `none`.
    pub compression: Compression,
    /// For a delta: the BLAKE3 of the image it applies to (the committed image).
    #[serde(default)]
    pub base: Option<Hash>,
    /// The image's BLAKE3.
    pub target: Hash,
    /// The image's length.
    pub target_length: u64,
    /// For a delta: the release's full image, fetched and installed instead if the delta does not
    /// install (a format newer than this agent, a committed slot changed since it was written). The
    /// same signed release and image hash; only the bytes that carry it differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FullImage>,
}

/// A release's full-image artifact, named in a delta's [`Offer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullImage {
    /// Its bao root.
    pub artifact: Hash,
    /// Its signed length.
    pub artifact_length: u64,
    /// `zstd` or `none`.
    pub compression: Compression,
}

impl Offer {
    /// The offer of the full image instead of this delta, if the release has one.
    pub fn full_instead(&self) -> Option<Offer> {
        let f = self
            .fallback
            .as_ref()
            .filter(|_| self.kind == Kind::Delta)?;
        Some(Offer {
            artifact: f.artifact,
            artifact_length: f.artifact_length,
            kind: Kind::Full,
            compression: f.compression,
            base: None,
            fallback: None,
            ..self.clone()
        })
    }
}

/// The committed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Release version (`factory` for the provisioned image).
    pub version: String,
    /// Release counter (the anti-rollback floor).
    pub counter: u64,
    /// BLAKE3 of the image (the base a delta must start from).
    pub image: Hash,
    /// Image length.
    pub length: u64,
    /// The slot it lives in.
    pub slot: SlotId,
}

/// Where the device is in an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Running the committed slot; nothing pending.
    Idle,
    /// Fetching the artifact from the ward swarm.
    Fetching { offer: Offer },
    /// Writing the image into the inactive slot and verifying it.
    Installing { offer: Offer, slot: SlotId },
    /// Image verified; setting the slot to boot once.
    Activating { offer: Offer, slot: SlotId },
    /// The slot boots once at the next reboot.
    Trying { offer: Offer, slot: SlotId },
    /// Booted the new slot; health check running.
    Checking { offer: Offer, slot: SlotId },
    /// Healthy; making the new slot the committed one.
    Committing { offer: Offer, slot: SlotId },
    /// Unhealthy; cancelling the try-boot, then rebooting into the committed slot.
    RollingBack {
        offer: Offer,
        slot: SlotId,
        reason: String,
    },
}

impl Phase {
    /// The state this phase reports.
    pub fn state(&self) -> DeviceState {
        match self {
            Self::Idle => DeviceState::Idle,
            Self::Fetching { .. } => DeviceState::Fetching,
            Self::Installing { .. } => DeviceState::Installing,
            Self::Activating { .. } => DeviceState::Activating,
            Self::Trying { .. } => DeviceState::Rebooting,
            Self::Checking { .. } => DeviceState::HealthCheck,
            Self::Committing { .. } => DeviceState::Committing,
            Self::RollingBack { .. } => DeviceState::RollingBack,
        }
    }
    /// The offer in progress, if any.
    pub fn offer(&self) -> Option<&Offer> {
        match self {
            Self::Idle => None,
            Self::Fetching { offer }
            | Self::Installing { offer, .. }
            | Self::Activating { offer, .. }
            | Self::Trying { offer, .. }
            | Self::Checking { offer, .. }
            | Self::Committing { offer, .. }
            | Self::RollingBack { offer, .. } => Some(offer),
        }
    }
}

/// How the last update attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How it ended.
    pub result: UpdateResult,
    /// The release.
    pub version: String,
    /// Why, for anything but `committed`.
    pub reason: Option<String>,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The committed image.
    pub installed: Installed,
    /// The current phase.
    pub phase: Phase,
    /// The last attempt's outcome.
    pub last: Option<Outcome>,
    /// Manifests that failed on this device (health check, boot); not retried.
    pub failed: BTreeSet<Hash>,
    /// Try-boots of the current offer so far (bootloader semantics: at most [`MAX_TRY_BOOTS`]).
    #[serde(default)]
    pub try_boots: u32,
}

/// Try-boots of one release before it counts as not booting: a power cut during the health check
/// (or a watchdog reset) makes the bootloader fall back once, and must not blacklist a good image.
/// Three is RAUC's and U-Boot's usual boot-attempt limit.
pub const MAX_TRY_BOOTS: u32 = 3;

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The device (re)booted; the bootloader chose `boot`.
    Booted(BootState),
    /// A verified release for this device (the agent already checked policy).
    Offered(Offer),
    /// The artifact (by root) is complete and verified in the store.
    Fetched(Hash),
    /// Fetching an artifact failed for a local reason.
    FetchFailed(Hash, String),
    /// The image was written to the slot, read back, and its BLAKE3 matched the manifest.
    Installed,
    /// Writing or verifying the image failed because of the release (it does not decode to the
    /// signed image, or it is a delta from another base): not retried.
    InstallFailed(String),
    /// Writing the image failed because of this device (a full disk, an I/O error): tried again
    /// later, the artifact kept.
    InstallFailedLocal(String),
    /// The try-boot is set.
    Activated,
    /// The health check passed.
    Healthy,
    /// The health check failed or timed out.
    Unhealthy(String),
    /// The commit is done.
    Committed,
    /// The try-boot is cancelled.
    RolledBack,
    /// A boot-switch command failed.
    BootFailed(String),
    /// The rollout that directed this update ended for the device before it activated (stopped, or
    /// another release directed): back to idle, the release not held against, the bytes kept.
    Canceled(String),
}

/// What the agent must do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch the artifact from the swarm (resumes what the store has).
    Fetch(Offer),
    /// Write the image into `slot` and verify it.
    Install(Offer, SlotId),
    /// Set `slot` to boot once.
    Activate(SlotId),
    /// Reboot (the file backend restarts the agent).
    Reboot,
    /// Run the health check.
    HealthCheck,
    /// Make `slot` the committed one.
    Commit(SlotId),
    /// Cancel the try-boot.
    Rollback,
    /// Drop a fetched artifact that will not be installed, to free space.
    Release(Hash),
    /// A local fault stopped the attempt: offer the release again after a back-off.
    RetryLater,
}

/// A transition, for the audit log and the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// State before.
    pub from: DeviceState,
    /// State after.
    pub to: DeviceState,
    /// What caused it.
    pub event: String,
    /// The release involved.
    pub version: Option<String>,
    /// Details (errors, slots).
    pub detail: Option<String>,
    /// How the attempt ended, when this transition ends one.
    pub result: Option<UpdateResult>,
}

impl State {
    /// A device fresh from provisioning: `installed` committed, nothing pending.
    pub fn new(installed: Installed) -> Self {
        Self {
            installed,
            phase: Phase::Idle,
            last: None,
            failed: BTreeSet::new(),
            try_boots: 0,
        }
    }

    /// Whether an offer would be taken now.
    pub fn wants(&self, offer: &Offer) -> bool {
        if offer.counter <= self.installed.counter || self.failed.contains(&offer.manifest) {
            return false;
        }
        match &self.phase {
            Phase::Idle => true,
            // A newer release supersedes one still being fetched; nothing later is interrupted.
            Phase::Fetching { offer: cur } => offer.counter > cur.counter,
            _ => false,
        }
    }

    fn end(&mut self, offer: &Offer, result: UpdateResult, reason: Option<String>) {
        self.try_boots = 0;
        if result != UpdateResult::Committed {
            self.failed.insert(offer.manifest);
        }
        self.last = Some(Outcome {
            result,
            version: offer.version.clone(),
            reason,
        });
        self.phase = Phase::Idle;
    }

    /// Applies one input. Returns the actions to perform (after persisting `self`) and the transition,
    /// or `None` when the input does not apply to the current phase (it is then ignored).
    pub fn step(&mut self, input: Input) -> Option<(Vec<Action>, Transition)> {
        let from = self.phase.state();
        let version = self.phase.offer().map(|o| o.version.clone());
        let inactive = self.installed.slot.other();
        let mut detail = None;
        let event = match &input {
            Input::Booted(b) => format!("booted slot {} (committed {})", b.booted, b.committed),
            Input::Offered(o) => format!("offered {} (counter {})", o.version, o.counter),
            Input::Fetched(_) => "fetched".into(),
            Input::FetchFailed(..) => "fetch failed".into(),
            Input::Installed => "image written and verified".into(),
            Input::InstallFailed(_) => "install failed".into(),
            Input::InstallFailedLocal(_) => "install failed here (local fault)".into(),
            Input::Activated => "try-boot set".into(),
            Input::Healthy => "health check passed".into(),
            Input::Unhealthy(_) => "health check failed".into(),
            Input::Committed => "committed".into(),
            Input::RolledBack => "rolled back".into(),
            Input::BootFailed(_) => "boot switch failed".into(),
            Input::Canceled(_) => "canceled by the rollout".into(),
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        let actions = match (phase, input) {
            (Phase::Idle, Input::Booted(b)) => {
                if b.booted != b.committed || b.committed != self.installed.slot {
                    // Running something other than what we committed (e.g. a try-boot set by hand):
                    // cancel it and return to the committed slot.
                    detail = Some(format!(
                        "unexpected boot: running {}, committed {}, agent committed {}",
                        b.booted, b.committed, self.installed.slot
                    ));
                    vec![Action::Rollback, Action::Reboot]
                } else {
                    vec![]
                }
            }
            (Phase::Idle, Input::Offered(o)) => {
                if !self.wants(&o) {
                    return None;
                }
                self.phase = Phase::Fetching { offer: o.clone() };
                vec![Action::Fetch(o)]
            }
            (Phase::Fetching { offer }, Input::Offered(o)) => {
                if !(o.counter > offer.counter && self.wants(&o)) {
                    self.phase = Phase::Fetching { offer };
                    return None;
                }
                detail = Some(format!("supersedes {}", offer.version));
                self.phase = Phase::Fetching { offer: o.clone() };
                vec![Action::Release(offer.artifact), Action::Fetch(o)]
            }
            (Phase::Fetching { offer }, Input::Booted(_)) => {
                self.phase = Phase::Fetching {
                    offer: offer.clone(),
                };
                vec![Action::Fetch(offer)]
            }
            // A result for an artifact this phase no longer wants (superseded) is ignored.
            (Phase::Fetching { offer }, Input::Fetched(root) | Input::FetchFailed(root, _))
                if root != offer.artifact =>
            {
                self.phase = Phase::Fetching { offer };
                return None;
            }
            (Phase::Fetching { offer }, Input::Fetched(_)) => {
                self.phase = Phase::Installing {
                    offer: offer.clone(),
                    slot: inactive,
                };
                vec![Action::Install(offer, inactive)]
            }
            (Phase::Fetching { offer }, Input::FetchFailed(_, e)) => {
                detail = Some(e.clone());
                // A local fault (disk): give up this attempt but do not blacklist the release.
                self.last = Some(Outcome {
                    result: UpdateResult::Failed,
                    version: offer.version.clone(),
                    reason: Some(e),
                });
                vec![Action::RetryLater]
            }
            (
                Phase::Fetching { offer }
                | Phase::Installing { offer, .. }
                | Phase::Activating { offer, .. },
                Input::Canceled(why),
            ) => {
                detail = Some(why.clone());
                self.try_boots = 0;
                self.last = Some(Outcome {
                    result: UpdateResult::Canceled,
                    version: offer.version.clone(),
                    reason: Some(why),
                });
                vec![]
            }
            (Phase::Installing { offer, slot }, Input::Booted(_)) => {
                // Killed mid-write: the inactive slot is garbage, never activated; write it again.
                self.phase = Phase::Installing {
                    offer: offer.clone(),
                    slot,
                };
                vec![Action::Install(offer, slot)]
            }
            (Phase::Installing { offer, slot }, Input::Installed) => {
                self.phase = Phase::Activating {
                    offer: offer.clone(),
                    slot,
                };
                // The artifact stays in the store: this device keeps seeding it to the ward.
                vec![Action::Activate(slot)]
            }
            (Phase::Installing { offer, .. }, Input::InstallFailed(e)) => {
                if let Some(full) = offer.full_instead() {
                    // The delta does not install here, the release may still: its full image is
                    // checked against the same signed image hash. Not held against the release.
                    detail = Some(format!(
                        "the delta did not install ({e}): fetching the full image"
                    ));
                    self.phase = Phase::Fetching {
                        offer: full.clone(),
                    };
                    vec![Action::Release(offer.artifact), Action::Fetch(full)]
                } else {
                    detail = Some(e.clone());
                    self.end(&offer, UpdateResult::Failed, Some(e));
                    vec![Action::Release(offer.artifact)]
                }
            }
            (Phase::Installing { offer, .. }, Input::InstallFailedLocal(e)) => {
                // Not the release's fault: no blacklist; the fetched artifact stays for the retry.
                detail = Some(e.clone());
                self.try_boots = 0;
                self.last = Some(Outcome {
                    result: UpdateResult::Failed,
                    version: offer.version.clone(),
                    reason: Some(e),
                });
                vec![Action::RetryLater]
            }
            (Phase::Activating { offer, slot }, Input::Booted(_)) => {
                self.phase = Phase::Activating { offer, slot };
                vec![Action::Activate(slot)]
            }
            (Phase::Activating { offer, slot }, Input::Activated) => {
                self.try_boots = self.try_boots.saturating_add(1);
                self.phase = Phase::Trying { offer, slot };
                vec![Action::Reboot]
            }
            (
                Phase::Activating { offer, slot }
                | Phase::Trying { offer, slot }
                | Phase::Checking { offer, slot },
                Input::BootFailed(e),
            ) => {
                detail = Some(e.clone());
                self.phase = Phase::RollingBack {
                    offer,
                    slot,
                    reason: e,
                };
                vec![Action::Rollback]
            }
            (Phase::Trying { offer, slot } | Phase::Checking { offer, slot }, Input::Booted(b)) => {
                if b.booted == slot {
                    self.phase = Phase::Checking { offer, slot };
                    vec![Action::HealthCheck]
                } else if self.try_boots < MAX_TRY_BOOTS {
                    // The bootloader fell back before a verdict (a power cut during the check, a
                    // watchdog reset): the image in the slot is still the verified one; try again.
                    detail = Some(format!(
                        "slot {slot} did not reach a verdict (try-boot {} of {MAX_TRY_BOOTS}); the bootloader fell back to slot {}: trying again",
                        self.try_boots, b.booted
                    ));
                    self.phase = Phase::Activating { offer, slot };
                    vec![Action::Activate(slot)]
                } else {
                    let reason = format!(
                        "slot {slot} did not boot to a health verdict in {MAX_TRY_BOOTS} try-boots; the bootloader fell back to slot {}",
                        b.booted
                    );
                    detail = Some(reason.clone());
                    self.end(&offer, UpdateResult::RolledBack, Some(reason));
                    vec![Action::Rollback]
                }
            }
            (Phase::Checking { offer, slot }, Input::Healthy) => {
                self.phase = Phase::Committing { offer, slot };
                vec![Action::Commit(slot)]
            }
            (Phase::Checking { offer, slot }, Input::Unhealthy(e)) => {
                detail = Some(e.clone());
                self.phase = Phase::RollingBack {
                    offer,
                    slot,
                    reason: e,
                };
                vec![Action::Rollback]
            }
            (Phase::Committing { offer, slot }, Input::Booted(_)) => {
                self.phase = Phase::Committing { offer, slot };
                vec![Action::Commit(slot)]
            }
            (Phase::Committing { offer, slot }, Input::Committed) => {
                self.installed = Installed {
                    version: offer.version.clone(),
                    counter: offer.counter,
                    image: offer.target,
                    length: offer.target_length,
                    slot,
                };
                self.end(&offer, UpdateResult::Committed, None);
                vec![]
            }
            (
                Phase::RollingBack {
                    offer,
                    slot,
                    reason,
                },
                Input::Booted(b),
            ) => {
                if b.booted == slot {
                    self.phase = Phase::RollingBack {
                        offer,
                        slot,
                        reason,
                    };
                    vec![Action::Rollback]
                } else {
                    // The reboot after the rollback happened: we run the committed slot.
                    self.end(&offer, UpdateResult::RolledBack, Some(reason));
                    vec![]
                }
            }
            (
                Phase::RollingBack {
                    offer,
                    slot,
                    reason,
                },
                Input::RolledBack,
            ) => {
                self.phase = Phase::RollingBack {
                    offer,
                    slot,
                    reason,
                };
                vec![Action::Reboot]
            }
            (
                Phase::RollingBack {
                    offer,
                    slot,
                    reason,
                },
                Input::BootFailed(e),
            ) => {
                detail = Some(e);
                self.phase = Phase::RollingBack {
                    offer,
                    slot,
                    reason,
                };
                vec![Action::Reboot]
            }
            (phase, _) => {
                self.phase = phase;
                return None;
            }
        };
        let version = self.phase.offer().map(|o| o.version.clone()).or(version);
        let ended = matches!(self.phase, Phase::Idle) && from != DeviceState::Idle;
        Some((
            actions,
            Transition {
                from,
                to: self.phase.state(),
                event,
                version,
                detail,
                result: if ended {
                    self.last.as_ref().map(|l| l.result)
                } else {
                    None
                },
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(counter: u64) -> Offer {
        Offer {
            manifest: Hash::of(&counter.to_le_bytes()),
            version: format!("{counter}.0"),
            counter,
            artifact: Hash::of(b"artifact"),
            artifact_length: 10,
            kind: Kind::Full,
            compression: Compression::Zstd,
            base: None,
            target: Hash::of(b"image"),
            target_length: 5,
            fallback: None,
        }
    }

    /// A delta of `offer(counter)`'s release from the factory image, naming its full image.
    fn delta_offer(counter: u64) -> Offer {
        Offer {
            artifact: Hash::of(b"delta"),
            artifact_length: 4,
            kind: Kind::Delta,
            compression: Compression::None,
            base: Some(Hash::of(b"factory")),
            fallback: Some(FullImage {
                artifact: Hash::of(b"artifact"),
                artifact_length: 10,
                compression: Compression::Zstd,
            }),
            ..offer(counter)
        }
    }

    fn fresh() -> State {
        State::new(Installed {
            version: "factory".into(),
            counter: 1,
            image: Hash::of(b"factory"),
            length: 7,
            slot: SlotId::A,
        })
    }

    fn boot(booted: SlotId, committed: SlotId) -> Input {
        Input::Booted(BootState { booted, committed })
    }

    fn actions(s: &mut State, i: Input) -> Vec<Action> {
        s.step(i).map(|(a, _)| a).unwrap_or_default()
    }

    #[test]
    fn the_happy_path_commits_and_raises_the_floor_last() {
        let mut s = fresh();
        let o = offer(2);
        assert_eq!(
            actions(&mut s, Input::Offered(o.clone())),
            [Action::Fetch(o.clone())]
        );
        assert_eq!(
            actions(&mut s, Input::Fetched(Hash::of(b"artifact"))),
            [Action::Install(o.clone(), SlotId::B)]
        );
        assert_eq!(
            actions(&mut s, Input::Installed),
            [Action::Activate(SlotId::B)]
        );
        assert_eq!(actions(&mut s, Input::Activated), [Action::Reboot]);
        assert_eq!(
            actions(&mut s, boot(SlotId::B, SlotId::A)),
            [Action::HealthCheck]
        );
        assert_eq!(actions(&mut s, Input::Healthy), [Action::Commit(SlotId::B)]);
        assert_eq!(
            s.installed.counter, 1,
            "floor not raised before the commit is done"
        );
        assert_eq!(actions(&mut s, Input::Committed), []);
        assert_eq!(s.installed.counter, 2);
        assert_eq!(s.installed.slot, SlotId::B);
        assert_eq!(s.phase, Phase::Idle);
        assert!(!s.wants(&o), "the same release is not offered twice");
        // The next update goes to slot A.
        let o3 = offer(3);
        actions(&mut s, Input::Offered(o3.clone()));
        assert_eq!(
            actions(&mut s, Input::Fetched(Hash::of(b"artifact"))),
            [Action::Install(o3, SlotId::A)]
        );
    }

    #[test]
    fn an_unhealthy_slot_rolls_back_and_is_not_retried() {
        let mut s = fresh();
        let o = offer(2);
        for i in [
            Input::Offered(o.clone()),
            Input::Fetched(o.artifact),
            Input::Installed,
            Input::Activated,
        ] {
            actions(&mut s, i);
        }
        actions(&mut s, boot(SlotId::B, SlotId::A));
        assert_eq!(
            actions(&mut s, Input::Unhealthy("exit 1".into())),
            [Action::Rollback]
        );
        assert_eq!(actions(&mut s, Input::RolledBack), [Action::Reboot]);
        assert_eq!(actions(&mut s, boot(SlotId::A, SlotId::A)), []);
        assert_eq!(s.phase, Phase::Idle);
        assert_eq!(s.installed.counter, 1);
        assert_eq!(
            s.last.as_ref().map(|l| l.result),
            Some(UpdateResult::RolledBack)
        );
        assert!(!s.wants(&o));
        assert!(s.wants(&offer(3)), "a newer release is still welcome");
    }

    #[test]
    fn every_phase_resumes_after_a_kill() {
        let o = offer(2);
        let b = SlotId::B;
        let cases: Vec<(Phase, Input, Vec<Action>)> = vec![
            (
                Phase::Fetching { offer: o.clone() },
                boot(SlotId::A, SlotId::A),
                vec![Action::Fetch(o.clone())],
            ),
            (
                Phase::Installing {
                    offer: o.clone(),
                    slot: b,
                },
                boot(SlotId::A, SlotId::A),
                vec![Action::Install(o.clone(), b)],
            ),
            (
                Phase::Activating {
                    offer: o.clone(),
                    slot: b,
                },
                boot(SlotId::A, SlotId::A),
                vec![Action::Activate(b)],
            ),
            (
                Phase::Trying {
                    offer: o.clone(),
                    slot: b,
                },
                boot(b, SlotId::A),
                vec![Action::HealthCheck],
            ),
            // Killed during the health check: the try was used, the bootloader fell back; the
            // image is still good, so it is tried again (bounded, see the try-boot test).
            (
                Phase::Checking {
                    offer: o.clone(),
                    slot: b,
                },
                boot(SlotId::A, SlotId::A),
                vec![Action::Activate(b)],
            ),
            (
                Phase::Committing {
                    offer: o.clone(),
                    slot: b,
                },
                boot(b, SlotId::A),
                vec![Action::Commit(b)],
            ),
            (
                Phase::RollingBack {
                    offer: o.clone(),
                    slot: b,
                    reason: "x".into(),
                },
                boot(b, SlotId::A),
                vec![Action::Rollback],
            ),
        ];
        for (phase, input, want) in cases {
            let mut s = fresh();
            s.phase = phase.clone();
            assert_eq!(actions(&mut s, input), want, "resuming {phase:?}");
            // Whatever happens, the committed image is still the factory one.
            assert_eq!(s.installed.slot, SlotId::A);
        }
    }

    /// A local fault while writing the slot (a full disk) is retried later: the release is not
    /// blacklisted and its artifact is kept; a release fault is blacklisted and its artifact dropped.
    #[test]
    fn local_install_faults_are_retried_and_release_faults_are_not() {
        let mut s = fresh();
        let o = offer(2);
        actions(&mut s, Input::Offered(o.clone()));
        actions(&mut s, Input::Fetched(o.artifact));
        assert_eq!(
            actions(
                &mut s,
                Input::InstallFailedLocal("No space left on device".into())
            ),
            [Action::RetryLater]
        );
        assert_eq!(s.phase, Phase::Idle);
        assert!(s.wants(&o), "offered again after the pause");
        assert_eq!(
            s.last.as_ref().map(|l| l.result),
            Some(UpdateResult::Failed)
        );
        actions(&mut s, Input::Offered(o.clone()));
        actions(&mut s, Input::Fetched(o.artifact));
        assert_eq!(
            actions(
                &mut s,
                Input::InstallFailed("decoded image hashes to x".into())
            ),
            [Action::Release(o.artifact)]
        );
        assert!(!s.wants(&o), "a bad release is not retried");
        // A local fetch fault is retried later too.
        let o3 = offer(3);
        actions(&mut s, Input::Offered(o3.clone()));
        assert_eq!(
            actions(&mut s, Input::FetchFailed(o3.artifact, "disk full".into())),
            [Action::RetryLater]
        );
        assert!(s.wants(&o3));
    }

    /// A delta that does not install (say, a format newer than this agent) makes the device fetch
    /// the release's full image instead, with a restart in between; the release is held against
    /// the device only if the full image fails too. A delta without a full image to fall back on
    /// fails the release as before.
    #[test]
    fn a_delta_that_does_not_install_falls_back_to_the_full_image() {
        let mut s = fresh();
        let d = delta_offer(2);
        let full = d.full_instead().expect("a full image to fall back on");
        assert_eq!(
            (full.artifact, full.kind, full.base, full.fallback.as_ref()),
            (Hash::of(b"artifact"), Kind::Full, None, None)
        );
        assert_eq!(
            (&full.manifest, full.counter, full.target),
            (&d.manifest, d.counter, d.target),
            "the same release and image"
        );
        actions(&mut s, Input::Offered(d.clone()));
        assert_eq!(
            actions(&mut s, Input::Fetched(d.artifact)),
            [Action::Install(d.clone(), SlotId::B)]
        );
        let (acts, t) = s
            .step(Input::InstallFailed("bad magic".into()))
            .expect("applies");
        assert_eq!(
            acts,
            [Action::Release(d.artifact), Action::Fetch(full.clone())]
        );
        assert!(
            t.detail
                .as_deref()
                .is_some_and(|e| e.contains("bad magic") && e.contains("full image")),
            "{t:?}"
        );
        assert_eq!(
            s.phase,
            Phase::Fetching {
                offer: full.clone()
            }
        );
        assert!(s.last.is_none(), "no outcome yet: the update goes on");
        // The persisted state survives a restart, and the fetch of the full image resumes.
        let json = serde_json::to_string(&s).expect("state");
        let mut s: State = serde_json::from_str(&json).expect("state back");
        assert_eq!(
            actions(&mut s, boot(SlotId::A, SlotId::A)),
            [Action::Fetch(full.clone())]
        );
        // The delta, announced again, does not replace the full image's fetch.
        assert_eq!(actions(&mut s, Input::Offered(d.clone())), []);
        assert_eq!(
            actions(&mut s, Input::Fetched(full.artifact)),
            [Action::Install(full.clone(), SlotId::B)]
        );
        assert_eq!(
            actions(&mut s, Input::Installed),
            [Action::Activate(SlotId::B)]
        );
        // The full image failing too ends the release on this device.
        let mut s2 = fresh();
        for i in [
            Input::Offered(d.clone()),
            Input::Fetched(d.artifact),
            Input::InstallFailed("bad magic".into()),
            Input::Fetched(full.artifact),
        ] {
            actions(&mut s2, i);
        }
        assert_eq!(
            actions(
                &mut s2,
                Input::InstallFailed("decoded image hashes to x".into())
            ),
            [Action::Release(full.artifact)]
        );
        assert!(!s2.wants(&d), "the release is held against the device");
        // A delta with no full image to fall back on fails the release at once.
        let mut s3 = fresh();
        let lone = Offer {
            fallback: None,
            ..d.clone()
        };
        actions(&mut s3, Input::Offered(lone.clone()));
        actions(&mut s3, Input::Fetched(lone.artifact));
        assert_eq!(
            actions(&mut s3, Input::InstallFailed("bad magic".into())),
            [Action::Release(lone.artifact)]
        );
        assert!(!s3.wants(&lone));
    }

    /// A state persisted before offers named a fallback still loads.
    #[test]
    fn an_offer_persisted_without_a_fallback_loads() {
        let mut v = serde_json::to_value(Phase::Fetching {
            offer: delta_offer(2),
        })
        .expect("phase");
        v["offer"]
            .as_object_mut()
            .expect("offer")
            .remove("fallback");
        let p: Phase = serde_json::from_value(v).expect("an older phase");
        assert_eq!(p.offer().map(|o| o.fallback.clone()), Some(None));
        let full = serde_json::to_value(offer(2)).expect("offer");
        assert!(
            full.get("fallback").is_none(),
            "not written when absent: {full}"
        );
    }

    /// Bootloader semantics: a power cut during the health check is retried, up to
    /// `MAX_TRY_BOOTS` try-boots; an image that never reaches a verdict is then rolled back.
    #[test]
    fn power_cuts_during_the_check_are_retried_up_to_the_try_boot_limit() {
        let mut s = fresh();
        let o = offer(2);
        for i in [
            Input::Offered(o.clone()),
            Input::Fetched(o.artifact),
            Input::Installed,
        ] {
            actions(&mut s, i);
        }
        for n in 1..=MAX_TRY_BOOTS {
            assert_eq!(actions(&mut s, Input::Activated), [Action::Reboot]);
            assert_eq!(s.try_boots, n);
            assert_eq!(
                actions(&mut s, boot(SlotId::B, SlotId::A)),
                [Action::HealthCheck]
            );
            // Power cut: the bootloader falls back to the committed slot.
            let next = actions(&mut s, boot(SlotId::A, SlotId::A));
            if n < MAX_TRY_BOOTS {
                assert_eq!(next, [Action::Activate(SlotId::B)], "try-boot {n}");
                assert!(!s.failed.contains(&o.manifest), "not blacklisted");
            } else {
                assert_eq!(next, [Action::Rollback], "after {n} try-boots");
            }
        }
        // The device already runs the committed slot: cancelling the try-boot is all that is left.
        assert_eq!(s.phase, Phase::Idle);
        assert!(s.failed.contains(&o.manifest));
        assert_eq!(s.try_boots, 0);
        assert_eq!(
            s.last.as_ref().map(|l| l.result),
            Some(UpdateResult::RolledBack)
        );
    }

    #[test]
    fn old_releases_and_busy_phases_ignore_offers() {
        let mut s = fresh();
        assert!(
            s.step(Input::Offered(offer(1))).is_none(),
            "counter at the floor"
        );
        actions(&mut s, Input::Offered(offer(2)));
        assert_eq!(
            actions(&mut s, Input::Offered(offer(3))),
            [Action::Release(offer(2).artifact), Action::Fetch(offer(3))],
            "a newer release supersedes one being fetched"
        );
        actions(&mut s, Input::Fetched(Hash::of(b"artifact")));
        assert!(
            s.step(Input::Offered(offer(4))).is_none(),
            "not while installing"
        );
        assert!(
            s.step(Input::Healthy).is_none(),
            "inputs out of phase are ignored"
        );
    }
}
