//! Helpers shared by the end-to-end tests: a fixture folder with a trust root and an origin, daemon
//! processes started from the documented example configs, and bounded waits.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use wardswarm_node::{
    membership::{Certificate, Role},
    release::{self, BuildRequest},
    root::TrustRoot,
    testkit::{self, TestKeys},
    SecretKey, Timestamp,
};
use wardswarm_seeder::origin;

pub const BIN: &str = env!("CARGO_BIN_EXE_wardswarm");
pub const WARD: &str = "icu-3";

pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    wait_in(None, what, limit, f)
}

/// Waits for a condition; on timeout, prints the ward's logs and device states before failing.
pub fn wait_in(dir: Option<&Path>, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(d) = dir {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for p in names {
            if p.extension().is_some_and(|e| e == "log") {
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                eprintln!("== {}", p.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
            let st = p.join("agent/state.json");
            if st.exists() {
                eprintln!(
                    "== {}\n{}",
                    st.display(),
                    std::fs::read_to_string(&st).unwrap_or_default()
                );
            }
        }
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// A minimal HTTP/1.0 GET (the tests need no HTTP client beyond this).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

pub fn json_get(addr: SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(addr, path)).unwrap_or(serde_json::Value::Null)
}

/// Keys, root, release and origin on disk; certificates issued on demand.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub keys: TestKeys,
    pub root: TrustRoot,
    pub now: Timestamp,
    pub factory: Vec<u8>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = TestKeys::default();
        let now = Timestamp::now();
        let root = keys.root(now, Duration::from_secs(86_400 * 30));
        std::fs::write(dir.path().join("root.json"), root.to_bytes()).expect("root");
        std::fs::create_dir_all(dir.path().join("origin/releases")).expect("origin");
        Self {
            dir,
            keys,
            root,
            now,
            factory: testkit::bytes(1 << 20, 7),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Builds a release into the origin; returns the full artifact's length.
    pub fn release(
        &self,
        version: &str,
        counter: u64,
        len: usize,
        key: &SecretKey,
        expires: Timestamp,
    ) -> u64 {
        let created = Timestamp::from_unix(expires.as_unix().min(self.now.as_unix()) - 86_400);
        let img = self.path().join(format!("image-{version}.img"));
        let mut data = self.factory.clone();
        data.resize(len, 0);
        data.extend_from_slice(version.as_bytes());
        // Incompressible enough that the artifact is close to the image size.
        let noise = testkit::bytes(len / 2, counter);
        data[..noise.len()].copy_from_slice(&noise);
        std::fs::write(&img, &data).expect("image");
        let r = release::build(&BuildRequest {
            target: img,
            product: "infusion-pump".into(),
            hardware: vec!["pump-rev-c".into()],
            version: version.into(),
            counter,
            created,
            expires,
            keys: vec![key.clone()],
            out: self.path().join("origin/releases").join(version),
            zstd_level: 1,
            zstd_workers: 0,
            root: None,
            bases: vec![],
            delta_codec: wardswarm_node::delta::Codec::MODELED,
            delta_methods: wardswarm_node::delta::Methods::ALL,
        })
        .expect("build release");
        r.manifest.manifest.full().expect("full").length
    }
    pub fn publish(&self) {
        origin::publish(
            &self.path().join("origin"),
            std::slice::from_ref(&self.keys.release),
            self.now.saturating_add(Duration::from_secs(86_400)),
            self.now,
        )
        .expect("publish index");
    }
    /// Writes `<name>.key` and `<name>.cert`; returns the peer id.
    pub fn member(&self, name: &str, role: Role) -> String {
        let k = SecretKey::generate();
        let kp = self.path().join(format!("{name}.key"));
        k.write_new(&kp).expect("key");
        let peer = k.to_libp2p().public().to_peer_id().to_string();
        let c = Certificate::issue(
            WARD,
            name,
            role,
            &peer,
            self.now.saturating_add(Duration::from_secs(86_400)),
            std::slice::from_ref(&self.keys.membership),
        )
        .expect("cert");
        std::fs::write(self.path().join(format!("{name}.cert")), c.to_bytes()).expect("cert");
        peer
    }
}

/// A daemon process whose stdout lines are collected in the background.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    pub fn start(dir: &Path, args: &[&str], log: &str) -> Self {
        let err = std::fs::File::create(dir.join(log)).expect("log file");
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .args(args)
            .env("RUST_LOG", "info")
            // The pump-killed device's config names a test fault; the test build honours it only so.
            .env("WARDSWARM_TEST_FAULTS", "1")
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start process");
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Self { child, lines }
    }
    pub fn line(&self, prefix: &str) -> String {
        let mut found = String::new();
        wait_for(
            &format!("a line starting {prefix:?}"),
            Duration::from_secs(30),
            || {
                let l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(x) = l.iter().find(|x| x.starts_with(prefix)) {
                    found = x.clone();
                    true
                } else {
                    false
                }
            },
        );
        found
    }
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < end, "process did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/examples")
            .join(name),
    )
    .expect("example config")
}

