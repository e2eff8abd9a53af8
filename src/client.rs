//! `wardswarm rollout …` and `wardswarm token …`: the gateway's control-plane API from the shell
//! (`docs/rollouts.md`). The token comes from `WARDSWARM_TOKEN` or `--token-file`; `--json` prints
//! the gateway's answer as it came.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the API is and who calls it.
#[derive(Args, Debug, Clone)]
pub(crate) struct Api {
    /// The gateway's API base URL (else `WARDSWARM_API`, else http://127.0.0.1:8080).
    #[arg(long)]
    api: Option<String>,
    /// A file holding the API token (else `WARDSWARM_TOKEN`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the gateway's JSON answer.
    #[arg(long)]
    json: bool,
    /// Trust this CA (or self-signed) certificate for an `https://` API, PEM.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RolloutCmd {
    /// Create a rollout from a JSON spec file (see docs/rollouts.md); it waits for approval.
    Create {
        #[command(flatten)]
        api: Api,
        /// The spec: name, release, action, groups, error, window.
        #[arg(long)]
        file: PathBuf,
    },
    /// Every rollout, one line each.
    List {
        #[command(flatten)]
        api: Api,
    },
    /// One rollout: per group, its state and how many devices are in each status.
    Show {
        #[command(flatten)]
        api: Api,
        id: u64,
    },
    /// Approve (not with the token that created it).
    Approve(Act),
    /// Deny (not with the token that created it).
    Deny(Act),
    /// Start a ready rollout.
    Start(Act),
    /// Hold it: devices that have not started installing wait.
    Pause(Act),
    /// Go on after a pause, a QA hold or an error pause.
    Resume(Act),
    /// Stop it: devices not done are canceled.
    Stop(Act),
    /// Override one device's clinical-use gate in this rollout (admin token; audited, with the
    /// remark saying why).
    Override {
        #[command(flatten)]
        api: Api,
        /// The rollout.
        id: u64,
        /// The device whose gate is overridden.
        #[arg(long)]
        device: String,
        /// Why (required; it goes to the gateway's and the device's audit logs).
        #[arg(long)]
        remark: String,
    },
}

/// An action on one rollout.
#[derive(Args, Debug)]
pub(crate) struct Act {
    #[command(flatten)]
    api: Api,
    /// The rollout.
    id: u64,
    /// A remark for the audit log (approve, deny, pause).
    #[arg(long, default_value = "")]
    remark: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Make a token (admin); prints it once.
    Create {
        #[command(flatten)]
        api: Api,
        /// Who or what it is for.
        #[arg(long)]
        name: String,
        /// viewer, operator, approver or admin.
        #[arg(long)]
        role: String,
    },
    /// Every token, without secrets (admin).
    List {
        #[command(flatten)]
        api: Api,
    },
    /// Revoke a token by id (admin).
    Revoke {
        #[command(flatten)]
        api: Api,
        id: String,
    },
}

fn token(api: &Api) -> Result<String> {
    if let Some(f) = &api.token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading the token file {}", f.display()))?;
        return Ok(t.trim().to_string());
    }
    match std::env::var("WARDSWARM_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!("no API token: set WARDSWARM_TOKEN or pass --token-file (the first admin token is <gateway state>/admin.token)"),
    }
}

/// One call; a non-2xx answer is an error naming the status and the gateway's message.
fn call(api: &Api, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
    let token = token(api)?;
    let base = api
        .api
        .clone()
        .or_else(|| std::env::var("WARDSWARM_API").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = &api.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build()?;
        let mut req = client.request(method, &url).bearer_auth(&token);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {url} (is the gateway's api_listen there?)"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v["error"].as_str().unwrap_or(text.as_str());
            bail!("the gateway answered {}: {msg}", status.as_u16());
        }
        Ok(v)
    })
}

