//! End-to-end ward tests: an HTTP origin, the gateway and device agents, as separate processes on
//! loopback (started from the documented example configs) or in-process where a test needs to play
//! an attacker. Every wait is bounded and polls a condition; nothing asserts on wall-clock speed.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use wardswarm_node::{
    agent::machine::DeviceState,
    agent::{
        runtime::AgentConfig,
        slots::{FileSlots, Slots},
    },
    device::{self, Device},
    membership::{Certificate, Role},
    net as node, release,
    root::TrustRoot,
    store::Store,
    SecretKey, Timestamp,
};
use wardswarm_seeder::{gateway::ReleaseStatus, origin, Gateway, GatewayConfig};

mod common;
use common::*;

#[test]
fn a_ward_of_processes_updates_rolls_back_and_survives_a_kill_during_install() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let artifact = f.release("2.0.0", 2, 3 << 20, &f.keys.release, far);
    f.publish();

    let (mut origin, url) = start_origin(d);

    let (mut gw, gw_addr) = start_gateway(&f, &url, "");
    let peer_line = gw.line("peer id ");
    assert!(
        gw_addr.starts_with("/ip4/127.0.0.1/tcp/")
            && gw_addr.ends_with(&format!("/p2p/{}", &peer_line[8..])),
        "full multiaddr: {gw_addr}"
    );
    let api = api_of(&gw);

    // Three devices: healthy; failing its health check; paused (then killed) halfway through its install.
    let devices = [
        ("pump-ok", "true", ""),
        ("pump-sick", "echo sensor self-test failed >&2; exit 3", ""),
        ("pump-killed", "true", "fault = \"pause-install\""),
    ];
    let mut procs = Vec::new();
    for (name, health, extra) in devices {
        procs.push(start_device(&f, name, &gw_addr, health, extra));
    }
    for p in &procs {
        let addr = p.line("listening on ");
        assert!(addr.contains("/p2p/12D3KooW"), "{addr}");
    }

    // Kill -9 in the middle of writing the inactive slot, then restart without the fault.
    wait_in(
        Some(d),
        "pump-killed to pause mid-install",
        Duration::from_secs(120),
        || d.join("pump-killed/agent/install-paused").exists(),
    );
    assert_eq!(
        device_state(d, "pump-killed")["phase"]["phase"],
        "installing"
    );
    procs[2].kill9();
    std::fs::remove_file(d.join("pump-killed/agent/install-paused")).expect("marker");
    let cfg = std::fs::read_to_string(d.join("pump-killed.toml")).expect("cfg");
    std::fs::write(
        d.join("pump-killed.toml"),
        cfg.replace("fault = \"pause-install\"", ""),
    )
    .expect("cfg");
    // Still bootable: the committed slot is the factory image, untouched.
    assert_eq!(
        std::fs::read(d.join("pump-killed/slots/slot-a.img")).expect("slot a"),
        f.factory
    );
    procs[2] = Proc::start(
        d,
        &["node", "--config", "pump-killed.toml"],
        "pump-killed-2.log",
    );

    wait_in(
        Some(d),
        "every device to finish",
        Duration::from_secs(180),
        || {
            devices
                .iter()
                .all(|(n, _, _)| result_of(&device_state(d, n)).is_some())
        },
    );
    let ok = device_state(d, "pump-ok");
    assert_eq!(result_of(&ok).as_deref(), Some("committed"));
    assert_eq!(ok["installed"]["version"], "2.0.0");
    assert_eq!(ok["installed"]["slot"], "b");
    let sick = device_state(d, "pump-sick");
    assert_eq!(result_of(&sick).as_deref(), Some("rolled_back"), "{sick}");
    // A rollback is a warning in the device's log, with plain field values.
    let log = std::fs::read_to_string(d.join("pump-sick.log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("result=\"rolled_back\"")),
        "{log}"
    );
    assert!(!log.contains("Some(\""), "Option values in the log: {log}");
    assert_eq!(
        sick["installed"]["version"], "1.0.0",
        "floor and slot unchanged"
    );
    assert_eq!(sick["installed"]["slot"], "a");
    assert!(
        sick["last"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("sensor self-test failed"),
        "{sick}"
    );
    let killed = device_state(d, "pump-killed");
    assert_eq!(result_of(&killed).as_deref(), Some("committed"), "{killed}");
    assert_eq!(killed["installed"]["version"], "2.0.0");

    // The gateway saw it all over the swarm.
    wait_in(
        Some(d),
        "the gateway API to show every outcome",
        Duration::from_secs(30),
        || {
            let v = json_get(api, "/api/v1/devices");
            let by = |id: &str| {
                v.as_array()
                    .and_then(|a| a.iter().find(|x| x["id"] == id).cloned())
                    .unwrap_or_default()
            };
            by("pump-ok")["last_result"] == "committed"
                && by("pump-killed")["last_result"] == "committed"
                && by("pump-sick")["last_result"] == "rolled_back"
                && by("pump-sick")["installed"] == "1.0.0"
        },
    );
    let releases = json_get(api, "/api/v1/releases");
    assert_eq!(releases[0]["status"], "verified", "{releases}");
    let metrics = http_get(api, "/metrics");
    let wan: f64 = metrics
        .lines()
        .find(|l| l.starts_with("wardswarm_gateway_wan_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no WAN counter in\n{metrics}"));
    assert!(
        wan >= artifact as f64 && wan <= artifact as f64 * 1.01 + 64.0 * 1024.0,
        "WAN {wan} for an artifact of {artifact}"
    );
    assert!(
        metrics.contains("wardswarm_gateway_devices{state=\"idle\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("wardswarm_lan_sent_total"), "{metrics}");

    // Every audit log is intact and tells the story.
    for (name, _, _) in devices {
        let out = Command::new(BIN)
            .args(["audit", "verify"])
            .arg(d.join(name).join("agent/audit.jsonl"))
            .output()
            .expect("audit verify");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sick_log = std::fs::read_to_string(d.join("pump-sick/agent/audit.jsonl")).expect("log");
    assert!(sick_log.contains("health check failed") && sick_log.contains("rolled_back"));

    // SIGTERM stops everything cleanly.
    for p in procs.iter_mut() {
        assert!(p.sigterm().success());
    }
    assert!(gw.sigterm().success());
    assert!(origin.sigterm().success());
}

#[test]
fn a_restarted_gateway_resumes_without_downloading_verified_bytes_again() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let artifact = f.release("2.0.0", 2, 6 << 20, &f.keys.release, far);
    f.publish();
    let (mut origin, url) = start_origin(d);
    f.member("gw", Role::Gateway);
    // Slow WAN, prefetch (no devices needed), small range requests.
    let cfg = gateway_toml(&url, "[wan]\ndefault = \"1MB\"\n")
        .replace("prefetch = false", "prefetch = true")
        .replace("range_bytes = \"4MiB\"", "range_bytes = \"256KiB\"");
    std::fs::write(d.join("gateway.toml"), cfg).expect("config");
    let groups = |api: SocketAddr| -> (u64, u64) {
        let v = json_get(api, "/api/v1/releases");
        let a = &v[0]["artifacts"][0];
        (
            a["groups_have"].as_u64().unwrap_or(0),
            a["groups_total"].as_u64().unwrap_or(1),
        )
    };
    let mut gw = Proc::start(d, &["seeder", "--config", "gateway.toml"], "gateway.log");
    let api = api_of(&gw);
    let mut before = 0;
    wait_for(
        "half the artifact to be verified",
        Duration::from_secs(120),
        || {
            let (h, t) = groups(api);
            before = h;
            h * 2 >= t
        },
    );
    gw.kill9();

    let mut gw = Proc::start(d, &["seeder", "--config", "gateway.toml"], "gateway-2.log");
    let api = api_of(&gw);
    wait_for("the artifact to complete", Duration::from_secs(120), || {
        let (h, t) = groups(api);
        h == t
    });
    let metrics = http_get(api, "/metrics");
    let wan: u64 = metrics
        .lines()
        .find(|l| l.starts_with("wardswarm_gateway_wan_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("WAN counter") as u64;
    let before_bytes = before * 16 * 1024;
    // Restarting from scratch would cost at least `artifact + before_bytes`; resuming costs the
    // artifact plus metadata plus at most the unverified tail of the interrupted request.
    assert!(
        wan < artifact + before_bytes / 2,
        "WAN {wan} B: the restart re-downloaded verified data (artifact {artifact}, verified before the kill {before_bytes})"
    );
    assert!(
        wan >= artifact,
        "WAN {wan} < artifact {artifact}: the counter lost bytes"
    );
    assert!(gw.sigterm().success());
    assert!(origin.sigterm().success());
}

/// A delta that does not install on a device is not the end of the release. Here the device's
/// committed slot was changed after the agent recorded it (a writable root file system, say), so
/// the slot no longer hashes to the delta's signed base: the agent drops the delta, fetches the
/// release's full image (the gateway downloads it because the device's report names it, prefetch
/// off) and commits it. The delta's failure is in the device's log.
#[test]
fn a_device_whose_delta_does_not_install_falls_back_to_the_full_image() {
    let f = Fixture::new();
    let d = f.path();
    // No index yet: the gateway polls an origin with nothing on it.
    let (mut origin, url) = start_origin(d);
    let (mut gw, gw_addr) = start_gateway(&f, &url, "");
    let mut dev = start_device(&f, "pump-1", &gw_addr, "true", "");
    wait_in(
        Some(d),
        "the agent to record its slot",
        Duration::from_secs(60),
        || device_state(d, "pump-1")["phase"]["phase"] == "idle",
    );
    // The field change: one byte of the committed slot, after the agent hashed it.
    let slot = d.join("pump-1/slots/slot-a.img");
    let mut changed = std::fs::read(&slot).expect("slot a");
    changed[1000] ^= 0xff;
    std::fs::write(&slot, &changed).expect("slot a");

    // Release 2.0.0: the factory image with a small change, published with a delta from it.
    let mut image = f.factory.clone();
    image[4096..4096 + 512].copy_from_slice(&wardswarm_node::testkit::bytes(512, 9));
    std::fs::write(d.join("factory.img"), &f.factory).expect("factory");
    std::fs::write(d.join("image-2.0.0.img"), &image).expect("image");
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let r = release::build(&release::BuildRequest {
        target: d.join("image-2.0.0.img"),
        product: "infusion-pump".into(),
        hardware: vec!["pump-rev-c".into()],
        version: "2.0.0".into(),
        counter: 2,
        created: Timestamp::from_unix(f.now.as_unix() - 86_400),
        expires: far,
        keys: vec![f.keys.release.clone()],
        out: d.join("origin/releases/2.0.0"),
        zstd_level: 1,
        zstd_workers: 0,
        root: None,
        bases: vec![d.join("factory.img")],
        delta_codec: wardswarm_node::delta::Codec::MODELED,
        delta_methods: wardswarm_node::delta::Methods::ALL,
    })
    .expect("build release");
    let m = &r.manifest.manifest;
    let delta = m
        .delta_from(&wardswarm_node::Hash::of(&f.factory))
        .expect("a delta from the factory image");
    let full = m.full().expect("a full image");
    f.publish();

    wait_in(
        Some(d),
        "pump-1 to finish",
        Duration::from_secs(180),
        || result_of(&device_state(d, "pump-1")).is_some(),
    );
    let st = device_state(d, "pump-1");
    assert_eq!(result_of(&st).as_deref(), Some("committed"), "{st}");
    assert_eq!(st["installed"]["version"], "2.0.0");
    assert_eq!(
        std::fs::read(d.join("pump-1/slots/slot-b.img")).expect("slot b"),
        image,
        "the new slot holds the signed image"
    );
    let log = std::fs::read_to_string(d.join("pump-1.log")).expect("log");
    assert!(
        log.contains("the delta did not install") && log.contains("fetching the full image"),
        "{log}"
    );
    // The gateway fetched both: the delta first planned for the device, then the full image.
    let api = api_of(&gw);
    let v = json_get(api, "/api/v1/releases");
    let have = |root: &wardswarm_node::Hash| {
        v.as_array().into_iter().flatten().any(|rel| {
            rel["artifacts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["root"] == root.to_string() && a["groups_have"] == a["groups_total"])
        })
    };
    assert!(have(&delta.root) && have(&full.root), "{v}");
    assert!(dev.sigterm().success());
    assert!(gw.sigterm().success());
    assert!(origin.sigterm().success());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_gateway_refuses_unsigned_expired_and_tampered_releases() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let stranger = SecretKey::from_seed([9; 32]);
    // Signed by a key the trust root does not list (an "unsigned" release as far as devices go).
    f.release("2.0.0", 2, 1 << 20, &stranger, far);
    // Properly signed but expired.
    f.release(
        "2.1.0",
        3,
        1 << 20,
        &f.keys.release,
        Timestamp::from_unix(f.now.as_unix() - 60),
    );
    // Properly signed, but its manifest is swapped after the index was signed.
    f.release("2.2.0", 4, 1 << 20, &f.keys.release, far);
    f.publish();
    let m = d.join("origin/releases/2.2.0/manifest.json");
    let swapped = std::fs::read(d.join("origin/releases/2.0.0/manifest.json")).expect("manifest");
    std::fs::write(&m, swapped).expect("swap");

    let rt = runtime();
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let (addr, _) = origin::spawn(
            d.join("origin"),
            "127.0.0.1:0".parse().expect("addr"),
            stop.clone(),
        )
        .await
        .expect("origin");
        let kp = libp2p::identity::Keypair::generate_ed25519();
        let mut cfg = GatewayConfig::new(
            format!("http://{addr}/").parse().expect("url"),
            d.join("gw"),
            loopback(vec![]),
        );
        cfg.prefetch = true;
        cfg.poll_interval = Duration::from_millis(300);
        let gw = Gateway::start(
            cfg,
            kp.clone(),
            &cert(&f, &kp, "gw", Role::Gateway),
            f.root.clone(),
        )
        .await
        .expect("gateway");
        let end = Instant::now() + Duration::from_secs(30);
        while gw.releases().len() < 3 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = gw.releases();
        assert_eq!(r.len(), 3, "{r:?}");
        for (v, why) in [
            ("2.0.0", "signature"),
            ("2.1.0", "expired"),
            ("2.2.0", "signed index says"),
        ] {
            let x = r.iter().find(|x| x.version == v).expect("release listed");
            assert_eq!(x.status, ReleaseStatus::Refused, "{v}: {x:?}");
            let reason = x.reason.clone().unwrap_or_default();
            assert!(reason.contains(why), "{v}: {reason}");
        }
        // Nothing but metadata crossed the WAN: no artifact of a refused release was downloaded.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(gw.wan_bytes() < 64 * 1024, "WAN {}", gw.wan_bytes());
        assert!(gw.releases().iter().all(|x| x.artifacts.is_empty()));

        // An index signed by the wrong key is refused as a whole.
        let ix = wardswarm_node::index::Index::build(
            "infusion-pump",
            99,
            f.now,
            far,
            &[],
            std::slice::from_ref(&stranger),
        )
        .expect("index");
        std::fs::write(d.join("origin/index.json"), ix.to_bytes()).expect("index");
        let metrics_before = gw.metrics_text();
        gw.poll_now();
        let end = Instant::now() + Duration::from_secs(10);
        while gw.metrics_text() == metrics_before && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            gw.metrics_text()
                .contains("wardswarm_gateway_releases_refused_total 4"),
            "{}",
            gw.metrics_text()
        );
        gw.shutdown().await;
        stop.cancel();
    });
}

#[test]
fn a_compromised_gateway_cannot_make_a_device_install() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    // The attacker has the gateway's identity and certificate, and its own release key.
    let attacker = SecretKey::from_seed([66; 32]);
    let len_forged = f.release("6.6.6", 66, 1 << 20, &attacker, far);
    let len_expired = f.release(
        "2.1.0",
        3,
        1 << 20,
        &f.keys.release,
        Timestamp::from_unix(f.now.as_unix() - 60),
    );
    let mut evil_root = TrustRoot::new(
        1,
        far,
        wardswarm_node::root::Role::new(
            wardswarm_node::root::RoleName::Root,
            vec![attacker.public_id()],
            1,
        )
        .expect("role"),
        wardswarm_node::root::Role::new(
            wardswarm_node::root::RoleName::Release,
            vec![attacker.public_id(), f.keys.release.public_id()],
            1,
        )
        .expect("role"),
        f.root.membership.clone(),
    )
    .expect("root");
    evil_root.sign(&attacker, None).expect("sign");

    let rt = runtime();
    rt.block_on(async {
        // The compromised gateway: it holds both artifacts and seeds them, and its node trusts the
        // attacker's key, so it announces both manifests to the ward.
        let gw_store = Arc::new(Store::open(d.join("gw")).expect("store"));
        let mut announced = Vec::new();
        for (v, len) in [("6.6.6", len_forged), ("2.1.0", len_expired)] {
            let rd = d.join("origin/releases").join(v);
            let sm = release::read_manifest(&rd).expect("manifest");
            let a = sm.manifest.full().expect("full").clone();
            assert_eq!(a.length, len);
            let art = rd.join(release::ARTIFACTS_DIR).join(a.file_name());
            let ob = art.with_file_name(format!("{}{}", a.file_name(), release::OUTBOARD_SUFFIX));
            gw_store
                .import(a.root, a.length, &art, &ob)
                .expect("import");
            announced.push((sm.to_bytes(), a.root));
        }
        let kp = libp2p::identity::Keypair::generate_ed25519();
        let (gw, _) = node::spawn(
            loopback(vec![]),
            kp.clone(),
            &cert(&f, &kp, "gw", Role::Gateway),
            evil_root,
            gw_store,
        )
        .expect("gateway node");
        let gw_addr = loop {
            if let Some(a) = gw.listen_addrs().await.expect("addrs").into_iter().next() {
                break a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The forged release: the evil node's own (attacker) root accepts it, so it announces it.
        gw.announce(announced[0].0.clone())
            .await
            .expect("the evil node accepts the forged release");
        for (_, r) in &announced {
            gw.have_changed(*r).await.expect("have");
        }

        // The device.
        let dkp = libp2p::identity::Keypair::generate_ed25519();
        let slots: Arc<dyn Slots> =
            Arc::new(FileSlots::provision(&d.join("dev/slots"), &f.factory).expect("slots"));
        let mut acfg = AgentConfig::new(d.join("dev/agent"), "pump-rev-c");
        acfg.install = wardswarm_node::rollout::InstallMode::Automatic;
        acfg.factory_counter = 1;
        acfg.factory_version = "1.0.0".into();
        let device = Device::start(device::Spec {
            store: d.join("dev/store"),
            node: loopback(vec![gw_addr]),
            cert: cert(&f, &dkp, "pump-1", Role::Device),
            keypair: dkp,
            root: f.root.clone(),
            agent: Some((acfg, slots)),
        })
        .expect("device");
        let dev = device.node.clone();
        let store = device.store.clone();
        let status = device.status.clone().expect("agent status");

        // The gateway announces to newcomers on admission; the device's node refuses the forgery.
        let end = Instant::now() + Duration::from_secs(30);
        while dev.metrics().announcements_refused.get() < 1 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            dev.metrics().announcements_refused.get(),
            1,
            "the forged announcement was not refused"
        );

        // The expired release, pushed raw over the announce protocol by a modified gateway that holds
        // the gateway's key and certificate (its own node would not announce an expired release).
        let dev_addr = dev
            .listen_addrs()
            .await
            .expect("addrs")
            .into_iter()
            .next()
            .expect("addr");
        // Same identity as the evil node: stop that one first (one connection per peer id).
        let _ = gw.shutdown().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let gw_cert = cert(&f, &kp, "gw", Role::Gateway);
        let raw = raw_gateway(&kp, dev_addr, dev.peer_id(), &gw_cert).await;
        raw.announce(&announced[1].0).await;
        let end = Instant::now() + Duration::from_secs(30);
        while dev.metrics().announcements_refused.get() < 2 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            dev.metrics().announcements_refused.get(),
            2,
            "the expired announcement was not refused"
        );

        // Give the swarm the chance to do harm, then check none was done.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = status.borrow().clone();
        assert_eq!(r.state, DeviceState::Idle, "{r:?}");
        assert_eq!(r.version, "1.0.0");
        assert!(
            !d.join("dev/slots/slot-b.img").exists(),
            "the inactive slot was written"
        );
        for (_, root) in &announced {
            assert!(store.get(root).is_none(), "the device fetched {root}");
        }
        device.stop().await.expect("the device stops cleanly");
        let _ = dev.shutdown().await;
        let _ = gw.shutdown().await;
    });
}

#[test]
fn the_demo_ward_installs_a_delta_from_the_factory_image() {
    let v = demo_json(&["--devices", "3", "--size", "2MiB", "--delta"]);
    assert_eq!(v["artifact_kind"], "delta", "{v}");
    let delta = v["artifact_bytes"].as_u64().expect("artifact_bytes");
    let full = v["full_artifact_bytes"]
        .as_u64()
        .expect("full_artifact_bytes");
    assert!(
        delta * 10 <= full * 9,
        "the delta ({delta}) must be clearly smaller than the full image ({full})"
    );
    let wan = v["wan_bytes"].as_u64().expect("wan");
    let meta = v["wan_metadata_bytes"].as_u64().expect("meta");
    assert!(
        wan - meta <= delta,
        "the ward downloaded more than the delta: {wan} - {meta}"
    );
    for dv in v["devices"].as_array().expect("devices") {
        assert_eq!(dv["result"], "committed", "{dv}");
    }
}

#[test]
fn the_demo_updates_eight_devices_with_one_wan_download() {
    let v = demo_json(&["--devices", "8", "--size", "4MiB", "--wan-cap", "4MB"]);
    let artifact = v["artifact_bytes"].as_u64().expect("artifact_bytes");
    let wan = v["wan_bytes"].as_u64().expect("wan_bytes");
    let lan = v["lan_bytes"].as_u64().expect("lan_bytes");
    assert!(wan >= artifact, "WAN {wan} < artifact {artifact}");
    // One artifact plus metadata (index, manifest, outboard at 0.39 %): within 1 %.
    assert!(
        wan as f64 <= artifact as f64 * 1.01,
        "WAN {wan} for artifact {artifact}"
    );
    let meta = v["wan_metadata_bytes"]
        .as_u64()
        .expect("wan_metadata_bytes");
    assert!(
        wan - meta <= artifact,
        "artifact bytes were downloaded twice: {wan} - {meta} > {artifact}"
    );
    assert!(
        lan >= 8 * artifact,
        "LAN {lan}: eight devices each received the artifact"
    );
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 8);
    for dv in devices {
        assert_eq!(dv["result"], "committed", "{dv}");
        assert!(dv["id"].is_string() && dv["seconds"].is_number());
        let got = dv["bytes_from_gateway"].as_u64().unwrap_or(0)
            + dv["bytes_from_peers"].as_u64().unwrap_or(0);
        assert!(got >= artifact, "{dv}");
    }
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Raw {
    stream: libp2p_stream::Behaviour,
}

/// A modified gateway: real key and certificate, but it speaks the wire protocol directly.
struct RawGateway {
    control: libp2p_stream::Control,
    peer: libp2p::PeerId,
}

async fn raw_gateway(
    kp: &libp2p::identity::Keypair,
    addr: libp2p::Multiaddr,
    peer: libp2p::PeerId,
    cert: &Certificate,
) -> RawGateway {
    use futures::StreamExt;
    use wardswarm_node::net::wire;
    let mut sw = libp2p::SwarmBuilder::with_existing_identity(kp.clone())
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| Raw {
            stream: libp2p_stream::Behaviour::new(),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut control = sw.behaviour().stream.new_control();
    sw.dial(addr).expect("dial");
    tokio::spawn(async move {
        loop {
            let _ = sw.select_next_some().await;
        }
    });
    // Admission as the dialer: our certificate, then theirs.
    let mut st = tokio::time::timeout(
        Duration::from_secs(10),
        control.open_stream(peer, wire::ADMISSION),
    )
    .await
    .expect("in time")
    .expect("admission stream");
    wire::write_frame(&mut st, &cert.to_bytes())
        .await
        .expect("send cert");
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        wire::read_frame(&mut st, wire::MAX_CERT_FRAME),
    )
    .await;
    RawGateway { control, peer }
}

impl RawGateway {
    async fn announce(mut self, manifest: &[u8]) {
        use futures::AsyncWriteExt;
        use wardswarm_node::net::wire;
        let mut st = tokio::time::timeout(
            Duration::from_secs(10),
            self.control.open_stream(self.peer, wire::ANNOUNCE),
        )
        .await
        .expect("in time")
        .expect("announce stream");
        wire::write_frame(&mut st, manifest).await.expect("send");
        let _ = st.close().await;
        // Keep the connection (and the swarm task) alive long enough for the device to read it.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts an in-process gateway (prefetch on) against `origin_url`.
async fn prefetching_gateway(f: &Fixture, origin_url: &str, name: &str) -> Gateway {
    prefetching_gateway_with(f, origin_url, name, |_| {}).await
}

async fn prefetching_gateway_with(
    f: &Fixture,
    origin_url: &str,
    name: &str,
    tune: impl FnOnce(&mut GatewayConfig),
) -> Gateway {
    let kp = libp2p::identity::Keypair::generate_ed25519();
    let mut cfg = GatewayConfig::new(
        origin_url.parse().expect("url"),
        f.path().join(name),
        loopback(vec![]),
    );
    cfg.prefetch = true;
    cfg.poll_interval = Duration::from_millis(300);
    cfg.range_bytes = 1 << 20;
    tune(&mut cfg);
    Gateway::start(
        cfg,
        kp.clone(),
        &cert(f, &kp, name, Role::Gateway),
        f.root.clone(),
    )
    .await
    .expect("gateway")
}

async fn wait_async(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

async fn wait_complete(gw: &Gateway, what: &str, secs: u64) {
    wait_async(what, Duration::from_secs(secs), || {
        let (h, t) = artifact_groups(gw);
        h == t
    })
    .await
}

fn artifact_groups(gw: &Gateway) -> (u64, u64) {
    gw.releases()
        .first()
        .and_then(|r| r.artifacts.first().map(|a| (a.groups_have, a.groups_total)))
        .unwrap_or((0, 1))
}

fn metric(gw: &Gateway, name: &str) -> f64 {
    gw.metrics_text()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// nginx from Debian's packages as the origin: plain static files, byte ranges, nothing of ours.
/// Without nginx the test is reported ignored, with the reason (see `build.rs`); `.ci/run` installs
/// nginx-light and sets WARDSWARM_REQUIRE_NGINX=1, so CI cannot skip it.
#[test]
#[cfg_attr(
    wardswarm_no_nginx,
    ignore = "nginx is not installed (apt-get install nginx-light)"
)]
fn the_gateway_works_against_nginx_as_the_origin() {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(nginx) = nginx else {
        assert!(
            std::env::var_os("WARDSWARM_REQUIRE_NGINX").is_none(),
            "nginx is required here (apt-get install nginx-light)"
        );
        eprintln!("SKIPPED: nginx is not installed (apt-get install nginx-light)");
        return;
    };
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let artifact = f.release("2.0.0", 2, 3 << 20, &f.keys.release, far);
    f.publish();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let p = d.display();
    std::fs::create_dir_all(d.join("nginx-tmp")).expect("tmp");
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/nginx-error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {p}/nginx-access.log;\n  client_body_temp_path {p}/nginx-tmp;\n  proxy_temp_path {p}/nginx-tmp;\n\
         fastcgi_temp_path {p}/nginx-tmp;\n  uwsgi_temp_path {p}/nginx-tmp;\n  scgi_temp_path {p}/nginx-tmp;\n\
         default_type application/octet-stream;\n  types {{ application/json json; }}\n\
         server {{ listen 127.0.0.1:{port}; root {p}/origin; }}\n}}\n"
    );
    std::fs::write(d.join("nginx.conf"), conf).expect("conf");
    let mut server = Command::new(nginx)
        .args(["-p"])
        .arg(d)
        .args(["-c"])
        .arg(d.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    wait_for("nginx to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let rt = runtime();
    rt.block_on(async {
        let gw = prefetching_gateway(&f, &format!("http://127.0.0.1:{port}/"), "gw").await;
        wait_complete(&gw, "the artifact to download from nginx", 60).await;
        let wan = gw.wan_bytes();
        assert!(
            wan >= artifact && wan as f64 <= artifact as f64 * 1.01,
            "WAN {wan}, artifact {artifact}"
        );
        gw.shutdown().await;
    });
    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(d.join("nginx-access.log")).expect("access log");
    assert!(log.contains("\" 206 "), "nginx served byte ranges:\n{log}");
    assert!(log.contains("GET /index.json"), "{log}");
}

/// A TCP proxy that cuts every connection after `limit` bytes from the server.
async fn cutting_proxy(to: SocketAddr, limit: usize) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(s) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut sr, mut sw) = s.into_split();
                let (mut cr, mut cw) = c.split();
                let up = async {
                    let mut b = [0u8; 8192];
                    while let Ok(n) = cr.read(&mut b).await {
                        if n == 0 || sw.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut b = [0u8; 8192];
                    let mut sent = 0;
                    while sent < limit {
                        let n = match sr.read(&mut b).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n.min(limit - sent),
                        };
                        if cw.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    addr
}

#[test]
fn the_gateway_survives_cut_connections_and_refuses_corrupt_origin_data() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let artifact = f.release("2.0.0", 2, 3 << 20, &f.keys.release, far);
    f.publish();
    let rt = runtime();
    rt.block_on(async {
        let (origin_addr, stop) = dev_origin(&f).await;
        // Every connection is cut after 300 KiB: no range request of 1 MiB ever completes.
        let proxy = cutting_proxy(origin_addr, 300 * 1024).await;
        let gw = prefetching_gateway(&f, &format!("http://{proxy}/"), "gw-cut").await;
        wait_complete(&gw, "the artifact to complete through cut connections", 120).await;
        let wan = gw.wan_bytes();
        assert!(
            metric(&gw, "wardswarm_gateway_origin_errors_total") >= 3.0,
            "the connections were cut"
        );
        // Whole verified groups of a cut response are kept; at most a partial group per cut is lost.
        assert!(
            wan as f64 <= artifact as f64 * 1.01 + 64.0 * 1024.0,
            "WAN {wan}, artifact {artifact}"
        );
        gw.shutdown().await;

        // Now the origin's copy is corrupted in one place: the gateway verifies, refuses and never
        // holds (so never seeds) the bad group, and keeps the good ones.
        let rd = d.join("origin/releases/2.0.0");
        let sm = release::read_manifest(&rd).expect("manifest");
        let a = sm.manifest.full().expect("full").clone();
        let art = rd.join(release::ARTIFACTS_DIR).join(a.file_name());
        let mut bytes = std::fs::read(&art).expect("artifact");
        let bad_group = (bytes.len() / 2) as u64 / (16 * 1024);
        let i = bytes.len() / 2;
        bytes[i] ^= 0x40;
        std::fs::write(&art, bytes).expect("corrupt");
        let gw = prefetching_gateway(&f, &format!("http://{origin_addr}/"), "gw-corrupt").await;
        wait_async(
            "the corruption to be detected",
            Duration::from_secs(60),
            || metric(&gw, "wardswarm_gateway_origin_corrupt_total") >= 1.0,
        )
        .await;
        let (h, t) = artifact_groups(&gw);
        assert!(h < t, "a corrupt artifact must never complete");
        assert!(
            h >= bad_group.saturating_sub(64),
            "groups before the corrupt one were kept: {h}"
        );
        let store = Store::open(d.join("gw-corrupt/store")).expect("store re-validates on open");
        let e = store.get(&a.root).expect("entry");
        assert!(
            !e.have().contains(bad_group),
            "the corrupt group was stored"
        );
        gw.shutdown().await;
        stop.cancel();
    });
}

/// Peer exchange: a gateway and six device processes, mDNS off, each device bootstrapped only to
/// the gateway (as `docs/examples/device.toml` suggests). The devices find each other through the
/// gateway's peer lists and most of their bytes come from each other; the super-seeding gateway
/// uploads at most 1.5 artifact copies. Without peer exchange each device gets a full copy from the
/// gateway (6 copies).
#[test]
fn devices_bootstrapped_only_to_the_gateway_form_a_swarm() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let artifact = f.release("2.0.0", 2, 48 << 20, &f.keys.release, far);
    f.publish();
    let (_origin, url) = start_origin(d);
    // The gateway's LAN upload is the ward's scarce resource; the devices' is plentiful.
    let (gw, gw_addr) = start_gateway(&f, &url, "[upload]\ndefault = \"2MB\"\n");
    let api = api_of(&gw);
    let names: Vec<String> = (1..=6).map(|i| format!("pump-{i}")).collect();
    let mut procs = Vec::new();
    for name in &names {
        procs.push(start_device(&f, name, &gw_addr, "true", ""));
        let cfg = std::fs::read_to_string(d.join(format!("{name}.toml"))).expect("config");
        assert!(
            cfg.contains(&format!("bootstrap = [\"{gw_addr}\"]")) && cfg.contains("mdns = false"),
            "each device knows only the gateway"
        );
    }
    wait_in(
        Some(d),
        "every device to commit 2.0.0",
        Duration::from_secs(240),
        || {
            names
                .iter()
                .all(|n| result_of(&device_state(d, n)).as_deref() == Some("committed"))
        },
    );
    // The last reports carry each device's byte counts.
    let (mut from_gw, mut from_peers) = (0u64, 0u64);
    wait_for(
        "the gateway to hear every device's final report",
        Duration::from_secs(30),
        || {
            let v = json_get(api, "/api/v1/devices");
            let list = v.as_array().cloned().unwrap_or_default();
            let done = list
                .iter()
                .filter(|x| x["last_result"] == "committed")
                .count();
            from_gw = list
                .iter()
                .map(|x| x["bytes_from_gateway"].as_u64().unwrap_or(0))
                .sum();
            from_peers = list
                .iter()
                .map(|x| x["bytes_from_peers"].as_u64().unwrap_or(0))
                .sum();
            done == names.len()
        },
    );
    let metrics = http_get(api, "/metrics");
    let gw_sent: f64 = metrics
        .lines()
        .find(|l| l.starts_with("wardswarm_lan_sent_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no LAN counter in\n{metrics}"));
    let copies = gw_sent / artifact as f64;
    eprintln!(
        "swarm formation: {from_peers} B from peers, {from_gw} B from the gateway, gateway uploaded {copies:.2} copies"
    );
    assert!(
        from_peers > from_gw,
        "most device bytes must come from peers: {from_peers} from peers, {from_gw} from the gateway"
    );
    assert!(
        copies <= 1.5,
        "the gateway uploaded {copies:.2} artifact copies"
    );
    // A device that stops is offline as soon as its connection closes, not a minute later.
    let status = procs[5].sigterm();
    assert!(status.success(), "clean stop");
    wait_for("pump-6 to show offline", Duration::from_secs(10), || {
        json_get(api, "/api/v1/devices")
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == "pump-6").cloned())
            .is_some_and(|x| x["online"] == false && x["stale"] == true)
    });
}