/// The documented gateway config, pointed at loopback.
pub fn gateway_toml(origin: &str, extra: &str) -> String {
    let mut t = example("gateway.toml")
        .replace(
            "\"https://updates.example-devices.com/infusion-pump/\"",
            &format!("\"{origin}\""),
        )
        .replace("poll_interval = \"5m\"", "poll_interval = \"1s\"")
        .replace(
            "api_listen = \"127.0.0.1:8080\"",
            "api_listen = \"127.0.0.1:0\"",
        )
        // Tests read devices and releases without tokens; tests/rollouts.rs closes them again.
        .replace("api_open_reads = false", "api_open_reads = true")
        .replace("/ip4/0.0.0.0/tcp/4100", "/ip4/127.0.0.1/tcp/0")
        .replace("mdns = true", "mdns = false")
        .replace("\"gateway.key\"", "\"gw.key\"")
        .replace("\"gateway.cert\"", "\"gw.cert\"");
    // Caps: the example's schedule would make the test depend on the time of day.
    let cut = t.find("[wan]").expect("wan section");
    t.truncate(cut);
    t.push_str(extra);
    t
}

/// The documented device config, pointed at loopback and the gateway. It installs every verified
/// release on its own (`install = "automatic"`) unless `extra_agent` sets `install`.
pub fn device_toml(name: &str, gateway: &str, health: &str, extra_agent: &str) -> String {
    let t = example("device.toml");
    let t = if extra_agent.contains("install =") {
        t.replace("install = \"directed\"", "")
    } else {
        t.replace("install = \"directed\"", "install = \"automatic\"")
    };
    let t = t
        .replace("\"device.key\"", &format!("\"{name}.key\""))
        .replace("\"device.cert\"", &format!("\"{name}.cert\""))
        .replace("store = \"store\"", &format!("store = \"{name}/store\""))
        .replace("/ip4/0.0.0.0/tcp/4101", "/ip4/127.0.0.1/tcp/0")
        .replace(
            "\"/ip4/10.20.0.1/tcp/4100/p2p/12D3KooW...\"",
            &format!("\"{gateway}\""),
        )
        .replace("mdns = true", "mdns = false")
        .replace("state = \"agent\"", &format!("state = \"{name}/agent\""))
        .replace("dir = \"slots\"", &format!("dir = \"{name}/slots\""))
        .replace(
            "health_check = \"true\"",
            &format!("health_check = \"{health}\""),
        )
        .replace(
            "report_interval = \"5s\"",
            &format!("report_interval = \"1s\"\n{extra_agent}"),
        );
    // Drop the time-of-day upload window.
    let a = t.find("[[upload.window]]").expect("window");
    let b = t.find("[download]").expect("download");
    format!("{}{}", &t[..a], &t[b..])
}

