//! Rollouts in simulations: a scenario's `[rollout]` (waves, thresholds, a window, devices in
//! clinical use for given intervals, devices whose health check fails), and what became of it.
//!
//! The model engine replays a rollout over the download times its flow model found, in simulated
//! time, with the product's own pure parts: [`Rollout`] (waves, thresholds, pauses), the ward
//! planner ([`ward::plan`]: directives and reboot slots) and the device's [`decide`] (windows,
//! holds). Install and reboot take the scenario's `install` and `reboot` times. The live engine runs
//! the same scenario with real directed agents, a real gateway driven over its API, real lease
//! files and real health checks; see `live.rs`.
//!
//! ```toml
//! [rollout]
//! start = "2027-01-15T20:59:30Z"   # the simulated wall clock at t = 0 (windows are judged by it)
//! reboot_limit = 2                 # the ward's reboot slots
//! install = "20s"                  # model engine: writing and verifying the slot
//! reboot = "30s"                   # model engine: reboot and health check
//! resume_after_error = "60s"       # an operator resumes an error pause this long after it
//! window = { schedule = "0 22 * * *", duration = "2h", timezone = "Europe/Berlin" }
//! failing = [3]                    # devices (0-based) whose health check fails
//! [[rollout.groups]]
//! name = "canary"
//! select = { by = "devices", ids = ["w01-d001"] }
//! [[rollout.groups]]
//! name = "rest"
//! select = { by = "rest" }
//! [[rollout.in_use]]               # device 5 is in clinical use from 0 s to 90 s
//! device = 5
//! from = "0s"
//! to = "90s"
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use wardswarm_node::{
    rollout::{
        directive::{decide, Decision, Held, Hold, Stage},
        ward, DeviceInfo, DeviceNow, DeviceStatus, ErrorCondition, GroupSpec, GroupState,
        InstallMode, Rollout, RolloutSpec, RolloutState, WardPolicy, Window, WindowSpec,
    },
    Timestamp,
};

/// The release every simulated ward rolls out.
pub const RELEASE: &str = "2.0.0";

/// A scenario's rollout, checked.
#[derive(Debug, Clone)]
pub struct RolloutScenario {
    /// The rollout (release [`RELEASE`]).
    pub spec: RolloutSpec,
    /// The simulated wall clock at t = 0.
    pub start: Timestamp,
    /// The ward's reboot slots.
    pub reboot_limit: usize,
    /// Model engine: writing and verifying the slot.
    pub install: Duration,
    /// Model engine: reboot and health check.
    pub reboot: Duration,
    /// An operator resumes an error pause this long after it (`None`: it stays paused).
    pub resume_after_error: Option<Duration>,
    /// Devices in clinical use: (device, from, to).
    pub in_use: Vec<(usize, Duration, Duration)>,
    /// Devices whose health check fails.
    pub failing: BTreeSet<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutFile {
    start: String,
    #[serde(default = "two")]
    reboot_limit: usize,
    #[serde(default = "twenty")]
    install: String,
    #[serde(default = "thirty")]
    reboot: String,
    #[serde(default)]
    resume_after_error: Option<String>,
    #[serde(default)]
    action: wardswarm_node::rollout::ActionType,
    groups: Vec<GroupSpec>,
    #[serde(default)]
    error: ErrorCondition,
    #[serde(default)]
    window: Option<WindowSpec>,
    #[serde(default)]
    in_use: Vec<InUseFile>,
    #[serde(default)]
    failing: Vec<usize>,
}

fn two() -> usize {
    2
}
fn twenty() -> String {
    "20s".into()
}
fn thirty() -> String {
    "30s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InUseFile {
    device: usize,
    from: String,
    to: String,
}

fn dur(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("rollout: duration {s:?}: {e}"))
}

