//! The ward swarm over real libp2p (TCP + noise + yamux) on loopback.

use std::{sync::Arc, time::Duration};

use futures::{AsyncReadExt, StreamExt};
use libp2p::{identity::Keypair, swarm::SwarmEvent, Multiaddr};
use wardswarm_node::{
    membership::{Certificate, Role},
    net::{
        self as node,
        caps::Schedule,
        wire::{self, Get, Status},
        Config, Event, Fault,
    },
    outboard,
    store::Store,
    Hash, SecretKey, Timestamp,
};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_feeds_eight_fetchers_who_feed_each_other() {
    let w = ward();
    let bytes = data(8 << 20, 42);
    // A gateway's LAN upload is capped (it is shared by the whole ward); devices are not, here. It
    // super-seeds, as the gateway does by default: without it the seed's share depended on how fast
    // the fetchers ran, and a loaded CI machine once saw 4.2 copies.
    let gw = Config {
        upload: Schedule::fixed(Some(8_000_000)),
        seeding: Some(Default::default()),
        ..w.config(vec![])
    };
    let (s, root) = seed(&w, "gateway", &bytes, gw).await;
    let mut boot = vec![addr(&s.handle).await];
    let mut fetchers = vec![];
    for i in 0..8 {
        let m = w
            .start(
                &format!("dev{i}"),
                Role::Device,
                w.config(boot.clone()),
                None,
            )
            .await;
        boot.push(addr(&m.handle).await);
        fetchers.push(m);
    }
    let jobs: Vec<_> = fetchers
        .iter()
        .map(|m| {
            let h = m.handle.clone();
            tokio::spawn(async move { tokio::time::timeout(T, h.fetch(root, 8 << 20)).await })
        })
        .collect();
    for j in jobs {
        j.await.expect("task").expect("in time").expect("fetched");
    }
    for m in &fetchers {
        let e = m.store.get(&root).expect("entry");
        assert!(e.is_complete());
        assert_eq!(
            std::fs::read(e.data_path()).expect("read"),
            bytes,
            "byte-identical"
        );
    }
    let art = root.short();
    let seed_sent = s.handle.metrics().sent_total(&art, "peer");
    let from_peers: u64 = fetchers
        .iter()
        .map(|m| m.handle.metrics().received_total(&art, "peer"))
        .sum();
    let copies = seed_sent as f64 / bytes.len() as f64;
    eprintln!(
        "seed uploaded {copies:.2} copies; peers exchanged {:.2} copies",
        from_peers as f64 / bytes.len() as f64
    );
    assert!(
        copies < 4.0,
        "the seed uploaded {copies:.2} copies for 8 fetchers"
    );
    assert!(from_peers > 0, "fetchers fed each other");
    // Requests to a peer go one after another on a few long-lived `transfer/2` streams.
    let (mut streams, mut done) = (0, 0);
    for m in &fetchers {
        let (st, d) = streams_and_done(&m.handle.metrics(), "/wardswarm/transfer/2");
        assert_eq!(
            streams_and_done(&m.handle.metrics(), "/wardswarm/transfer/1").0,
            0,
            "no transfer/1 stream between current nodes"
        );
        streams += st;
        done += d;
    }
    assert!(
        streams < done,
        "{streams} transfer/2 streams for {done} transfers"
    );
    for m in fetchers.iter().chain([&s]) {
        m.handle.shutdown().await.expect("shutdown");
    }
}

/// Outbound streams `m` opened of protocol `proto`, and transfers it ended `done`.
fn streams_and_done(m: &wardswarm_node::net::metrics::Metrics, proto: &str) -> (u64, u64) {
    let streams = m
        .streams_opened_by_protocol()
        .into_iter()
        .filter(|(p, d, _)| p == proto && d == "outbound")
        .map(|(_, _, n)| n)
        .sum();
    let done = m
        .transfers_by_outcome()
        .into_iter()
        .filter(|(o, _)| o == "done")
        .map(|(_, n)| n)
        .sum();
    (streams, done)
}

