//! The netns engine: real `wardswarm origin serve`, `wardswarm seeder` and `wardswarm node` processes,
//! each in its own Linux network namespace. The ward LAN is a bridge in a namespace of its own; every
//! node's port to it is a veth pair shaped with `tc tbf` at the scenario's port speed in both
//! directions; the gateway reaches the origin over a separate veth pair whose origin side is shaped
//! at the WAN cap (the ISP link). Needs root, `ip` and `tc`; without them it says so and the CLI exits
//! with a distinct code.
//!
//! A clinical flow (a paced TCP stream from one device's namespace to a "central station" namespace
//! on the same bridge) runs alone first, then during the update; both throughputs are reported.
//! Times count from the moment the signed index is published on the origin; a device's download
//! completes when the gateway API shows it past `fetching`, and it is updated when it shows 2.0.0
//! committed (the API is polled every 250 ms from inside the gateway's namespace).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use wardswarm_node::{agent::machine::DeviceState, membership::Role as MemberRole, SecretKey};

use crate::{
    live::{Ward, HARDWARE, PRODUCT, WARD},
    report::{CapSample, ClinicalOutcome, DeviceOutcome, RunOutcome, Series},
    scenario::{Behaviour, Installed, Scenario},
};

/// Why the netns engine did not run.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// This machine cannot run it (not root, no `ip` or `tc`): not a failure of the scenario.
    #[error("{0}")]
    NotHere(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs the scenario's first ward as processes in network namespaces.
pub fn run(sc: &Scenario, bin: &Path, out: &Path) -> Result<RunOutcome, NetnsError> {
    preflight()?;
    if sc.devices.len() > 100 {
        return Err(anyhow::anyhow!("the netns engine runs up to 100 devices").into());
    }
    if !sc.events.is_empty()
        || sc
            .devices
            .iter()
            .any(|d| d.behaviour != Behaviour::Honest || d.installed != Installed::Old)
    {
        return Err(anyhow::anyhow!(
            "the netns engine runs honest devices on the old release without timed events (use live or model for those)"
        )
        .into());
    }
    let mut net = Net::new(std::process::id());
    let r = run_in(sc, bin, out, &mut net);
    net.teardown();
    Ok(r?)
}

fn preflight() -> Result<(), NetnsError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Err(NetnsError::NotHere(
            "network namespaces need root (run as root or use --engine live)".into(),
        ));
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(NetnsError::NotHere(format!(
                "`{tool}` is missing (apt-get install iproute2)"
            )));
        }
    }
    Ok(())
}