impl RolloutFile {
    /// Checks the section against a ward of `devices` devices.
    pub(crate) fn check(self, devices: usize) -> Result<RolloutScenario, String> {
        let start: Timestamp = self
            .start
            .parse()
            .map_err(|e| format!("rollout: start {:?}: {e}", self.start))?;
        if self.reboot_limit == 0 {
            return Err("rollout: reboot_limit must be at least 1".into());
        }
        if let Some(w) = &self.window {
            Window::new(w.clone()).map_err(|e| format!("rollout: {e}"))?;
        }
        let spec = RolloutSpec {
            name: "simulated rollout".into(),
            release: RELEASE.into(),
            action: self.action,
            groups: self.groups,
            error: self.error,
            window: self.window,
        };
        // The groups and thresholds are checked as the gateway checks them.
        Rollout::new(0, spec.clone(), "sim", &[], false).map_err(|e| format!("rollout: {e}"))?;
        let mut in_use = Vec::new();
        for u in self.in_use {
            if u.device >= devices {
                return Err(format!("rollout: in_use: no device {}", u.device));
            }
            in_use.push((u.device, dur(&u.from)?, dur(&u.to)?));
        }
        if let Some(d) = self.failing.iter().find(|d| **d >= devices) {
            return Err(format!("rollout: failing: no device {d}"));
        }
        Ok(RolloutScenario {
            spec,
            start,
            reboot_limit: self.reboot_limit,
            install: dur(&self.install)?,
            reboot: dur(&self.reboot)?,
            resume_after_error: self.resume_after_error.as_deref().map(dur).transpose()?,
            in_use,
            failing: self.failing.into_iter().collect(),
        })
    }
}

impl RolloutScenario {
    /// Whether the operator resumes, at `t`, a pause that began at `paused_at` (seconds).
    pub fn resume_due(&self, paused_at: f64, t: f64) -> bool {
        self.resume_after_error
            .is_some_and(|after| t - paused_at >= after.as_secs_f64())
    }

    /// Whether device `i` is in clinical use at `t` seconds.
    pub fn in_use_at(&self, i: usize, t: f64) -> bool {
        self.in_use
            .iter()
            .any(|(d, a, b)| *d == i && a.as_secs_f64() <= t && t < b.as_secs_f64())
    }
}

/// One wave, as it went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupOutcome {
    /// Its name.
    pub name: String,
    /// Its state at the end.
    pub state: String,
    /// Its devices.
    pub devices: usize,
    /// How many devices ended in each status.
    pub statuses: BTreeMap<String, usize>,
    /// When it started running, seconds.
    pub started_s: Option<f64>,
    /// When it finished or went to error, seconds.
    pub ended_s: Option<f64>,
}

/// A rollout, as it went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RolloutOutcome {
    /// Its state at the end.
    pub state: String,
    /// When every targeted device had ended (finished, error or canceled), seconds.
    pub fleet_s: Option<f64>,
    /// The waves.
    pub groups: Vec<GroupOutcome>,
    /// Seconds of each sample of `finished`.
    pub t: Vec<f64>,
    /// Finished devices per wave at each sample.
    pub finished: Vec<Vec<usize>>,
    /// Seconds each device spent gated, by device id.
    pub gated_s: BTreeMap<String, f64>,
    /// What happened (seconds, what).
    pub events: Vec<(f64, String)>,
}

