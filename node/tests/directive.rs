//! Rollout directives travel only from the ward's gateway: a directive a device sends another
//! member is refused (and counted), one from the gateway reaches the device.

use std::time::Duration;

use wardswarm_node::{membership::Role, net::Event};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directive_from_a_member_that_is_not_the_gateway_is_refused() {
    let w = ward();
    let gw = w
        .start("gateway", Role::Gateway, w.config(vec![]), None)
        .await;
    let gw_addr = addr(&gw.handle).await;
    let a = w
        .start(
            "pump-a",
            Role::Device,
            w.config(vec![gw_addr.clone()]),
            None,
        )
        .await;
    let a_addr = addr(&a.handle).await;
    let b = w
        .start(
            "pump-b",
            Role::Device,
            w.config(vec![gw_addr, a_addr]),
            None,
        )
        .await;
    let (a_id, b_id) = (a.key.public().to_peer_id(), b.key.public().to_peer_id());
    let gw_id = gw.key.public().to_peer_id();
    // Both devices admitted by each other and by the gateway.
    tokio::time::timeout(T, async {
        loop {
            let pa: Vec<_> = a
                .handle
                .peers()
                .await
                .expect("a")
                .into_iter()
                .map(|p| p.0)
                .collect();
            let pb: Vec<_> = b
                .handle
                .peers()
                .await
                .expect("b")
                .into_iter()
                .map(|p| p.0)
                .collect();
            if pa.contains(&b_id) && pa.contains(&gw_id) && pb.contains(&a_id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("admitted in time");
    let mut events = a.handle.subscribe();
    let body = |from: &str| {
        serde_json::to_vec(&serde_json::json!({
            "device": "pump-a", "seq": 1, "rollout": 1, "release": from, "action": "forced",
            "fetch": true, "install": true, "reboot": true, "expires": "2099-01-01T00:00:00Z"
        }))
        .expect("json")
    };
    // A device posing as the gateway: refused by pump-a, counted, never emitted.
    b.handle
        .direct(a_id, body("from-pump-b"))
        .await
        .expect("sent");
    tokio::time::timeout(T, async {
        while a.handle.metrics().directives_refused.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the forged directive refused in time");
    // The gateway's directive arrives; it is the first and only one pump-a emits.
    gw.handle
        .direct(a_id, body("from-gateway"))
        .await
        .expect("sent");
    let (peer, got) = until("the gateway's directive", &mut events, |e| match e {
        Event::Directive { peer, body } => Some((peer, body)),
        _ => None,
    })
    .await;
    assert_eq!(peer, gw_id);
    let v: serde_json::Value = serde_json::from_slice(&got).expect("json");
    assert_eq!(v["release"], "from-gateway");
    assert_eq!(a.handle.metrics().directives_refused.get(), 1);
}
