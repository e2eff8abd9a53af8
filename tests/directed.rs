//! A directed device in process, its clock an input: it fetches nothing without a directive; with
//! one whose window is closed it downloads but does not install, reporting `gated: window_closed`;
//! once the clock enters the window it installs and commits. No test here waits for real hours.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use wardswarm_node::{
    agent::{
        directed::Clock,
        machine::DeviceState,
        runtime::AgentConfig,
        slots::{FileSlots, Slots},
    },
    device::{self, Device},
    membership::Role,
    net as node, release,
    rollout::{ActionType, Directive, InstallMode, WindowSpec},
    store::Store,
    Timestamp,
};

mod common;
use common::*;

/// Polls `f` every 50 ms for up to 60 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateway's node, holding release 2.0.0 and announcing it, and one directed device on a clock
/// the test moves (`clock`, unix seconds), its gate a lease file if `lease` is set.
struct Ward {
    gw: node::Handle,
    device: Device,
    dev_id: libp2p::PeerId,
    root: wardswarm_node::Hash,
    clock: Arc<AtomicU64>,
}

async fn ward(f: &Fixture, lease: Option<std::path::PathBuf>) -> Ward {
    let d = f.path();
    let rd = d.join("origin/releases/2.0.0");
    let sm = release::read_manifest(&rd).expect("manifest");
    let a = sm.manifest.full().expect("full").clone();
    let art = rd.join(release::ARTIFACTS_DIR).join(a.file_name());
    let ob = art.with_file_name(format!("{}{}", a.file_name(), release::OUTBOARD_SUFFIX));
    let gw_store = Arc::new(Store::open(d.join("gw")).expect("store"));
    gw_store
        .import(a.root, a.length, &art, &ob)
        .expect("import");
    let kp = libp2p::identity::Keypair::generate_ed25519();
    let (gw, _) = node::spawn(
        loopback(vec![]),
        kp.clone(),
        &cert(f, &kp, "gw", Role::Gateway),
        f.root.clone(),
        gw_store,
    )
    .expect("gateway node");
    let gw_addr = loop {
        if let Some(a) = gw.listen_addrs().await.expect("addrs").into_iter().next() {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    gw.announce(sm.to_bytes()).await.expect("announce");
    gw.have_changed(a.root).await.expect("have");
    // 10:00 UTC on a winter day.
    let clock = Arc::new(AtomicU64::new(
        "2027-01-15T10:00:00Z"
            .parse::<Timestamp>()
            .expect("t")
            .as_unix(),
    ));
    let c = clock.clone();
    let dkp = libp2p::identity::Keypair::generate_ed25519();
    let slots: Arc<dyn Slots> =
        Arc::new(FileSlots::provision(&d.join("dev/slots"), &f.factory).expect("slots"));
    let mut acfg = AgentConfig::new(d.join("dev/agent"), "pump-rev-c");
    acfg.install = InstallMode::Directed;
    acfg.clock = Clock::from_fn(move || Timestamp::from_unix(c.load(Ordering::SeqCst)));
    acfg.factory_counter = 1;
    acfg.factory_version = "1.0.0".into();
    acfg.report_interval = Duration::from_millis(200);
    acfg.gate = lease.map(wardswarm_node::agent::gate::Gate::Lease);
    let device = Device::start(device::Spec {
        store: d.join("dev/store"),
        node: loopback(vec![gw_addr]),
        cert: cert(f, &dkp, "pump-1", Role::Device),
        keypair: dkp.clone(),
        root: f.root.clone(),
        agent: Some((acfg, slots)),
    })
    .expect("device");
    let dev_id = dkp.public().to_peer_id();
    eventually("the device to admit the gateway", || {
        device.node.metrics().peers_admitted.get() >= 1
    })
    .await;
    Ward {
        gw,
        device,
        dev_id,
        root: a.root,
        clock,
    }
}

/// A directive for release 2.0.0 that allows everything, valid until February 2027.
fn directive(seq: u64) -> Directive {
    Directive {
        device: "pump-1".into(),
        seq,
        rollout: 1,
        release: "2.0.0".into(),
        action: ActionType::Forced,
        fetch: true,
        install: true,
        reboot: true,
        cancel: false,
        window: None,
        override_gate: false,
        expires: "2027-02-01T00:00:00Z".parse().expect("t"),
    }
}

async fn send(w: &Ward, d: &Directive) {
    let body = serde_json::to_vec(d).expect("json");
    w.gw.direct(w.dev_id, body).await.expect("sent");
}

#[test]
fn a_closed_window_holds_the_install_until_the_clock_opens_it() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    f.release("2.0.0", 2, 1 << 20, &f.keys.release, far);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let w = ward(&f, None).await;
        let status = w.device.status.clone().expect("agent status");
        // Admitted and announced to, but no directive: nothing is fetched.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            w.device.store.get(&w.root).is_none(),
            "fetched without a directive"
        );
        assert_eq!(status.borrow().state, DeviceState::Idle);

        // A directive whose window (22:00 to 04:00 Berlin) is closed at 11:00 Berlin time.
        let mut dir = directive(1);
        dir.window = Some(WindowSpec {
            schedule: "0 22 * * *".into(),
            duration: "6h".into(),
            timezone: "Europe/Berlin".into(),
        });
        send(&w, &dir).await;
        eventually("the device downloaded and gated by its window", || {
            let r = status.borrow();
            r.gated.as_deref() == Some("window_closed") && r.state == DeviceState::Installing
        })
        .await;
        assert!(
            w.device.store.get(&w.root).is_some_and(|e| e.is_complete()),
            "downloaded while the window is closed"
        );
        assert_eq!(
            status.borrow().version,
            "1.0.0",
            "installed outside its window"
        );
        assert!(
            !d.join("dev/slots/slot-b.img").exists(),
            "the inactive slot was written outside the window"
        );
        // A replayed older directive changes nothing; the clock reaches 22:30 Berlin time.
        let mut old = dir.clone();
        old.seq = 0;
        old.install = false;
        send(&w, &old).await;
        w.clock.store(
            "2027-01-15T21:30:00Z"
                .parse::<Timestamp>()
                .expect("t")
                .as_unix(),
            Ordering::SeqCst,
        );
        // The file slots "reboot" by restarting the agent in process: the device commits.
        eventually("the device to commit 2.0.0 in its window", || {
            status.borrow().version == "2.0.0"
        })
        .await;
        let audit = std::fs::read_to_string(d.join("dev/agent/audit.jsonl")).expect("audit");
        assert!(audit.contains("\"event\":\"directive\""), "{audit}");
        w.device.stop().await.expect("the device stops cleanly");
        let _ = w.gw.shutdown().await;
    });
}

