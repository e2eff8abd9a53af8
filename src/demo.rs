//! `wardswarm demo`: an embedded ward on loopback, in one process.
//!
//! The device maker signs a release; the ward gateway holds its artifact (loaded from the release
//! directory: the HTTP origin and the WAN download come with issue 4); N devices accept the signed
//! manifest, fetch the artifact over the real libp2p swarm from the gateway and from each other, under
//! caps, verify every chunk group against the signed root and the decoded image against the signed
//! target hash, and the demo prints what crossed the LAN.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use wardswarm_node::{
    membership::{Certificate, Role as MemberRole},
    net::{
        caps::Schedule,
        node::{self, Config, Handle},
    },
    release::{self, BuildRequest},
    root::{Role, RoleName, TrustRoot},
    store::Store,
    verify::DevicePolicy,
    Hash, SecretKey, Timestamp,
};

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of devices on the ward.
    #[arg(long, default_value_t = 12)]
    pub devices: usize,
    /// Image size, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub size: u64,
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
}

pub use wardswarm_node::units::parse_size;

fn parse_rate(s: &str) -> Result<Option<u64>> {
    wardswarm_node::units::parse_rate(s).map_err(anyhow::Error::msg)
}

/// A deterministic image that looks like firmware: code-like random blocks and zeroed padding.
fn write_image(path: &Path, size: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        let n = (size - written).min(block.len() as u64) as usize;
        if i % 3 == 2 {
            block[..n].fill(0);
        } else {
            for b in &mut block[..n] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 56) as u8 & 0x7f;
            }
        }
        f.write_all(&block[..n])?;
        written += n as u64;
        i += 1;
    }
    f.flush()?;
    Ok(())
}

struct DeviceResult {
    id: String,
    result: String,
    seconds: f64,
    from_gateway: u64,
    from_peers: u64,
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

    // 1. The device maker signs a release.
    let image = d.join("image-v2.img");
    write_image(&image, args.size, args.seed)?;
    let t = Instant::now();
    let report = release::build(&BuildRequest {
        target: image.clone(),
        product: "infusion-pump".into(),
        hardware: vec!["pump-rev-c".into()],
        version: "2.0.0".into(),
        counter: 2,
        created: now,
        expires: now.saturating_add(Duration::from_secs(30 * 86_400)),
        keys: vec![release_key],
        out: d.join("release"),
        zstd_level: 9,
        zstd_workers: 0,
        root: Some(root.clone()),
    })?;
    let build_s = t.elapsed().as_secs_f64();
    let manifest_bytes = std::fs::read(d.join("release").join(release::MANIFEST_FILE))?;
    let full = report
        .manifest
        .manifest
        .full()
        .context("release has a full image")?
        .clone();
    let art_path = d
        .join("release")
        .join(release::ARTIFACTS_DIR)
        .join(full.file_name());
    let ob_path =
        art_path.with_file_name(format!("{}{}", full.file_name(), release::OUTBOARD_SUFFIX));

