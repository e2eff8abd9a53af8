//! The rollout API against a gateway and devices started as separate processes from the example
//! configs: tokens and roles, four eyes, directed devices following the waves (a canary, a QA
//! hold, the rest), a gateway restarted mid-rollout, and the gateway's audit log.

use std::{process::Command, time::Duration};

use serde_json::json;

mod common;
use common::*;

#[test]
fn rollouts_through_the_api_with_roles_four_eyes_audit_and_a_restart() {
    let f = Fixture::new();
    let d = f.path();
    let (_origin, url) = origin_with_release(&f, 1 << 20);
    // The example config as it is: every route needs a token. The swarm port the gateway first
    // gets is then fixed in its config, so the devices find it again after its restart (a port
    // picked beforehand could be taken by another test's socket before the gateway binds it).
    f.member("gw", wardswarm_node::membership::Role::Gateway);
    let cfg = gateway_toml(&url, "").replace("api_open_reads = true", "api_open_reads = false");
    std::fs::write(d.join("gateway.toml"), &cfg).expect("config");
    let mut gw = Proc::start(d, &["seeder", "--config", "gateway.toml"], "gateway.log");
    let gw_addr = gw
        .line("listening on ")
        .trim_start_matches("listening on ")
        .to_string();
    let port = gw_addr
        .split("/tcp/")
        .nth(1)
        .and_then(|p| p.split('/').next())
        .expect("a TCP listen address")
        .to_string();
    let fixed = cfg.replace(
        "/ip4/127.0.0.1/tcp/0",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
    );
    assert_ne!(fixed, cfg, "the config names the swarm's listen address");
    std::fs::write(d.join("gateway.toml"), fixed).expect("config");
    let api = api_of(&gw);
    assert_eq!(http_call(api, "GET", "/api/v1/devices", None, None).0, 401);
    assert_eq!(http_call(api, "GET", "/metrics", None, None).0, 401);
    let admin = std::fs::read_to_string(d.join("gateway-state/admin.token")).expect("admin token");
    let admin = admin.trim();
    let get = |path: &str| http_call(api, "GET", path, Some(admin), None).1;
    let _devices: Vec<Proc> = ["pump-1", "pump-2", "pump-3"]
        .iter()
        .map(|n| start_device(&f, n, &gw_addr, "true", "install = \"directed\""))
        .collect();
    wait_in(
        Some(d),
        "three devices reporting",
        Duration::from_secs(60),
        || {
            get("/api/v1/devices")
                .as_array()
                .is_some_and(|a| a.len() == 3)
        },
    );
    let admin = std::fs::read_to_string(d.join("gateway-state/admin.token")).expect("admin token");
    let admin = admin.trim();
    let token = |name: &str, role: &str| {
        let (code, v) = http_call(
            api,
            "POST",
            "/api/v1/tokens",
            Some(admin),
            Some(&json!({"name": name, "role": role})),
        );
        assert_eq!(code, 201, "{v}");
        v["token"].as_str().expect("token").to_string()
    };
    let (op, ap, viewer) = (
        token("alice", "operator"),
        token("bob", "approver"),
        token("wall-screen", "viewer"),
    );

    // No token, a wrong one, and a role that may not.
    assert_eq!(http_call(api, "GET", "/api/v1/rollouts", None, None).0, 401);
    assert_eq!(
        http_call(api, "GET", "/api/v1/rollouts", Some("wst_00_00"), None).0,
        401
    );
    let spec = json!({"name": "2.0.0 canary first", "release": "2.0.0",
        "groups": [{"name": "canary", "select": {"by": "devices", "ids": ["pump-2"]}, "success_action": "pause"},
                   {"name": "rest", "select": {"by": "labels", "labels": ["icu-3"]}}]});
    assert_eq!(
        http_call(api, "POST", "/api/v1/rollouts", Some(&viewer), Some(&spec)).0,
        403
    );
    let bad = json!({"name": "x", "release": "9.9.9", "groups": [{"name": "a", "select": {"by": "rest"}}]});
    assert_eq!(
        http_call(api, "POST", "/api/v1/rollouts", Some(&op), Some(&bad)).0,
        422,
        "an unknown release"
    );
    wait_in(
        Some(d),
        "the release verified",
        Duration::from_secs(30),
        || {
            get("/api/v1/releases")
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["status"] == "verified"))
        },
    );
    let (code, r) = http_call(api, "POST", "/api/v1/rollouts", Some(&op), Some(&spec));
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["state"], "waiting_for_approval");
    let id = r["id"].as_u64().expect("id");
    let path = |a: &str| format!("/api/v1/rollouts/{id}/{a}");
    assert_eq!(
        http_call(api, "POST", &path("start"), Some(&op), None).0,
        409
    );
    let (code, v) = http_call(api, "POST", &path("approve"), Some(&op), None);
    assert_eq!(code, 403, "an operator token cannot approve: {v}");
    // Four eyes: even a token that may approve cannot approve its own rollout.
    let (_, own) = http_call(api, "POST", "/api/v1/rollouts", Some(admin), Some(&spec));
    let own_id = own["id"].as_u64().expect("id");
    let (code, v) = http_call(
        api,
        "POST",
        &format!("/api/v1/rollouts/{own_id}/approve"),
        Some(admin),
        None,
    );
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("four eyes")),
        "{v}"
    );
    http_call(
        api,
        "POST",
        &format!("/api/v1/rollouts/{own_id}/deny"),
        Some(&ap),
        None,
    );
    assert_eq!(
        http_call(api, "POST", &path("start"), Some(&ap), None).0,
        403
    );
    let (code, v) = http_call(
        api,
        "POST",
        &path("approve"),
        Some(&ap),
        Some(&json!({"remark": "checked the release notes"})),
    );
    assert_eq!((code, v["state"].as_str()), (200, Some("ready")), "{v}");
    let (code, v) = http_call(api, "POST", &path("start"), Some(&op), None);
    assert_eq!((code, v["state"].as_str()), (200, Some("running")), "{v}");
    assert_eq!(
        v["groups"][0]["devices"].as_object().map(|m| m.len()),
        Some(1)
    );
    assert_eq!(
        v["groups"][1]["devices"].as_object().map(|m| m.len()),
        Some(2)
    );

    // Directed devices: the canary installs; the rest fetch (their rollout runs) but hold, since
    // the canary's success is a QA hold.
    let version = |n: &str| device_state(d, n)["installed"]["version"].clone();
    let show =
        |api, t: &str| http_call(api, "GET", &format!("/api/v1/rollouts/{id}"), Some(t), None);
    wait_in(
        Some(d),
        "the canary to finish and the QA hold",
        Duration::from_secs(120),
        || {
            let v = show(api, &viewer).1;
            v["state"] == "paused"
                && v["groups"][1]["devices"]["pump-1"] == "downloaded"
                && v["groups"][1]["devices"]["pump-3"] == "downloaded"
        },
    );
    let v = show(api, &viewer).1;
    assert_eq!(v["groups"][0]["state"], "finished", "{v}");
    assert_eq!(version("pump-2"), "2.0.0");
    assert_eq!(version("pump-1"), "1.0.0", "held by the QA hold");
    assert_eq!(version("pump-3"), "1.0.0", "held by the QA hold");
    let report = |n: &str| {
        get("/api/v1/devices")
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == n).cloned())
            .unwrap_or_default()
    };
    assert_eq!(report("pump-1")["held"], "not_yet", "{}", report("pump-1"));

    // The gateway restarts mid-rollout: the rollout is as it was, and resuming it carries on.
    gw.sigterm();
    gw = Proc::start(d, &["seeder", "--config", "gateway.toml"], "gateway-1.log");
    let api = api_of(&gw);
    let v = show(api, &viewer).1;
    assert_eq!(v["state"], "paused", "{v}");
    let (code, v) = http_call(api, "POST", &path("resume"), Some(&op), None);
    assert_eq!((code, v["state"].as_str()), (200, Some("running")), "{v}");
    wait_in(
        Some(d),
        "the rollout to finish",
        Duration::from_secs(120),
        || show(api, &viewer).1["state"] == "finished",
    );
    let v = show(api, &viewer).1;
    assert_eq!(v["groups"][0]["state"], "finished");
    assert_eq!(v["groups"][1]["state"], "finished");
    assert_eq!(version("pump-1"), "2.0.0");
    assert_eq!(version("pump-3"), "2.0.0");
    let audit = std::fs::read_to_string(d.join("pump-1/agent/audit.jsonl")).expect("audit");
    assert!(audit.contains("\"event\":\"directive\""), "{audit}");

    // The CLI: the same API from the shell, the token from WARDSWARM_TOKEN or a file.
    let cli = |token: &str, args: &[&str]| {
        let o = Command::new(BIN)
            .current_dir(d)
            .args(args)
            .args(["--api", &format!("http://{api}")])
            .env("WARDSWARM_TOKEN", token)
            .output()
            .expect("run");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&viewer, &["rollout", "show", &id.to_string()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("finished") && out.contains("canary") && out.contains("finished 1"),
        "{out}"
    );
    assert!(out.contains("rest") && out.contains("finished 2"), "{out}");
    let (ok, out, err) = cli(&viewer, &["rollout", "list", "--json"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (ok, _, err) = cli(&viewer, &["rollout", "stop", &id.to_string()]);
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, out, err) = cli(admin, &["token", "list"]);
    assert!(
        ok && out.contains("wall-screen") && out.contains("approver"),
        "{out}{err}"
    );
    let (ok, _, err) = cli("", &["rollout", "list"]);
    assert!(!ok && err.contains("WARDSWARM_TOKEN"), "{err}");

    // A second rollout, left mid-way, survives a gateway restart.
    let (_, r2) = http_call(api, "POST", "/api/v1/rollouts", Some(&op), Some(&spec));
    let id2 = r2["id"].as_u64().expect("id");
    assert_eq!(id2, own_id + 1);
    http_call(
        api,
        "POST",
        &format!("/api/v1/rollouts/{id2}/approve"),
        Some(&ap),
        None,
    );
    // Overriding a device's clinical-use gate takes an admin token and a remark, and is audited.
    let over = format!("/api/v1/rollouts/{id2}/override");
    let body = json!({"device": "pump-1", "remark": "bed 12 discharged; ward nurse confirmed"});
    assert_eq!(
        http_call(api, "POST", &over, Some(&op), Some(&body)).0,
        403,
        "an operator may not override a gate"
    );
    assert_eq!(
        http_call(
            api,
            "POST",
            &over,
            Some(admin),
            Some(&json!({"device": "pump-1"}))
        )
        .0,
        422,
        "an override needs a remark"
    );
    let (code, v) = http_call(api, "POST", &over, Some(admin), Some(&body));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["overrides"], json!(["pump-1"]));
    gw.sigterm();
    let gw2 = Proc::start(d, &["seeder", "--config", "gateway.toml"], "gateway-2.log");
    let api2 = api_of(&gw2);
    let (code, v) = http_call(
        api2,
        "GET",
        &format!("/api/v1/rollouts/{id2}"),
        Some(&op),
        None,
    );
    assert_eq!((code, v["state"].as_str()), (200, Some("ready")), "{v}");
    assert_eq!(
        http_call(api2, "GET", "/api/v1/rollouts", Some(&viewer), None)
            .1
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    // The OpenAPI document names exactly the routes there are: each answers (401 without a token,
    // as every route but the document itself needs one), none is missing.
    let (code, doc) = http_call(api2, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().map_or(0, |m| m.len()))
            .sum::<usize>(),
        wardswarm_seeder::openapi::ROUTES.len()
    );
    for (path, ops) in paths {
        for (method, op) in ops.as_object().expect("operations") {
            let concrete = path.replace("{id}", &id2.to_string());
            let (code, v) = http_call(api2, &method.to_uppercase(), &concrete, None, None);
            let want = if op.get("security").is_some() {
                401
            } else {
                200
            };
            assert_eq!(code, want, "{method} {path}: {v}");
        }
    }
    assert_eq!(
        http_call(api2, "GET", "/api/v1/nothing", Some(admin), None).0,
        404,
        "an unknown route is 404, so the 401s above were real routes"
    );
    drop(gw2);

    // Every mutating call is in the gateway's audit log, and the chain verifies.
    let out = Command::new(BIN)
        .current_dir(d)
        .args(["audit", "verify", "gateway-state/audit.jsonl"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(d.join("gateway-state/audit.jsonl")).expect("log");
    assert!(
        log.contains("rollout.approve") && log.contains("refused: four eyes"),
        "{log}"
    );
    assert!(
        log.contains("refused: a viewer token may not do this"),
        "{log}"
    );
    assert!(log.contains("\"who\":\"bob (token "), "{log}");
    assert!(
        log.contains("rollout.override") && log.contains("bed 12 discharged"),
        "{log}"
    );
    // A tampered record is detected.
    let tampered = log.replacen("checked the release notes", "no remark", 1);
    let tampered = if tampered == log {
        log.replacen("\"outcome\":\"done\"", "\"outcome\":\"DONE\"", 1)
    } else {
        tampered
    };
    std::fs::write(d.join("tampered.jsonl"), tampered).expect("write");
    let out = Command::new(BIN)
        .current_dir(d)
        .args(["audit", "verify", "tampered.jsonl"])
        .output()
        .expect("run");
    assert!(!out.status.success(), "a tampered audit log verified");
}

/// The clinical-use gate: a device whose bedside application holds a lease downloads the release
/// but does not install it, reports why, and keeps waiting when the lease expires unreleased; once
/// the lease is released it installs and commits.
#[test]
fn a_device_in_clinical_use_waits_and_installs_once_released() {
    let f = Fixture::new();
    let d = f.path();
    let (_origin, url) = origin_with_release(&f, 1 << 20);
    let (gw, gw_addr) = start_gateway(&f, &url, "");
    let api = api_of(&gw);
    std::fs::create_dir_all(d.join("pump-1")).expect("mkdir");
    // Held by an infusion that stopped renewing its lease an hour ago: still in use.
    let lease = d.join("pump-1/lease.json");
    std::fs::write(
        &lease,
        br#"{"in_use": true, "holder": "infusion 7", "expires": "2020-01-01T00:00:00Z"}"#,
    )
    .expect("lease");
    let _dev = start_device(
        &f,
        "pump-1",
        &gw_addr,
        "true",
        "gate = { lease = \"pump-1/lease.json\" }",
    );
    let gated = || {
        json_get(api, "/api/v1/devices")
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == "pump-1").cloned())
            .and_then(|x| {
                let g = x["gated"].as_str()?;
                Some(format!("{g}: {}", x["gated_detail"].as_str().unwrap_or("")))
            })
    };
    wait_in(
        Some(d),
        "pump-1 to report its gate",
        Duration::from_secs(60),
        || {
            gated().is_some_and(|g| {
                g.starts_with("in_use: ") && g.contains("infusion 7") && g.contains("expired")
            })
        },
    );
    let state = device_state(d, "pump-1");
    assert_ne!(result_of(&state).as_deref(), Some("committed"), "{state}");
    assert_eq!(
        state["installed"]["version"], "1.0.0",
        "nothing installed while in use"
    );
    std::fs::remove_file(&lease).expect("release the lease");
    wait_in(
        Some(d),
        "pump-1 to commit 2.0.0",
        Duration::from_secs(60),
        || result_of(&device_state(d, "pump-1")).as_deref() == Some("committed"),
    );
    wait_in(
        Some(d),
        "the gate to clear in the report",
        Duration::from_secs(30),
        || gated().is_none(),
    );
}

