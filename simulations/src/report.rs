//! What a run produced, the Kumar–Ross lower bound, the JSON report and the CI checks.

use serde_json::{json, Value};

use crate::scenario::{Behaviour, Installed, Scenario};

/// A port without a cap, bytes/s (1 Gbit/s), for the bound as for the model.
pub const PORT: f64 = 125e6;

/// One device's run.
#[derive(Debug, Clone)]
pub struct DeviceOutcome {
    pub ward: usize,
    pub id: String,
    pub behaviour: Behaviour,
    /// Honest and on the old release: its update is measured.
    pub measured: bool,
    /// Seconds from the release announcement until it held every verified group.
    pub completed_s: Option<f64>,
    /// Seconds until it committed the release (engines that run the agent).
    pub updated_s: Option<f64>,
    pub from_gateway: u64,
    pub from_peers: u64,
    pub uploaded: u64,
    /// Peers it banned.
    pub banned: usize,
}

/// Time series of ward 0, for the plots.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub interval_s: f64,
    pub t: Vec<f64>,
    pub gateway_upload: Vec<f64>,
    pub device_upload_mean: Vec<f64>,
    pub device_upload_max: Vec<f64>,
    pub wan: Vec<u64>,
    pub completed: Vec<usize>,
}

impl Series {
    pub fn new(interval_s: f64) -> Self {
        Self {
            interval_s,
            ..Default::default()
        }
    }
    pub fn push(&mut self, t: f64, gateway: f64, devices: &[f64], wan: u64, completed: usize) {
        self.t.push(t);
        self.gateway_upload.push(gateway);
        let n = devices.len().max(1) as f64;
        self.device_upload_mean
            .push(devices.iter().sum::<f64>() / n);
        self.device_upload_max
            .push(devices.iter().copied().fold(0.0, f64::max));
        self.wan.push(wan);
        self.completed.push(completed);
    }
}

/// The highest measured rate over cap, over every node and sampling window.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapSample {
    pub max_ratio: f64,
    pub samples: u64,
    /// Which cap and when the highest ratio was seen.
    pub worst: Option<(&'static str, f64)>,
}

impl CapSample {
    /// One window's rate over cap, for the cap named `what`, at `t` seconds.
    pub fn observe(&mut self, what: &'static str, t: f64, ratio: f64) {
        self.samples += 1;
        if ratio > self.max_ratio {
            self.max_ratio = ratio;
            self.worst = Some((what, t));
        }
    }
    pub fn merge(&mut self, o: &CapSample) {
        self.samples += o.samples;
        if o.max_ratio > self.max_ratio {
            self.max_ratio = o.max_ratio;
            self.worst = o.worst;
        }
    }
}

/// Clinical traffic across the ward LAN (netns engine).
#[derive(Debug, Clone, Copy)]
pub struct ClinicalOutcome {
    pub offered: f64,
    pub alone: f64,
    pub during_update: f64,
}

/// Everything an engine measured.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub engine: &'static str,
    pub scenario: String,
    /// F: the artifact's length in bytes (the scenario's size, or what the release build produced).
    pub artifact_bytes: u64,
    pub devices: Vec<DeviceOutcome>,
    /// WAN bytes per ward (artifact, outboard, index and manifest).
    pub wan_per_ward: Vec<u64>,
    pub gateway_upload_per_ward: Vec<u64>,
    pub gateway_left_s: Option<f64>,
    pub refused_admission: usize,
    pub caps: CapSample,
    pub series: Series,
    /// Simulated (model) or real seconds the run lasted.
    pub elapsed_s: f64,
    /// Wall-clock seconds the engine took.
    pub wall_s: f64,
    pub clinical: Option<ClinicalOutcome>,
    /// The rollout, if the scenario has one (the first ward's).
    pub rollout: Option<crate::rollout::RolloutOutcome>,
    /// Ward-protocol streams opened over the run, by protocol, every node summed (live engine; the
    /// model engine counts transfer streams only).
    pub streams_opened: std::collections::BTreeMap<String, u64>,
    /// Frames sent from the nodes' outboxes over the run, by the protocol that carried them, every
    /// node summed (live engine).
    pub frames_sent: std::collections::BTreeMap<String, u64>,
    /// Transfers requested over the run, by how they ended, every node summed.
    pub transfers: std::collections::BTreeMap<String, u64>,
    /// Chunk groups asked for in transfer requests, every node summed.
    pub groups_requested: u64,
}

