//! `wardswarm node` as a real process: it prints its multiaddrs, answers identify and ping from a plain
//! libp2p peer that has no membership certificate, disconnects that peer, and stops on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use futures::StreamExt;
use libp2p::{identify, ping, swarm::SwarmEvent, Multiaddr};

fn wardswarm(dir: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_wardswarm"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Plain {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// A provisioned `wardswarm node` process on loopback: its folder, the process, its stdout lines
/// after the two it printed first, its peer id and full address.
struct Started {
    _dir: tempfile::TempDir,
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    addr: Multiaddr,
}

fn start_node() -> Started {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    for k in ["root.key", "mem.key", "dev.key"] {
        wardswarm(d, &["keygen", "--out", k]);
    }
    wardswarm(
        d,
        &[
            "root",
            "init",
            "--root-key",
            "root.key",
            "--release-key",
            "root.key",
            "--membership-key",
            "mem.key",
            "--expires",
            "30d",
            "--out",
            "root.json",
        ],
    );
    let peer = wardswarm(d, &["peer-id", "--key", "dev.key"]);
    wardswarm(
        d,
        &[
            "cert",
            "issue",
            "--root",
            "root.json",
            "--key",
            "mem.key",
            "--ward",
            "icu-3",
            "--device",
            "pump-17",
            "--peer",
            &peer,
            "--expires",
            "1d",
            "--out",
            "dev.cert",
        ],
    );
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/node.toml"
    ))
    .expect("example config");
    let cfg = example
        .replace("\"device.key\"", "\"dev.key\"")
        .replace("\"device.cert\"", "\"dev.cert\"")
        .replace("/ip4/0.0.0.0/tcp/4100", "/ip4/127.0.0.1/tcp/0")
        .replace("mdns = true", "mdns = false");
    std::fs::write(d.join("node.toml"), cfg).expect("write");

    let mut child = Command::new(env!("CARGO_BIN_EXE_wardswarm"))
        .current_dir(d)
        .args(["node", "--config", "node.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("line").expect("utf8");
    assert_eq!(first, format!("peer id {peer}"));
    let second = lines.next().expect("line").expect("utf8");
    let addr: Multiaddr = second
        .strip_prefix("listening on ")
        .expect("listening line")
        .parse()
        .expect("full multiaddr");
    assert!(second.ends_with(&format!("/p2p/{peer}")), "{second}");
    Started {
        _dir: dir,
        child,
        lines,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_answers_identify_and_ping_and_stops_on_sigterm() {
    let Started {
        _dir,
        mut child,
        lines,
        addr,
    } = start_node();

    // A plain libp2p peer: identify and ping only, no certificate.
    let mut sw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|k| Plain {
            identify: identify::Behaviour::new(identify::Config::new(
                "/other/1".into(),
                k.public(),
            )),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
        })
        .expect("behaviour")
        .build();
    sw.dial(addr).expect("dial");
    let (mut identified, mut pinged, mut dropped) = (None, false, false);
    tokio::time::timeout(Duration::from_secs(30), async {
        while !(identified.is_some() && pinged && dropped) {
            match sw.select_next_some().await {
                SwarmEvent::Behaviour(PlainEvent::Identify(identify::Event::Received {
                    info,
                    ..
                })) => identified = Some(info),
                SwarmEvent::Behaviour(PlainEvent::Ping(ping::Event { result: Ok(_), .. })) => {
                    pinged = true
                }
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => dropped = true,
                _ => {}
            }
        }
    })
    .await
    .expect("identify, ping, then disconnection of the uncertified peer");
    let info = identified.expect("identify");
    assert_eq!(info.protocol_version, "/wardswarm/1.0.0");
    assert!(
        info.protocols
            .iter()
            .any(|p| p.as_ref() == "/wardswarm/transfer/1"),
        "{:?}",
        info.protocols
    );

    // SIGTERM: a clean stop.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(rest.last().map(String::as_str), Some("stopped"));
}

/// An independent libp2p implementation (js-libp2p 3.3, `tests/interop/js-dialer`) dialing as a
/// non-member gets identify and ping, no byte from any ward protocol, and is disconnected.
#[test]
#[cfg_attr(
    wardswarm_no_js_dialer,
    ignore = "node or tests/interop/js-dialer/node_modules missing: npm ci --prefix tests/interop/js-dialer"
)]
fn a_js_libp2p_non_member_gets_identify_and_ping_and_nothing_else() {
    let mut n = start_node();
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/js-dialer");
    let out = Command::new("timeout")
        .args(["60", "node", "--import", "./polyfill.mjs", "dial.mjs"])
        .arg(n.addr.to_string())
        .current_dir(js)
        .output()
        .expect("run node");
    let _ = n.child.kill();
    let _ = n.child.wait();
    assert!(
        out.status.success(),
        "js dialer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from the dialer");
    assert!(
        v["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("wardswarm/")),
        "{v}"
    );
    assert!(v["ping_ms"].is_number(), "ping answered: {v}");
    let protocols = v["protocols"].as_object().expect("protocols");
    assert!(protocols.len() >= 7, "{v}");
    for (p, r) in protocols {
        assert_eq!(r["bytes"], 0, "{p} answered a non-member: {v}");
    }
    assert!(
        v["disconnected_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms <= 10_000),
        "disconnected: {v}"
    );
}
