//! `wardswarm demo`: the chain of custody end to end on this machine, in one process.

use std::{path::Path, time::Instant};

use anyhow::{bail, Context, Result};
use wardswarm_node::{
    release::{self, BuildRequest},
    root::{Role, RoleName, TrustRoot},
    verify::DevicePolicy,
    SecretKey, Timestamp,
};

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Image size, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub size: u64,
    /// Seed for the synthetic image and keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `64MiB`, `200MB`, `1GiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 64MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
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

pub fn run(args: &DemoArgs, now: Timestamp) -> Result<()> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let d = dir.path();
    let seed = |n: u8| {
        let mut s = [n; 32];
        s[..8].copy_from_slice(&args.seed.to_le_bytes());
        SecretKey::from_seed(s)
    };
    let (root_key, release_key, member_key) = (seed(1), seed(2), seed(3));
    let role = |name, k: &SecretKey| Role::new(name, vec![k.public_id()], 1);
    let mut root = TrustRoot::new(
        1,
        now.saturating_add(std::time::Duration::from_secs(365 * 86_400)),
        role(RoleName::Root, &root_key)?,
        role(RoleName::Release, &release_key)?,
        role(RoleName::Membership, &member_key)?,
    )?;
    root.sign(&root_key, None)?;

    let image = d.join("image-v2.img");
    write_image(&image, args.size, args.seed)?;
    let t = Instant::now();
    let report = release::build(&BuildRequest {
        target: image,
        product: "infusion-pump".into(),
        hardware: vec!["pump-rev-c".into()],
        version: "2.0.0".into(),
        counter: 2,
        created: now,
        expires: now.saturating_add(std::time::Duration::from_secs(30 * 86_400)),
        keys: vec![release_key],
        out: d.join("release"),
        zstd_level: 9,
        zstd_workers: 0,
        root: Some(root.clone()),
    })?;
    let build_s = t.elapsed().as_secs_f64();
    let m = &report.manifest.manifest;
    let full = m.full().context("release has a full image")?.clone();

    // The device: accepts the manifest, checks the artifact, and refuses the threats.
    let policy = DevicePolicy {
        root: &root,
        product: Some("infusion-pump"),
        hardware: "pump-rev-c",
        committed_counter: 1,
        now,
    };
    let manifest_bytes = std::fs::read(d.join("release").join(release::MANIFEST_FILE))?;
    let accepted = policy.accept_manifest(&manifest_bytes)?;
    let art = d
        .join("release")
        .join(release::ARTIFACTS_DIR)
        .join(full.file_name());
    let ob = art.with_file_name(format!("{}{}", full.file_name(), release::OUTBOARD_SUFFIX));
    accepted.check_artifact_files(
        &full.root,
        &std::fs::File::open(&art)?,
        &std::fs::File::open(&ob)?,
    )?;

    let mut refusals = Vec::new();
    let replay = DevicePolicy {
        committed_counter: 2,
        ..policy
    };
    refusals.push((
        "a replayed release",
        replay
            .accept_manifest(&manifest_bytes)
            .err()
            .map(|e| e.to_string()),
    ));
    let wrong_hw = DevicePolicy {
        hardware: "monitor-rev-a",
        ..policy
    };
    refusals.push((
        "a release for other hardware",
        wrong_hw
            .accept_manifest(&manifest_bytes)
            .err()
            .map(|e| e.to_string()),
    ));
    let mut bytes = std::fs::read(&art)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&art, &bytes)?;
    refusals.push((
        "a tampered chunk group",
        accepted
            .check_artifact_files(
                &full.root,
                &std::fs::File::open(&art)?,
                &std::fs::File::open(&ob)?,
            )
            .err()
            .map(|e| e.to_string()),
    ));
    if let Some((what, _)) = refusals.iter().find(|(_, e)| e.is_none()) {
        bail!("the device accepted {what}: this is a bug");
    }

    if args.json {
        let v = serde_json::json!({
            "image_bytes": m.target.length,
            "artifact_bytes": full.length,
            "outboard_bytes": wardswarm_node::outboard::outboard_size(full.length),
            "build_seconds": build_s,
            "accepted": true,
            "refused": refusals.iter().map(|(w, e)| serde_json::json!({"threat": w, "reason": e})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("Wardswarm demo: the chain of custody on this machine\n");
        println!(
            "maker    signed release {} {} (counter {}) in {build_s:.1} s",
            m.product, m.version, m.counter
        );
        println!(
            "         image {} bytes -> full artifact {} bytes (zstd) + outboard {} bytes ({:.2} %)",
            m.target.length,
            full.length,
            wardswarm_node::outboard::outboard_size(full.length),
            100.0 * wardswarm_node::outboard::outboard_size(full.length) as f64 / full.length.max(1) as f64
        );
        println!(
            "device   accepted the manifest and verified every 16 KiB chunk group against {}",
            full.root
        );
        for (what, reason) in &refusals {
            println!(
                "device   refused {what}: {}",
                reason.as_deref().unwrap_or("-")
            );
        }
        println!("\nThe ward swarm (gateway + devices, WAN and LAN bytes) joins this demo with issues 3 and 4.");
    }
    Ok(())
}