/// The API over TLS (rustls): the CLI reaches it with the certificate as its trust anchor, a plain
/// HTTP request gets no answer, and a gateway given a bad certificate names `api_tls` and leaves no
/// state behind.
#[test]
fn the_api_over_tls() {
    let f = Fixture::new();
    let d = f.path();
    // No origin is needed: the gateway keeps polling an address that refuses.
    let url = "http://127.0.0.1:9/".to_string();
    let openssl = Command::new("openssl")
        .current_dir(d)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "api.key",
            "-out",
            "api.crt",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let (gw, _) = start_gateway(
        &f,
        &url,
        "api_tls = { cert = \"api.crt\", key = \"api.key\" }\n",
    );
    assert!(gw.line("api on ").starts_with("api on https://"));
    let api = api_of(&gw);
    let admin = std::fs::read_to_string(d.join("gateway-state/admin.token")).expect("admin token");
    let out = Command::new(BIN)
        .current_dir(d)
        .args(["token", "list", "--ca-cert", "api.crt"])
        .args(["--api", &format!("https://{api}")])
        .env("WARDSWARM_TOKEN", admin.trim())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
    // Without the trust anchor the CLI refuses the certificate.
    let out = Command::new(BIN)
        .current_dir(d)
        .args(["token", "list", "--api", &format!("https://{api}")])
        .env("WARDSWARM_TOKEN", admin.trim())
        .output()
        .expect("run");
    assert!(!out.status.success());
    // Plain HTTP to the TLS port: no HTTP answer.
    let mut s = std::net::TcpStream::connect(api).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    use std::io::{Read, Write};
    let _ = write!(s, "GET /api/v1/openapi.json HTTP/1.0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/"), "plain HTTP was answered");
    drop(gw);

    // A bad certificate: a clear error naming api_tls, and no state folder.
    let g = tempfile::tempdir_in(d).expect("tmp");
    std::fs::write(g.path().join("bad.crt"), "not a certificate").expect("write");
    let cfg = std::fs::read_to_string(d.join("gateway.toml"))
        .expect("config")
        .replace("\"api.crt\"", &format!("{:?}", g.path().join("bad.crt")))
        .replace(
            "gateway-state",
            &g.path().join("state").display().to_string(),
        );
    std::fs::write(g.path().join("gateway.toml"), cfg).expect("config");
    let out = Command::new(BIN)
        .current_dir(d)
        .args(["seeder", "--config"])
        .arg(g.path().join("gateway.toml"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("api_tls"), "{err}");
    assert!(!g.path().join("state").exists(), "a state folder was left");
}

