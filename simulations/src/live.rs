//! The live engine: every part real, in one process on loopback. A signed release on an HTTP origin,
//! the ward gateway (WAN cap, LAN cap, super-seeding), and one libp2p node per device with the real
//! limiters; honest devices run the device agent with file-backed A/B slots and commit the update.
//! Hostile devices are real nodes with a fault (corrupt or stalling server) or a certificate from a
//! foreign membership key. Up to about 50 devices on this machine.
//!
//! Times count from the moment the gateway is told to poll the origin. `completed_s` is when a device's
//! node holds every verified group (what the bound is about); `updated_s` when its agent committed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use libp2p::{identity::Keypair, Multiaddr};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wardswarm_node::{
    agent::{
        machine::DeviceState,
        runtime::{AgentConfig, Report},
        slots::{FileSlots, Slots},
    },
    device::{self, Device as Running},
    membership::{Certificate, Role as MemberRole},
    net::{caps::Schedule, Config, Event as NodeEvent, Handle},
    release::{self, BuildRequest},
    root::{Role, RoleName, TrustRoot},
    Hash, SecretKey, Timestamp,
};
use wardswarm_seeder::{origin, Gateway, GatewayConfig};

use crate::{
    report::{CapSample, DeviceOutcome, RunOutcome, Series},
    scenario::{Behaviour, Event, Installed, Scenario},
};

/// The simulated ward's name, hardware id and product.
pub const WARD: &str = "sim-ward";
pub const HARDWARE: &str = "sim-device";
pub const PRODUCT: &str = "sim-product";

/// Runs one ward of the scenario live (a scenario of several wards runs its first ward only).
pub fn run(sc: &Scenario) -> Result<RunOutcome> {
    if sc.devices.len() > 60 {
        bail!(
            "the live engine runs up to 60 devices in one process; {} has {} (use --engine model)",
            sc.name,
            sc.devices.len()
        );
    }
    if sc.mdns {
        bail!("the live engine runs every node on 127.0.0.1 with mDNS off; `[lan] mdns` needs the netns engine (--engine netns)");
    }
    if sc.events.iter().any(|e| matches!(e, Event::Cap { .. })) {
        bail!("the live engine does not run cap events yet: a node's caps follow its configured schedule (use --engine model)");
    }
    if sc.devices.iter().any(|d| d.installed == Installed::New) {
        bail!(
            "the live engine does not support installed = \"new\" devices yet (use --engine model)"
        );
    }
    // Every transfer holds a blocking thread (the bao encode and decode bridges) for its duration, and
    // here every node shares one runtime: 50 nodes serving up to 32 transfers each outgrow tokio's
    // default 512 blocking threads, and queued transfers stall. Separate processes each have their own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64 * (sc.devices.len() + 1))
        .build()?;
    rt.block_on(run_async(sc))
}

/// Keys, trust root and certificates of a simulated ward, deterministic for the seed.
pub struct Ward {
    pub root: TrustRoot,
    pub release_key: SecretKey,
    member_key: SecretKey,
    foreign_key: SecretKey,
    now: Timestamp,
}

impl std::fmt::Debug for Ward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ward").finish_non_exhaustive()
    }
}