/// Connection defences: 200 sockets from one host (127.0.0.2) that connect to the gateway and never
/// start a handshake, reopened as soon as the gateway drops them, must not lock a member out. Before
/// per-IP limits and the short handshake timeout, 64 such sockets held every pending slot for 10 s
/// at a time. The device (127.0.0.1) is admitted, and its first report reaches the gateway, while
/// the flood runs.
#[test]
fn a_member_is_admitted_while_idle_sockets_flood_the_gateway() {
    let f = Fixture::new();
    let d = f.path();
    f.release(
        "2.0.0",
        2,
        1 << 20,
        &f.keys.release,
        f.now.saturating_add(Duration::from_secs(86_400 * 7)),
    );
    f.publish();
    let (_origin, url) = start_origin(d);
    let (gw, gw_addr) = start_gateway(&f, &url, "");
    let api = api_of(&gw);
    let port: u16 = gw_addr
        .split('/')
        .nth(4)
        .and_then(|p| p.parse().ok())
        .expect("tcp port");
    let target: SocketAddr = ([127, 0, 0, 1], port).into();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stop = tokio_util::sync::CancellationToken::new();
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..200 {
        let (stop, opened) = (stop.clone(), opened.clone());
        rt.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                    return;
                };
                if sock.bind(([127, 0, 0, 2], 0).into()).is_err() {
                    return;
                }
                let conn = tokio::time::timeout(Duration::from_secs(2), sock.connect(target));
                let Ok(Ok(mut c)) = conn.await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Say nothing; wait for the gateway to drop us, then come back at once.
                let mut buf = [0u8; 64];
                tokio::select! {
                    _ = tokio::io::AsyncReadExt::read(&mut c, &mut buf) => {}
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        });
    }
    wait_for(
        "the flood to hold 200 sockets",
        Duration::from_secs(20),
        || opened.load(std::sync::atomic::Ordering::Relaxed) >= 200,
    );

    let _dev = start_device(&f, "pump-1", &gw_addr, "true", "");
    // A report reaches the gateway only over an admitted connection.
    wait_in(
        Some(d),
        "the device's admission and first report during the flood",
        Duration::from_secs(15),
        || {
            json_get(api, "/api/v1/devices")
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["id"] == "pump-1"))
        },
    );
    let during = opened.load(std::sync::atomic::Ordering::Relaxed);
    stop.cancel();
    eprintln!("idle flood: {during} sockets opened by the time the device was admitted");
    assert!(during >= 200, "the flood was running");
}