/// `wardswarm demo --rollout`: a canary, 25 %, the rest; the 25 % wave pauses at its error
/// threshold (one device's health check fails) until the demo resumes it, and the device in
/// clinical use is gated until its lease is released.
#[test]
fn the_demo_rolls_out_in_waves_with_an_error_pause_and_a_gated_device() {
    let v = demo_json(&["--rollout", "--devices", "5", "--size", "2MiB"]);
    let r = &v["rollout"];
    assert_eq!(r["state"], "finished", "{r}");
    let groups: Vec<(&str, &str)> = r["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap_or(""),
                g["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("canary", "finished"),
            ("quarter", "error"),
            ("rest", "finished")
        ]
    );
    assert_eq!(r["groups"][0]["statuses"]["finished"], 1);
    assert_eq!(r["groups"][1]["statuses"]["error"], 1);
    assert_eq!(r["groups"][2]["statuses"]["finished"], 3);
    assert_eq!(r["groups"][2]["statuses"]["gated"], 0);
    let events = r["events"].to_string();
    assert!(
        events.contains("error threshold") && events.contains("resumed"),
        "{events}"
    );
    let devices = v["devices"].as_array().expect("devices");
    let dev = |id: &str| devices.iter().find(|d| d["id"] == id).expect("device");
    assert_eq!(dev("pump-02")["result"], "rolled_back");
    assert_eq!(dev("pump-02")["group"], "quarter");
    assert_eq!(dev("pump-01")["group"], "canary");
    let gated = dev("pump-05");
    assert_eq!(
        (gated["group"].as_str(), gated["result"].as_str()),
        (Some("rest"), Some("committed"))
    );
    assert!(
        gated["gated_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{gated}"
    );
    assert!(
        gated["gated_reasons"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "in_use")),
        "{gated}"
    );
    assert!(devices
        .iter()
        .all(|d| d["gated_seconds"].is_number() && d["group"].is_string()));
}

/// The README's example rollout spec is one the gateway takes.
#[test]
fn the_example_rollout_spec_is_valid() {
    let text = example("rollout.json");
    let spec: wardswarm_node::rollout::RolloutSpec =
        serde_json::from_str(&text).expect("docs/examples/rollout.json is a rollout spec");
    let w = spec.window.clone().expect("a window");
    wardswarm_node::rollout::Window::new(w).expect("a valid window");
    let devices: Vec<wardswarm_node::rollout::DeviceInfo> = (1..=8)
        .map(|i| wardswarm_node::rollout::DeviceInfo {
            id: format!("pump-{i}"),
            product: Some("infusion-pump".into()),
            hardware: "pump-rev-c".into(),
            labels: if i == 3 {
                vec!["icu-3".into(), "bed-12".into()]
            } else {
                vec!["icu-3".into()]
            },
        })
        .collect();
    let r = wardswarm_node::rollout::Rollout::new(1, spec, "alice", &devices, true)
        .expect("the gateway would create it");
    let sizes: Vec<usize> = r.groups.iter().map(|g| g.devices.len()).collect();
    assert_eq!(
        sizes,
        [1, 2, 5],
        "canary by label, a quarter of the rest, the rest"
    );
}