impl RunOutcome {
    pub fn new(engine: &'static str, sc: &Scenario) -> Self {
        Self {
            engine,
            scenario: sc.name.clone(),
            artifact_bytes: sc.artifact,
            devices: vec![],
            wan_per_ward: vec![],
            gateway_upload_per_ward: vec![],
            gateway_left_s: None,
            refused_admission: 0,
            caps: CapSample::default(),
            series: Series::default(),
            elapsed_s: 0.0,
            wall_s: 0.0,
            clinical: None,
            rollout: None,
            streams_opened: Default::default(),
            frames_sent: Default::default(),
            transfers: Default::default(),
            groups_requested: 0,
        }
    }
}

/// The fluid lower bound for one ward (Kumar and Ross 2006).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// F, bytes.
    pub f: f64,
    /// Gateway LAN upload cap.
    pub u_s: f64,
    /// Smallest download cap among devices that update.
    pub d_min: f64,
    /// Upload caps of every honest device in the ward (those that update and those that already have it).
    pub sum_u: f64,
    /// Devices that update.
    pub n: usize,
    /// max(F/u_s, F/d_min, N·F/(u_s + Σu_i)).
    pub t_min: f64,
    /// N·F/u_s: every device downloading from the gateway alone.
    pub client_server: f64,
    /// F / WAN cap: no device can finish before the artifact crossed the WAN.
    pub wan: f64,
}

