//! Directives *(pure)*: what the ward's gateway tells a targeted device it may do in a rollout, and
//! how the device decides, from the directive it holds, its clock and its gate, whether to go on.
//!
//! The gateway sends a [`Directive`] over the admitted swarm (`/wardswarm/directive/1`, gateway to
//! device only; a member that is not the ward's gateway is refused). The device keeps the newest one
//! on disk and judges every step against it with [`decide`], so a gateway that goes away mid-rollout
//! leaves its devices honouring the last instructions: the window is evaluated from its text, and
//! a directive that has expired holds the device rather than freeing it.
//!
//! A device in `install = "automatic"` mode (labs, the demo's default) needs no directive: it
//! fetches and installs every verified release as soon as its gate allows.

use serde::{Deserialize, Serialize};

use super::{
    model::{ActionType, GateReason},
    window::{Window, WindowError, WindowSpec},
};
use crate::time::Timestamp;

/// Largest directive frame.
pub const MAX_DIRECTIVE_FRAME: usize = 8 * 1024;

/// How a device takes releases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallMode {
    /// Only what its gateway directs (the default).
    #[default]
    Directed,
    /// Every verified release, as soon as its gate allows (labs, demos).
    Automatic,
}

/// The gateway's instructions to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directive {
    /// The device it is for (its certificate's device id).
    pub device: String,
    /// Grows with every directive the gateway issues; an older one is ignored.
    pub seq: u64,
    /// The rollout.
    pub rollout: u64,
    /// The release version it is about.
    pub release: String,
    /// The rollout's action type.
    pub action: ActionType,
    /// May fetch the release's artifact.
    pub fetch: bool,
    /// May install it (its group runs and the rollout is not paused).
    pub install: bool,
    /// May reboot into it now: one of the ward's reboot slots is this device's.
    pub reboot: bool,
    /// The rollout has ended for this device (stopped): drop what has not activated.
    #[serde(default)]
    pub cancel: bool,
    /// Install and reboot only while this window is open (`None`: any time).
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// An admin overrode the clinical-use gate for this release (an audited act on the gateway).
    #[serde(default)]
    pub override_gate: bool,
    /// Past this time the directive allows nothing new (the device waits for a fresh one).
    pub expires: Timestamp,
}

/// A directive could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("directive is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("directive is {0} bytes, over the {MAX_DIRECTIVE_FRAME}-byte cap")]
    TooLarge(usize),
    #[error("directive's window: {0}")]
    Window(#[from] WindowError),
}

/// A directive, checked: its window parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The directive.
    pub directive: Directive,
    /// Its window, checked.
    pub window: Option<Window>,
}

impl Held {
    /// Parses and checks a directive frame.
    pub fn parse(bytes: &[u8]) -> Result<Self, DirectiveError> {
        if bytes.len() > MAX_DIRECTIVE_FRAME {
            return Err(DirectiveError::TooLarge(bytes.len()));
        }
        let directive: Directive =
            serde_json::from_slice(bytes).map_err(|e| DirectiveError::Malformed(e.to_string()))?;
        let window = directive.window.clone().map(Window::new).transpose()?;
        Ok(Self { directive, window })
    }

    /// Whether `other` says something this one does not (anything but its sequence and expiry).
    pub fn differs(&self, other: &Directive) -> bool {
        let mut a = self.directive.clone();
        (a.seq, a.expires) = (other.seq, other.expires);
        a != *other
    }
}

/// A step the device is about to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Start fetching the artifact.
    Fetch,
    /// Write the inactive slot.
    Install,
    /// Set the slot to boot once and reboot.
    Reboot,
}

/// Why a device waits for something other than its clinical-use gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// No directive for this release.
    NoDirective,
    /// The directive has expired; waiting for the gateway to renew it.
    Expired,
    /// Its group does not run yet, or the rollout is paused.
    NotYet,
    /// A `download_only` rollout: staged, installs on a later instruction.
    DownloadOnly,
}