/// A node from before `have/2` and `transfer/2` (it refuses both and opens `have/1` and `transfer/1`
/// streams) still learns what others hold, and others learn what it holds: it fetches from a current
/// seed, then a current device fetches from it alone, falling back to `transfer/1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_speaking_only_first_versions_learns_and_is_learned_from() {
    let w = ward();
    let bytes = data(2 << 20, 11);
    let len = bytes.len() as u64;
    let (s, root) = seed(&w, "gateway", &bytes, w.config(vec![])).await;
    let old_cfg = Config {
        fault: Some(Fault::V1Only),
        ..w.config(vec![addr(&s.handle).await])
    };
    let old = w.start("old-dev", Role::Device, old_cfg, None).await;
    tokio::time::timeout(T, old.handle.fetch(root, len))
        .await
        .expect("the old node fetched in time")
        .expect("the old node fetched");
    s.handle.shutdown().await.expect("shutdown");
    let new = w
        .start(
            "new-dev",
            Role::Device,
            w.config(vec![addr(&old.handle).await]),
            None,
        )
        .await;
    let report = tokio::time::timeout(T, new.handle.fetch(root, len))
        .await
        .expect("the current node fetched in time")
        .expect("the current node fetched");
    assert!(
        report.banned.is_empty(),
        "nobody banned: {:?}",
        report.banned
    );
    assert!(new.store.get(&root).expect("entry").have().is_full());
    let (v1, done) = streams_and_done(&old.handle.metrics(), "/wardswarm/transfer/1");
    assert!(
        v1 >= done && done > 0,
        "the old node: {v1} transfer/1 streams, {done} done"
    );
    assert_eq!(
        streams_and_done(&old.handle.metrics(), "/wardswarm/transfer/2").0,
        0
    );
    let (v1, done) = streams_and_done(&new.handle.metrics(), "/wardswarm/transfer/1");
    assert!(
        v1 >= done && done > 0,
        "the new node fell back: {v1} transfer/1 streams, {done} done"
    );
    for m in [&old, &new] {
        m.handle.shutdown().await.expect("shutdown");
    }
}

/// Reports go to the gateway one after another on one `report/2` stream; a node from before
/// `report/2` sends each on a `report/1` stream of its own, and the gateway takes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_share_one_long_lived_stream_and_old_nodes_still_report() {
    let w = ward();
    let (g, _) = seed(&w, "gateway", &data(1 << 16, 5), w.config(vec![])).await;
    let at = addr(&g.handle).await;
    let new = w
        .start("new-dev", Role::Device, w.config(vec![at.clone()]), None)
        .await;
    let old_cfg = Config {
        fault: Some(Fault::V1Only),
        ..w.config(vec![at])
    };
    let old = w.start("old-dev", Role::Device, old_cfg, None).await;
    let mut ev = g.handle.subscribe();
    for m in [&new, &old] {
        let id = m.handle.peer_id();
        tokio::time::timeout(T, async {
            let (mut sent, mut got) = (0u32, 0u32);
            // A report sent before the gateway admitted the device is dropped: send until five
            // have arrived.
            while got < 5 {
                sent += 1;
                let body = format!("{{\"n\":{sent}}}").into_bytes();
                m.handle.report(body).await.expect("running");
                let wait = tokio::time::sleep(Duration::from_millis(200));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        e = ev.recv() => match e {
                            Ok(Event::Report { peer, .. }) if peer == id => {
                                got += 1;
                                break;
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                panic!("the gateway stopped")
                            }
                            _ => {}
                        },
                        _ = &mut wait => break,
                    }
                }
            }
        })
        .await
        .expect("five reports reached the gateway in time");
    }
    let (v2, _) = streams_and_done(&new.handle.metrics(), "/wardswarm/report/2");
    let (v1, _) = streams_and_done(&new.handle.metrics(), "/wardswarm/report/1");
    assert!(
        (1..=2).contains(&v2) && v1 == 0,
        "the current node: {v2} report/2 and {v1} report/1 streams"
    );
    let (v2, _) = streams_and_done(&old.handle.metrics(), "/wardswarm/report/2");
    let (v1, _) = streams_and_done(&old.handle.metrics(), "/wardswarm/report/1");
    assert!(
        v1 >= 5 && v2 == 0,
        "the old node: {v2} report/2 and {v1} report/1 streams"
    );
    for m in [&g, &new, &old] {
        m.handle.shutdown().await.expect("shutdown");
    }
}

/// Requests of at most 4 groups: every response is verified inline, on the transfer's own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_is_banned_and_nothing_corrupt_is_stored_small_responses() {
    let scheduler = wardswarm_node::scheduler::Config {
        max_request_groups: 4,
        ..Default::default()
    };
    a_liar_is_banned_and_nothing_corrupt_is_stored(scheduler, None).await;
}

/// Requests of 8 groups from a liar that uploads at 256 KB/s: each response is verified inline,
/// its first four groups (where the liar's flipped byte is) as soon as they arrive, the rest when
/// it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_is_banned_and_nothing_corrupt_is_stored_inline_responses_reported_early() {
    let scheduler = wardswarm_node::scheduler::Config {
        max_request_groups: 8,
        piece_groups: 8,
        ..Default::default()
    };
    a_liar_is_banned_and_nothing_corrupt_is_stored(scheduler, Some(256_000)).await;
}