impl Bound {
    /// The bound of one ward of `sc` for an artifact of `f` bytes.
    pub fn of(sc: &Scenario, f: u64) -> Self {
        let rate = |r: Option<u64>| r.map_or(PORT, |v| v as f64);
        let f = f as f64;
        let u_s = rate(sc.gateway.upload);
        let measured: Vec<_> = sc.devices.iter().filter(|d| d.measured()).collect();
        let n = measured.len();
        let d_min = measured
            .iter()
            .map(|d| rate(d.download))
            .fold(f64::INFINITY, f64::min);
        let sum_u: f64 = sc
            .devices
            .iter()
            .filter(|d| {
                d.behaviour == Behaviour::Honest
                    && (d.installed == Installed::Old || d.installed == Installed::New)
            })
            .map(|d| rate(d.upload))
            .sum();
        let t_min = (f / u_s).max(f / d_min).max(n as f64 * f / (u_s + sum_u));
        Self {
            f,
            u_s,
            d_min,
            sum_u,
            n,
            t_min,
            client_server: n as f64 * f / u_s,
            wan: f / rate(sc.gateway.wan),
        }
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied()
}

/// The report: one JSON object, plus the reasons a CI run fails.
#[derive(Debug, Clone)]
pub struct Report {
    pub json: Value,
    pub failures: Vec<String>,
}

/// Builds the report of a run.
pub fn build(sc: &Scenario, run: &RunOutcome) -> Report {
    let b = Bound::of(sc, run.artifact_bytes);
    let measured: Vec<&DeviceOutcome> = run.devices.iter().filter(|d| d.measured).collect();
    let mut times: Vec<f64> = measured.iter().filter_map(|d| d.completed_s).collect();
    times.sort_by(f64::total_cmp);
    let completed = times.len();
    // A rollout's failing devices roll back: they are not expected to commit.
    let failing = |d: &DeviceOutcome| {
        sc.rollout.as_ref().is_some_and(|r| {
            d.id[5..]
                .parse::<usize>()
                .is_ok_and(|n| r.failing.contains(&(n - 1)))
        })
    };
    let updated = measured
        .iter()
        .filter(|d| d.updated_s.is_some() && !failing(d))
        .count();
    let expected_updates = measured.iter().filter(|d| !failing(d)).count();
    let engine_updates = run.engine != "model" || sc.rollout.is_some();
    let all = measured.len();
    let p50 = quantile(&times, 0.5);
    let p90 = quantile(&times, 0.9);
    let max = if completed == all {
        times.last().copied()
    } else {
        None
    };
    let wan_max = run.wan_per_ward.iter().copied().max().unwrap_or(0);
    let wan_total: u64 = run.wan_per_ward.iter().sum();
    let f = run.artifact_bytes;
    let gw_up: u64 = run.gateway_upload_per_ward.iter().sum();
    let copies = gw_up as f64 / (f as f64 * sc.wards as f64);
    let ratio = |x: Option<f64>| x.map(|v| v / b.t_min);
    let mut failures = Vec::new();
    if completed < all {
        failures.push(format!(
            "{} of {all} devices did not complete the download",
            all - completed
        ));
    }
    if engine_updates && updated < expected_updates {
        failures.push(format!(
            "{} of {expected_updates} devices did not commit the update",
            expected_updates - updated
        ));
    }
    if let Some(ro) = &run.rollout {
        if ro.state != "finished" {
            failures.push(format!("the rollout ended {}, not finished", ro.state));
        }
        if let Some(d) = measured
            .iter()
            .find(|d| failing(d) && d.updated_s.is_some())
        {
            failures.push(format!(
                "{} committed although its health check fails",
                d.id
            ));
        }
    }
    let wan_ratio = wan_max as f64 / f as f64;
    if wan_ratio > 1.01 {
        failures.push(format!(
            "WAN bytes {wan_max} are {wan_ratio:.4} x the artifact (limit 1.01)"
        ));
    }
    if run.caps.max_ratio > 1.05 {
        let (what, t) = run.caps.worst.unwrap_or(("?", 0.0));
        failures.push(format!(
            "a cap was exceeded: {what} ran at {:.3} x its cap over the window ending at {t:.1} s (limit 1.05)",
            run.caps.max_ratio
        ));
    }
    let devices: Vec<Value> = run
        .devices
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "ward": d.ward,
                "behaviour": format!("{:?}", d.behaviour).to_lowercase(),
                "measured": d.measured,
                "completed_s": d.completed_s,
                "updated_s": d.updated_s,
                "bytes_from_gateway": d.from_gateway,
                "bytes_from_peers": d.from_peers,
                "bytes_uploaded": d.uploaded,
                "peers_banned": d.banned,
            })
        })
        .collect();
    let json = json!({
        "scenario": sc.name,
        "engine": run.engine,
        "seed": sc.seed,
        "wards": sc.wards,
        "devices": all,
        "devices_completed": completed,
        "devices_updated": if engine_updates { Some(updated) } else { None },
        "artifact_bytes": f,
        "wan_bytes": wan_total,
        "wan_bytes_per_ward_max": wan_max,
        "wan_over_artifact": wan_ratio,
        "t_min_s": b.t_min,
        "p50_s": p50,
        "p90_s": p90,
        "max_s": max,
        "p50_over_t_min": ratio(p50),
        "max_over_t_min": ratio(max),
        "client_server_s": b.client_server,
        "wan_floor_s": b.wan,
        "bound": {
            "f_bytes": b.f, "u_s": b.u_s, "d_min": b.d_min, "sum_u": b.sum_u, "n": b.n,
            "f_over_u_s": b.f / b.u_s, "f_over_d_min": b.f / b.d_min,
            "n_f_over_total_upload": b.n as f64 * b.f / (b.u_s + b.sum_u),
        },
        "gateway_upload_bytes": gw_up,
        "gateway_upload_copies": copies,
        "gateway_left_s": run.gateway_left_s,
        "cap_max_ratio": run.caps.max_ratio,
        "cap_worst": run.caps.worst.map(|(what, t)| json!({"cap": what, "at_s": t})),
        "refused_admission": run.refused_admission,
        "peers_banned": run.devices.iter().map(|d| d.banned).sum::<usize>(),
        "clinical": run.clinical.map(|c| json!({
            "offered_bytes_per_s": c.offered,
            "alone_bytes_per_s": c.alone,
            "during_update_bytes_per_s": c.during_update,
            "kept": c.during_update / c.alone.max(1.0),
        })),
        "rollout": run.rollout.as_ref().map(|r| json!({
            "state": r.state,
            "fleet_s": r.fleet_s,
            "groups": r.groups,
            "events": r.events.iter().map(|(t, e)| json!({"t_s": t, "event": e})).collect::<Vec<_>>(),
            "gated_s": r.gated_s,
            "series": {"t_s": r.t, "finished_per_group": r.finished},
        })),
        "streams_opened": run.streams_opened,
        "frames_sent": run.frames_sent,
        "transfers": run.transfers,
        "groups_requested": run.groups_requested,
        "groups_per_transfer": run.groups_requested as f64 / run.transfers.values().sum::<u64>().max(1) as f64,
        "elapsed_s": run.elapsed_s,
        "wall_s": run.wall_s,
        "checks_failed": failures,
        "device_results": devices,
    });
    Report { json, failures }
}

