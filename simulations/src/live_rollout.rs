//! The live engine's rollout: real directed agents (their clocks start at the scenario's `start`),
//! real lease files for the devices in clinical use, real failing health checks, and a real
//! gateway driven over its HTTP API by an operator and an approver.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use wardswarm_node::{
    agent::{directed::Clock, gate::Gate, runtime::AgentConfig},
    rollout::{InstallMode, Rollout, RolloutState},
};
use wardswarm_seeder::{gateway::ReleaseStatus, Gateway};

use crate::rollout::{api_call, create_and_start, RolloutOutcome, RolloutScenario, RELEASE};

/// A rollout in the live engine.
pub(crate) struct LiveRollout {
    pub ro: RolloutScenario,
    /// The simulation's t = 0, which the agents' clocks count from.
    epoch: Arc<Mutex<Instant>>,
    http: reqwest::Client,
    api: Option<String>,
    state: PathBuf,
    started: Option<(u64, String)>,
    pub outcome: RolloutOutcome,
    paused_at: Option<f64>,
    /// Each device's folder, for its lease file.
    dirs: Vec<PathBuf>,
}

impl LiveRollout {
    pub fn new(ro: RolloutScenario, state: PathBuf, dirs: Vec<PathBuf>) -> Result<Self> {
        Ok(Self {
            ro,
            epoch: Arc::new(Mutex::new(Instant::now())),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            api: None,
            state,
            started: None,
            outcome: RolloutOutcome::default(),
            paused_at: None,
            dirs,
        })
    }

    /// t = 0 is now.
    pub fn set_epoch(&self, at: Instant) {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// The gateway's API address.
    pub fn set_api(&mut self, addr: std::net::SocketAddr) {
        self.api = Some(format!("http://{addr}"));
    }

    fn lease(&self, i: usize) -> PathBuf {
        self.dirs[i].join("bedside-lease.json")
    }

    /// The scenario's clock: its `start` at t = 0.
    pub fn clock(&self) -> Clock {
        let (epoch, start) = (self.epoch.clone(), self.ro.start);
        Clock::from_fn(move || {
            let e = *epoch.lock().unwrap_or_else(|e| e.into_inner());
            start.saturating_add(e.elapsed())
        })
    }

    /// Sets up device `i`'s agent: directed, on the scenario's clock, its health check failing if
    /// the scenario says so, with a lease gate if it is ever in clinical use.
    pub fn agent(&self, i: usize, acfg: &mut AgentConfig) {
        acfg.install = InstallMode::Directed;
        acfg.clock = self.clock();
        if self.ro.failing.contains(&i) {
            acfg.health_check = Some("echo 'simulated self-test failure' >&2; exit 1".into());
        }
        if self.ro.in_use.iter().any(|(d, _, _)| *d == i) {
            acfg.gate = Some(Gate::Lease(self.lease(i)));
        }
    }

    /// Whether every targeted device has ended.
    pub fn done(&self) -> bool {
        self.outcome.fleet_s.is_some()
    }

    /// One look, at `t` seconds: leases held or released on schedule; the rollout created once the
    /// gateway verified the release and heard from `devices` devices; then observed, and an error
    /// pause resumed after the scenario's delay.
    pub async fn tick(&mut self, t: f64, gw: &Gateway, devices: usize) -> Result<()> {
        for (d, _, _) in &self.ro.in_use {
            let p = self.lease(*d);
            if self.ro.in_use_at(*d, t) {
                if !p.exists() {
                    std::fs::create_dir_all(&self.dirs[*d])?;
                    wardswarm_node::fsutil::replace(
                        &p,
                        br#"{"in_use": true, "holder": "simulated therapy"}"#,
                        0o644,
                    )?;
                }
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
        let Some(api) = self.api.clone() else {
            return Ok(());
        };
        let Some((id, op)) = self.started.clone() else {
            let verified = gw
                .releases()
                .iter()
                .any(|r| r.version == RELEASE && r.status == ReleaseStatus::Verified);
            if verified && gw.devices().len() >= devices {
                let s =
                    create_and_start(&self.http, &api, &self.state, &self.ro.spec, "sim").await?;
                self.outcome.events.push((t, "rollout started".into()));
                self.started = Some(s);
            }
            return Ok(());
        };
        let path = format!("/api/v1/rollouts/{id}");
        let v = api_call(&self.http, &api, &op, reqwest::Method::GET, &path, None).await?;
        let r: Rollout = serde_json::from_value(v)?;
        match (r.state, self.paused_at) {
            (RolloutState::Paused, None) => {
                self.paused_at = Some(t);
                let why = r.paused_reason.clone().unwrap_or_default();
                self.outcome.events.push((t, format!("paused: {why}")));
            }
            (RolloutState::Paused, Some(p)) if self.ro.resume_due(p, t) => {
                api_call(
                    &self.http,
                    &api,
                    &op,
                    reqwest::Method::POST,
                    &format!("{path}/resume"),
                    None,
                )
                .await?;
                self.outcome
                    .events
                    .push((t, "resumed by the operator".into()));
                self.paused_at = None;
            }
            _ => {}
        }
        self.outcome.observe(t, &r);
        Ok(())
    }
}