/// Namespaces and processes, torn down whatever happens.
struct Net {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Net {
    fn new(pid: u32) -> Self {
        Self {
            prefix: format!("ws{}", pid % 100_000),
            namespaces: vec![],
            children: vec![],
        }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> Result<String> {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Starts `bin args` inside `ns`, in `dir`, logging to `dir/<name>.log`.
    fn spawn(&mut self, name: &str, ns: &str, dir: &Path, bin: &Path, args: &[&str]) -> Result<()> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .args(args)
            .current_dir(dir)
            // `WARDSWARM_SIM_LOG` sets the children's log filter (e.g. to debug one module).
            .env(
                "RUST_LOG",
                std::env::var("WARDSWARM_SIM_LOG")
                    .unwrap_or_else(|_| "warn,wardswarm_node=info,wardswarm_seeder=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        self.children.push((name.into(), child));
        Ok(())
    }

    fn teardown(&mut self) {
        let mut children = std::mem::take(&mut self.children);
        for (_, c) in &mut children {
            // SIGTERM first: the daemons stop cleanly; then make sure.
            let _ = Command::new("kill")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        let end = Instant::now() + Duration::from_secs(5);
        for (_, c) in &mut children {
            while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn run_cmd(cmd: &str, args: &[&str]) -> Result<String> {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !o.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run_cmd("ip", args)
}

/// Shapes egress of `dev` in `ns` to `rate` bytes/s with a token bucket filter.
fn shape(ns: &str, dev: &str, rate: u64) -> Result<()> {
    let burst = (rate / 100).max(32 * 1024).to_string();
    run_cmd(
        "tc",
        &[
            "-n",
            ns,
            "qdisc",
            "add",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{rate}bps"),
            "burst",
            &burst,
            "latency",
            "50ms",
        ],
    )?;
    Ok(())
}

fn rate_str(r: Option<u64>) -> String {
    r.map_or("unlimited".into(), |v| v.to_string())
}

struct NodeFiles {
    dir: PathBuf,
    peer: String,
}

/// Writes a node's key and membership certificate; returns its folder and peer id.
fn identity(ward: &Ward, dir: &Path, name: &str, role: MemberRole) -> Result<NodeFiles> {
    std::fs::create_dir_all(dir)?;
    let key = SecretKey::generate();
    key.write_new(&dir.join("node.key"))?;
    let kp = key.to_libp2p();
    let cert = ward.cert(&kp, name, role, true)?;
    std::fs::write(dir.join("node.cert"), cert.to_bytes())?;
    Ok(NodeFiles {
        dir: dir.to_path_buf(),
        peer: kp.public().to_peer_id().to_string(),
    })
}

/// Seconds the clinical flow is measured.
const CLINICAL_SECS: u64 = 5;

/// A paced TCP stream from `dev_ns` to the station for `CLINICAL_SECS`; its throughput at the station.
fn clinical_flow(bin: &Path, dev_ns: &str, station: &(String, String), rate: u64) -> Option<f64> {
    let to = format!("{}:9000", station.1);
    let secs = CLINICAL_SECS.to_string();
    let recv = Command::new("ip")
        .args(["netns", "exec", &station.0])
        .arg(bin)
        .args(["sim-tool", "recv", "--listen", &to, "--seconds", &secs])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let mut send = Command::new("ip")
        .args(["netns", "exec", dev_ns])
        .arg(bin)
        .args([
            "sim-tool",
            "send",
            "--to",
            &to,
            "--rate",
            &rate.to_string(),
            "--seconds",
        ])
        .arg((CLINICAL_SECS + 1).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let o = recv.wait_with_output().ok();
    let _ = send.kill();
    let _ = send.wait();
    let v: serde_json::Value = serde_json::from_slice(&o?.stdout).ok()?;
    v["bytes_per_s"].as_f64()
}

fn run_in(sc: &Scenario, bin: &Path, out: &Path, net: &mut Net) -> Result<RunOutcome> {
    let work = out.join("netns");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    let ward = Ward::new(sc.seed)?;
    let origin_dir = work.join("origin");
    let (_, length) = ward.build_release(
        &origin_dir,
        &work.join("image-2.0.0.img"),
        sc.artifact,
        sc.seed,
    )?;
    std::fs::write(work.join("root.json"), ward.root.to_bytes())?;
    let port = sc.clinical.as_ref().map(|c| c.port);

    // The LAN: a bridge in its own namespace, one shaped veth port per node.
    let lan = net.add_ns("lan")?;
    ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &lan, "link", "set", "br0", "up"])?;
    let attach = |net: &mut Net, name: &str, k: usize| -> Result<(String, String)> {
        let ns = net.add_ns(name)?;
        let (outer, inner) = (format!("p{k}"), format!("q{k}"));
        ip(&[
            "-n", &lan, "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["-n", &lan, "link", "set", &inner, "netns", &ns])?;
        ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
        let addr = format!("10.98.{}.{}", k / 250, k % 250 + 1);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/16"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &lan, "link", "set", &outer, "master", "br0"])?;
        ip(&["-n", &lan, "link", "set", &outer, "up"])?;
        if let Some(p) = port {
            shape(&ns, "eth0", p)?;
            shape(&lan, &outer, p)?;
        }
        Ok((ns, addr))
    };
    let (gw_ns, gw_addr) = attach(net, "gw", 0)?;
    let station = match sc.clinical {
        Some(_) => Some(attach(net, "station", 249)?),
        None => None,
    };
    let mut devices = Vec::new();
    for i in 0..sc.devices.len() {
        devices.push(attach(net, &format!("d{i}"), i + 1)?);
    }

    // The WAN: origin <-> gateway, shaped at the WAN cap on the origin side.
    let origin_ns = net.add_ns("origin")?;
    ip(&[
        "-n", &origin_ns, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1",
    ])?;
    ip(&["-n", &origin_ns, "link", "set", "wan1", "netns", &gw_ns])?;
    ip(&[
        "-n",
        &origin_ns,
        "addr",
        "add",
        "10.99.0.1/30",
        "dev",
        "wan0",
    ])?;
    ip(&["-n", &origin_ns, "link", "set", "wan0", "up"])?;
    ip(&["-n", &gw_ns, "addr", "add", "10.99.0.2/30", "dev", "wan1"])?;
    ip(&["-n", &gw_ns, "link", "set", "wan1", "up"])?;
    if let Some(w) = sc.gateway.wan {
        shape(&origin_ns, "wan0", w)?;
    }

    // Origin and gateway.
    let origin_s = origin_dir.to_string_lossy().into_owned();
    net.spawn(
        "origin",
        &origin_ns,
        &work,
        bin,
        &["origin", "serve", &origin_s, "--listen", "10.99.0.1:8080"],
    )?;
    let gw = identity(&ward, &work.join("gateway"), "gateway", MemberRole::Gateway)?;
    let gw_multi = format!("/ip4/{gw_addr}/tcp/4001/p2p/{}", gw.peer);
    std::fs::write(
        gw.dir.join("gateway.toml"),
        format!(
            "ward = \"{WARD}\"\nkey = \"node.key\"\ncertificate = \"node.cert\"\ntrust_root = \"../root.json\"\nstate = \"state\"\norigin = \"http://10.99.0.1:8080/\"\npoll_interval = \"2s\"\napi_listen = \"{gw_addr}:8080\"\napi_open_reads = true\nlisten = [\"/ip4/{gw_addr}/tcp/4001\"]\nmdns = {}\nprefetch = true\n[wan]\ndefault = \"{}\"\n[upload]\ndefault = \"{}\"\n",
            sc.mdns,
            rate_str(sc.gateway.wan),
            rate_str(sc.gateway.upload)
        ),
    )?;
    net.spawn(
        "gateway",
        &gw_ns,
        &gw.dir,
        bin,
        &["seeder", "--config", "gateway.toml"],
    )?;

    // Devices: node + agent with file slots holding a factory image.
    let mut files = Vec::new();
    for i in 0..sc.devices.len() {
        files.push(identity(
            &ward,
            &work.join(format!("d{i:03}")),
            &format!("w01-d{:03}", i + 1),
            MemberRole::Device,
        )?);
    }
    for (i, f) in files.iter().enumerate() {
        let spec = &sc.devices[i];
        std::fs::create_dir_all(f.dir.join("slots"))?;
        std::fs::write(f.dir.join("slots/slot-a.img"), vec![0x11u8; 64 * 1024])?;
        // Only the gateway, as `docs/examples/device.toml` suggests: the devices find each other
        // through its peer lists, and with `[lan] mdns` also through mDNS answers on the bridge
        // (admitted once the gateway's peer list vouches for them: `docs/swarm.md`, Admission).
        let boot = [format!("\"{gw_multi}\"")];
        std::fs::write(
            f.dir.join("device.toml"),
            format!(
                "ward = \"{WARD}\"\nkey = \"node.key\"\ncertificate = \"node.cert\"\ntrust_root = \"../root.json\"\nstore = \"store\"\nlisten = [\"/ip4/{}/tcp/4001\"]\nbootstrap = [{}]\nmdns = {}\n[upload]\ndefault = \"{}\"\n[download]\ndefault = \"{}\"\n[agent]\nstate = \"agent\"\ninstall = \"automatic\"\nhardware = \"{HARDWARE}\"\nproduct = \"{PRODUCT}\"\nfactory_version = \"1.0.0\"\nfactory_counter = 1\nhealth_check = \"true\"\nreport_interval = \"1s\"\n[agent.slots]\nbackend = \"file\"\ndir = \"slots\"\n",
                devices[i].1,
                boot.join(", "),
                sc.mdns,
                rate_str(spec.upload),
                rate_str(spec.download)
            ),
        )?;
        let ns = devices[i].0.clone();
        net.spawn(
            "device",
            &ns,
            &f.dir,
            bin,
            &["node", "--config", "device.toml"],
        )?;
    }

    // Wait until every device reported to the gateway (the ward is up), bounded.
    let api = format!("http://{gw_addr}:8080");
    let get = |path: &str| {
        run_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &gw_ns,
                &bin.to_string_lossy(),
                "sim-tool",
                "get",
                &format!("{api}{path}"),
            ],
        )
    };
    let up_by = Instant::now() + Duration::from_secs(60);
    loop {
        let n = get("/api/v1/devices")
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array().map(|a| a.len()))
            .unwrap_or(0);
        if n >= sc.devices.len() {
            break;
        }
        if Instant::now() > up_by {
            bail!(
                "only {n} of {} devices reported to the gateway within 60 s (logs in {})",
                sc.devices.len(),
                work.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The clinical flow alone, as a baseline.
    let baseline = match (&sc.clinical, &station) {
        (Some(c), Some(st)) => Some(
            clinical_flow(bin, &devices[c.device].0, st, c.rate)
                .context("the clinical flow did not run")?,
        ),
        _ => None,
    };

    // Publish: t0.
    ward.publish_index(&origin_dir)?;
    let start = Instant::now();
    let during = match (&sc.clinical, &station) {
        (Some(c), Some(st)) => {
            let (dev_ns, st, rate) = (devices[c.device].0.clone(), st.clone(), c.rate);
            let bin = bin.to_path_buf();
            Some(std::thread::spawn(move || {
                // Once the devices are fetching.
                std::thread::sleep(Duration::from_secs(2));
                clinical_flow(&bin, &dev_ns, &st, rate)
            }))
        }
        _ => None,
    };

    let mut run = RunOutcome::new("netns", sc);
    run.artifact_bytes = length;
    run.series = Series::new(0.5);
    let mut completed: BTreeMap<String, f64> = BTreeMap::new();
    let mut updated: BTreeMap<String, f64> = BTreeMap::new();
    let mut caps = CapSample::default();
    let mut last_wan = (0u64, Instant::now());
    let mut last_lan = (0u64, Instant::now());
    let mut last_sample = (0u64, Instant::now());
    let deadline = start + sc.timeout;
    let metric = |body: &str, name: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let mut wan = 0;
    let mut lan = 0;
    while updated.len() < sc.devices.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let t = start.elapsed().as_secs_f64();
        if let Ok(body) = get("/api/v1/devices") {
            if let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&body) {
                for d in list {
                    let id = d["id"].as_str().unwrap_or("").to_string();
                    let state: DeviceState =
                        serde_json::from_value(d["state"].clone()).unwrap_or(DeviceState::Unknown);
                    let version = d["installed"].as_str().unwrap_or("");
                    let new = version == "2.0.0";
                    if new || !matches!(state, DeviceState::Idle | DeviceState::Fetching) {
                        completed.entry(id.clone()).or_insert(t);
                    }
                    if new && state == DeviceState::Idle {
                        updated.entry(id).or_insert(t);
                    }
                }
            }
        }
        if let Ok(m) = get("/metrics") {
            wan = metric(&m, "wardswarm_gateway_wan_total");
            lan = metric(&m, "wardswarm_lan_sent_total");
        }
        let now = Instant::now();
        // Windows of 3 s: the counters are read through a process started per poll, whose latency
        // (tens of ms, more under load) would read as several percent in 1 s windows.
        if now.duration_since(last_wan.1) >= Duration::from_secs(3) {
            let secs = now.duration_since(last_wan.1).as_secs_f64();
            if let Some(cap) = sc.gateway.wan.filter(|c| *c > 0) {
                caps.observe(
                    "gateway WAN",
                    t,
                    wan.saturating_sub(last_wan.0) as f64 / secs / cap as f64,
                );
            }
            if let Some(cap) = sc.gateway.upload.filter(|c| *c > 0) {
                caps.observe(
                    "gateway upload",
                    t,
                    lan.saturating_sub(last_lan.0) as f64 / secs / cap as f64,
                );
            }
            last_wan = (wan, now);
            last_lan = (lan, now);
        }
        let since = now.duration_since(last_sample.1);
        if since >= Duration::from_millis(500) {
            let rate = lan.saturating_sub(last_sample.0) as f64 / since.as_secs_f64();
            last_sample = (lan, now);
            run.series.push(t, rate, &[], wan, completed.len());
        }
    }
    run.elapsed_s = start.elapsed().as_secs_f64();
    run.caps = caps;
    run.wan_per_ward.push(wan);
    run.gateway_upload_per_ward.push(lan);
    if let (Some(c), Some(base), Some(h)) = (&sc.clinical, baseline, during) {
        let during = h.join().ok().flatten().unwrap_or(0.0);
        run.clinical = Some(ClinicalOutcome {
            offered: c.rate as f64,
            alone: base,
            during_update: during,
        });
    }
    for (i, _) in sc.devices.iter().enumerate() {
        let id = format!("w01-d{:03}", i + 1);
        run.devices.push(DeviceOutcome {
            ward: 0,
            id: id.clone(),
            behaviour: Behaviour::Honest,
            measured: true,
            completed_s: completed.get(&id).copied(),
            updated_s: updated.get(&id).copied(),
            from_gateway: 0,
            from_peers: 0,
            uploaded: 0,
            banned: 0,
        });
    }
    Ok(run)
}