impl Hold {
    /// The report's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoDirective => "no_directive",
            Self::Expired => "expired",
            Self::NotYet => "not_yet",
            Self::DownloadOnly => "download_only",
        }
    }
}

/// What the device should do about a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on (the clinical-use gate is still asked, unless overridden).
    Go {
        /// Ask the gate for consent first (a `soft` rollout).
        consent: bool,
        /// The gate was overridden: do not ask it.
        override_gate: bool,
    },
    /// Wait, held by the rollout.
    Hold(Hold),
    /// Wait, gated (window closed, reboot limit); `until` is when it may change by the clock alone.
    Gated {
        reason: GateReason,
        until: Option<Timestamp>,
    },
    /// Drop the update in progress: the rollout ended for this device, or it now directs another
    /// release.
    Cancel(String),
}

/// Decides whether the device may take `stage` of release `version` at `now`.
pub fn decide(
    mode: InstallMode,
    held: Option<&Held>,
    version: &str,
    stage: Stage,
    now: Timestamp,
) -> Decision {
    let free = Decision::Go {
        consent: false,
        override_gate: false,
    };
    if mode == InstallMode::Automatic {
        return free;
    }
    let Some(h) = held else {
        return Decision::Hold(Hold::NoDirective);
    };
    let d = &h.directive;
    if d.release != version {
        return Decision::Cancel(format!(
            "the gateway now directs release {} (rollout {})",
            d.release, d.rollout
        ));
    }
    if d.cancel {
        return Decision::Cancel(format!("rollout {} was stopped", d.rollout));
    }
    if now >= d.expires {
        return Decision::Hold(Hold::Expired);
    }
    let allowed = match stage {
        Stage::Fetch => d.fetch,
        Stage::Install | Stage::Reboot => d.install,
    };
    if !allowed {
        return Decision::Hold(
            if stage != Stage::Fetch && d.action == ActionType::DownloadOnly {
                Hold::DownloadOnly
            } else {
                Hold::NotYet
            },
        );
    }
    if stage == Stage::Fetch {
        return free;
    }
    if let Some(w) = &h.window {
        if !w.is_open(now) {
            return Decision::Gated {
                reason: GateReason::WindowClosed,
                until: w.next_open(now),
            };
        }
    }
    if stage == Stage::Reboot && !d.reboot {
        return Decision::Gated {
            reason: GateReason::RebootLimit,
            until: None,
        };
    }
    Decision::Go {
        consent: d.action == ActionType::Soft && !d.override_gate,
        override_gate: d.override_gate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn directive(window: Option<WindowSpec>) -> Held {
        let d = Directive {
            device: "pump-1".into(),
            seq: 1,
            rollout: 7,
            release: "2.0.0".into(),
            action: ActionType::Forced,
            fetch: true,
            install: true,
            reboot: true,
            cancel: false,
            window,
            override_gate: false,
            expires: t("2027-02-01T00:00:00Z"),
        };
        Held::parse(&serde_json::to_vec(&d).expect("json")).expect("valid")
    }

    const GO: Decision = Decision::Go {
        consent: false,
        override_gate: false,
    };

    #[test]
    fn without_a_directive_a_directed_device_does_nothing_and_an_automatic_one_everything() {
        let now = t("2027-01-15T10:00:00Z");
        for stage in [Stage::Fetch, Stage::Install, Stage::Reboot] {
            assert_eq!(
                decide(InstallMode::Directed, None, "2.0.0", stage, now),
                Decision::Hold(Hold::NoDirective)
            );
            assert_eq!(
                decide(InstallMode::Automatic, None, "2.0.0", stage, now),
                GO
            );
        }
    }

    #[test]
    fn a_closed_window_holds_install_and_reboot_but_not_fetch_and_opens_on_the_clock() {
        // 22:00 to 04:00 Berlin time; 10:00 UTC is 11:00 in Berlin in winter.
        let h = directive(Some(WindowSpec {
            schedule: "0 22 * * *".into(),
            duration: "6h".into(),
            timezone: "Europe/Berlin".into(),
        }));
        let day = t("2027-01-15T10:00:00Z");
        let d = InstallMode::Directed;
        assert_eq!(decide(d, Some(&h), "2.0.0", Stage::Fetch, day), GO);
        let opens = t("2027-01-15T21:00:00Z");
        for stage in [Stage::Install, Stage::Reboot] {
            assert_eq!(
                decide(d, Some(&h), "2.0.0", stage, day),
                Decision::Gated {
                    reason: GateReason::WindowClosed,
                    until: Some(opens)
                }
            );
            assert_eq!(
                decide(d, Some(&h), "2.0.0", stage, t("2027-01-15T21:30:00Z")),
                GO
            );
        }
    }

    #[test]
    fn holds_cancels_consent_reboot_slots_and_expiry() {
        let now = t("2027-01-15T10:00:00Z");
        let d = InstallMode::Directed;
        let with = |f: &dyn Fn(&mut Directive)| {
            let mut h = directive(None);
            f(&mut h.directive);
            h
        };
        let paused = with(&|d| d.install = false);
        assert_eq!(decide(d, Some(&paused), "2.0.0", Stage::Fetch, now), GO);
        assert_eq!(
            decide(d, Some(&paused), "2.0.0", Stage::Install, now),
            Decision::Hold(Hold::NotYet)
        );
        let staged = with(&|d| {
            d.install = false;
            d.action = ActionType::DownloadOnly
        });
        assert_eq!(
            decide(d, Some(&staged), "2.0.0", Stage::Install, now),
            Decision::Hold(Hold::DownloadOnly)
        );
        let no_slot = with(&|d| d.reboot = false);
        assert_eq!(decide(d, Some(&no_slot), "2.0.0", Stage::Install, now), GO);
        assert_eq!(
            decide(d, Some(&no_slot), "2.0.0", Stage::Reboot, now),
            Decision::Gated {
                reason: GateReason::RebootLimit,
                until: None
            }
        );
        let soft = with(&|d| d.action = ActionType::Soft);
        assert_eq!(
            decide(d, Some(&soft), "2.0.0", Stage::Install, now),
            Decision::Go {
                consent: true,
                override_gate: false
            }
        );
        let overridden = with(&|d| {
            d.action = ActionType::Soft;
            d.override_gate = true
        });
        assert_eq!(
            decide(d, Some(&overridden), "2.0.0", Stage::Reboot, now),
            Decision::Go {
                consent: false,
                override_gate: true
            }
        );
        let stopped = with(&|d| d.cancel = true);
        assert!(matches!(
            decide(d, Some(&stopped), "2.0.0", Stage::Install, now),
            Decision::Cancel(_)
        ));
        let h = directive(None);
        assert!(matches!(
            decide(d, Some(&h), "1.9.0", Stage::Install, now),
            Decision::Cancel(why) if why.contains("2.0.0")
        ));
        assert_eq!(
            decide(
                d,
                Some(&h),
                "2.0.0",
                Stage::Install,
                t("2027-03-01T00:00:00Z")
            ),
            Decision::Hold(Hold::Expired),
            "an expired directive holds; it never frees"
        );
    }

    #[test]
    fn malformed_directives_are_refused() {
        assert!(matches!(
            Held::parse(b"{\"device\":1}"),
            Err(DirectiveError::Malformed(_))
        ));
        assert!(matches!(
            Held::parse(&vec![b' '; MAX_DIRECTIVE_FRAME + 1]),
            Err(DirectiveError::TooLarge(_))
        ));
        let mut h = directive(None);
        h.directive.window = Some(WindowSpec {
            schedule: "0 22 * *".into(),
            duration: "6h".into(),
            timezone: "Europe/Berlin".into(),
        });
        let b = serde_json::to_vec(&h.directive).expect("json");
        assert!(matches!(Held::parse(&b), Err(DirectiveError::Window(_))));
        let a = directive(None);
        let mut refreshed = a.directive.clone();
        refreshed.seq = 9;
        assert!(!a.differs(&refreshed));
        refreshed.install = false;
        assert!(a.differs(&refreshed));
    }
}
