//! The agent's side of rollouts: the directive it holds (kept in `<state>/directive.json`), and the
//! waits before each step. [`Steps::clear_to`] asks the pure [`decide`] with the directive and the
//! clock, then the clinical-use gate, and waits (reporting why) until both let it go on, or returns
//! the reason the update is canceled.
//!
//! The clock is an input ([`Clock`]): the tests move it across a window's opening instead of waiting
//! for it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::gate::{Gate, Verdict, POLL};
use crate::{
    fsutil,
    rollout::{
        directive::{decide, Decision, Held, Hold, Stage, MAX_DIRECTIVE_FRAME},
        GateReason, InstallMode,
    },
    time::Timestamp,
};

/// Where the agent reads the time: the system clock, or a test's.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Timestamp::now))
    }
    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
    /// Now.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

/// Why the device waits, as its reports show it.
#[derive(Debug, Default)]
pub struct Waiting {
    gated: Option<GateReason>,
    detail: Option<String>,
    held: Option<Hold>,
    since: Option<Instant>,
    total: Duration,
}

impl Waiting {
    fn settle(&mut self) {
        if let Some(t) = self.since.take() {
            self.total += t.elapsed();
        }
    }
    fn gate(&mut self, reason: GateReason, detail: Option<String>) {
        if self.gated.is_none() {
            self.since = Some(Instant::now());
        }
        (self.gated, self.detail, self.held) = (Some(reason), detail, None);
    }
    fn hold(&mut self, h: Hold) {
        self.settle();
        (self.gated, self.detail, self.held) = (None, None, Some(h));
    }
    fn clear(&mut self) {
        self.settle();
        (self.gated, self.detail, self.held) = (None, None, None);
    }
    /// The report's `gated`, `gated_detail` and `held`.
    pub fn fields(&self) -> (Option<String>, Option<String>, Option<String>) {
        let code = self.gated.map(|g| {
            serde_json::to_value(g)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        });
        (
            code,
            self.detail.clone(),
            self.held.map(|h| h.as_str().into()),
        )
    }
    /// Seconds gated since the agent started, the current wait included.
    pub fn gated_seconds(&self) -> f64 {
        (self.total + self.since.map_or(Duration::ZERO, |t| t.elapsed())).as_secs_f64()
    }
}