/// `wardswarm origin serve origin` in `dir`; returns the process and its base URL.
pub fn start_origin(dir: &Path) -> (Proc, String) {
    let p = Proc::start(
        dir,
        &["origin", "serve", "origin", "--listen", "127.0.0.1:0"],
        "origin.log",
    );
    let url = p
        .line("serving ")
        .rsplit(' ')
        .next()
        .expect("url")
        .to_string();
    (p, url)
}

/// The API address a gateway process printed.
pub fn api_of(p: &Proc) -> SocketAddr {
    p.line("api on http")
        .trim_start_matches("api on http://")
        .trim_start_matches("api on https://")
        .trim_end_matches("/api/v1/devices")
        .parse()
        .expect("api address")
}

pub fn device_state(dir: &Path, name: &str) -> serde_json::Value {
    std::fs::read(dir.join(name).join("agent/state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

pub fn result_of(v: &serde_json::Value) -> Option<String> {
    (v["phase"]["phase"] == "idle")
        .then(|| v["last"]["result"].as_str().map(String::from))
        .flatten()
}

/// `wardswarm seeder` from the example config (`extra` appended), as member `gw`, logging to
/// `gateway.log`; returns the process and its full swarm address.
pub fn start_gateway(f: &Fixture, origin_url: &str, extra: &str) -> (Proc, String) {
    let d = f.path();
    f.member("gw", Role::Gateway);
    std::fs::write(d.join("gateway.toml"), gateway_toml(origin_url, extra)).expect("config");
    let gw = Proc::start(d, &["seeder", "--config", "gateway.toml"], "gateway.log");
    let addr = gw
        .line("listening on ")
        .trim_start_matches("listening on ")
        .to_string();
    (gw, addr)
}

/// A provisioned device `name` (key, certificate, factory image in its slots, the example config
/// bootstrapped to `gateway`), started as `wardswarm node`, logging to `<name>.log`.
pub fn start_device(f: &Fixture, name: &str, gateway: &str, health: &str, extra: &str) -> Proc {
    let d = f.path();
    f.member(name, Role::Device);
    wardswarm_node::agent::slots::FileSlots::provision(&d.join(name).join("slots"), &f.factory)
        .expect("provision");
    std::fs::write(
        d.join(format!("{name}.toml")),
        device_toml(name, gateway, health, extra),
    )
    .expect("config");
    Proc::start(
        d,
        &["node", "--config", &format!("{name}.toml")],
        &format!("{name}.log"),
    )
}

/// One HTTP/1.0 call: method, path, optional bearer token and JSON body; returns the status code
/// and the body parsed as JSON (`Null` if it is not JSON).
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Release 2.0.0 (counter 2, an image of `len` bytes, valid a week) built, published and served by
/// `wardswarm origin serve`; returns the origin process and its URL.
pub fn origin_with_release(f: &Fixture, len: usize) -> (Proc, String) {
    let far = f.now.saturating_add(Duration::from_secs(86_400 * 7));
    f.release("2.0.0", 2, len, &f.keys.release, far);
    f.publish();
    start_origin(f.path())
}

/// An in-process node's config on loopback, uncapped, in the test ward.
pub fn loopback(boot: Vec<libp2p::Multiaddr>) -> wardswarm_node::net::Config {
    use wardswarm_node::net::{caps::Schedule, Config};
    Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootstrap: boot,
        mdns: false,
        ward: WARD.into(),
        upload: Schedule::fixed(None),
        download: Schedule::fixed(None),
        ..Config::default()
    }
}

/// A membership certificate in the test ward for an in-process node's key, valid for a day.
pub fn cert(f: &Fixture, kp: &libp2p::identity::Keypair, name: &str, role: Role) -> Certificate {
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

/// `wardswarm demo ARGS --json`: asserts it succeeded and returns its one JSON object.
pub fn demo_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("demo")
        .args(args)
        .arg("--json")
        .output()
        .expect("demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}