impl Ward {
    pub fn new(seed: u64) -> Result<Self> {
        let now = Timestamp::now();
        let key = |n: u8| {
            let mut s = [n; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            SecretKey::from_seed(s)
        };
        let (root_key, release_key, member_key) = (key(1), key(2), key(3));
        let role = |name, k: &SecretKey| Role::new(name, vec![k.public_id()], 1);
        let mut root = TrustRoot::new(
            1,
            now.saturating_add(Duration::from_secs(365 * 86_400)),
            role(RoleName::Root, &root_key)?,
            role(RoleName::Release, &release_key)?,
            role(RoleName::Membership, &member_key)?,
        )?;
        root.sign(&root_key, None)?;
        Ok(Self {
            root,
            release_key,
            member_key,
            foreign_key: key(9),
            now,
        })
    }

    /// A membership certificate (a non-member's is signed by a key outside the trust root).
    pub fn cert(
        &self,
        key: &Keypair,
        name: &str,
        role: MemberRole,
        member: bool,
    ) -> Result<Certificate> {
        let signer = if member {
            &self.member_key
        } else {
            &self.foreign_key
        };
        Ok(Certificate::issue(
            WARD,
            name,
            role,
            &key.public().to_peer_id().to_string(),
            self.now.saturating_add(Duration::from_secs(86_400)),
            std::slice::from_ref(signer),
        )?)
    }

    /// Builds release 2.0.0 (an incompressible image of `size` bytes, so the artifact is about `size`)
    /// into `origin/releases/2.0.0`. Returns the artifact root and length.
    pub fn build_release(
        &self,
        origin_dir: &Path,
        image: &Path,
        size: u64,
        seed: u64,
    ) -> Result<(Hash, u64)> {
        write_random(image, size, seed)?;
        std::fs::create_dir_all(origin_dir.join("releases"))?;
        let report = release::build(&BuildRequest {
            target: image.to_path_buf(),
            product: PRODUCT.into(),
            hardware: vec![HARDWARE.into()],
            version: "2.0.0".into(),
            counter: 2,
            created: self.now,
            expires: self.now.saturating_add(Duration::from_secs(30 * 86_400)),
            keys: vec![self.release_key.clone()],
            out: origin_dir.join("releases").join("2.0.0"),
            zstd_level: 1,
            zstd_workers: 0,
            root: Some(self.root.clone()),
            bases: vec![],
            delta_codec: wardswarm_node::delta::Codec::MODELED,
            delta_methods: wardswarm_node::delta::Methods::ALL,
        })?;
        let full = report
            .manifest
            .manifest
            .full()
            .context("release has a full image")?
            .clone();
        Ok((full.root, full.length))
    }

    /// Writes the origin's signed index (the release appears to gateways at their next poll).
    pub fn publish_index(&self, origin_dir: &Path) -> Result<()> {
        origin::publish(
            origin_dir,
            std::slice::from_ref(&self.release_key),
            self.now.saturating_add(Duration::from_secs(7 * 86_400)),
            self.now,
        )?;
        Ok(())
    }

    /// Builds release 2.0.0 and publishes the index.
    pub fn publish(
        &self,
        origin_dir: &Path,
        image: &Path,
        size: u64,
        seed: u64,
    ) -> Result<(Hash, u64)> {
        let r = self.build_release(origin_dir, image, size, seed)?;
        self.publish_index(origin_dir)?;
        Ok(r)
    }
}

/// Incompressible bytes, so the compressed artifact is about as large as the image.
pub fn write_random(path: &Path, size: u64, seed: u64) -> Result<()> {
    Ok(wardswarm_node::testkit::write_random(path, size, seed)?)
}

struct Device {
    id: String,
    behaviour: Behaviour,
    measured: bool,
    key: Keypair,
    dir: PathBuf,
    up: Option<u64>,
    down: Option<u64>,
    /// The running device (none while crashed).
    running: Option<Running>,
    /// Bytes sent at the last series sample.
    sampled: u64,
    /// Stops a hostile member's honest first fetch.
    stop: CancellationToken,
    /// Bytes sent by earlier incarnations (a restart starts counters at zero).
    sent_before: u64,
    /// Streams and transfers of this device's earlier runs.
    streams_before: Counts,
    from_gateway_before: u64,
    from_peers_before: u64,
    completed: Option<f64>,
    updated: Option<f64>,
    banned: usize,
}

struct Live {
    ward: Ward,
    root_hash: Hash,
    length: u64,
    factory: Arc<Vec<u8>>,
    boot: Vec<Multiaddr>,
    events: tokio::sync::mpsc::Sender<(usize, NodeEvent)>,
    /// The scenario's rollout, if it has one: the agents are directed.
    rollout: Option<crate::live_rollout::LiveRollout>,
}

async fn run_async(sc: &Scenario) -> Result<RunOutcome> {
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let d = tmp.path().to_path_buf();
    let ward = Ward::new(sc.seed)?;
    let origin_dir = d.join("origin");
    let (root_hash, length) = ward.publish(
        &origin_dir,
        &d.join("image-2.0.0.img"),
        sc.artifact,
        sc.seed,
    )?;
    let stop = CancellationToken::new();
    let (origin_addr, _o) = origin::spawn(origin_dir, "127.0.0.1:0".parse()?, stop.clone()).await?;
    let gw_key = Keypair::generate_ed25519();
    let mut gcfg = GatewayConfig::new(
        format!("http://{origin_addr}/").parse()?,
        d.join("gateway"),
        node_config(vec![], sc.gateway.upload, None),
    );
    gcfg.wan = Schedule::fixed(sc.gateway.wan);
    gcfg.poll_interval = Duration::from_secs(3600);
    gcfg.prefetch = true;
    let rollout = match &sc.rollout {
        Some(ro) => {
            // The rollout is driven over the gateway's API, as an operator would.
            gcfg.api_listen = Some("127.0.0.1:0".parse()?);
            gcfg.rollouts = wardswarm_node::rollout::WardPolicy {
                reboot_limit: ro.reboot_limit,
                window: None,
            };
            let dirs = (0..sc.devices.len())
                .map(|i| d.join(format!("d{:03}", i + 1)))
                .collect();
            let r = crate::live_rollout::LiveRollout::new(ro.clone(), d.join("gateway"), dirs)?;
            gcfg.clock = r.clock();
            Some(r)
        }
        None => None,
    };
    let gw = Gateway::start(
        gcfg,
        gw_key.clone(),
        &ward.cert(&gw_key, "gateway", MemberRole::Gateway, true)?,
        ward.root.clone(),
    )
    .await?;
    let gw_node = gw.node().clone();
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel(4096);
    let mut live = Live {
        boot: vec![first_addr(&gw_node).await?],
        ward,
        root_hash,
        length,
        factory: Arc::new(vec![0x11; 64 * 1024]),
        events: ev_tx,
        rollout,
    };
    if let (Some(r), Some(a)) = (live.rollout.as_mut(), gw.api_addr()) {
        r.set_api(a);
    }
    let honest = sc
        .devices
        .iter()
        .filter(|s| s.behaviour == Behaviour::Honest)
        .count();
    let mut devices: Vec<Device> = sc
        .devices
        .iter()
        .enumerate()
        .map(|(i, s)| Device {
            id: format!("w01-d{:03}", i + 1),
            behaviour: s.behaviour,
            measured: s.measured(),
            key: Keypair::generate_ed25519(),
            dir: d.join(format!("d{:03}", i + 1)),
            up: s.upload,
            down: s.download,
            running: None,
            sampled: 0,
            stop: CancellationToken::new(),
            sent_before: 0,
            streams_before: Default::default(),
            from_gateway_before: 0,
            from_peers_before: 0,
            completed: None,
            updated: None,
            banned: 0,
        })
        .collect();

    // Timed actions: joins, crashes and restarts, cap changes, the gateway leaving.
    #[derive(Debug)]
    enum Act {
        Join(usize),
        Crash(usize, Option<Duration>),
        GatewayLeaves,
    }
    let mut plan: Vec<(Duration, Act)> = sc
        .devices
        .iter()
        .enumerate()
        .map(|(i, s)| (s.join, Act::Join(i)))
        .collect();
    let mut leave_after_copy = false;
    for e in &sc.events {
        match e {
            Event::Crash {
                at,
                device,
                restart_after,
            } => plan.push((*at, Act::Crash(*device, *restart_after))),
            Event::Cap { .. } => {}
            Event::GatewayLeaves { at: Some(at) } => plan.push((*at, Act::GatewayLeaves)),
            Event::GatewayLeaves { at: None } => leave_after_copy = true,
        }
    }
    plan.sort_by_key(|(t, _)| *t);
    let mut plan: std::collections::VecDeque<(Duration, Act)> = plan.into();

    // Devices that join at 0 start before the gateway polls, as a ward that is up when a release lands.
    while plan
        .front()
        .is_some_and(|(t, a)| t.is_zero() && matches!(a, Act::Join(_)))
    {
        if let Some((_, Act::Join(i))) = plan.pop_front() {
            live.start(&mut devices[i]).await?;
        }
    }
    let start = Instant::now();
    if let Some(r) = &live.rollout {
        r.set_epoch(start);
    }
    gw.poll_now();
    let mut out = RunOutcome::new("live", sc);
    out.series = Series::new(0.5);
    let mut caps = CapSample::default();
    let mut last_sent: HashMap<usize, (u64, Instant)> = HashMap::new();
    let mut gw_last = (0u64, Instant::now());
    let mut gw_sampled = 0u64;
    let mut wan_last = (0u64, Instant::now());
    let mut gateway_up = true;
    let mut sample = tokio::time::interval(Duration::from_millis(500));
    let mut cap_tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = start + sc.timeout;
    loop {
        let all_done = match &live.rollout {
            // A rollout: every targeted device has ended, and each that is not meant to fail has
            // committed (its failing ones roll back).
            Some(r) => {
                r.done()
                    && devices.iter().enumerate().all(|(i, d)| {
                        !d.measured || r.ro.failing.contains(&i) || d.updated.is_some()
                    })
            }
            None => devices
                .iter()
                .all(|d| !d.measured || (d.completed.is_some() && d.updated.is_some())),
        };
        if all_done || Instant::now() > deadline {
            break;
        }
        // The next timed action, if it is due.
        while plan.front().is_some_and(|(t, _)| start.elapsed() >= *t) {
            let Some((_, act)) = plan.pop_front() else {
                break;
            };
            match act {
                Act::Join(i) => live.start(&mut devices[i]).await?,
                Act::Crash(i, restart) => {
                    live.crash(&mut devices[i]).await;
                    if let Some(r) = restart {
                        let at = start.elapsed() + r;
                        let pos = plan.iter().position(|(t, _)| *t > at).unwrap_or(plan.len());
                        plan.insert(pos, (at, Act::Join(i)));
                    }
                }
                Act::GatewayLeaves => {
                    if gateway_up {
                        gateway_up = false;
                        out.gateway_left_s = Some(start.elapsed().as_secs_f64());
                        gw_node.shutdown().await.ok();
                    }
                }
            }
        }
        if leave_after_copy && gateway_up && seeded_once(&devices, root_hash) {
            gateway_up = false;
            out.gateway_left_s = Some(start.elapsed().as_secs_f64());
            gw_node.shutdown().await.ok();
        }
        tokio::select! {
            Some((i, ev)) = ev_rx.recv() => match ev {
                NodeEvent::Complete { root } if root == root_hash => {
                    let t = start.elapsed().as_secs_f64();
                    devices[i].completed.get_or_insert(t);
                }
                NodeEvent::PeerBanned { root, .. } if root == root_hash => devices[i].banned += 1,
                _ => {}
            },
            _ = sample.tick() => {
                let t = start.elapsed().as_secs_f64();
                if let Some(r) = live.rollout.as_mut() {
                    r.tick(t, &gw, honest).await?;
                }
                for d in &mut devices {
                    if d.updated.is_none() && d.status().is_some_and(|s| committed(&s.borrow())) {
                        d.updated = Some(t);
                    }
                }
                let mut rates = Vec::new();
                for d in &mut devices {
                    if let Some(n) = d.node() {
                        let now = n.metrics().sent_all.get();
                        rates.push(now.saturating_sub(d.sampled) as f64 / 0.5);
                        d.sampled = now;
                    } else {
                        d.sampled = 0;
                    }
                }
                let g = gw_node.metrics().sent_all.get();
                let gr = g.saturating_sub(gw_sampled) as f64 / 0.5;
                gw_sampled = g;
                let done = devices.iter().filter(|d| d.measured && d.completed.is_some()).count();
                out.series.push(t, if gateway_up { gr } else { 0.0 }, &rates, gw.wan_bytes(), done);
            }
            _ = cap_tick.tick() => {
                // Rates over the last second against the caps in force.
                for (i, d) in devices.iter().enumerate() {
                    if let Some(n) = d.node() {
                        let now = n.metrics().sent_all.get();
                        if let Some((prev, at)) = last_sent.get(&i).copied() {
                            let secs = at.elapsed().as_secs_f64();
                            if let Some(cap) = n.upload_cap().rate().filter(|c| *c > 0) {
                                if secs > 0.5 {
                                    caps.observe("device upload", start.elapsed().as_secs_f64(), now.saturating_sub(prev) as f64 / secs / cap as f64);
                                }
                            }
                        }
                        last_sent.insert(i, (now, Instant::now()));
                    }
                }
                if gateway_up {
                    let g = gw_node.metrics().sent_all.get();
                    let secs = gw_last.1.elapsed().as_secs_f64();
                    if let Some(cap) = gw_node.upload_cap().rate().filter(|c| *c > 0) {
                        if secs > 0.5 {
                            caps.observe("gateway upload", start.elapsed().as_secs_f64(), g.saturating_sub(gw_last.0) as f64 / secs / cap as f64);
                        }
                    }
                    gw_last = (g, Instant::now());
                    let w = gw.wan_bytes();
                    let secs = wan_last.1.elapsed().as_secs_f64();
                    if let (Some(cap), true) = (sc.gateway.wan.filter(|c| *c > 0), secs > 0.5) {
                        caps.observe("gateway WAN", start.elapsed().as_secs_f64(), w.saturating_sub(wan_last.0) as f64 / secs / cap as f64);
                    }
                    wan_last = (w, Instant::now());
                }
            }
        }
    }
    out.elapsed_s = start.elapsed().as_secs_f64();
    out.caps = caps;
    out.artifact_bytes = length;
    out.wan_per_ward.push(gw.wan_bytes());
    out.gateway_upload_per_ward
        .push(gw_node.metrics().sent_all.get());
    let mut counts = Counts::default();
    add_counts(&mut counts, &gw_node.metrics());
    for d in &devices {
        counts.add(&d.streams_before);
        if let Some(n) = d.node() {
            add_counts(&mut counts, &n.metrics());
        }
    }
    out.streams_opened = counts.streams;
    out.frames_sent = counts.frames;
    out.transfers = counts.transfers;
    out.groups_requested = counts.groups_requested;
    let label = root_hash.short();
    if let Some(mut r) = live.rollout.take() {
        for d in &devices {
            if let Some(s) = d.status() {
                let ms = s.borrow().gated_ms;
                r.outcome.gated_s.insert(d.id.clone(), ms as f64 / 1000.0);
            }
        }
        out.rollout = Some(r.outcome);
    }
    for d in &devices {
        let (mut from_gw, mut from_peers, mut sent) =
            (d.from_gateway_before, d.from_peers_before, d.sent_before);
        if let Some(n) = d.node() {
            let m = n.metrics();
            from_gw += m.received_total(&label, "gateway");
            from_peers += m.received_total(&label, "peer");
            sent += m.sent_all.get();
        }
        if d.behaviour == Behaviour::NonMember {
            let admitted = match d.node() {
                Some(n) => n.peers().await.map(|p| p.len()).unwrap_or(0),
                None => 0,
            };
            if admitted == 0 {
                out.refused_admission += 1;
            }
        }
        out.devices.push(DeviceOutcome {
            ward: 0,
            id: d.id.clone(),
            behaviour: d.behaviour,
            measured: d.measured,
            completed_s: d.completed,
            updated_s: d.updated,
            from_gateway: from_gw,
            from_peers,
            uploaded: sent,
            banned: d.banned,
        });
    }
    stop.cancel();
    for d in &mut devices {
        d.stop.cancel();
        if let Some(r) = d.running.take() {
            let _ = r.stop().await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), gw.shutdown()).await;
    Ok(out)
}

fn committed(r: &Report) -> bool {
    r.state == DeviceState::Idle && r.version == "2.0.0"
}

impl Device {
    fn node(&self) -> Option<&Handle> {
        self.running.as_ref().map(|r| &r.node)
    }
    fn status(&self) -> Option<&watch::Receiver<Report>> {
        self.running.as_ref().and_then(|r| r.status.as_ref())
    }
}

/// Is every group held by some honest, running device (one copy is in the ward)?
fn seeded_once(devices: &[Device], root: Hash) -> bool {
    let mut union: Option<wardswarm_node::groups::GroupSet> = None;
    for d in devices {
        if d.behaviour != Behaviour::Honest {
            continue;
        }
        if let Some(e) = d.running.as_ref().and_then(|r| r.store.get(&root)) {
            match &mut union {
                None => union = Some(e.have()),
                Some(u) => u.union_with(&e.have()),
            }
        }
    }
    union.is_some_and(|u| u.is_full())
}

fn node_config(bootstrap: Vec<Multiaddr>, up: Option<u64>, down: Option<u64>) -> Config {
    Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("literal address")],
        bootstrap,
        mdns: false,
        ward: WARD.into(),
        upload: Schedule::fixed(up),
        download: Schedule::fixed(down),
        // Every node of this ward is on 127.0.0.1: the per-IP limits, meant for one device per
        // address on a ward LAN, would cap the whole ward's connections to a node.
        max_pending_per_ip: 1024,
        max_connections_per_ip: 1024,
        ..Config::default()
    }
}