/// Shared by the agent and the futures of its steps.
#[derive(Debug, Clone)]
pub struct Steps {
    /// How the device takes releases.
    pub mode: InstallMode,
    /// The directive held, if any.
    pub directive: watch::Receiver<Option<Arc<Held>>>,
    /// The clinical-use gate.
    pub gate: Option<Gate>,
    /// Why it waits.
    pub waiting: Arc<Mutex<Waiting>>,
    /// The clock windows and expiries are judged by.
    pub clock: Clock,
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl Steps {
    /// The directive held now.
    pub fn held(&self) -> Option<Arc<Held>> {
        self.directive.borrow().clone()
    }

    /// What the directive and the clock alone say of `stage` now, recorded as the reason the device
    /// waits, so the report sent on entering a phase already says the device is held or gated
    /// (the gate itself is asked by [`Self::clear_to`]).
    pub fn preview(&self, stage: Stage, version: &str) {
        let held = self.held();
        match decide(self.mode, held.as_deref(), version, stage, self.clock.now()) {
            Decision::Hold(h) => lock(&self.waiting).hold(h),
            Decision::Gated { reason, until } => {
                lock(&self.waiting).gate(reason, Some(gated_detail(reason, until)))
            }
            Decision::Go { .. } | Decision::Cancel(_) => {}
        }
    }

    /// Waits until `stage` of release `version` may go: the directive and the window allow it, the
    /// device consented (a `soft` rollout), and the gate says free. `Err(why)`: canceled.
    pub async fn clear_to(&self, stage: Stage, version: &str) -> Result<(), String> {
        let mut rx = self.directive.clone();
        let mut said: Option<String> = None;
        let mut note = |what: String| {
            if said.as_deref() != Some(what.as_str()) {
                tracing::info!(stage = ?stage, version, "waiting: {what}");
                said = Some(what);
            }
        };
        loop {
            let held = rx.borrow_and_update().clone();
            let now = self.clock.now();
            match decide(self.mode, held.as_deref(), version, stage, now) {
                Decision::Cancel(why) => {
                    lock(&self.waiting).clear();
                    return Err(why);
                }
                Decision::Hold(h) => {
                    note(format!("held by the rollout ({})", h.as_str()));
                    lock(&self.waiting).hold(h);
                }
                Decision::Gated { reason, until } => {
                    let detail = gated_detail(reason, until);
                    note(detail.clone());
                    lock(&self.waiting).gate(reason, Some(detail));
                }
                Decision::Go {
                    consent,
                    override_gate,
                } => {
                    if override_gate {
                        lock(&self.waiting).clear();
                        return Ok(());
                    }
                    match self.ask(consent.then_some(version)).await {
                        None => {
                            lock(&self.waiting).clear();
                            return Ok(());
                        }
                        Some((reason, why)) => {
                            note(why.clone());
                            lock(&self.waiting).gate(reason, Some(why));
                        }
                    }
                }
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { tokio::time::sleep(POLL).await },
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Waits until the gate says free before committing `version` (the directive has no say once
    /// rebooted, but an admin's override of the gate for this release holds here too).
    pub async fn gate_free(&self, stage: &'static str, version: &str) {
        let overridden = self.held().is_some_and(|h| {
            h.directive.override_gate && h.directive.release == version && !h.directive.cancel
        });
        if overridden && self.mode == InstallMode::Directed {
            lock(&self.waiting).clear();
            return;
        }
        let mut said: Option<String> = None;
        loop {
            match self.ask(None).await {
                None => {
                    lock(&self.waiting).clear();
                    return;
                }
                Some((reason, why)) => {
                    if said.as_deref() != Some(why.as_str()) {
                        tracing::info!(stage, reason = %why, "clinical-use gate: waiting");
                        said = Some(why.clone());
                    }
                    lock(&self.waiting).gate(reason, Some(why));
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resolves with the reason once the update of `version` is canceled (while it fetches).
    pub async fn canceled(&self, version: &str) -> String {
        let mut rx = self.directive.clone();
        loop {
            let held = rx.borrow_and_update().clone();
            if let Decision::Cancel(why) = decide(
                self.mode,
                held.as_deref(),
                version,
                Stage::Fetch,
                self.clock.now(),
            ) {
                return why;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Consent (for `version`) or in use: `None` if the gate lets the device go on. Without a gate a
    /// device is always free, and never consents.
    async fn ask(&self, consent: Option<&str>) -> Option<(GateReason, String)> {
        match (&self.gate, consent) {
            (None, None) => None,
            (None, Some(v)) => Some((
                GateReason::AwaitingConsent,
                format!("awaiting consent to {v}: this device has no gate to give it; an admin may override"),
            )),
            (Some(g), Some(v)) => match g.consent(v).await {
                Verdict::InUse(why) => Some((GateReason::AwaitingConsent, why)),
                Verdict::Free => match g.check().await {
                    Verdict::Free => None,
                    Verdict::InUse(why) => Some((GateReason::InUse, why)),
                },
            },
            (Some(g), None) => match g.check().await {
                Verdict::Free => None,
                Verdict::InUse(why) => Some((GateReason::InUse, why)),
            },
        }
    }
}

/// What a device gated by its window or the reboot limit says.
fn gated_detail(reason: GateReason, until: Option<Timestamp>) -> String {
    match (reason, until) {
        (GateReason::WindowClosed, Some(t)) => {
            format!("maintenance window closed; it opens at {t}")
        }
        (GateReason::WindowClosed, None) => {
            "maintenance window closed; it opens in no day of the next 400".into()
        }
        _ => "waiting for one of the ward's reboot slots".into(),
    }
}

/// The directive file in a state folder.
pub fn directive_path(dir: &Path) -> PathBuf {
    dir.join("directive.json")
}

/// The directive kept in `dir`, if one is there and still parses (one that does not is set aside
/// with a warning: the gateway sends a fresh one within seconds of admitting the device).
pub fn load(dir: &Path) -> Option<Held> {
    let p = directive_path(dir);
    match fsutil::read_capped(&p, MAX_DIRECTIVE_FRAME as u64) {
        Ok(Ok(b)) => match Held::parse(&b) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "kept directive unreadable: ignored until the gateway sends one");
                None
            }
        },
        Ok(Err(len)) => {
            tracing::warn!(path = %p.display(), len, "kept directive over the size cap: ignored");
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "reading the kept directive failed: ignored");
            None
        }
    }
}

/// Keeps a directive (atomically, fsynced).
pub fn save(dir: &Path, held: &Held) -> std::io::Result<()> {
    let b = serde_json::to_vec_pretty(&held.directive).map_err(std::io::Error::other)?;
    fsutil::replace(&directive_path(dir), &b, 0o644)
}