    // 2. The gateway holds the artifact and seeds it under its LAN cap.
    let base = |listen: &str, boot: Vec<libp2p::Multiaddr>, cap: Option<u64>| Config {
        listen: vec![listen.parse().expect("literal address")],
        bootstrap: boot,
        mdns: false,
        ward: "demo-ward".into(),
        upload: Schedule::fixed(cap),
        download: Schedule::fixed(None),
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
    let gw_store = Arc::new(Store::open(d.join("gateway"))?);
    gw_store.import(full.root, full.length, &art_path, &ob_path)?;
    let gw_cfg = base(
        "/ip4/127.0.0.1/tcp/0",
        vec![],
        parse_rate(&args.gateway_cap)?,
    );
    let (gw, _gj) = node::spawn(
        gw_cfg,
        gw_key.clone(),
        &cert(&gw_key, "gateway", MemberRole::Gateway)?,
        root.clone(),
        gw_store,
    )?;
    gw.have_changed(full.root).await?;
    let mut boot = vec![first_addr(&gw).await?];

    // 3. Devices: each accepts the signed manifest, then fetches over the swarm.
    let device_cap = parse_rate(&args.device_cap)?;
    let mut devices: Vec<(String, Handle, Arc<Store>)> = Vec::new();
    for i in 0..args.devices {
        let id = format!("pump-{:02}", i + 1);
        let key = libp2p::identity::Keypair::generate_ed25519();
        let store = Arc::new(Store::open(d.join(&id))?);
        let mut cfg = base("/ip4/127.0.0.1/tcp/0", boot.clone(), device_cap);
        cfg.download = Schedule::fixed(device_cap);
        let (h, _j) = node::spawn(
            cfg,
            key.clone(),
            &cert(&key, &id, MemberRole::Device)?,
            root.clone(),
            store.clone(),
        )?;
        boot.push(first_addr(&h).await?);
        devices.push((id, h, store));
    }
    let policy = DevicePolicy {
        root: &root,
        product: Some("infusion-pump"),
        hardware: "pump-rev-c",
        committed_counter: 1,
        now,
    };
    let accepted = policy.accept_manifest(&manifest_bytes)?;

    if !args.json {
        println!(
            "Wardswarm demo: one gateway and {} devices on loopback",
            args.devices
        );
        println!(
            "release  {} {} signed in {build_s:.1} s: image {} B, full artifact {} B (zstd), root {}",
            report.manifest.manifest.product,
            report.manifest.manifest.version,
            report.manifest.manifest.target.length,
            full.length,
            full.root.short()
        );
        println!(
            "caps     gateway upload {}, device upload and download {}",
            args.gateway_cap, args.device_cap
        );
    }
    let start = Instant::now();
    let mut jobs = Vec::new();
    for (id, h, _) in &devices {
        let h = h.clone();
        let id = id.clone();
        let (root_hash, len) = (full.root, full.length);
        jobs.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(600), h.fetch(root_hash, len)).await;
            (id, r)
        }));
    }
    // Live progress: one line, refreshed.
    let mut ev = gw.subscribe();
    let mut done = BTreeMap::new();
    let mut progress = tokio::time::interval(Duration::from_millis(500));
    let mut handles: Vec<_> = jobs.into_iter().map(Some).collect();
    while done.len() < devices.len() {
        tokio::select! {
            _ = progress.tick() => {
                if !args.json {
                    let lan: u64 = devices.iter().map(|(_, h, _)| h.metrics().received_total(&full.root.short(), "gateway") + h.metrics().received_total(&full.root.short(), "peer")).sum();
                    eprint!("\r  {:>3}/{} devices complete, {:>8.1} MB crossed the LAN, {:>5.1} s", done.len(), devices.len(), lan as f64 / 1e6, start.elapsed().as_secs_f64());
                }
            }
            _ = ev.recv() => {}
        }
        for slot in handles.iter_mut() {
            if slot.as_ref().is_some_and(|j| j.is_finished()) {
                if let Some(j) = slot.take() {
                    let (id, r) = j.await?;
                    done.insert(id, (r, start.elapsed().as_secs_f64()));
                }
            }
        }
    }
    if !args.json {
        eprintln!();
    }

    // 4. Each device verifies the artifact against the accepted manifest and decodes the image.
    let mut results = Vec::new();
    for (id, h, store) in &devices {
        let (r, detected) = done.remove(id).context("device result")?;
        let secs = match &r {
            Ok(Ok(rep)) => rep.seconds,
            _ => detected,
        };
        let m = h.metrics();
        let from_gateway = m.received_total(&full.root.short(), "gateway");
        let from_peers = m.received_total(&full.root.short(), "peer");
        let result = match r {
            Err(_) => "timed out".to_string(),
            Ok(Err(e)) => format!("failed: {e}"),
            Ok(Ok(_)) => match check_device(
                store,
                &accepted,
                &full.root,
                &report.manifest.manifest.target,
            ) {
                Ok(()) => "verified".to_string(),
                Err(e) => format!("refused: {e:#}"),
            },
        };
        results.push(DeviceResult {
            id: id.clone(),
            result,
            seconds: secs,
            from_gateway,
            from_peers,
        });
    }
    let gateway_sent = gw.metrics().sent_total(&full.root.short(), "peer");
    let lan: u64 = results.iter().map(|r| r.from_gateway + r.from_peers).sum();
    let naive = full.length * args.devices as u64;
    let ok = results.iter().all(|r| r.result == "verified");

    if args.json {
        let v = serde_json::json!({
            "artifact_bytes": full.length,
            "image_bytes": report.manifest.manifest.target.length,
            "wan_bytes": serde_json::Value::Null,
            "wan_note": "the gateway loaded the release from disk; the HTTP origin and WAN download come with issue 4",
            "gateway_lan_upload_bytes": gateway_sent,
            "lan_bytes": lan,
            "naive_wan_bytes": naive,
            "seconds": start.elapsed().as_secs_f64(),
            "devices": results.iter().map(|r| serde_json::json!({
                "id": r.id, "result": r.result, "seconds": r.seconds,
                "bytes_from_gateway": r.from_gateway, "bytes_from_peers": r.from_peers,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "\n{:<10} {:<10} {:>8} {:>16} {:>16}",
            "device", "result", "seconds", "from gateway B", "from peers B"
        );
        for r in &results {
            println!(
                "{:<10} {:<10} {:>8.2} {:>16} {:>16}",
                r.id, r.result, r.seconds, r.from_gateway, r.from_peers
            );
        }
        println!("\nartifact            {:>14} B", full.length);
        println!(
            "gateway LAN upload  {:>14} B  ({:.2} artifact copies for {} devices)",
            gateway_sent,
            gateway_sent as f64 / full.length as f64,
            args.devices
        );
        println!("LAN total           {:>14} B  (bao proofs included)", lan);
        println!("WAN                 the gateway loaded the release from disk here; the HTTP origin and the");
        println!("                    WAN download (one copy per ward) come with issue 4");
        println!(
            "naive fleet, N x F  {:>14} B  (every device pulling the artifact over the WAN)",
            naive
        );
    }
    for (_, h, _) in &devices {
        let _ = h.shutdown().await;
    }
    let _ = gw.shutdown().await;
    if !ok {
        bail!("not every device verified the release");
    }
    Ok(())
}

async fn first_addr(h: &Handle) -> Result<libp2p::Multiaddr> {
    for _ in 0..500 {
        if let Some(a) = h.listen_addrs().await?.into_iter().next() {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("node did not start listening")
}

/// What the device checks before it would install: the artifact against the signed root and the
/// decoded image against the signed target.
fn check_device(
    store: &Store,
    accepted: &wardswarm_node::verify::VerifiedManifest,
    root: &Hash,
    target: &wardswarm_node::manifest::Target,
) -> Result<()> {
    let e = store.get(root).context("artifact not in store")?;
    accepted.check_artifact_files(
        root,
        &std::fs::File::open(e.data_path())?,
        &std::fs::File::open(e.outboard_path())?,
    )?;
    let dec = zstd::stream::read::Decoder::new(std::fs::File::open(e.data_path())?)?;
    let (hash, n) = wardswarm_node::hash::hash_reader(std::io::Read::take(dec, target.length + 1))?;
    if n != target.length || hash != target.hash {
        bail!("decoded image does not match the signed target");
    }
    Ok(())
}
