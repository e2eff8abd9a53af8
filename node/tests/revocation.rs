//! Removing a device from a ward before its certificate expires: a revocation list signed by the
//! membership role, given to the gateway, reaches every member and ends the revoked peer's admission
//! everywhere; it survives a restart, and neither an older list nor a forged one changes anything.

use std::time::Duration;

use libp2p::PeerId;
use wardswarm_node::{
    membership::Role,
    net::{Config, Event, NodeError},
    revocation::{RevocationList, Revoked},
    SecretKey, Timestamp,
};

mod common;
use common::*;

fn list(w: &Ward, serial: u64, revoked: &[(PeerId, &str)], key: &SecretKey) -> Vec<u8> {
    let entries = revoked
        .iter()
        .map(|(p, d)| Revoked {
            peer: p.to_string(),
            device: (*d).into(),
        })
        .collect();
    let _ = w;
    RevocationList::issue(
        WARD,
        serial,
        Timestamp::now(),
        entries,
        std::slice::from_ref(key),
    )
    .expect("list")
    .to_bytes()
}

async fn members(m: &Member) -> Vec<PeerId> {
    m.handle
        .peers()
        .await
        .expect("running")
        .into_iter()
        .map(|(p, _, _)| p)
        .collect()
}

/// Waits until `m` has admitted every peer in `want`.
async fn admitted_all(m: &Member, want: &[PeerId]) {
    tokio::time::timeout(T, async {
        loop {
            let have = members(m).await;
            if want.iter().all(|p| have.contains(p)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("members admitted in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_dropped_by_the_whole_ward_and_stays_out() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let w = ward();
    let gw = w
        .start("gateway", Role::Gateway, w.config(vec![]), None)
        .await;
    let boot = vec![addr(&gw.handle).await];
    let kept = w.dir.path().join("a-revocations.json");
    let a_cfg = Config {
        revocations_file: Some(kept.clone()),
        ..w.config(boot.clone())
    };
    let a = w.start("pump-a", Role::Device, a_cfg.clone(), None).await;
    let b = w.start("pump-b", Role::Device, w.config(boot), None).await;
    let (ga, aa, ba) = (gw.handle.peer_id(), a.handle.peer_id(), b.handle.peer_id());
    // Peer exchange joins a and b to each other through the gateway.
    admitted_all(&gw, &[aa, ba]).await;
    admitted_all(&a, &[ga, ba]).await;
    admitted_all(&b, &[ga, aa]).await;

    let mut gw_events = gw.handle.subscribe();
    let mut a_events = a.handle.subscribe();
    let mut b_events = b.handle.subscribe();
    let one = list(&w, 1, &[(ba, "pump-b")], &w.membership);
    assert!(gw
        .handle
        .set_revocations(one.clone())
        .await
        .expect("valid list"));

    // The gateway ends b's admission; a hears the list from the gateway and does the same; b learns
    // that it is revoked.
    let reason = until("the gateway refuses b", &mut gw_events, |e| match e {
        Event::PeerRefused { peer, reason } if peer == ba => Some(reason),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("revoked") && reason.contains("pump-b"),
        "{reason}"
    );
    let via = until("a adopts the list", &mut a_events, |e| match e {
        Event::Revocations {
            serial: 1, from, ..
        } => Some(from),
        _ => None,
    })
    .await;
    assert!(via.is_some(), "a got the list from a member");
    until("a drops b", &mut a_events, |e| match e {
        Event::PeerRefused { peer, .. } if peer == ba => Some(()),
        _ => None,
    })
    .await;
    until("b learns it is revoked", &mut b_events, |e| match e {
        Event::Revocations {
            revokes_us: true, ..
        } => Some(()),
        _ => None,
    })
    .await;
    assert!(!members(&gw).await.contains(&ba));
    assert!(!members(&a).await.contains(&ba));
    assert!(members(&a).await.contains(&ga), "a stays a member");

    // The gateway lets b go once the list had time to reach it; b does not redial by itself.
    until("the gateway disconnects b", &mut b_events, |e| match e {
        Event::PeerLeft { peer } if peer == ga => Some(()),
        _ => None,
    })
    .await;
    // b comes back: every node that holds the list refuses it at admission.
    b.handle
        .dial(addr(&gw.handle).await)
        .await
        .expect("running");
    let again = until("the gateway refuses b again", &mut gw_events, |e| match e {
        Event::PeerRefused { peer, reason } if peer == ba => Some(reason),
        _ => None,
    })
    .await;
    assert!(again.contains("revoked"), "{again}");
    assert!(!members(&gw).await.contains(&ba));

    // Replaying the same or an older serial changes nothing; a list not signed by the membership
    // role is refused.
    assert!(!gw.handle.set_revocations(one.clone()).await.expect("valid"));
    let forged = list(&w, 9, &[(ga, "gateway")], &SecretKey::from_seed([77; 32]));
    assert!(matches!(
        gw.handle.set_revocations(forged).await,
        Err(NodeError::Revocation(_))
    ));
    let two = list(&w, 2, &[], &w.membership);
    assert!(gw.handle.set_revocations(two).await.expect("valid"));
    assert!(
        !gw.handle.set_revocations(one).await.expect("valid"),
        "an older list does not reinstate a revocation"
    );
    assert_eq!(
        gw.handle
            .revocations()
            .await
            .expect("running")
            .map(|l| l.serial),
        Some(2)
    );

    // a kept the list it adopted (serial 1 or 2): a restart does not forget it.
    let key = a.key.clone();
    a.handle.shutdown().await.expect("shutdown");
    tokio::time::timeout(T, async {
        while !kept.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("kept on disk");
    let a2 = w.start("pump-a", Role::Device, a_cfg, Some(key)).await;
    let held = a2.handle.revocations().await.expect("running");
    assert!(held.is_some_and(|l| l.serial >= 1), "read back at start");
    for m in [&a2, &b, &gw] {
        m.handle.shutdown().await.expect("shutdown");
    }
}