/// A first request of 64 groups, over the 8 verified inline: the liar's response goes through the
/// pipe to a decoder on a blocking thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_is_banned_and_nothing_corrupt_is_stored_large_responses() {
    let scheduler = wardswarm_node::scheduler::Config {
        initial_window_groups: 64,
        piece_groups: 64,
        ..Default::default()
    };
    a_liar_is_banned_and_nothing_corrupt_is_stored(scheduler, None).await;
}

async fn a_liar_is_banned_and_nothing_corrupt_is_stored(
    scheduler: wardswarm_node::scheduler::Config,
    liar_upload: Option<u64>,
) {
    let w = ward();
    let bytes = data(2 << 20, 7);
    let (s, root) = seed(&w, "gateway", &bytes, w.config(vec![])).await;
    let liar_cfg = Config {
        fault: Some(Fault::CorruptServe),
        upload: Schedule::fixed(liar_upload),
        ..w.config(vec![])
    };
    let (liar, root2) = seed(&w, "liar", &bytes, liar_cfg).await;
    assert_eq!(root, root2);
    // The fetcher first knows only the liar; once it has banned it, it is pointed at the honest gateway.
    let boot = vec![addr(&liar.handle).await];
    let cfg = Config {
        scheduler,
        ..w.config(boot)
    };
    let f = w.start("dev", Role::Device, cfg, None).await;
    let mut events = f.handle.subscribe();
    let h = f.handle.clone();
    let len = bytes.len() as u64;
    let fetch = tokio::spawn(async move { h.fetch(root, len).await });
    let liar_id = liar.handle.peer_id();
    tokio::time::timeout(T, async {
        loop {
            if let Ok(Event::PeerBanned { peer, .. }) = events.recv().await {
                assert_eq!(peer, liar_id);
                return;
            }
        }
    })
    .await
    .expect("the liar is banned");
    // Whatever was stored verifies against the root (groups before the liar's flipped byte are
    // authentic and may be kept; the corrupt one never reaches the disk).
    let e = f.store.get(&root).expect("entry");
    let have = e.have();
    let runs: Vec<_> = have.runs().collect();
    assert_eq!(
        e.validate(&runs).expect("validate"),
        have,
        "everything stored verifies"
    );
    assert!(!have.is_full(), "the liar could not complete the artifact");
    f.handle.dial(addr(&s.handle).await).await.expect("running");
    let report = tokio::time::timeout(T, fetch)
        .await
        .expect("in time")
        .expect("task")
        .expect("fetched");
    assert_eq!(
        report.banned,
        vec![liar_id],
        "the liar, and only the liar, is banned"
    );
    assert_eq!(
        std::fs::read(f.store.get(&root).expect("e").data_path()).expect("read"),
        bytes
    );
    assert!(f.handle.metrics().verification_failures.get() >= 1);
    for m in [&f, &s, &liar] {
        m.handle.shutdown().await.expect("shutdown");
    }
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Intruder {
    stream: libp2p_stream::Behaviour,
    ping: libp2p::ping::Behaviour,
}

/// A libp2p peer with our transports and no certificate.
fn intruder() -> libp2p::Swarm<Intruder> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| Intruder {
            stream: libp2p_stream::Behaviour::new(),
            ping: Default::default(),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_gets_nothing_and_is_disconnected() {
    let w = ward();
    let bytes = data(1 << 20, 9);
    let (s, root) = seed(&w, "gateway", &bytes, w.config(vec![])).await;
    let seed_addr = addr(&s.handle).await;

    // A peer that speaks our protocols but has no certificate: it asks for data straight away.
    let mut sw = intruder();
    let control = sw.behaviour().stream.new_control();
    sw.dial(seed_addr).expect("dial");
    let seed_id = s.handle.peer_id();
    // Drive the intruder's swarm in the background and report when the seed drops it.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let driver = tokio::spawn(async move {
        let mut closed_tx = Some(closed_tx);
        loop {
            if let SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } = sw.select_next_some().await
            {
                if peer_id == seed_id {
                    if let Some(tx) = closed_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    });
    // Both versions at once (the seed waits for an admission that never comes, then disconnects):
    // on `transfer/2` the seed also ends the stream after "forbidden".
    let ask = |proto: libp2p::StreamProtocol| {
        let mut control = control.clone();
        async move {
            let mut st = control
                .open_stream(seed_id, proto.clone())
                .await
                .expect("stream");
            let status = wire::send_get(
                &mut st,
                &Get {
                    root,
                    length: 1 << 20,
                    runs: vec![0..4],
                },
            )
            .await;
            // Under load the seed's disconnect can win the race with its answer: the stream then
            // ends before a status, which gives the intruder nothing either.
            let status = match status {
                Ok(s) => Some(s),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
                Err(e) => panic!("a status on {proto}: {e}"),
            };
            let mut rest = Vec::new();
            let _ = st.read_to_end(&mut rest).await;
            (status, rest.len())
        }
    };
    let asked = futures::future::join(ask(wire::TRANSFER), ask(wire::TRANSFER_SESSION));
    let (v1, v2) = tokio::time::timeout(T, asked).await.expect("in time");
    for (status, extra) in [v1, v2] {
        assert!(
            matches!(status, None | Some(Status::Forbidden)),
            "forbidden or cut off, got {status:?}"
        );
        assert_eq!(extra, 0, "no artifact bytes");
    }
    tokio::time::timeout(T, closed_rx)
        .await
        .expect("in time")
        .expect("the seed disconnects it after the admission timeout");
    driver.abort();
    assert_eq!(s.handle.metrics().sent_total(&root.short(), "peer"), 0);

    // A peer with a certificate from another ward's keys is refused too.
    let stranger = SecretKey::from_seed([99; 32]);
    let key = Keypair::generate_ed25519();
    let forged = Certificate::issue(
        WARD,
        "x",
        Role::Device,
        &key.public().to_peer_id().to_string(),
        Timestamp::now().saturating_add(Duration::from_secs(60)),
        &[stranger],
    )
    .expect("cert");
    let mut ev = s.handle.subscribe();
    let store = Arc::new(Store::open(w.dir.path().join("forger")).expect("store"));
    let (h, _j) = node::spawn(
        w.config(vec![addr(&s.handle).await]),
        key,
        &forged,
        w.root.clone(),
        store,
    )
    .expect("spawn");
    let fetched = tokio::time::timeout(Duration::from_secs(4), h.fetch(root, 1 << 20)).await;
    assert!(
        fetched.is_err(),
        "no data reaches a node without a valid certificate"
    );
    assert_eq!(
        h.metrics().received_total(&root.short(), "gateway")
            + h.metrics().received_total(&root.short(), "peer"),
        0
    );
    let forger = h.peer_id();
    tokio::time::timeout(T, async {
        loop {
            match ev.recv().await {
                Ok(Event::PeerRefused { peer, reason })
                    if peer == forger && reason.contains("not a key of the membership role") =>
                {
                    break
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => panic!("seed stopped"),
                _ => {}
            }
        }
    })
    .await
    .expect("the seed refused the forged certificate");
    h.shutdown().await.expect("shutdown");
    s.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_transfer_resumes_without_refetching() {
    let w = ward();
    let len = 8 << 20;
    let bytes = data(len, 11);
    // The seed uploads at 4 MB/s so the transfer takes about two seconds.
    let seed_cfg = Config {
        upload: Schedule::fixed(Some(4_000_000)),
        ..w.config(vec![])
    };
    let (s, root) = seed(&w, "gateway", &bytes, seed_cfg).await;
    let boot = vec![addr(&s.handle).await];
    // The victim runs on its own runtime: dropping that runtime kills every task and socket at once,
    // as a kill -9 would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let m = {
        let _guard = rt.enter();
        w.start("dev", Role::Device, w.config(boot.clone()), None)
            .await
    };
    let mut ev = m.handle.subscribe();
    let h = m.handle.clone();
    let _fetch = rt.spawn(async move { h.fetch(root, len as u64).await });
    // Wait until about 40 % has arrived, then kill it.
    tokio::time::timeout(T, async {
        loop {
            if let Ok(Event::Progress { have, total, .. }) = ev.recv().await {
                if have * 10 >= total * 4 {
                    return;
                }
            }
        }
    })
    .await
    .expect("progress");
    rt.shutdown_background();
    let before = m.handle.metrics().received_total(&root.short(), "gateway");
    drop(m.store);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Restart on the same store: what was verified is kept; only the rest crosses the network.
    let store = Arc::new(Store::open(&m.store_dir).expect("reopen"));
    let had = store.get(&root).expect("entry survives").have().count();
    assert!(had > 0);
    let cert = w.cert(&m.key, "dev", Role::Device);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (h2, _j) = node::spawn(
        w.config(boot),
        m.key.clone(),
        &cert,
        w.root.clone(),
        store.clone(),
    )
    .expect("respawn");

    tokio::time::timeout(T, h2.fetch(root, len as u64))
        .await
        .expect("in time")
        .expect("fetched");
    assert_eq!(
        std::fs::read(store.get(&root).expect("e").data_path()).expect("read"),
        bytes
    );
    let after = h2.metrics().received_total(&root.short(), "gateway");
    let remaining = (outboard::groups(len as u64) - had) * outboard::GROUP_BYTES;
    eprintln!(
        "first run {before} B, kept {had} groups, second run {after} B for {remaining} B remaining"
    );
    // Proofs for scattered groups cost a few percent; refetching verified groups would cost 40 % more.
    assert!(
        after < remaining + remaining / 20 + 64 * 1024,
        "second run fetched {after} B, remaining was {remaining} B"
    );
    h2.shutdown().await.expect("shutdown");
    s.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cap_holds() {
    let w = ward();
    let len = 12 << 20;
    let bytes = data(len, 13);
    let cap = 4_000_000u64;
    let seed_cfg = Config {
        upload: Schedule::fixed(Some(cap)),
        ..w.config(vec![])
    };
    let (s, root) = seed(&w, "gateway", &bytes, seed_cfg).await;
    let boot = vec![addr(&s.handle).await];
    let a = w
        .start(
            "a",
            Role::Device,
            Config {
                upload: Schedule::fixed(Some(0)),
                ..w.config(boot.clone())
            },
            None,
        )
        .await;
    let b = w
        .start(
            "b",
            Role::Device,
            Config {
                upload: Schedule::fixed(Some(0)),
                ..w.config(boot)
            },
            None,
        )
        .await;
    let start = std::time::Instant::now();
    let (ra, rb) = tokio::join!(
        a.handle.fetch(root, len as u64),
        b.handle.fetch(root, len as u64)
    );
    ra.expect("a");
    rb.expect("b");
    let secs = start.elapsed().as_secs_f64();
    let sent = s.handle.metrics().sent_total(&root.short(), "peer");
    let rate = sent as f64 / secs;
    eprintln!("seed sent {sent} B in {secs:.2} s = {rate:.0} B/s against a cap of {cap}");
    // Leechers (cap 0) never serve: everything came from the seed, two copies.
    assert!(sent >= 2 * len as u64);
    assert_eq!(a.handle.metrics().sent_total(&root.short(), "peer"), 0);
    // Upper bound only: a slow machine can make the rate lower, never higher.
    assert!(
        rate <= cap as f64 * 1.05,
        "rate {rate:.0} B/s exceeds the cap {cap} by more than 5 %"
    );
    for m in [&a, &b, &s] {
        m.handle.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_announcements_spread_and_forged_ones_do_not() {
    use wardswarm_node::manifest::{
        Artifact, ArtifactKind, Compression, Manifest, SignedManifest, Target,
    };
    let w = ward();
    // A line a - b - c: neither end dials the other after learning of it by peer exchange (each
    // already has one member), so what c hears from a can only have come through b.
    let line = |bootstrap| Config {
        target_peers: 1,
        ..w.config(bootstrap)
    };
    let a = w.start("gateway", Role::Gateway, line(vec![]), None).await;
    let b = w
        .start(
            "b",
            Role::Device,
            w.config(vec![addr(&a.handle).await]),
            None,
        )
        .await;
    let c = w
        .start("c", Role::Device, line(vec![addr(&b.handle).await]), None)
        .await;
    let mut ev = c.handle.subscribe();
    // Wait until c is admitted at b, so the relay has somewhere to go.
    tokio::time::timeout(T, async {
        while b.handle.peers().await.expect("running").len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("admitted");
    let m = Manifest {
        product: "pump".into(),
        hardware: vec!["rev-c".into()],
        version: "2.0".into(),
        counter: 2,
        created: Timestamp::now(),
        expires: Timestamp::now().saturating_add(Duration::from_secs(3600)),
        target: Target {
            hash: Hash::of(b"image"),
            length: 5,
        },
        artifacts: vec![Artifact {
            kind: ArtifactKind::Full,
            compression: Compression::Zstd,
            length: 9,
            root: Hash::of(b"artifact"),
        }],
    };
    // Signed by a key outside the release role: refused at the source, never sent.
    let mut forged = SignedManifest::new(m.clone()).expect("manifest");
    forged.sign(&SecretKey::from_seed([77; 32]));
    assert!(a.handle.announce(forged.to_bytes()).await.is_err());
    // Signed by the release key: reaches c through b.
    let mut good = SignedManifest::new(m).expect("manifest");
    good.sign(&SecretKey::from_seed([2; 32]));
    a.handle.announce(good.to_bytes()).await.expect("accepted");
    let got = tokio::time::timeout(T, async {
        loop {
            if let Ok(Event::Manifest { bytes, from }) = ev.recv().await {
                return (bytes, from);
            }
        }
    })
    .await
    .expect("announcement relayed");
    assert_eq!(
        *got.0,
        good.to_bytes(),
        "exactly the signed bytes, and only the genuine manifest"
    );
    assert_eq!(got.1, Some(b.handle.peer_id()), "relayed by b");
    for m in [&c, &b, &a] {
        m.handle.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_times_out_and_others_finish_the_job() {
    let w = ward();
    let bytes = data(1 << 20, 23);
    let stall_cfg = Config {
        fault: Some(Fault::StallServe),
        ..w.config(vec![])
    };
    let (staller, root) = seed(&w, "staller", &bytes, stall_cfg).await;
    let (honest, _) = seed(&w, "gateway", &bytes, w.config(vec![])).await;
    // The fetcher first knows only the staller, with a short stall timeout.
    let mut cfg = w.config(vec![addr(&staller.handle).await]);
    cfg.scheduler.stall_timeout_ms = 500;
    let f = w.start("dev", Role::Device, cfg, None).await;
    let mut events = f.handle.subscribe();
    let h = f.handle.clone();
    let len = bytes.len() as u64;
    let fetch = tokio::spawn(async move { h.fetch(root, len).await });
    tokio::time::timeout(T, async {
        loop {
            if let Ok(Event::Stalled { root: r }) = events.recv().await {
                assert_eq!(r, root);
                return;
            }
        }
    })
    .await
    .expect("the stalled request is abandoned");
    f.handle
        .dial(addr(&honest.handle).await)
        .await
        .expect("running");
    let report = tokio::time::timeout(T, fetch)
        .await
        .expect("in time")
        .expect("task")
        .expect("fetched");
    assert!(report.stats.stalls >= 1);
    assert!(report.banned.is_empty(), "a slow peer is not a liar");
    assert_eq!(
        std::fs::read(f.store.get(&root).expect("e").data_path()).expect("read"),
        bytes
    );
    for m in [&f, &honest, &staller] {
        m.handle.shutdown().await.expect("shutdown");
    }
}

/// A member that dials a peer it has no reason to trust (a wrong bootstrap address, a spoofed mDNS
/// answer) asks it to prove membership first and gives away nothing: the non-member listener reads
/// an empty frame, no certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dialing_a_non_member_shows_no_certificate() {
    let w = ward();
    let m = w
        .start("pump-1", Role::Device, w.config(vec![]), None)
        .await;
    let mut sw = intruder();
    let mut incoming = sw
        .behaviour()
        .stream
        .new_control()
        .accept(wire::ADMISSION)
        .expect("accept");
    sw.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    let fake_id = *sw.local_peer_id();
    let listen = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = sw.select_next_some().await {
            break address;
        }
    };
    let driver = tokio::spawn(async move {
        loop {
            sw.select_next_some().await;
        }
    });
    m.handle
        .dial_discovered(listen.with_p2p(fake_id).expect("p2p"))
        .await
        .expect("dial");
    let got = tokio::time::timeout(T, async {
        let (_, mut st) = incoming.next().await.expect("an admission stream");
        wire::read_frame(&mut st, wire::MAX_CERT_FRAME).await
    })
    .await
    .expect("in time")
    .expect("a frame");
    assert!(
        got.is_empty(),
        "the member sent {} bytes of certificate to a stranger",
        got.len()
    );
    driver.abort();
    m.handle.shutdown().await.expect("shutdown");
}

/// Two members, one of which trusts the other's peer id (a bootstrap entry), the other not: when
/// the untrusting one dials, the trusting one shows its certificate first and both are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_knows_its_dialer_proves_itself_first() {
    let w = ward();
    let y_key = Keypair::generate_ed25519();
    let y_id = y_key.public().to_peer_id();
    // X knows Y's peer id from its config; the address is dead, so X never reaches Y itself.
    let dead: Multiaddr = format!("/ip4/127.0.0.1/tcp/9/p2p/{y_id}")
        .parse()
        .expect("addr");
    let x = w
        .start("pump-x", Role::Device, w.config(vec![dead]), None)
        .await;
    let y = w
        .start("pump-y", Role::Device, w.config(vec![]), Some(y_key))
        .await;
    let mut ev = y.handle.subscribe();
    y.handle
        .dial_discovered(addr(&x.handle).await)
        .await
        .expect("dial");
    let x_id = x.handle.peer_id();
    tokio::time::timeout(T, async {
        loop {
            match ev.recv().await {
                Ok(Event::PeerAdmitted { peer, .. }) if peer == x_id => break,
                Ok(Event::PeerRefused { peer, reason }) if peer == x_id => {
                    panic!("refused: {reason}")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => panic!("node stopped"),
                _ => {}
            }
        }
    })
    .await
    .expect("Y admits X");
    tokio::time::timeout(T, async {
        loop {
            if x.handle
                .peers()
                .await
                .expect("peers")
                .iter()
                .any(|(p, _, _)| *p == y_id)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("X admits Y");
    x.handle.shutdown().await.expect("shutdown");
    y.handle.shutdown().await.expect("shutdown");
}

/// A certificate that expires while its holder is connected ends the admission: the peer leaves
/// the admitted set, is refused and disconnected (before, it was served 20 s after expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiring_while_connected_ends_the_admission() {
    let w = ward();
    let gw = w
        .start("gateway", Role::Gateway, w.config(vec![]), None)
        .await;
    let key = Keypair::generate_ed25519();
    let short = Certificate::issue(
        WARD,
        "pump-short",
        Role::Device,
        &key.public().to_peer_id().to_string(),
        Timestamp::now().saturating_add(Duration::from_secs(3)),
        std::slice::from_ref(&w.membership),
    )
    .expect("cert");
    let store = Arc::new(Store::open(w.dir.path().join("short")).expect("store"));
    let mut events = gw.handle.subscribe();
    let (dev, _j) = node::spawn(
        w.config(vec![addr(&gw.handle).await]),
        key.clone(),
        &short,
        w.root.clone(),
        store,
    )
    .expect("spawn");
    let id = dev.peer_id();
    tokio::time::timeout(T, async {
        loop {
            match events.recv().await {
                Ok(Event::PeerAdmitted { peer, .. }) if peer == id => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => panic!("stopped"),
                _ => {}
            }
        }
    })
    .await
    .expect("admitted while valid");
    let reason = tokio::time::timeout(T, async {
        loop {
            match events.recv().await {
                Ok(Event::PeerRefused { peer, reason }) if peer == id => break reason,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => panic!("stopped"),
                _ => {}
            }
        }
    })
    .await
    .expect("the admission ends");
    assert!(reason.contains("expired"), "{reason}");
    assert!(
        !gw.handle
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|(p, _, _)| *p == id),
        "no longer a member"
    );
    dev.shutdown().await.expect("shutdown");
    gw.handle.shutdown().await.expect("shutdown");
}

/// A device dials its bootstrap peer at start, and its first tick comes at once, while that dial is
/// in flight: it must not dial again. Before, every device opened two connections to its gateway,
/// each with its own yamux, noise and pings for the rest of the run.
/// Three fresh pairs, one after the other, as the race is decided at each start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_gets_one_connection_not_two() {
    let w = ward();
    for i in 0..3 {
        let gw = w
            .start(
                &format!("gateway-{i}"),
                Role::Gateway,
                w.config(vec![]),
                None,
            )
            .await;
        let d = w
            .start(
                &format!("pump-{i}"),
                Role::Device,
                w.config(vec![addr(&gw.handle).await]),
                None,
            )
            .await;
        for (a, b) in [(&d, &gw), (&gw, &d)] {
            let b_id = b.handle.peer_id();
            tokio::time::timeout(T, async {
                while !a
                    .handle
                    .peers()
                    .await
                    .expect("peers")
                    .iter()
                    .any(|(p, _, _)| *p == b_id)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("admitted both ways");
        }
        // Admission took round trips after the connection opened: a second dial made at start
        // would have connected by now.
        for (m, who) in [(&d, "device"), (&gw, "gateway")] {
            assert_eq!(
                m.handle.metrics().connections_open.get(),
                1,
                "pair {i}: the {who} holds one connection to its only peer"
            );
        }
        d.handle.shutdown().await.expect("shutdown");
        gw.handle.shutdown().await.expect("shutdown");
    }
}

/// Devices that know only their gateway learn of each other from its peer lists and dial them,
/// each until it has `target_peers` connections: the ward forms a graph of bounded degree, not a
/// full mesh, and the artifact still reaches every device, mostly from devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_dial_members_up_to_their_target_and_the_ward_still_delivers() {
    const DEVICES: usize = 8;
    const TARGET: usize = 3;
    let w = ward();
    let bytes = data(4 << 20, 7);
    let gw = Config {
        upload: Schedule::fixed(Some(4_000_000)),
        seeding: Some(Default::default()),
        ..w.config(vec![])
    };
    let (s, root) = seed(&w, "gateway", &bytes, gw).await;
    let boot = vec![addr(&s.handle).await];
    let mut devices = vec![];
    for i in 0..DEVICES {
        let cfg = Config {
            target_peers: TARGET,
            ..w.config(boot.clone())
        };
        devices.push(w.start(&format!("dev{i}"), Role::Device, cfg, None).await);
    }
    // Every device reaches its target: the gateway's lists name seven other members.
    let mut degrees = vec![];
    tokio::time::timeout(T, async {
        loop {
            degrees.clear();
            for d in &devices {
                degrees.push(d.handle.peers().await.expect("peers").len());
            }
            if degrees.iter().all(|&n| n >= TARGET) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("every device reaches {TARGET} peers: {degrees:?}"));
    // Dials in flight when the last device got there have ended by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut sum = 0;
    for d in &devices {
        sum += d.handle.peers().await.expect("peers").len();
    }
    // Each device dials the gateway and at most TARGET - 1 devices, so there are at most
    // DEVICES * (TARGET - 1) links between devices; a full mesh would be DEVICES * DEVICES peers.
    let most = DEVICES + 2 * DEVICES * (TARGET - 1);
    assert!(
        sum <= most,
        "the devices hold {sum} peers in all, more than the {most} that {TARGET}-peer dialing allows"
    );
    let jobs: Vec<_> = devices
        .iter()
        .map(|m| {
            let h = m.handle.clone();
            tokio::spawn(async move { tokio::time::timeout(T, h.fetch(root, 4 << 20)).await })
        })
        .collect();
    for j in jobs {
        j.await.expect("task").expect("in time").expect("fetched");
    }
    let art = root.short();
    let from_peers: u64 = devices
        .iter()
        .map(|m| m.handle.metrics().received_total(&art, "peer"))
        .sum();
    for m in &devices {
        let e = m.store.get(&root).expect("entry");
        assert_eq!(std::fs::read(e.data_path()).expect("read"), bytes);
    }
    assert!(
        from_peers > 0,
        "devices fed each other over the sparse graph"
    );
    for m in devices.iter().chain([&s]) {
        m.handle.shutdown().await.expect("shutdown");
    }
}

/// Only members count toward `target_peers` (and peers the node dialed itself, while their
/// admission runs): sockets from non-members, however many, do not keep a device from dialing the
/// members it learns of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_from_non_members_do_not_keep_a_device_from_its_ward() {
    let w = ward();
    let gw = w
        .start("gateway", Role::Gateway, w.config(vec![]), None)
        .await;
    let gw_addr = addr(&gw.handle).await;
    // Members that never dial anyone but their gateway: any member the device gets, it dialed.
    let mut members = vec![];
    for i in 0..3 {
        let cfg = Config {
            target_peers: 1,
            ..w.config(vec![gw_addr.clone()])
        };
        members.push(w.start(&format!("m{i}"), Role::Device, cfg, None).await);
    }
    // The device: two peers wanted, and non-members are left connected for the whole test.
    let cfg = Config {
        target_peers: 2,
        admission_timeout: Duration::from_secs(600),
        ..w.config(vec![])
    };
    let dev = w.start("dev", Role::Device, cfg, None).await;
    let dev_addr = addr(&dev.handle).await;
    let mut drivers = vec![];
    for _ in 0..3 {
        let mut sw = intruder();
        sw.dial(dev_addr.clone()).expect("dial");
        drivers.push(tokio::spawn(async move {
            loop {
                sw.select_next_some().await;
            }
        }));
    }
    tokio::time::timeout(T, async {
        while dev.handle.metrics().connections_open.get() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("three non-members connected");
    // Now it meets its gateway, whose peer list names the three members.
    dev.handle.dial(gw_addr).await.expect("running");
    let ids: Vec<_> = members.iter().map(|m| m.handle.peer_id()).collect();
    tokio::time::timeout(T, async {
        loop {
            let peers = dev.handle.peers().await.expect("peers");
            if peers.iter().any(|(p, _, _)| ids.contains(p)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the device dials a member while three non-members hold connections to it");
    for d in drivers {
        d.abort();
    }
    for m in members.iter().chain([&dev, &gw]) {
        m.handle.shutdown().await.expect("shutdown");
    }
}
