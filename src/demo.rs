//! `wardswarm demo`: an embedded ward on loopback, in one process, every part real.
//!
//! The device maker creates a trust root, signs a release and publishes it with a signed index to a
//! temporary origin served over HTTP. The ward gateway polls the origin, verifies the index and the
//! manifest, and downloads the artifact once under its WAN cap, seeding each verified MiB to the ward
//! at once. N device agents (file-backed A/B slots provisioned with a factory image) hear the signed
//! announcement, fetch over the libp2p swarm from the gateway and from each other under caps, write
//! the inactive slot, verify the image's BLAKE3, try-boot it (a simulated reboot restarts the agent),
//! pass the health check and commit. The demo prints what crossed the WAN and what crossed the LAN.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wardswarm_node::{
    agent::{
        machine::{DeviceState, UpdateResult},
        runtime::{AgentConfig, Report},
        slots::{FileSlots, Slots},
    },
    device::{self, Device},
    membership::{Certificate, Role as MemberRole},
    net::{caps::Schedule, Config},
    release::{self, BuildRequest},
    root::{Role, RoleName, TrustRoot},
    testkit::Rng,
    SecretKey, Timestamp,
};
use wardswarm_seeder::{origin, Gateway, GatewayConfig};
use wardswarm_sim::live::first_addr;

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of devices on the ward.
    #[arg(long, default_value_t = 12)]
    pub devices: usize,
    /// Image size, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub size: u64,
    /// The gateway's WAN download cap in bytes per second (e.g. 8MB; "unlimited").
    #[arg(long, default_value = "8MB")]
    pub wan_cap: String,
    /// The gateway's LAN upload cap in bytes per second (e.g. 20MB; "unlimited").
    #[arg(long, default_value = "20MB")]
    pub gateway_cap: String,
    /// Each device's upload and download cap in bytes per second.
    #[arg(long, default_value = "20MB")]
    pub device_cap: String,
    /// Seed for the synthetic image and keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also publish a signed delta from the devices' factory image (1.0.0); the ward then fetches the
    /// delta instead of the full image.
    #[arg(long)]
    pub delta: bool,
    /// Roll the release out in waves through the gateway's API (a canary of 1 device, 25 %, the
    /// rest): the devices are directed; one is in clinical use and stays gated until it is free, and
    /// one fails its health check, so its wave pauses at the error threshold until the demo resumes.
    #[arg(long)]
    pub rollout: bool,
}

pub use wardswarm_node::units::parse_size;

fn parse_rate(s: &str) -> Result<Option<u64>> {
    wardswarm_node::units::parse_rate(s).map_err(anyhow::Error::msg)
}

/// A deterministic image that looks like firmware: code-like random blocks and zeroed padding.
/// `variant` > 0 rewrites every 16th block (offset by the variant), as a new release would.
fn write_image(path: &Path, size: u64, seed: u64, variant: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = Rng::new(seed);
    let mut y = Rng::from_state((seed ^ variant.wrapping_mul(0xd1b5_4a32_d192_ed03)) | 1);
    let mut block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        let n = (size - written).min(block.len() as u64) as usize;
        let changed = variant > 0 && i % 16 == variant % 16;
        if i % 3 == 2 && !changed {
            block[..n].fill(0);
        } else {
            for b in &mut block[..n] {
                let mut v = x.next_u64();
                if changed {
                    v = y.next_u64();
                }
                *b = (v >> 56) as u8 & 0x7f;
            }
        }
        f.write_all(&block[..n])?;
        written += n as u64;
        i += 1;
    }
    f.flush()?;
    Ok(())
}

/// A demo device: its id, the running device, and its agent's status.
struct Pump {
    id: String,
    dev: Device,
    status: watch::Receiver<Report>,
}

/// How one demo device is set up.
struct Part {
    /// Follows the gateway's directives (else installs every verified release).
    directed: bool,
    /// Its clinical-use lease file.
    lease: Option<std::path::PathBuf>,
    /// Its health check.
    health: String,
}