impl Live {
    /// Starts (or restarts) a device: its node, and for an honest device its agent.
    async fn start(&mut self, d: &mut Device) -> Result<()> {
        #[cfg_attr(not(feature = "test-faults"), allow(unused_mut))]
        let mut cfg = node_config(self.boot.clone(), d.up, d.down);
        match d.behaviour {
            #[cfg(feature = "test-faults")]
            Behaviour::Corrupt => cfg.fault = Some(wardswarm_node::net::Fault::CorruptServe),
            #[cfg(feature = "test-faults")]
            Behaviour::Stall => cfg.fault = Some(wardswarm_node::net::Fault::StallServe),
            #[cfg(not(feature = "test-faults"))]
            Behaviour::Corrupt | Behaviour::Stall => bail!(
                "hostile devices (corrupt, stall) need a build with the test-faults feature: \
                 cargo build --release --features test-faults"
            ),
            Behaviour::Honest | Behaviour::NonMember => {}
        }
        let member = d.behaviour != Behaviour::NonMember;
        let cert = self.ward.cert(&d.key, &d.id, MemberRole::Device, member)?;
        let agent = if d.behaviour == Behaviour::Honest {
            let slots_dir = d.dir.join("slots");
            let slots: Arc<dyn Slots> = if slots_dir.exists() {
                Arc::new(FileSlots::new(&slots_dir))
            } else {
                Arc::new(FileSlots::provision(&slots_dir, &self.factory)?)
            };
            let mut acfg = AgentConfig::new(d.dir.join("agent"), HARDWARE);
            acfg.product = Some(PRODUCT.into());
            acfg.factory_version = "1.0.0".into();
            acfg.factory_counter = 1;
            acfg.health_check = Some("true".into());
            acfg.report_interval = Duration::from_secs(2);
            acfg.install = wardswarm_node::rollout::InstallMode::Automatic;
            if let Some(r) = &self.rollout {
                let i: usize = d.id[5..].parse::<usize>().unwrap_or(1) - 1;
                r.agent(i, &mut acfg);
            }
            Some((acfg, slots))
        } else {
            None
        };
        let running = Running::start(device::Spec {
            store: d.dir.join("store"),
            node: cfg,
            keypair: d.key.clone(),
            cert,
            root: self.ward.root.clone(),
            agent,
        })?;
        let h = running.node.clone();
        let i: usize = d.id[5..].parse::<usize>().unwrap_or(1) - 1;
        let mut rx = h.subscribe();
        let tx = self.events.clone();
        // Only what the run loop records goes on to it: it runs on the thread that called
        // `block_on`, so each event sent there wakes that thread (a futex and a context switch),
        // and a node emits a progress event for every batch of verified groups.
        tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    // Behind a burst of events: those skipped are lost, not the ones after.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let wanted = matches!(
                    ev,
                    NodeEvent::Complete { .. } | NodeEvent::PeerBanned { .. }
                );
                if wanted && tx.send((i, ev)).await.is_err() {
                    break;
                }
            }
        });
        d.stop = CancellationToken::new();
        if matches!(d.behaviour, Behaviour::Corrupt | Behaviour::Stall) {
            // A member gone bad: it fetches the release honestly, then serves it wrongly.
            let (root, len) = (self.root_hash, self.length);
            let stop = d.stop.clone();
            let h2 = h.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = h2.fetch(root, len) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        d.running = Some(running);
        Ok(())
    }

    /// Kills a device: agent and node stop at once (its store and slots stay, as after a power cut
    /// that fsync ordering survives).
    async fn crash(&mut self, d: &mut Device) {
        d.stop.cancel();
        if let Some(r) = d.running.take() {
            let m = r.node.metrics();
            let label = self.root_hash.short();
            d.sent_before += m.sent_all.get();
            add_counts(&mut d.streams_before, &m);
            d.from_gateway_before += m.received_total(&label, "gateway");
            d.from_peers_before += m.received_total(&label, "peer");
            if let Err(e) = r.stop().await {
                tracing::warn!(device = %d.id, error = %e, "device stopped with an error");
            }
        }
    }
}

