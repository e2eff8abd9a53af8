//! The agent runtime: drives the pure [`machine`](super::machine) from the swarm node, the store, the
//! slots and the health check. Write-ahead: the new state is persisted (atomically, fsynced) before any
//! action it calls for is performed, and every transition is appended to the audit log and reported
//! to the ward gateway.

use std::{
    fs::File,
    io,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "test-faults")]
pub use super::config::AgentFault;
pub use super::config::{set_test_fault, AgentConfig, FaultError};
pub use super::install::InstallError;
#[cfg(feature = "test-faults")]
use super::install::PauseAt;
pub use super::report::{Progress, Report};
use super::{
    audit::{AuditError, AuditLog},
    directed::{Steps, Waiting},
    install::{install, SourceHook},
    machine::{
        Action, DeviceState, FullImage, Input, Installed, Offer, State, Transition, UpdateResult,
    },
    slots::{BootState, Reboot, SlotError, SlotId, Slots},
};
use crate::{
    fsutil,
    hash::{hash_reader, Hash},
    net::{Event, Handle},
    rollout::directive::{decide, Decision, Held, Stage},
    root::TrustRoot,
    store::Store,
    time::Timestamp,
    verify::{DevicePolicy, ManifestRefusal},
};

/// The agent failed on this device.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("agent state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error(
        "another agent runs on the state folder {dir} (it holds {dir}/agent.lock); stop it first"
    )]
    Locked { dir: PathBuf },
}

/// Why [`Agent::run_boot`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Stopped,
    /// The file backend needs a (simulated) reboot: call `run_boot` again.
    Reboot,
}

/// The device agent.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    slots: Arc<dyn Slots>,
    store: Arc<Store>,
    node: Handle,
    root: TrustRoot,
    events: broadcast::Receiver<Event>,
    status: watch::Sender<Report>,
    audit: AuditLog,
    state: Option<State>,
    progress: Option<Progress>,
    last_artifact: Option<Hash>,
    /// Documents refused since this start (their audit line is written once).
    refused: std::collections::HashSet<Hash>,
    /// Held for the agent's life: the state folder's lock.
    _lock: File,
    /// When to offer the known releases again after a local fault, and how many in a row.
    retry_at: Option<tokio::time::Instant>,
    local_failures: u32,
    /// The directive, the gate and the clock, shared with the steps' futures.
    steps: Steps,
    directive: watch::Sender<Option<Arc<Held>>>,
}

/// First pause after a local fault (a full disk while writing the slot); it doubles per fault in a
/// row, so a device whose disk stays full tries a few times an hour, and one whose space came back
/// installs within minutes.
const LOCAL_RETRY: Duration = Duration::from_secs(30);
/// Longest pause after local faults.
const LOCAL_RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// Refused documents remembered per start, so each is audited once; past it, none more are.
const MAX_REFUSED_REMEMBERED: usize = 1024;

enum Done {
    Input(Box<Input>),
    Reboot,
}

fn state_err(path: &std::path::Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::State {
        path: path.into(),
        reason: e.to_string(),
    }
}