/// A static origin without range support (it answers every GET with 200 and the whole file, as
/// some servers and proxies do). With `drip`, artifact bodies come one byte every 200 ms after the
/// first 64 KiB: an origin that never stalls long enough for a read timeout and never finishes.
async fn plain_origin(dir: PathBuf, drip: bool) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
                let (r, mut w) = c.split();
                let mut lines = BufReader::new(r).lines();
                let Ok(Some(req)) = lines.next_line().await else {
                    return;
                };
                while let Ok(Some(h)) = lines.next_line().await {
                    if h.is_empty() {
                        break;
                    }
                }
                let path = req.split(' ').nth(1).unwrap_or("/").trim_start_matches('/');
                let Ok(body) = std::fs::read(dir.join(path)) else {
                    let _ = w
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                if w.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let slow = drip && path.contains("/artifacts/") && !path.ends_with(".obao");
                if !slow {
                    let _ = w.write_all(&body).await;
                    return;
                }
                let head_bytes = body.len().min(64 * 1024);
                if w.write_all(&body[..head_bytes]).await.is_err() {
                    return;
                }
                for b in &body[head_bytes..] {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if w.write_all(std::slice::from_ref(b)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    a
}

/// An origin that answers 200 (the whole file) to every range request costs about one artifact of
/// WAN, not one artifact per range: before, each 1 MiB range restarted from byte 0 (about 4.5 x for
/// 8 MiB).
#[test]
fn an_origin_without_range_support_costs_one_artifact_of_wan() {
    let f = Fixture::new();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let artifact = f.release("2.0.0", 2, 16 << 20, &f.keys.release, far);
    f.publish();
    let rt = runtime();
    rt.block_on(async {
        let origin = plain_origin(f.path().join("origin"), false).await;
        let gw = prefetching_gateway(&f, &format!("http://{origin}/"), "gw-200").await;
        wait_complete(&gw, "the artifact to complete from a 200-only origin", 120).await;
        let wan = gw.wan_bytes() - gw.wan_metadata_bytes();
        assert!(artifact > 4 << 20, "several ranges' worth: {artifact}");
        assert!(
            wan as f64 <= artifact as f64 * 1.05,
            "artifact WAN {wan} for an artifact of {artifact}"
        );
        gw.shutdown().await;
    });
}

/// An origin that drips an artifact (one byte every 200 ms: every read arrives in time) is cut off
/// at the minimum rate and tried again later, and index polling goes on meanwhile: a release
/// published during the stall is seen. Before, the one WAN loop waited on the drip for good.
#[test]
fn a_dripping_origin_is_cut_off_and_polling_goes_on() {
    let f = Fixture::new();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    f.release("2.0.0", 2, 2 << 20, &f.keys.release, far);
    f.publish();
    let rt = runtime();
    rt.block_on(async {
        let origin = plain_origin(f.path().join("origin"), true).await;
        let gw = prefetching_gateway_with(&f, &format!("http://{origin}/"), "gw-drip", |c| {
            c.origin_rate_window = Duration::from_secs(2);
        })
        .await;
        wait_async(
            "the first release to be judged",
            Duration::from_secs(30),
            || gw.releases().iter().any(|r| r.version == "2.0.0"),
        )
        .await;
        // While the artifact drips, a new release appears at the origin.
        f.release("3.0.0", 3, 1 << 20, &f.keys.release, far);
        f.publish();
        wait_async(
            "the release published during the stall to be seen",
            Duration::from_secs(30),
            || gw.releases().iter().any(|r| r.version == "3.0.0"),
        )
        .await;
        wait_async(
            "the dripping download to be cut off",
            Duration::from_secs(30),
            || metric(&gw, "wardswarm_gateway_origin_errors_total") >= 1.0,
        )
        .await;
        gw.shutdown().await;
    });
}

/// A manifest the origin does not serve (a 404 while it is being re-published) is a transient fetch
/// error, not a security refusal: the release shows as `unavailable`, nothing is counted as refused,
/// and it verifies once the file is back. A release that leaves the origin's index leaves
/// `/api/v1/releases`.
#[test]
fn a_missing_manifest_is_transient_and_a_release_leaving_the_index_leaves_the_api() {
    let f = Fixture::new();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    f.release("2.0.0", 2, 1 << 20, &f.keys.release, far);
    f.release("3.0.0", 3, 1 << 20, &f.keys.release, far);
    f.publish();
    let m3 = f.path().join("origin/releases/3.0.0/manifest.json");
    let hidden = f.path().join("manifest-3.json");
    std::fs::rename(&m3, &hidden).expect("hide the manifest");
    let rt = runtime();
    rt.block_on(async {
        let (origin_addr, stop) = dev_origin(&f).await;
        let gw = prefetching_gateway(&f, &format!("http://{origin_addr}/"), "gw-404").await;
        let status = |v: &str| {
            gw.releases()
                .iter()
                .find(|r| r.version == v)
                .map(|r| r.status)
        };
        wait_async("3.0.0 to be judged", Duration::from_secs(30), || {
            status("3.0.0").is_some()
        })
        .await;
        assert_eq!(status("3.0.0"), Some(ReleaseStatus::Unavailable));
        assert_eq!(status("2.0.0"), Some(ReleaseStatus::Verified));
        assert_eq!(
            metric(&gw, "wardswarm_gateway_releases_refused_total"),
            0.0,
            "a 404 is not a refusal"
        );
        std::fs::rename(&hidden, &m3).expect("restore the manifest");
        wait_async(
            "3.0.0 to verify once served",
            Duration::from_secs(30),
            || status("3.0.0") == Some(ReleaseStatus::Verified),
        )
        .await;
        // The maker withdraws 3.0.0: the index is re-published without it.
        std::fs::remove_dir_all(f.path().join("origin/releases/3.0.0")).expect("withdraw");
        f.publish();
        wait_async("3.0.0 to leave the API", Duration::from_secs(30), || {
            status("3.0.0").is_none()
        })
        .await;
        assert_eq!(status("2.0.0"), Some(ReleaseStatus::Verified));
        gw.shutdown().await;
        stop.cancel();
    });
}

/// A second agent started on the same state folder is refused (two would interleave write-ahead
/// states and audit lines), as a second gateway already is; the first runs on.
#[test]
fn a_second_agent_on_the_same_state_folder_is_refused() {
    let f = Fixture::new();
    let d = f.path();
    f.member("pump-1", Role::Device);
    FileSlots::provision(&d.join("pump-1").join("slots"), &f.factory).expect("provision");
    // No gateway is needed: the bootstrap address only has to parse.
    let nobody = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    std::fs::write(
        d.join("pump-1.toml"),
        device_toml("pump-1", nobody, "true", ""),
    )
    .expect("cfg");
    let first = Proc::start(d, &["node", "--config", "pump-1.toml"], "first.log");
    first.line("listening on ");
    let mut second = Proc::start(d, &["node", "--config", "pump-1.toml"], "second.log");
    let mut status = None;
    wait_for("the second agent to exit", Duration::from_secs(20), || {
        status = second.child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(!status.expect("exited").success(), "the second agent ran");
    let err = std::fs::read_to_string(d.join("second.log")).expect("log");
    assert!(
        err.contains("another agent runs on the state folder"),
        "{err}"
    );
    assert!(
        first.line("listening on ").contains("/p2p/"),
        "the first runs on"
    );
    // Logs written to a file carry no terminal colour codes.
    let log = std::fs::read_to_string(d.join("first.log")).expect("log");
    assert!(log.contains("INFO") && !log.contains('\u{1b}'), "{log}");
}

/// A verified release the device refuses by policy (here: another hardware's) goes into the
/// device's audit log (before, only bad signatures did).
#[test]
fn a_release_refused_by_policy_is_audited() {
    let f = Fixture::new();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    f.release("2.0.0", 2, 1 << 20, &f.keys.release, far);
    f.publish();
    let d = f.path();
    let rt = runtime();
    rt.block_on(async {
        let (origin_addr, stop) = dev_origin(&f).await;
        let gw = prefetching_gateway(&f, &format!("http://{origin_addr}/"), "gw-hw").await;
        let gw_addr = loop {
            if let Some(a) = gw.node().listen_addrs().await.expect("addrs").first() {
                break a.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let kp = libp2p::identity::Keypair::generate_ed25519();
        let slots: Arc<dyn Slots> =
            Arc::new(FileSlots::provision(&d.join("odd/slots"), &f.factory).expect("slots"));
        let mut acfg = AgentConfig::new(d.join("odd/agent"), "pump-rev-x");
        acfg.install = wardswarm_node::rollout::InstallMode::Automatic;
        acfg.factory_counter = 1;
        let device = Device::start(device::Spec {
            store: d.join("odd/store"),
            node: loopback(vec![gw_addr]),
            cert: cert(&f, &kp, "odd", Role::Device),
            keypair: kp,
            root: f.root.clone(),
            agent: Some((acfg, slots)),
        })
        .expect("device");
        let log = d.join("odd/agent/audit.jsonl");
        let refusals = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("release refused") && l.contains("pump-rev-x"))
                .count()
        };
        wait_async("the refusal to be audited", Duration::from_secs(30), || {
            refusals() >= 1
        })
        .await;
        device.stop().await.expect("stop");
        gw.shutdown().await;
        stop.cancel();
    });
}

/// A gateway whose disk is full does not loop on re-downloads: the local fault pauses the download
/// (30 s, doubling), so in 10 s it spends less WAN than one artifact. Before, it retried within a
/// second and spent 27 MB in 20 s on an 8.4 MB artifact. Needs root for the small tmpfs.
#[test]
fn a_full_gateway_disk_does_not_loop_on_the_wan() {
    let f = Fixture::new();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let artifact = f.release("2.0.0", 2, 8 << 20, &f.keys.release, far);
    f.publish();
    let state = f.path().join("gw-full");
    std::fs::create_dir_all(&state).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&state)
        .status();
    if !matches!(mounted, Ok(st) if st.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must not skip this test"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    let rt = runtime();
    rt.block_on(async {
        let (origin_addr, stop) = dev_origin(&f).await;
        let gw = prefetching_gateway(&f, &format!("http://{origin_addr}/"), "gw-full").await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let wan = gw.wan_bytes();
        let (have, total) = artifact_groups(&gw);
        assert!(have < total, "the artifact cannot fit");
        assert!(
            wan < artifact,
            "{wan} B of WAN in 10 s on a full disk, for an artifact of {artifact}"
        );
        gw.shutdown().await;
        stop.cancel();
    });
}

/// Following the README on one machine: a gateway whose `api_listen` port is taken says so, naming
/// the key, and leaves no state folder behind.
#[test]
fn a_taken_api_port_is_named_and_leaves_no_state() {
    let f = Fixture::new();
    let d = f.path();
    f.member("gw", Role::Gateway);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = gateway_toml("http://127.0.0.1:9/", "").replace(
        "api_listen = \"127.0.0.1:0\"",
        &format!("api_listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(d.join("gateway.toml"), &cfg).expect("config");
    let state = cfg
        .lines()
        .find_map(|l| l.strip_prefix("state = \""))
        .and_then(|l| l.split('"').next())
        .expect("state key")
        .to_string();
    let out = Command::new(BIN)
        .current_dir(d)
        .args(["seeder", "--config", "gateway.toml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api_listen") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(!d.join(&state).exists(), "state folder {state} was created");
}

/// `wardswarm origin serve`'s server on the fixture's origin folder, in this runtime; cancel the
/// token to stop it.
async fn dev_origin(f: &Fixture) -> (SocketAddr, tokio_util::sync::CancellationToken) {
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _) = origin::spawn(
        f.path().join("origin"),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
    )
    .await
    .expect("origin");
    (addr, stop)
}