/// A node's first listen address with `/p2p/<peer id>`, once it listens (bounded wait).
pub async fn first_addr(h: &Handle) -> Result<Multiaddr> {
    for _ in 0..500 {
        if let Some(a) = h.listen_addrs().await?.into_iter().next() {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("node did not start listening")
}

/// Adds a node's stream and transfer counters to `into` (streams counted once, by their opener).
fn add_counts(into: &mut Counts, m: &wardswarm_node::net::metrics::Metrics) {
    for (proto, dir, n) in m.streams_opened_by_protocol() {
        if dir == "outbound" {
            *into.streams.entry(proto).or_default() += n;
        }
    }
    for (proto, n) in m.frames_sent_by_protocol() {
        *into.frames.entry(proto).or_default() += n;
    }
    for (outcome, n) in m.transfers_by_outcome() {
        *into.transfers.entry(outcome).or_default() += n;
    }
    into.groups_requested += m.groups_requested.get();
}

/// Stream and transfer counts, summed over nodes (and a device's earlier runs).
#[derive(Debug, Default)]
struct Counts {
    streams: std::collections::BTreeMap<String, u64>,
    frames: std::collections::BTreeMap<String, u64>,
    transfers: std::collections::BTreeMap<String, u64>,
    groups_requested: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        for (k, v) in &o.streams {
            *self.streams.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.frames {
            *self.frames.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.transfers {
            *self.transfers.entry(k.clone()).or_default() += v;
        }
        self.groups_requested += o.groups_requested;
    }
}