impl RolloutOutcome {
    /// Takes a snapshot of `r` at `t`: the per-wave series and the waves' start and end times.
    pub fn observe(&mut self, t: f64, r: &Rollout) {
        if self.groups.is_empty() {
            self.groups = r
                .groups
                .iter()
                .map(|g| GroupOutcome {
                    name: g.spec.name.clone(),
                    devices: g.devices.len(),
                    ..Default::default()
                })
                .collect();
        }
        for (o, g) in self.groups.iter_mut().zip(&r.groups) {
            if g.state != GroupState::Scheduled && o.started_s.is_none() {
                o.started_s = Some(t);
            }
            if matches!(g.state, GroupState::Finished | GroupState::Error) && o.ended_s.is_none() {
                o.ended_s = Some(t);
            }
            o.state = serde_json::to_value(g.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            o.statuses = g
                .statuses()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect();
        }
        self.state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let all_ended = r
            .groups
            .iter()
            .all(|g| g.devices.values().all(|s| s.is_final()));
        if all_ended && self.fleet_s.is_none() {
            self.fleet_s = Some(t);
        }
        self.t.push(t);
        self.finished.push(
            r.groups
                .iter()
                .map(|g| {
                    g.devices
                        .values()
                        .filter(|s| **s == DeviceStatus::Finished)
                        .count()
                })
                .collect(),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Downloading,
    Downloaded,
    Installing { until: f64 },
    WaitReboot,
    Rebooting { until: f64 },
    Ended,
}

/// Replays `ro` over devices `ids` whose downloads completed at `downloaded` (seconds; `None`:
/// never), in simulated time with a one-second step, up to `timeout` seconds. Returns the outcome
/// and when each device committed.
pub fn replay(
    ro: &RolloutScenario,
    ids: &[String],
    downloaded: &[Option<f64>],
    timeout: f64,
) -> (RolloutOutcome, Vec<Option<f64>>) {
    const DT: f64 = 1.0;
    let targets: Vec<DeviceInfo> = ids
        .iter()
        .map(|id| DeviceInfo {
            id: id.clone(),
            product: None,
            hardware: crate::live::HARDWARE.into(),
            labels: vec![],
        })
        .collect();
    let mut out = RolloutOutcome::default();
    let mut committed = vec![None; ids.len()];
    let Ok(mut r) = Rollout::new(1, ro.spec.clone(), "sim-operator", &targets, false) else {
        return (out, committed);
    };
    let _ = r.start();
    out.events.push((0.0, "rollout started".into()));
    let policy = WardPolicy {
        reboot_limit: ro.reboot_limit,
        window: None,
    };
    let index: BTreeMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut step = vec![Step::Downloading; ids.len()];
    let mut now_of = vec![DeviceNow::default(); ids.len()];
    let mut gated = vec![0.0f64; ids.len()];
    let mut slots = BTreeSet::new();
    let mut paused_at: Option<f64> = None;
    let far = ro.start.saturating_add(Duration::from_secs(365 * 86_400));
    let mut t = 0.0;
    while t <= timeout {
        let clock = ro.start.saturating_add(Duration::from_secs_f64(t));
        let devices: BTreeMap<String, DeviceNow> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), now_of[i]))
            .collect();
        let plan = ward::plan(std::slice::from_ref(&r), &devices, &policy, &mut slots, far);
        for (id, d) in plan {
            let Some(&i) = index.get(id.as_str()) else {
                continue;
            };
            let window = d.window.clone().and_then(|w| Window::new(w).ok());
            let held = Held {
                directive: d,
                window,
            };
            let fetched = downloaded.get(i).copied().flatten().is_some_and(|x| x <= t);
            let status = advance(
                ro,
                i,
                t,
                fetched,
                &held,
                clock,
                &mut step[i],
                &mut gated[i],
                DT,
            );
            now_of[i] = DeviceNow {
                wants_reboot: step[i] == Step::WaitReboot,
                rebooting: matches!(step[i], Step::Rebooting { .. }),
                idle: step[i] == Step::Ended,
            };
            if let Some(s) = status {
                if s == DeviceStatus::Finished {
                    committed[i] = Some(t);
                }
                r.report(&id, s);
            }
        }
        match (r.state, paused_at) {
            (RolloutState::Paused, None) => {
                paused_at = Some(t);
                let why = r.paused_reason.clone().unwrap_or_default();
                out.events.push((t, format!("paused: {why}")));
            }
            (RolloutState::Paused, Some(p)) if ro.resume_due(p, t) && r.resume().is_ok() => {
                out.events.push((t, "resumed by the operator".into()));
                paused_at = None;
            }
            _ => {}
        }
        out.observe(t, &r);
        if out.fleet_s.is_some() {
            break;
        }
        t += DT;
    }
    for (i, id) in ids.iter().enumerate() {
        out.gated_s.insert(id.clone(), gated[i]);
    }
    (out, committed)
}

