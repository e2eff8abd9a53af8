//! Removing a device from a ward before its certificate expires, as an operator does it: real
//! gateway and device processes from the example configs, `wardswarm cert revoke` writing the next
//! list over the gateway's `revocations.json`, and the device dropping out of the whole ward.

use std::{path::Path, process::Command, time::Duration};

mod common;
use common::*;

fn revoke(d: &Path, list: &str, what: &[&str]) -> String {
    let mut args = vec![
        "cert",
        "revoke",
        "--root",
        "root.json",
        "--key",
        "membership.key",
        "--ward",
        WARD,
        "--list",
        list,
    ];
    args.extend_from_slice(what);
    let out = Command::new(BIN)
        .current_dir(d)
        .args(&args)
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cert revoke {what:?}: {text}");
    text
}

fn online(api: std::net::SocketAddr, id: &str) -> Option<bool> {
    json_get(api, "/api/v1/devices")
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id).cloned())
        .and_then(|x| x["online"].as_bool())
}

fn log_has(d: &Path, log: &str, text: &str) -> bool {
    std::fs::read_to_string(d.join(log)).is_ok_and(|l| l.contains(text))
}

#[test]
fn a_device_revoked_with_the_cli_leaves_the_ward_and_a_reinstated_one_rejoins() {
    let f = Fixture::new();
    let d = f.path();
    f.keys
        .membership
        .write_new(&d.join("membership.key"))
        .expect("key");
    let (_origin, url) = origin_with_release(&f, 1 << 20);
    let (gw, gw_addr) = start_gateway(&f, &url, "");
    let api = api_of(&gw);
    let mut procs: Vec<Proc> = ["pump-1", "pump-2"]
        .iter()
        .map(|name| start_device(&f, name, &gw_addr, "true", ""))
        .collect();
    wait_in(
        Some(d),
        "both devices online",
        Duration::from_secs(60),
        || online(api, "pump-1") == Some(true) && online(api, "pump-2") == Some(true),
    );

    // The operator revokes pump-2 by its certificate, over the gateway's list file.
    let list = "gateway-state/revocations.json";
    let out = revoke(d, list, &["--certificate", "pump-2.cert"]);
    assert!(out.contains("serial 1") && out.contains("pump-2"), "{out}");
    wait_in(
        Some(d),
        "the gateway to drop pump-2",
        Duration::from_secs(30),
        || online(api, "pump-2") == Some(false),
    );
    assert_eq!(online(api, "pump-1"), Some(true), "pump-1 stays");
    // Both devices keep the list: pump-1 refuses pump-2 too, and pump-2 knows why it is out.
    wait_in(
        Some(d),
        "the devices to keep the list",
        Duration::from_secs(30),
        || {
            ["pump-1", "pump-2"]
                .iter()
                .all(|n| d.join(n).join("agent/revocations.json").is_file())
        },
    );
    wait_in(
        Some(d),
        "pump-2 to log its revocation",
        Duration::from_secs(30),
        || log_has(d, "pump-2.log", "own certificate is revoked"),
    );
    assert!(log_has(d, "gateway.log", "new revocation list in force"));

    // A restarted pump-2 is still refused: the gateway holds the list, and pump-2 kept it.
    procs[1].sigterm();
    let mut p2 = Proc::start(d, &["node", "--config", "pump-2.toml"], "pump-2b.log");
    wait_in(
        Some(d),
        "the gateway to refuse pump-2 again",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(d.join("gateway.log")).is_ok_and(|l| {
                l.lines().any(|x| {
                    x.contains("admission refused")
                        && x.contains("revoked by the ward's revocation list")
                })
            })
        },
    );
    assert_eq!(online(api, "pump-2"), Some(false));

    // Reinstated (serial 2), pump-2 is admitted at its next start and takes the newer list.
    let out = revoke(d, list, &["--reinstate", &procs_peer(d, "pump-2")]);
    assert!(
        out.contains("serial 2") && out.contains("0 peer(s) revoked"),
        "{out}"
    );
    wait_in(
        Some(d),
        "the gateway to take serial 2",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(d.join("gateway.log"))
                .is_ok_and(|l| l.matches("new revocation list in force").count() >= 2)
        },
    );
    p2.sigterm();
    let _p3 = Proc::start(d, &["node", "--config", "pump-2.toml"], "pump-2c.log");
    wait_in(
        Some(d),
        "pump-2 back online",
        Duration::from_secs(60),
        || online(api, "pump-2") == Some(true),
    );
}

/// The peer id in `<name>.cert`.
fn procs_peer(d: &Path, name: &str) -> String {
    let b = std::fs::read(d.join(format!("{name}.cert"))).expect("cert");
    wardswarm_node::membership::Certificate::parse(&b)
        .expect("cert")
        .peer
}