/// Starts one device: node, file slots provisioned with the factory image, agent (with its reboot loop).
fn start_device(
    dir: &Path,
    id: &str,
    cfg: Config,
    cert_for: &dyn Fn(&libp2p::identity::Keypair, &str) -> Result<Certificate>,
    root: &TrustRoot,
    factory: &[u8],
    part: Part,
) -> Result<Pump> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let slots: Arc<dyn Slots> =
        Arc::new(FileSlots::provision(&dir.join(id).join("slots"), factory)?);
    let mut acfg = AgentConfig::new(dir.join(id).join("agent"), "pump-rev-c");
    acfg.product = Some("infusion-pump".into());
    acfg.factory_version = "1.0.0".into();
    acfg.factory_counter = 1;
    acfg.health_check = Some(part.health);
    acfg.report_interval = Duration::from_secs(1);
    acfg.install = if part.directed {
        wardswarm_node::rollout::InstallMode::Directed
    } else {
        wardswarm_node::rollout::InstallMode::Automatic
    };
    acfg.gate = part.lease.map(wardswarm_node::agent::gate::Gate::Lease);
    let dev = Device::start(device::Spec {
        store: dir.join(id).join("store"),
        node: cfg,
        cert: cert_for(&key, id)?,
        keypair: key,
        root: root.clone(),
        agent: Some((acfg, slots)),
    })?;
    let status = dev
        .status
        .clone()
        .context("a device with an agent has a status")?;
    Ok(Pump {
        id: id.into(),
        dev,
        status,
    })
}

/// How the device's attempt at 2.0.0 ended, once it is idle again.
fn finished(r: &Report) -> Option<UpdateResult> {
    if r.state != DeviceState::Idle {
        return None;
    }
    match &r.last {
        Some(l) if l.version == "2.0.0" => Some(l.result),
        _ => None,
    }
}

pub fn run(args: &DemoArgs, now: Timestamp) -> Result<()> {
    if args.devices == 0 || args.devices > 200 {
        bail!("--devices must be 1 to 200");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args, now))
}