/// In clinical use and never released: a stopped rollout cancels the held update (the slot is not
/// written); a new directive with the admin's override installs and commits past the gate.
#[test]
fn a_stopped_rollout_cancels_and_an_override_passes_the_gate() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    f.release("2.0.0", 2, 1 << 20, &f.keys.release, far);
    let lease = d.join("lease.json");
    std::fs::write(&lease, br#"{"in_use": true, "holder": "infusion 7"}"#).expect("lease");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let w = ward(&f, Some(lease.clone())).await;
        let status = w.device.status.clone().expect("agent status");
        send(&w, &directive(1)).await;
        eventually("the device gated in use", || {
            let r = status.borrow();
            r.gated.as_deref() == Some("in_use")
                && r.gated_detail
                    .as_deref()
                    .is_some_and(|g| g.contains("infusion 7"))
        })
        .await;
        let mut stop = directive(2);
        stop.cancel = true;
        stop.fetch = false;
        stop.install = false;
        send(&w, &stop).await;
        eventually("the update canceled", || {
            let r = status.borrow();
            r.state == DeviceState::Idle
                && r.last
                    .as_ref()
                    .is_some_and(|l| l.result.as_str() == "canceled")
        })
        .await;
        assert!(
            !d.join("dev/slots/slot-b.img").exists(),
            "a canceled update wrote the slot"
        );
        assert!(
            status.borrow().gated.is_none(),
            "an idle device is not gated"
        );
        // The admin overrides the gate: the device installs and commits though still in use.
        let mut over = directive(3);
        over.override_gate = true;
        send(&w, &over).await;
        eventually("the device to commit 2.0.0 past its gate", || {
            status.borrow().version == "2.0.0"
        })
        .await;
        assert!(lease.exists(), "the lease was never released");
        let audit = std::fs::read_to_string(d.join("dev/agent/audit.jsonl")).expect("audit");
        assert!(audit.contains("\"override_gate\":true"), "{audit}");
        assert!(audit.contains("canceled by the rollout"), "{audit}");
        w.device.stop().await.expect("the device stops cleanly");
        let _ = w.gw.shutdown().await;
    });
}