impl Agent {
    /// An agent over a running node. Subscribe before the gateway announces: create it right after
    /// spawning the node.
    pub fn new(
        cfg: AgentConfig,
        slots: Arc<dyn Slots>,
        store: Arc<Store>,
        node: Handle,
        root: TrustRoot,
    ) -> Result<(Self, watch::Receiver<Report>), AgentError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| state_err(&cfg.dir, e))?;
        // One agent per state folder: two would interleave write-ahead states and audit lines. The
        // lock is the kernel's (flock), so it goes with the process, even on kill -9.
        let lock_path = cfg.dir.join("agent.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| state_err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AgentError::Locked {
                    dir: cfg.dir.clone(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(state_err(&lock_path, e)),
        }
        let audit = AuditLog::open(cfg.dir.join("audit.jsonl"))?;
        let (status, rx) = watch::channel(Report {
            hardware: cfg.hardware.clone(),
            product: cfg.product.clone(),
            version: cfg.factory_version.clone(),
            counter: cfg.factory_counter,
            image: Hash::from_bytes([0; 32]),
            slot: SlotId::A,
            state: DeviceState::Starting,
            target: None,
            artifact: None,
            progress: None,
            last: None,
            bytes_from_gateway: 0,
            bytes_from_peers: 0,
            audit_lines: audit.len(),
            labels: cfg.labels.clone(),
            gated: None,
            gated_detail: None,
            held: None,
            gated_ms: 0,
        });
        let events = node.subscribe();
        let (directive, directive_rx) =
            watch::channel(super::directed::load(&cfg.dir).map(Arc::new));
        let steps = Steps {
            mode: cfg.install,
            directive: directive_rx,
            gate: cfg.gate.clone(),
            waiting: Arc::new(std::sync::Mutex::new(Waiting::default())),
            clock: cfg.clock.clone(),
        };
        Ok((
            Self {
                cfg,
                slots,
                store,
                node,
                root,
                events,
                status,
                audit,
                state: None,
                progress: None,
                last_artifact: None,
                refused: Default::default(),
                _lock: lock,
                retry_at: None,
                steps,
                directive,
                local_failures: 0,
            },
            rx,
        ))
    }

    fn state_path(&self) -> PathBuf {
        self.cfg.dir.join("state.json")
    }

    fn load_state(&self, boot: BootState) -> Result<State, AgentError> {
        let p = self.state_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| state_err(&p, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // First start after provisioning: the committed slot holds the factory image.
                let slots = self.slots.clone();
                let len = slots.size(boot.committed)?;
                let (image, length) = hash_reader(slots.open(boot.committed, len)?)
                    .map_err(|e| state_err(&p, format!("hashing the factory image: {e}")))?;
                Ok(State::new(Installed {
                    version: self.cfg.factory_version.clone(),
                    counter: self.cfg.factory_counter,
                    image,
                    length,
                    slot: boot.committed,
                }))
            }
            Err(e) => Err(state_err(&p, e)),
        }
    }

    fn persist(&self, s: &State) -> Result<(), AgentError> {
        let p = self.state_path();
        let mut b = serde_json::to_vec_pretty(s).map_err(|e| state_err(&p, e))?;
        b.push(b'\n');
        fsutil::replace(&p, &b, 0o644).map_err(|e| state_err(&p, e))
    }

    /// The current persisted state (after `run_boot` started).
    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    fn report(&self) -> Report {
        let m = self.node.metrics();
        let (mut g, mut p) = (0, 0);
        let artifact = self
            .state
            .as_ref()
            .and_then(|s| s.phase.offer().map(|o| o.artifact))
            .or(self.last_artifact);
        if let Some(a) = artifact {
            g = m.received_total(&a.short(), "gateway");
            p = m.received_total(&a.short(), "peer");
        }
        let s = self.state.as_ref();
        let ((gated, gated_detail, held), gated_ms) = {
            let w = self.steps.waiting.lock().unwrap_or_else(|e| e.into_inner());
            (w.fields(), (w.gated_seconds() * 1000.0) as u64)
        };
        Report {
            hardware: self.cfg.hardware.clone(),
            product: self.cfg.product.clone(),
            version: s.map(|s| s.installed.version.clone()).unwrap_or_default(),
            counter: s.map(|s| s.installed.counter).unwrap_or_default(),
            image: s
                .map(|s| s.installed.image)
                .unwrap_or(Hash::from_bytes([0; 32])),
            slot: s.map(|s| s.installed.slot).unwrap_or(SlotId::A),
            state: s.map_or(DeviceState::Starting, |s| s.phase.state()),
            target: s.and_then(|s| s.phase.offer().map(|o| o.version.clone())),
            artifact: s.and_then(|s| s.phase.offer().map(|o| o.artifact)),
            progress: self.progress,
            last: s.and_then(|s| s.last.clone()),
            bytes_from_gateway: g,
            bytes_from_peers: p,
            audit_lines: self.audit.len(),
            labels: self.cfg.labels.clone(),
            gated,
            gated_detail,
            held,
            gated_ms,
        }
    }

    async fn send_report(&self) {
        let r = self.report();
        if let Ok(b) = serde_json::to_vec(&r) {
            let _ = self.node.report(b).await;
        }
        self.status.send_replace(r);
    }

    /// Applies an input: step, persist, audit, report; returns the actions to perform.
    async fn apply(&mut self, input: Input) -> Result<Vec<Action>, AgentError> {
        let Some(state) = self.state.as_mut() else {
            return Ok(vec![]);
        };
        let Some((actions, t)) = state.step(input) else {
            return Ok(vec![]);
        };
        let s = state.clone();
        self.persist(&s)?;
        self.log(&t)?;
        // Entering a phase that waits on the rollout: the report below already says why.
        match &s.phase {
            super::machine::Phase::Installing { offer, .. } => {
                self.steps.preview(Stage::Install, &offer.version)
            }
            super::machine::Phase::Activating { offer, .. } => {
                self.steps.preview(Stage::Reboot, &offer.version)
            }
            _ => {}
        }
        if t.result == Some(UpdateResult::Committed) {
            self.local_failures = 0;
        }
        if matches!(s.phase, super::machine::Phase::Idle) {
            self.progress = None;
        }
        self.send_report().await;
        Ok(actions)
    }

    fn log(&mut self, t: &Transition) -> Result<(), AgentError> {
        let (version, detail) = (t.version.as_deref(), t.detail.as_deref());
        match t.result {
            Some(UpdateResult::RolledBack | UpdateResult::Failed) => {
                tracing::warn!(from = %t.from, to = %t.to, event = %t.event, version, detail, result = t.result.map(UpdateResult::as_str), "update transition")
            }
            _ => {
                tracing::info!(from = %t.from, to = %t.to, event = %t.event, version, detail, "update transition")
            }
        }
        self.audit.append(t)?;
        Ok(())
    }

    /// Judges an announced manifest against this device's policy; returns an offer to take.
    fn judge(&mut self, bytes: &[u8]) -> Option<Offer> {
        let s = self.state.as_ref()?;
        let policy = DevicePolicy {
            root: &self.root,
            product: self.cfg.product.as_deref(),
            hardware: &self.cfg.hardware,
            committed_counter: s.installed.counter,
            now: Timestamp::now(),
        };
        let vm = match policy.accept_manifest(bytes) {
            Ok(vm) => vm,
            // The release this device runs, announced again: nothing to refuse.
            Err(ManifestRefusal::NotNewer { counter, floor }) if counter == floor => return None,
            Err(e) => {
                // Every refusal (a replay or downgrade, another hardware's release, a bad
                // signature) goes into the audit log, once per document and boot: announcements
                // repeat, the log must not.
                let key = Hash::of(bytes);
                if self.refused.len() < MAX_REFUSED_REMEMBERED && self.refused.insert(key) {
                    let security = !matches!(e, ManifestRefusal::WrongHardware { .. });
                    if security {
                        tracing::warn!(target: "wardswarm::security", error = %e, "release refused");
                    } else {
                        tracing::info!(error = %e, "release for other hardware ignored");
                    }
                    let _ = self.audit.append(&serde_json::json!({
                        "event": "release refused",
                        "document": key,
                        "reason": e.to_string(),
                    }));
                }
                return None;
            }
        };
        let m = vm.manifest();
        // A directed device takes only the release its gateway directs it to fetch.
        let d = self.steps.held();
        let now = self.steps.clock.now();
        if !matches!(
            decide(
                self.cfg.install,
                d.as_deref(),
                &m.version,
                Stage::Fetch,
                now
            ),
            Decision::Go { .. }
        ) {
            return None;
        }
        let a = m.delta_from(&s.installed.image).or_else(|| m.full())?;
        let offer = Offer {
            manifest: vm.signed().release_id(),
            version: m.version.clone(),
            counter: m.counter,
            artifact: a.root,
            artifact_length: a.length,
            kind: a.kind_name(),
            compression: a.compression,
            base: a.base(),
            target: m.target.hash,
            target_length: m.target.length,
            fallback: a.base().and(m.full()).map(|f| FullImage {
                artifact: f.root,
                artifact_length: f.length,
                compression: f.compression,
            }),
        };
        s.wants(&offer).then_some(offer)
    }

    /// One (simulated) boot: asks the slots what booted, resumes the persisted phase, then follows
    /// announcements until stopped or a reboot is needed.
    pub async fn run_boot(&mut self, stop: &CancellationToken) -> Result<Exit, AgentError> {
        let slots = self.slots.clone();
        let boot = blocking(move || slots.boot()).await??;
        if self.state.is_none() {
            let s = self.load_state(boot)?;
            self.persist(&s)?;
            self.state = Some(s);
        }
        tracing::info!(booted = %boot.booted, committed = %boot.committed, "boot");
        let mut queue: std::collections::VecDeque<Action> =
            self.apply(Input::Booted(boot)).await?.into();
        // Releases announced before this boot (or before the agent subscribed) are judged now.
        let acts = self.offer_known().await?;
        queue.extend(acts);
        self.send_report().await;
        let mut ticker = crate::net::grid::interval(self.cfg.report_interval);
        let mut last_progress_report = Instant::now();
        loop {
            // Start the next action, if any; fetches and health checks run while events are handled.
            let mut pending: Option<
                std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>,
            > = None;
            while pending.is_none() {
                let Some(a) = queue.pop_front() else { break };
                pending = self.start(a);
            }
            let done = loop {
                tokio::select! {
                    d = async { match pending.as_mut() { Some(p) => p.await, None => std::future::pending().await } } => break Some(d),
                    _ = stop.cancelled() => return Ok(Exit::Stopped),
                    _ = ticker.tick() => self.send_report().await,
                    _ = async {
                        match self.retry_at {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        self.retry_at = None;
                        // Offer again what the ward announced: the artifact is usually still in
                        // the store, so this is an install, not a download.
                        let acts = self.offer_known().await?;
                        if !acts.is_empty() {
                            queue.extend(acts);
                            break None;
                        }
                    }
                    ev = self.events.recv() => match ev {
                        Ok(Event::Manifest { bytes, .. }) => {
                            if let Some(o) = self.judge(&bytes) {
                                let acts = self.apply(Input::Offered(o)).await?;
                                if !acts.is_empty() {
                                    // A new fetch supersedes whatever was pending.
                                    queue.extend(acts);
                                    break None;
                                }
                            }
                        }
                        Ok(Event::Progress { root, have, total }) => {
                            let ours = self.state.as_ref().and_then(|s| s.phase.offer()).map(|o| o.artifact);
                            if ours == Some(root) {
                                self.progress = Some(Progress { have, total });
                                if last_progress_report.elapsed() >= Duration::from_millis(500) {
                                    last_progress_report = Instant::now();
                                    self.send_report().await;
                                }
                            }
                        }
                        Ok(Event::Directive { body, .. }) => {
                            // A directive that says something new may direct a release this
                            // device passed over: judge what the ward announced again.
                            if self.take_directive(&body)? {
                                let acts = self.offer_known().await?;
                                if !acts.is_empty() {
                                    queue.extend(acts);
                                    break None;
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(missed = n, "agent lagged behind node events");
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(Exit::Stopped),
                    },
                }
            };
            match done {
                None => {}
                Some(Done::Reboot) => return Ok(Exit::Reboot),
                Some(Done::Input(i)) => {
                    let canceled = matches!(*i, Input::Canceled(_));
                    let acts = self.apply(*i).await?;
                    queue.extend(acts);
                    if canceled {
                        // Canceled for another release, perhaps: take it up at once.
                        let acts = self.offer_known().await?;
                        queue.extend(acts);
                    }
                }
            }
        }
    }

    /// Offers the best of the releases the ward announced, if this device wants one now.
    async fn offer_known(&mut self) -> Result<Vec<Action>, AgentError> {
        let Ok(known) = self.node.manifests().await else {
            return Ok(vec![]);
        };
        let best = known
            .iter()
            .filter_map(|b| self.judge(b))
            .max_by_key(|o| o.counter);
        match best {
            Some(o) => self.apply(Input::Offered(o)).await,
            None => Ok(vec![]),
        }
    }

    /// Takes a directive from the ward's gateway (the node refuses one from any other member):
    /// kept if newer than the one held; `true` if it says something new (audited).
    fn take_directive(&mut self, body: &[u8]) -> Result<bool, AgentError> {
        let h = match Held::parse(body) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(target: "wardswarm::security", error = %e, "directive from the gateway refused");
                return Ok(false);
            }
        };
        let cur = self.steps.held();
        if cur
            .as_ref()
            .is_some_and(|c| h.directive.seq <= c.directive.seq)
        {
            return Ok(false);
        }
        let news = cur.is_none_or(|c| c.differs(&h.directive));
        super::directed::save(&self.cfg.dir, &h)
            .map_err(|e| state_err(&super::directed::directive_path(&self.cfg.dir), e))?;
        if news {
            let d = &h.directive;
            tracing::info!(rollout = d.rollout, release = %d.release, fetch = d.fetch, install = d.install, reboot = d.reboot, cancel = d.cancel, "directive from the gateway");
            if d.override_gate {
                tracing::warn!(rollout = d.rollout, release = %d.release, "the clinical-use gate is overridden for this release by the gateway (an admin's audited act)");
            }
            self.audit.append(&serde_json::json!({
                "event": "directive",
                "rollout": d.rollout,
                "release": d.release,
                "action": d.action,
                "fetch": d.fetch,
                "install": d.install,
                "reboot": d.reboot,
                "cancel": d.cancel,
                "override_gate": d.override_gate,
                "window": d.window,
                "expires": d.expires,
            }))?;
        }
        self.directive.send_replace(Some(Arc::new(h)));
        Ok(news)
    }

    /// What the install passes the decoded image through: nothing in a production build; with the
    /// `pause-install` test fault, a reader that stops halfway (see [`AgentFault::PauseInstall`]).
    fn install_hook(&self, _o: &Offer) -> SourceHook {
        #[cfg(feature = "test-faults")]
        if self.cfg.fault == Some(AgentFault::PauseInstall) {
            let at = _o.target_length / 2;
            let marker = self.cfg.dir.join("install-paused");
            return Box::new(move |inner| Box::new(PauseAt::new(inner, at, marker)));
        }
        Box::new(|r| r)
    }

    /// Starts an action. Quick ones run inline and yield their input through a ready future.
    fn start(
        &mut self,
        a: Action,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>> {
        let slots = self.slots.clone();
        let version = self
            .state
            .as_ref()
            .and_then(|s| s.phase.offer())
            .map(|o| o.version.clone())
            .unwrap_or_default();
        let steps = self.steps.clone();
        match a {
            Action::Fetch(o) => {
                let node = self.node.clone();
                let store = self.store.clone();
                // Free space: drop complete artifacts this device no longer needs.
                for e in store.list() {
                    if e.root() != o.artifact && e.is_complete() {
                        let _ = store.remove(&e.root());
                    }
                }
                self.progress = Some(Progress::default());
                self.last_artifact = Some(o.artifact);
                Some(Box::pin(async move {
                    tokio::select! {
                        r = node.fetch(o.artifact, o.artifact_length) => match r {
                            Ok(_) => Done::Input(Box::new(Input::Fetched(o.artifact))),
                            Err(e) => {
                                Done::Input(Box::new(Input::FetchFailed(o.artifact, e.to_string())))
                            }
                        },
                        why = steps.canceled(&o.version) => Done::Input(Box::new(Input::Canceled(why))),
                    }
                }))
            }
            Action::Install(o, slot) => {
                let store = self.store.clone();
                let base = self
                    .state
                    .as_ref()
                    .map(|s| (s.installed.slot, s.installed.length));
                let hook = self.install_hook(&o);
                Some(Box::pin(async move {
                    if let Err(why) = steps.clear_to(Stage::Install, &o.version).await {
                        return Done::Input(Box::new(Input::Canceled(why)));
                    }
                    let r = blocking(move || install(&store, slots.as_ref(), &o, slot, base, hook))
                        .await;
                    Done::Input(Box::new(match r {
                        Ok(Ok(())) => Input::Installed,
                        Ok(Err(e)) if e.is_local() => Input::InstallFailedLocal(e.to_string()),
                        Ok(Err(e)) => Input::InstallFailed(e.to_string()),
                        Err(e) => Input::InstallFailedLocal(e.to_string()),
                    }))
                }))
            }
            Action::Activate(slot) => Some(Box::pin(async move {
                // Activation is what the reboot boots: the rollout, the window, the ward's reboot
                // slots and the gate are asked before it.
                if let Err(why) = steps.clear_to(Stage::Reboot, &version).await {
                    return Done::Input(Box::new(Input::Canceled(why)));
                }
                Done::Input(Box::new(
                    match blocking(move || slots.activate_once(slot)).await {
                        Ok(Ok(())) => Input::Activated,
                        Ok(Err(e)) => Input::BootFailed(e.to_string()),
                        Err(e) => Input::BootFailed(e.to_string()),
                    },
                ))
            })),
            Action::Commit(slot) => Some(Box::pin(async move {
                steps.gate_free("commit", &version).await;
                Done::Input(Box::new(match blocking(move || slots.commit(slot)).await {
                    Ok(Ok(())) => Input::Committed,
                    Ok(Err(e)) => Input::BootFailed(e.to_string()),
                    Err(e) => Input::BootFailed(e.to_string()),
                }))
            })),
            Action::Rollback => Some(Box::pin(async move {
                Done::Input(Box::new(match blocking(move || slots.rollback()).await {
                    Ok(Ok(())) => Input::RolledBack,
                    Ok(Err(e)) => Input::BootFailed(e.to_string()),
                    Err(e) => Input::BootFailed(e.to_string()),
                }))
            })),
            Action::Reboot => Some(Box::pin(async move {
                match blocking(move || slots.reboot()).await {
                    Ok(Ok(Reboot::Simulated)) => Done::Reboot,
                    Ok(Ok(Reboot::Requested)) => std::future::pending().await,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reboot failed; retrying in 30 s");
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Done::Reboot
                    }
                    Err(_) => Done::Reboot,
                }
            })),
            Action::HealthCheck => {
                let cmd = self.cfg.health_check.clone();
                let timeout = self.cfg.health_timeout;
                let version = self
                    .state
                    .as_ref()
                    .and_then(|s| s.phase.offer())
                    .map(|o| o.version.clone())
                    .unwrap_or_default();
                Some(Box::pin(async move {
                    Done::Input(Box::new(
                        health_check(cmd.as_deref(), timeout, &version).await,
                    ))
                }))
            }
            Action::Release(root) => {
                let _ = self.store.remove(&root);
                None
            }
            Action::RetryLater => {
                self.local_failures = self.local_failures.saturating_add(1);
                let pause = LOCAL_RETRY
                    .saturating_mul(1 << (self.local_failures - 1).min(6))
                    .min(LOCAL_RETRY_MAX);
                tracing::warn!(retry_in = %humantime::format_duration(pause), "update attempt stopped by a local fault; trying again later");
                self.retry_at = Some(tokio::time::Instant::now() + pause);
                None
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::State {
            path: PathBuf::new(),
            reason: format!("blocking task failed: {e}"),
        })
}

async fn health_check(cmd: Option<&str>, timeout: Duration, version: &str) -> Input {
    let Some(cmd) = cmd else {
        return Input::Healthy;
    };
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("WARDSWARM_VERSION", version)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Input::Unhealthy(format!(
            "health check `{cmd}` did not finish within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) => Input::Unhealthy(format!("health check `{cmd}` could not run: {e}")),
        Ok(Ok(out)) if out.status.success() => Input::Healthy,
        Ok(Ok(out)) => {
            // What the check said: its stderr, else its stdout, else that it said nothing.
            let said = [&out.stderr, &out.stdout]
                .into_iter()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .find(|s| !s.is_empty())
                .unwrap_or_else(|| "it printed nothing".into());
            Input::Unhealthy(format!(
                "health check `{cmd}` failed ({}): {said}",
                out.status
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Compression, Kind};
    use crate::{agent::slots::FileSlots, outboard, testkit};

    /// A store holding `bytes` as a complete artifact.
    fn stored(dir: &std::path::Path, bytes: &[u8]) -> (Arc<Store>, Hash) {
        let (root, ob) = outboard::create_in_memory(bytes);
        std::fs::write(dir.join("a"), bytes).expect("data");
        std::fs::write(dir.join("a.obao"), ob).expect("outboard");
        let store = Arc::new(Store::open(dir.join("store")).expect("store"));
        store
            .import(
                root,
                bytes.len() as u64,
                &dir.join("a"),
                &dir.join("a.obao"),
            )
            .expect("import");
        (store, root)
    }

    fn offer(artifact: Hash, len: u64, base: Hash, target: &[u8]) -> Offer {
        Offer {
            manifest: Hash::of(b"m"),
            version: "2.0.0".into(),
            counter: 2,
            artifact,
            artifact_length: len,
            kind: Kind::Delta,
            compression: Compression::Zstd,
            base: Some(base),
            target: Hash::of(target),
            target_length: target.len() as u64,
            fallback: None,
        }
    }

    #[test]
    fn a_full_disk_is_a_local_fault_and_a_bad_image_is_not() {
        let full = InstallError::Slot(SlotError::Io {
            path: "slot-b.img".into(),
            cause: io::Error::from_raw_os_error(28), // ENOSPC
        });
        assert!(full.is_local());
        let undecodable = InstallError::Slot(SlotError::Source(io::Error::new(
            io::ErrorKind::InvalidData,
            "zstd: corrupt block",
        )));
        assert!(!undecodable.is_local());
        let wrong = InstallError::Decoded {
            actual: Hash::of(b"a"),
            expected: Hash::of(b"b"),
        };
        assert!(!wrong.is_local());
    }

    #[test]
    fn a_failed_health_check_says_what_it_printed_or_that_it_printed_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let t = Duration::from_secs(30);
        let silent = rt.block_on(health_check(Some("exit 1"), t, "2.0.0"));
        let Input::Unhealthy(why) = silent else {
            panic!("healthy: {silent:?}")
        };
        assert!(why.ends_with("it printed nothing"), "{why}");
        let loud = rt.block_on(health_check(
            Some("echo sensor offline; exit 2"),
            t,
            "2.0.0",
        ));
        let Input::Unhealthy(why) = loud else {
            panic!("healthy: {loud:?}")
        };
        assert!(why.ends_with("sensor offline"), "{why}");
    }

    #[test]
    fn a_delta_installs_against_the_committed_slot_and_is_refused_on_another_base() {
        let d = tempfile::tempdir().expect("tmp");
        let base = testkit::bytes(200_000, 1);
        let mut target = base.clone();
        target[5000..6000].copy_from_slice(&testkit::bytes(1000, 2));
        let mut delta = Vec::new();
        crate::delta::create(&base, &target, crate::delta::Codec::MODELED, &mut delta)
            .expect("delta");
        let (store, root) = stored(d.path(), &delta);

        // The right base: the slot receives the target.
        let slots = FileSlots::provision(&d.path().join("ok"), &base).expect("slots");
        let o = offer(root, delta.len() as u64, Hash::of(&base), &target);
        install(
            &store,
            &slots,
            &o,
            SlotId::B,
            Some((SlotId::A, base.len() as u64)),
            Box::new(|r| r),
        )
        .expect("install");
        assert_eq!(
            std::fs::read(slots.image_path(SlotId::B)).expect("b"),
            target
        );

        // Another image in the committed slot: refused before the inactive slot is touched.
        let other = testkit::bytes(200_000, 9);
        let slots = FileSlots::provision(&d.path().join("wrong"), &other).expect("slots");
        let e = install(
            &store,
            &slots,
            &o,
            SlotId::B,
            Some((SlotId::A, other.len() as u64)),
            Box::new(|r| r),
        )
        .expect_err("wrong base");
        assert!(matches!(e, InstallError::Delta(_)), "{e}");
        assert!(
            !slots.image_path(SlotId::B).exists(),
            "the inactive slot was written"
        );
    }
}