async fn run_async(args: &DemoArgs, now: Timestamp) -> Result<()> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let d = dir.path();
    let seeded = |n: u8| {
        let mut s = [n; 32];
        s[..8].copy_from_slice(&args.seed.to_le_bytes());
        SecretKey::from_seed(s)
    };
    let (root_key, release_key, member_key) = (seeded(1), seeded(2), seeded(3));
    let role = |name, k: &SecretKey| Role::new(name, vec![k.public_id()], 1);
    let mut root = TrustRoot::new(
        1,
        now.saturating_add(Duration::from_secs(365 * 86_400)),
        role(RoleName::Root, &root_key)?,
        role(RoleName::Release, &release_key)?,
        role(RoleName::Membership, &member_key)?,
    )?;
    root.sign(&root_key, None)?;

    // 1. The device maker signs release 2.0.0 and publishes it with a signed index on an HTTP origin.
    let factory_path = d.join("image-v1.img");
    write_image(&factory_path, args.size, args.seed, 0)?;
    let image = d.join("image-v2.img");
    write_image(&image, args.size, args.seed, 5)?;
    let origin_dir = d.join("origin");
    std::fs::create_dir_all(origin_dir.join("releases"))?;
    let t = Instant::now();
    let report = release::build(&BuildRequest {
        target: image.clone(),
        product: "infusion-pump".into(),
        hardware: vec!["pump-rev-c".into()],
        version: "2.0.0".into(),
        counter: 2,
        created: now,
        expires: now.saturating_add(Duration::from_secs(30 * 86_400)),
        keys: vec![release_key.clone()],
        out: origin_dir.join("releases").join("2.0.0"),
        zstd_level: 9,
        zstd_workers: 0,
        root: Some(root.clone()),
        bases: if args.delta {
            vec![factory_path.clone()]
        } else {
            vec![]
        },
        delta_codec: wardswarm_node::delta::Codec::MODELED,
        delta_methods: wardswarm_node::delta::Methods::ALL,
    })?;
    let build_s = t.elapsed().as_secs_f64();
    origin::publish(
        &origin_dir,
        std::slice::from_ref(&release_key),
        now.saturating_add(Duration::from_secs(7 * 86_400)),
        now,
    )?;
    let m = &report.manifest.manifest;
    let full_len = m.full().context("release has a full image")?.length;
    let factory = std::fs::read(&factory_path)?;
    // What a device on the factory image needs: the delta from it if the release has one.
    let full = m
        .delta_from(&wardswarm_node::Hash::of(&factory))
        .or(m.full())
        .context("release has a full image")?
        .clone();
    let stop = CancellationToken::new();
    let (origin_addr, _o) =
        origin::spawn(origin_dir.clone(), "127.0.0.1:0".parse()?, stop.clone()).await?;
    let origin_url: wardswarm_seeder::gateway::Url = format!("http://{origin_addr}/").parse()?;

    // 2. The ward gateway, with its WAN cap, and N devices with their caps.
    let base = |boot: Vec<libp2p::Multiaddr>, up: Option<u64>, down: Option<u64>| Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("literal address")],
        bootstrap: boot,
        mdns: false,
        ward: "demo-ward".into(),
        upload: Schedule::fixed(up),
        download: Schedule::fixed(down),
        // Every node of the embedded ward is on 127.0.0.1: the per-IP limits, meant for one
        // device per address on a ward LAN, would cap the whole ward's connections to a node.
        max_pending_per_ip: 1024,
        max_connections_per_ip: 1024,
        ..Config::default()
    };
    let cert = |k: &libp2p::identity::Keypair, name: &str, r: MemberRole| {
        Certificate::issue(
            "demo-ward",
            name,
            r,
            &k.public().to_peer_id().to_string(),
            now.saturating_add(Duration::from_secs(86_400)),
            std::slice::from_ref(&member_key),
        )
    };
    let gw_key = libp2p::identity::Keypair::generate_ed25519();
    let mut gcfg = GatewayConfig::new(
        origin_url,
        d.join("gateway"),
        base(vec![], parse_rate(&args.gateway_cap)?, None),
    );
    gcfg.wan = Schedule::fixed(parse_rate(&args.wan_cap)?);
    gcfg.poll_interval = Duration::from_secs(2);
    gcfg.api_listen = Some("127.0.0.1:0".parse()?);
    // An embedded ward on loopback: its read routes are open, for curl while it runs.
    gcfg.api_open_reads = true;
    let gw = Gateway::start(
        gcfg,
        gw_key.clone(),
        &cert(&gw_key, "gateway", MemberRole::Gateway)?,
        root.clone(),
    )
    .await?;
    // Every device knows only its gateway, as in a hospital; the devices find each other through
    // its peer lists (`docs/swarm.md`).
    let boot = vec![first_addr(gw.node()).await?];
    let device_cap = parse_rate(&args.device_cap)?;
    let cert_for = |k: &libp2p::identity::Keypair, id: &str| Ok(cert(k, id, MemberRole::Device)?);
    if !args.json {
        println!(
            "Wardswarm demo: an HTTP origin, one ward gateway and {} devices on loopback",
            args.devices
        );
        println!(
            "release  {} {} signed in {build_s:.1} s: image {} B, full artifact {} B (zstd)",
            report.manifest.manifest.product,
            report.manifest.manifest.version,
            report.manifest.manifest.target.length,
            full_len,
        );
        println!(
            "ward     devices run 1.0.0 and need the {} artifact: {} B, root {}",
            full.kind_name().as_str(),
            full.length,
            full.root.short()
        );
        println!("origin   http://{origin_addr}/index.json (signed index, release 2.0.0)");
        if let Some(a) = gw.api_addr() {
            println!("gateway  API http://{a}/api/v1/devices, metrics http://{a}/metrics");
        }
        println!(
            "caps     gateway WAN download {}, gateway LAN upload {}, device upload and download {}",
            args.wan_cap, args.gateway_cap, args.device_cap
        );
    }
    let cast = if args.rollout {
        Some(crate::demo_rollout::Cast::new(args.devices)?)
    } else {
        None
    };
    let start = Instant::now();
    let mut devices = Vec::new();
    for i in 0..args.devices {
        let id = format!("pump-{:02}", i + 1);
        let mut part = Part {
            directed: cast.is_some(),
            lease: None,
            health: "true".into(),
        };
        if let Some(c) = &cast {
            if c.in_use == id {
                crate::demo_rollout::hold_lease(d, &id)?;
                part.lease = Some(crate::demo_rollout::lease_path(d, &id));
            }
            if c.failing == id {
                part.health =
                    "echo 'pump self-test: pressure sensor out of range' >&2; exit 1".into();
            }
        }
        let dev = start_device(
            d,
            &id,
            base(boot.clone(), device_cap, device_cap),
            &cert_for,
            &root,
            &factory,
            part,
        )?;
        devices.push(dev);
    }
    gw.poll_now();
    let mut driver = match cast {
        Some(c) => {
            // The gateway must have verified the release and heard from every device first: a
            // rollout's targets are the devices that reported a hardware id the release lists.
            let ready = Instant::now() + Duration::from_secs(120);
            while !(gw.releases().iter().any(|r| {
                r.version == "2.0.0"
                    && r.status == wardswarm_seeder::gateway::ReleaseStatus::Verified
            }) && gw.devices().len() == args.devices)
            {
                if Instant::now() > ready {
                    bail!("the gateway did not verify the release and hear from every device within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let addr = gw.api_addr().context("the demo gateway serves its API")?;
            let drv =
                crate::demo_rollout::Driver::start(addr, &d.join("gateway"), d, c.clone()).await?;
            if !args.json {
                println!("rollout  {}", drv.events[0]);
            }
            Some((drv, c))
        }
        None => None,
    };

    // 3. Live progress until every device committed (or failed), bounded.
    let mut done_at: Vec<Option<f64>> = vec![None; devices.len()];
    // Why each device was seen gated (in_use, window_closed, reboot_limit, awaiting_consent).
    let mut gated_for: Vec<std::collections::BTreeSet<String>> =
        vec![Default::default(); devices.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut shown = 1;
    while done_at.iter().any(Option::is_none)
        || driver
            .as_ref()
            .is_some_and(|(d, _)| !matches!(d.state(), "finished" | "stopped"))
    {
        tick.tick().await;
        if Instant::now() > deadline {
            break;
        }
        if let Some((drv, _)) = driver.as_mut() {
            drv.step().await?;
            if !args.json {
                for e in &drv.events[shown..] {
                    eprintln!("\n  rollout: {e}");
                }
            }
            shown = drv.events.len();
        }
        let mut states: std::collections::BTreeMap<String, usize> = Default::default();
        for (i, dev) in devices.iter().enumerate() {
            let r = dev.status.borrow().clone();
            if let Some(g) = &r.gated {
                gated_for[i].insert(g.clone());
            }
            if done_at[i].is_none() && finished(&r).is_some() {
                done_at[i] = Some(start.elapsed().as_secs_f64());
            }
            let key = match finished(&r) {
                Some(res) => res.to_string(),
                None => r.state.to_string(),
            };
            *states.entry(key).or_default() += 1;
        }
        if !args.json {
            let lan: u64 = devices
                .iter()
                .map(|d| d.dev.node.metrics().received_all.get())
                .sum();
            let st = match &driver {
                // A rollout: each wave's devices by rollout status.
                Some((drv, _)) => drv.progress(),
                None => states
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            eprint!(
                "\r  {:>5.1} s  WAN {:>7.1} MB  LAN {:>8.1} MB  devices: {:<60}",
                start.elapsed().as_secs_f64(),
                gw.wan_bytes() as f64 / 1e6,
                lan as f64 / 1e6,
                st
            );
        }
    }
    if !args.json {
        eprintln!();
    }

    // 4. Summary.
    let label = full.root.short();
    let mut rows = Vec::new();
    let mut ok = true;
    for (i, dev) in devices.iter().enumerate() {
        let r = dev.status.borrow().clone();
        let want = match &driver {
            Some((_, c)) if c.failing == dev.id => UpdateResult::RolledBack,
            _ => UpdateResult::Committed,
        };
        ok &= finished(&r) == Some(want);
        let m = dev.dev.node.metrics();
        let mut row = serde_json::json!({
            "id": dev.id,
            "result": finished(&r).map_or("timed_out", UpdateResult::as_str),
            "installed": r.version,
            "seconds": done_at[i].unwrap_or(start.elapsed().as_secs_f64()),
            "bytes_from_gateway": m.received_total(&label, "gateway"),
            "bytes_from_peers": m.received_total(&label, "peer"),
        });
        if let Some((drv, _)) = &driver {
            row["group"] = serde_json::json!(drv.group_of(&dev.id));
            row["gated_seconds"] = serde_json::json!(r.gated_ms as f64 / 1000.0);
            row["gated_reasons"] = serde_json::json!(gated_for[i]);
        }
        rows.push(row);
    }
    if let Some((drv, _)) = &driver {
        ok &= drv.state() == "finished";
    }
    let wan = gw.wan_bytes();
    let gateway_lan = gw.node().metrics().sent_all.get();
    let lan: u64 = devices
        .iter()
        .map(|d| d.dev.node.metrics().received_all.get())
        .sum();
    let naive = full.length * args.devices as u64;
    if args.json {
        let mut v = serde_json::json!({
            "artifact_bytes": full.length,
            "artifact_kind": full.kind_name().as_str(),
            "full_artifact_bytes": full_len,
            "wan_metadata_bytes": gw.wan_metadata_bytes(),
            "image_bytes": report.manifest.manifest.target.length,
            "wan_bytes": wan,
            "wan_over_artifact": wan as f64 / full.length as f64,
            "lan_bytes": lan,
            "gateway_lan_upload_bytes": gateway_lan,
            "naive_wan_bytes": naive,
            "seconds": start.elapsed().as_secs_f64(),
            "devices": rows,
        });
        if let Some((drv, _)) = &driver {
            v["rollout"] = drv.summary();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "\n{:<10} {:<10} {:<10} {:>8} {:>16} {:>16}",
            "device", "result", "installed", "seconds", "from gateway B", "from peers B"
        );
        for r in &rows {
            let extra = match r.get("group") {
                Some(g) => format!(
                    "  {:<8} gated {:.1} s",
                    g.as_str().unwrap_or("-"),
                    r["gated_seconds"].as_f64().unwrap_or(0.0)
                ),
                None => String::new(),
            };
            println!(
                "{:<10} {:<10} {:<10} {:>8.2} {:>16} {:>16}{extra}",
                r["id"].as_str().unwrap_or(""),
                r["result"].as_str().unwrap_or(""),
                r["installed"].as_str().unwrap_or(""),
                r["seconds"].as_f64().unwrap_or(0.0),
                r["bytes_from_gateway"].as_u64().unwrap_or(0),
                r["bytes_from_peers"].as_u64().unwrap_or(0)
            );
        }
        if let Some((drv, _)) = &driver {
            let s = drv.summary();
            println!(
                "\nrollout {} {}",
                s["id"],
                s["state"].as_str().unwrap_or("")
            );
            for (name, state, statuses) in drv.waves() {
                println!("  {name:<8} {state:<9} {statuses}");
            }
        }
        println!(
            "\nartifact            {:>14} B  ({}; the full image artifact is {} B)",
            full.length,
            full.kind_name().as_str(),
            full_len
        );
        println!(
            "WAN (origin)        {:>14} B  ({:.4} x the artifact: one download for the ward; {} B of it index, manifest and outboard)",
            wan,
            wan as f64 / full.length as f64,
            gw.wan_metadata_bytes()
        );
        println!(
            "LAN total           {:>14} B  (received by devices, bao proofs included)",
            lan
        );
        println!(
            "gateway LAN upload  {:>14} B  ({:.2} artifact copies for {} devices)",
            gateway_lan,
            gateway_lan as f64 / full.length as f64,
            args.devices
        );
        println!(
            "without the swarm   {:>14} B  over the WAN ({} devices each downloading the artifact)",
            naive, args.devices
        );
    }
    stop.cancel();
    for p in devices {
        if let Err(e) = p.dev.stop().await {
            tracing::warn!(device = %p.id, error = %e, "device stopped with an error");
        }
    }
    gw.shutdown().await;
    if !ok {
        if args.rollout {
            bail!("the rollout did not go as planned: it should finish with every device committed but the one whose health check fails");
        }
        bail!("not every device committed the release");
    }
    Ok(())
}