/// One step of device `i`: what it reports, if its status changed.
#[allow(clippy::too_many_arguments)]
fn advance(
    ro: &RolloutScenario,
    i: usize,
    t: f64,
    fetched: bool,
    held: &Held,
    clock: Timestamp,
    step: &mut Step,
    gated: &mut f64,
    dt: f64,
) -> Option<DeviceStatus> {
    let go = |stage| decide(InstallMode::Directed, Some(held), RELEASE, stage, clock);
    let in_use = ro.in_use_at(i, t);
    let mut gate = |d: Decision, then: Step, report: DeviceStatus| match d {
        Decision::Cancel(_) => (Step::Ended, Some(DeviceStatus::Canceled)),
        Decision::Hold(Hold::NotYet | Hold::DownloadOnly | Hold::NoDirective | Hold::Expired) => {
            (*step, None)
        }
        Decision::Gated { .. } => {
            *gated += dt;
            (*step, Some(DeviceStatus::Gated))
        }
        Decision::Go { override_gate, .. } if in_use && !override_gate => {
            *gated += dt;
            (*step, Some(DeviceStatus::Gated))
        }
        Decision::Go { .. } => (then, Some(report)),
    };
    let (next, status) = match *step {
        Step::Downloading => match go(Stage::Fetch) {
            Decision::Cancel(_) => (Step::Ended, Some(DeviceStatus::Canceled)),
            Decision::Go { .. } if fetched => (Step::Downloaded, Some(DeviceStatus::Downloaded)),
            Decision::Go { .. } => (Step::Downloading, Some(DeviceStatus::Downloading)),
            _ => (Step::Downloading, None),
        },
        Step::Downloaded => gate(
            go(Stage::Install),
            Step::Installing {
                until: t + ro.install.as_secs_f64(),
            },
            DeviceStatus::Installing,
        ),
        Step::Installing { until } if t >= until => (Step::WaitReboot, None),
        Step::WaitReboot => gate(
            go(Stage::Reboot),
            Step::Rebooting {
                until: t + ro.reboot.as_secs_f64(),
            },
            DeviceStatus::Rebooting,
        ),
        Step::Rebooting { until } if t >= until => (
            Step::Ended,
            Some(if ro.failing.contains(&i) {
                DeviceStatus::Error
            } else {
                DeviceStatus::Finished
            }),
        ),
        s => (s, None),
    };
    *step = next;
    status
}

/// One call to a gateway's API with a bearer token; the JSON answer, or an error naming the route
/// and the gateway's status and message.
pub async fn api_call(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let mut req = http
        .request(method, format!("{api}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("calling {path}"))?;
    let status = resp.status();
    let text = resp.bytes().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{path}: the gateway answered {status}: {v}");
    }
    Ok(v)
}

/// Operator and approver tokens made with the gateway's first admin token (in `state`), a rollout
/// of `spec` created by the operator, approved by the approver (four eyes) and started; returns the
/// rollout's id and the operator's token.
pub async fn create_and_start(
    http: &reqwest::Client,
    api: &str,
    state: &std::path::Path,
    spec: &RolloutSpec,
    prefix: &str,
) -> anyhow::Result<(u64, String)> {
    use anyhow::Context;
    let admin = std::fs::read_to_string(state.join("admin.token"))
        .context("reading the gateway's admin token")?;
    let admin = admin.trim();
    let post = reqwest::Method::POST;
    let mut tokens = Vec::new();
    for role in ["operator", "approver"] {
        let v = api_call(
            http,
            api,
            admin,
            post.clone(),
            "/api/v1/tokens",
            Some(serde_json::json!({"name": format!("{prefix}-{role}"), "role": role})),
        )
        .await?;
        tokens.push(
            v["token"]
                .as_str()
                .context("the gateway's answer has no token")?
                .to_string(),
        );
    }
    let (operator, approver) = (tokens[0].clone(), tokens[1].clone());
    let r = api_call(
        http,
        api,
        &operator,
        post.clone(),
        "/api/v1/rollouts",
        Some(serde_json::to_value(spec)?),
    )
    .await?;
    let id = r["id"].as_u64().context("rollout id")?;
    api_call(
        http,
        api,
        &approver,
        post.clone(),
        &format!("/api/v1/rollouts/{id}/approve"),
        Some(serde_json::json!({"remark": format!("{prefix}: release notes read")})),
    )
    .await?;
    api_call(
        http,
        api,
        &operator,
        post,
        &format!("/api/v1/rollouts/{id}/start"),
        None,
    )
    .await?;
    Ok((id, operator))
}
