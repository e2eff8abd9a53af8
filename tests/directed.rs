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
    membership::{Certificate, Role},
    net::{self as node, Config},
    release,
    rollout::{ActionType, Directive, InstallMode, WindowSpec},
    store::Store,
    Timestamp,
};

mod common;
use common::*;

const WARD: &str = "icu-3";

fn loopback(boot: Vec<libp2p::Multiaddr>) -> Config {
    Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootstrap: boot,
        mdns: false,
        ward: WARD.into(),
        ..Config::default()
    }
}

fn cert(f: &Fixture, kp: &libp2p::identity::Keypair, name: &str, role: Role) -> Certificate {
    Certificate::issue(
        WARD,
        name,
        role,
        &kp.public().to_peer_id().to_string(),
        f.now.saturating_add(Duration::from_secs(86_400)),
        std::slice::from_ref(&f.keys.membership),
    )
    .expect("cert")
}

/// Polls `f` every 50 ms for up to 60 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_closed_window_holds_the_install_until_the_clock_opens_it() {
    let f = Fixture::new();
    let d = f.path();
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    let len = f.release("2.0.0", 2, 1 << 20, &f.keys.release, far);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // The gateway's node: it holds the artifact and announces the release.
        let rd = d.join("origin/releases/2.0.0");
        let sm = release::read_manifest(&rd).expect("manifest");
        let a = sm.manifest.full().expect("full").clone();
        assert_eq!(a.length, len);
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
            &cert(&f, &kp, "gw", Role::Gateway),
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

        // The device, directed, on a clock the test moves: 10:00 UTC on a winter day.
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
        let device = Device::start(device::Spec {
            store: d.join("dev/store"),
            node: loopback(vec![gw_addr]),
            cert: cert(&f, &dkp, "pump-1", Role::Device),
            keypair: dkp.clone(),
            root: f.root.clone(),
            agent: Some((acfg, slots)),
        })
        .expect("device");
        let status = device.status.clone().expect("agent status");
        let dev_id = dkp.public().to_peer_id();

        // Admitted and announced to, but no directive: nothing is fetched.
        eventually("the device to admit the gateway", || {
            device.node.metrics().peers_admitted.get() >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            device.store.get(&a.root).is_none(),
            "fetched without a directive"
        );
        assert_eq!(status.borrow().state, DeviceState::Idle);

        // A directive whose window (22:00 to 04:00 Berlin) is closed at 11:00 Berlin time.
        let directive = |seq: u64| Directive {
            device: "pump-1".into(),
            seq,
            rollout: 1,
            release: "2.0.0".into(),
            action: ActionType::Forced,
            fetch: true,
            install: true,
            reboot: true,
            cancel: false,
            window: Some(WindowSpec {
                schedule: "0 22 * * *".into(),
                duration: "6h".into(),
                timezone: "Europe/Berlin".into(),
            }),
            override_gate: false,
            expires: "2027-02-01T00:00:00Z".parse().expect("t"),
        };
        let send = |seq| {
            let gw = gw.clone();
            let body = serde_json::to_vec(&directive(seq)).expect("json");
            async move { gw.direct(dev_id, body).await.expect("sent") }
        };
        send(1).await;
        eventually("the device downloaded and gated by its window", || {
            let r = status.borrow();
            r.gated.as_deref() == Some("window_closed") && r.state == DeviceState::Installing
        })
        .await;
        assert!(
            device.store.get(&a.root).is_some_and(|e| e.is_complete()),
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
        send(0).await;
        clock.store(
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
        device.stop().await.expect("the device stops cleanly");
        let _ = gw.shutdown().await;
    });
}
