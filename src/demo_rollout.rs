//! `wardswarm demo --rollout`: the embedded ward, its devices directed by a rollout driven through
//! the gateway's HTTP API as an operator and an approver would drive it.
//!
//! The waves: a canary of one device, then 25 % of the rest, then the rest. The first device of the
//! 25 % wave fails its health check, so that wave reaches its error threshold and the rollout
//! pauses; the demo resumes it (which accepts the errored wave) once it has shown the pause. The
//! last device is in clinical use: a bedside lease holds it, gated, until every other device of its
//! wave has finished, when the demo releases the lease.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The devices with a part to play, by index (0-based) in a ward of `n`.
#[derive(Debug, Clone)]
pub struct Cast {
    /// Its health check fails.
    pub failing: String,
    /// In clinical use until the demo frees it.
    pub in_use: String,
}

impl Cast {
    /// With the waves' fill order (device id order): the canary is pump-01, the 25 % wave starts at
    /// pump-02, the rest ends with the last device.
    pub fn new(n: usize) -> Result<Self> {
        if n < 4 {
            bail!("--rollout needs at least 4 devices (a canary, 25 %, and the rest)");
        }
        Ok(Self {
            failing: "pump-02".into(),
            in_use: format!("pump-{n:02}"),
        })
    }
}

/// The lease file of the device in clinical use.
pub fn lease_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(id).join("bedside-lease.json")
}

/// Holds the lease (written before the device starts).
pub fn hold_lease(dir: &Path, id: &str) -> Result<()> {
    let p = lease_path(dir, id);
    std::fs::create_dir_all(p.parent().context("lease folder")?)?;
    std::fs::write(&p, br#"{"in_use": true, "holder": "infusion at bed 12"}"#)?;
    Ok(())
}

/// The rollout, driven over the API.
pub struct Driver {
    api: String,
    http: reqwest::Client,
    operator: String,
    id: u64,
    cast: Cast,
    dir: PathBuf,
    /// The last answer of `GET /api/v1/rollouts/{id}`.
    pub last: Value,
    paused_seen: Option<Instant>,
    /// What happened, for the summary.
    pub events: Vec<String>,
    lease_released: bool,
}

use wardswarm_sim::rollout::api_call as call;

impl Driver {
    /// Makes an operator and an approver token with the gateway's first admin token, creates the
    /// rollout as the operator, approves it as the approver (four eyes) and starts it.
    pub async fn start(addr: SocketAddr, state: &Path, dir: &Path, cast: Cast) -> Result<Self> {
        let api = format!("http://{addr}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let spec: wardswarm_node::rollout::RolloutSpec = serde_json::from_value(json!({
            "name": "2.0.0: canary, 25 %, rest",
            "release": "2.0.0",
            "action": "forced",
            "groups": [
                {"name": "canary", "select": {"by": "devices", "ids": ["pump-01"]}},
                {"name": "quarter", "select": {"by": "percent", "percent": 25},
                 "error": {"count": 1, "min_sample": 1}},
                {"name": "rest", "select": {"by": "rest"}}
            ]
        }))?;
        let (id, operator) =
            wardswarm_sim::rollout::create_and_start(&http, &api, state, &spec, "demo").await?;
        let last = Value::Null;
        Ok(Self {
            api,
            http,
            operator,
            id,
            cast,
            dir: dir.into(),
            last,
            paused_seen: None,
            events: vec![format!(
                "rollout {id} created by demo-operator, approved by demo-approver, started"
            )],
            lease_released: false,
        })
    }

    /// The group a device is in.
    pub fn group_of(&self, device: &str) -> Option<String> {
        self.last["groups"].as_array()?.iter().find_map(|g| {
            g["devices"]
                .get(device)
                .and(g["spec"]["name"].as_str().map(String::from))
        })
    }

    /// The rollout's state.
    pub fn state(&self) -> &str {
        self.last["state"].as_str().unwrap_or("")
    }

    /// One look at the rollout: resumes an error pause it has shown for a second, and frees the
    /// device in clinical use once the rest of its wave has finished.
    pub async fn step(&mut self) -> Result<()> {
        let path = format!("/api/v1/rollouts/{}", self.id);
        self.last = call(
            &self.http,
            &self.api,
            &self.operator,
            reqwest::Method::GET,
            &path,
            None,
        )
        .await?;
        if self.state() == "paused" {
            let seen = *self.paused_seen.get_or_insert_with(|| {
                let why = self.last["paused_reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                self.events.push(format!("rollout paused: {why}"));
                Instant::now()
            });
            if seen.elapsed() >= Duration::from_secs(1) {
                self.last = call(
                    &self.http,
                    &self.api,
                    &self.operator,
                    reqwest::Method::POST,
                    &format!("{path}/resume"),
                    Some(json!({"remark": "demo: the failed device is taken out of service"})),
                )
                .await?;
                self.events
                    .push("resumed by demo-operator (the errored wave is accepted)".into());
                self.paused_seen = None;
            }
        }
        if !self.lease_released {
            let busy = self.last["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["devices"].get(&self.cast.in_use).is_some())
                .flat_map(|g| g["devices"].as_object().into_iter().flatten())
                .filter(|(id, _)| **id != self.cast.in_use)
                .any(|(_, s)| s != "finished");
            let own = self.group_of(&self.cast.in_use);
            let running = self.last["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["spec"]["name"].as_str() == own.as_deref() && g["state"] == "running");
            if running && !busy {
                std::fs::remove_file(lease_path(&self.dir, &self.cast.in_use))
                    .context("releasing the bedside lease")?;
                self.events.push(format!(
                    "{}: the bedside application released its lease",
                    self.cast.in_use
                ));
                self.lease_released = true;
            }
        }
        Ok(())
    }

    /// Per wave of the summary: its name, its state and its devices' statuses (the non-zero ones,
    /// e.g. `finished 1, downloaded 8`).
    pub fn waves(&self) -> Vec<(String, String, String)> {
        let s = self.summary();
        s["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let st: Vec<String> = g["statuses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.as_u64() != Some(0))
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let text = |k: &str| g[k].as_str().unwrap_or("").to_string();
                (text("name"), text("state"), st.join(", "))
            })
            .collect()
    }

    /// One line: each wave and its devices' statuses, e.g. `canary finished 1 | rest downloaded 8`.
    pub fn progress(&self) -> String {
        let waves: Vec<String> = self
            .waves()
            .into_iter()
            .map(|(name, _, st)| format!("{name} {st}"))
            .collect();
        format!("{} | {}", self.state(), waves.join(" | "))
    }

    /// `rollout` for the demo's JSON: its state, and per group its name, state and statuses.
    pub fn summary(&self) -> Value {
        let groups: Vec<Value> = self.last["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                // Every status, zeros included, as the API's group counts.
                let mut statuses: serde_json::Map<String, Value> =
                    wardswarm_node::rollout::DeviceStatus::ALL
                        .iter()
                        .map(|s| (s.as_str().to_string(), json!(0)))
                        .collect();
                for s in g["devices"].as_object().into_iter().flatten().map(|x| x.1) {
                    let k = s.as_str().unwrap_or("unknown").to_string();
                    let n = statuses.get(&k).and_then(Value::as_u64).unwrap_or(0);
                    statuses.insert(k, json!(n + 1));
                }
                json!({"name": g["spec"]["name"], "state": g["state"], "statuses": statuses})
            })
            .collect();
        json!({"id": self.id, "state": self.state(), "groups": groups, "events": self.events})
    }
}