/// A short text summary for people.
pub fn text(r: &Report) -> String {
    let j = &r.json;
    let f = |k: &str| j[k].as_f64().map_or("-".to_string(), |v| format!("{v:.2}"));
    let mut s = format!(
        "scenario {} ({} engine): {} devices in {} ward(s), artifact {} B\n",
        j["scenario"].as_str().unwrap_or(""),
        j["engine"].as_str().unwrap_or(""),
        j["devices"],
        j["wards"],
        j["artifact_bytes"]
    );
    s += &format!(
        "completed {} of {}; p50 {} s, p90 {} s, max {} s\n",
        j["devices_completed"],
        j["devices"],
        f("p50_s"),
        f("p90_s"),
        f("max_s")
    );
    s += &format!(
        "T_min {} s (Kumar-Ross); p50/T_min {}, max/T_min {}; client-server {} s\n",
        f("t_min_s"),
        f("p50_over_t_min"),
        f("max_over_t_min"),
        f("client_server_s")
    );
    s += &format!(
        "WAN {} B = {:.4} x the artifact per ward; gateway uploaded {:.2} copies; caps peak {:.3} x\n",
        j["wan_bytes"],
        j["wan_over_artifact"].as_f64().unwrap_or(0.0),
        j["gateway_upload_copies"].as_f64().unwrap_or(0.0),
        j["cap_max_ratio"].as_f64().unwrap_or(0.0)
    );
    if let Some(c) = j["clinical"].as_object() {
        s += &format!(
            "clinical flow: {:.0} B/s alone, {:.0} B/s during the update ({:.1} %)\n",
            c["alone_bytes_per_s"].as_f64().unwrap_or(0.0),
            c["during_update_bytes_per_s"].as_f64().unwrap_or(0.0),
            c["kept"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    if let Some(ro) = j["rollout"].as_object() {
        s += &format!(
            "rollout {}: the whole fleet ended at {} s\n",
            ro["state"].as_str().unwrap_or(""),
            ro["fleet_s"]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        );
        for g in ro["groups"].as_array().into_iter().flatten() {
            let st: Vec<String> = g["statuses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let at = |k: &str| g[k].as_f64().map_or("-".to_string(), |v| format!("{v:.1}"));
            s += &format!(
                "  wave {:<10} {:<9} started {} s, ended {} s: {}\n",
                g["name"].as_str().unwrap_or(""),
                g["state"].as_str().unwrap_or(""),
                at("started_s"),
                at("ended_s"),
                st.join(", ")
            );
        }
        for e in ro["events"].as_array().into_iter().flatten() {
            s += &format!(
                "  at {:.1} s: {}\n",
                e["t_s"].as_f64().unwrap_or(0.0),
                e["event"].as_str().unwrap_or("")
            );
        }
    }
    for e in &r.failures {
        s += &format!("CHECK FAILED: {e}\n");
    }
    s
}