fn counts(g: &Value) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(devs) = g["devices"].as_object() {
        for s in devs.values().filter_map(Value::as_str) {
            *m.entry(s.to_string()).or_default() += 1;
        }
    }
    if m.is_empty() {
        return "no devices".into();
    }
    m.iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn line(r: &Value) -> String {
    format!(
        "{:>4}  {:<22} {:<10} {}",
        r["id"],
        r["state"].as_str().unwrap_or("?"),
        r["spec"]["release"].as_str().unwrap_or("?"),
        r["spec"]["name"].as_str().unwrap_or("")
    )
}

fn print(api: &Api, v: &Value, human: impl FnOnce(&Value)) -> Result<()> {
    if api.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        human(v);
    }
    Ok(())
}

fn show(r: &Value) {
    println!("{}", line(r));
    if let Some(p) = r["paused_reason"].as_str() {
        println!("      paused: {p}");
    }
    for g in r["groups"].as_array().into_iter().flatten() {
        println!(
            "      {:<16} {:<10} {}",
            g["spec"]["name"].as_str().unwrap_or("?"),
            g["state"].as_str().unwrap_or("?"),
            counts(g)
        );
    }
}

pub(crate) fn rollout(c: RolloutCmd) -> Result<()> {
    use reqwest::Method;
    match c {
        RolloutCmd::Create { api, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let spec: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let v = call(&api, Method::POST, "/api/v1/rollouts", Some(spec))?;
            print(&api, &v, show)
        }
        RolloutCmd::List { api } => {
            let v = call(&api, Method::GET, "/api/v1/rollouts", None)?;
            print(&api, &v, |v| {
                for r in v.as_array().into_iter().flatten() {
                    println!("{}", line(r));
                }
            })
        }
        RolloutCmd::Show { api, id } => {
            let v = call(&api, Method::GET, &format!("/api/v1/rollouts/{id}"), None)?;
            print(&api, &v, show)
        }
        RolloutCmd::Approve(a) => act(a, "approve"),
        RolloutCmd::Deny(a) => act(a, "deny"),
        RolloutCmd::Start(a) => act(a, "start"),
        RolloutCmd::Pause(a) => act(a, "pause"),
        RolloutCmd::Resume(a) => act(a, "resume"),
        RolloutCmd::Stop(a) => act(a, "stop"),
        RolloutCmd::Override {
            api,
            id,
            device,
            remark,
        } => {
            let body = serde_json::json!({ "device": device, "remark": remark });
            let v = call(
                &api,
                Method::POST,
                &format!("/api/v1/rollouts/{id}/override"),
                Some(body),
            )?;
            print(&api, &v, show)
        }
    }
}

fn act(a: Act, action: &str) -> Result<()> {
    let body = serde_json::json!({ "remark": a.remark });
    let v = call(
        &a.api,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{}/{action}", a.id),
        Some(body),
    )?;
    print(&a.api, &v, show)
}

pub(crate) fn token_cmd(c: TokenCmd) -> Result<()> {
    use reqwest::Method;
    match c {
        TokenCmd::Create { api, name, role } => {
            let v = call(
                &api,
                Method::POST,
                "/api/v1/tokens",
                Some(serde_json::json!({"name": name, "role": role})),
            )?;
            print(&api, &v, |v| {
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!(
                    "token {} for {} ({}): shown once, keep it safe",
                    v["id"].as_str().unwrap_or("?"),
                    v["name"].as_str().unwrap_or("?"),
                    v["role"].as_str().unwrap_or("?")
                );
            })
        }
        TokenCmd::List { api } => {
            let v = call(&api, Method::GET, "/api/v1/tokens", None)?;
            print(&api, &v, |v| {
                for t in v.as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<9} {:<24} {}",
                        t["id"].as_str().unwrap_or("?"),
                        t["role"].as_str().unwrap_or("?"),
                        t["name"].as_str().unwrap_or("?"),
                        if t["revoked"] == true { "revoked" } else { "" }
                    );
                }
            })
        }
        TokenCmd::Revoke { api, id } => {
            call(&api, Method::DELETE, &format!("/api/v1/tokens/{id}"), None)?;
            println!("revoked token {id}");
            Ok(())
        }
    }
}
