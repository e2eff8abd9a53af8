//! The daemons: `wardswarm node --config device.toml` (a ward member; with an `[agent]` section, the
//! device agent) and `wardswarm seeder --config gateway.toml` (the ward gateway). Both print their
//! peer id and full listen multiaddrs, log with `tracing` (RUST_LOG), and stop cleanly on SIGTERM.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use wardswarm_node::{
    agent::{
        runtime::{set_test_fault, AgentConfig},
        slots::{BlockSlots, BootCommands, FileSlots, Slots},
    },
    device::{self, Device},
    membership::Certificate,
    net::{Config, Handle},
    root::TrustRoot,
    signed::DocKind,
    units::CapFile,
    SecretKey,
};
use wardswarm_seeder::{Gateway, GatewayConfig};

/// The node's configuration file (TOML). See `docs/examples/device.toml` and `node.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// The ward this node belongs to.
    pub ward: String,
    /// ed25519 key file (PKCS#8 PEM); the libp2p peer id derives from it.
    pub key: PathBuf,
    /// Membership certificate for this node's peer id.
    pub certificate: PathBuf,
    /// The trust root.
    pub trust_root: PathBuf,
    /// Store folder.
    pub store: PathBuf,
    /// Listen addresses.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Peers to dial (with /p2p/<peer id>).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// mDNS discovery on the ward LAN.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// Connections the node opens to ward members it discovers, until it has this many
    /// (default 8; inbound ones are accepted beyond it). See `docs/swarm.md`, Peer exchange.
    #[serde(default = "target_peers")]
    pub target_peers: usize,
    /// Upload cap.
    #[serde(default)]
    pub upload: CapFile,
    /// Download cap.
    #[serde(default)]
    pub download: CapFile,
    /// The device agent; without it the node only seeds and relays.
    #[serde(default)]
    pub agent: Option<AgentFile>,
    /// Where the node keeps the ward's newest certificate revocation list (default
    /// `<agent.state>/revocations.json`; without an agent, kept in memory only).
    #[serde(default)]
    pub revocations: Option<PathBuf>,
}

/// The `[agent]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// State folder (state.json, audit.jsonl).
    pub state: PathBuf,
    /// Hardware id.
    pub hardware: String,
    /// Labels rollouts can select this device by, e.g. `["icu-3", "bed-12"]`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Product name (releases for other products are refused).
    #[serde(default)]
    pub product: Option<String>,
    /// Version name of the provisioned image.
    #[serde(default = "factory")]
    pub factory_version: String,
    /// Release counter of the provisioned image (initial anti-rollback floor).
    #[serde(default)]
    pub factory_counter: u64,
    /// Health check command, run by `sh -c` in the new slot after the reboot.
    #[serde(default)]
    pub health_check: Option<String>,
    /// Health check time limit.
    #[serde(default = "two_minutes", with = "humantime_serde_compat")]
    pub health_timeout: Duration,
    /// Status report interval.
    #[serde(default = "five_seconds", with = "humantime_serde_compat")]
    pub report_interval: Duration,
    /// The slots.
    pub slots: SlotsFile,
    /// The clinical-use gate, asked before install, reboot and commit.
    #[serde(default)]
    pub gate: Option<GateFile>,
    /// `directed` (the default): fetch and install only what the ward's gateway directs in a
    /// rollout. `automatic`: every verified release, as soon as the gate allows (labs, demos).
    #[serde(default)]
    pub install: wardswarm_node::rollout::InstallMode,
    /// Test-only fault injection: refused unless this build has the `test-faults` feature and
    /// `WARDSWARM_TEST_FAULTS=1` is set (see [`agent_fault`]).
    #[serde(default)]
    pub fault: Option<String>,
}

/// The API's TLS files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsFile {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[agent.gate]`: a lease file a bedside application holds, or a command (exit 0 free, 1 in use).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    /// The lease file.
    #[serde(default)]
    pub lease: Option<PathBuf>,
    /// The command, run by `sh -c`.
    #[serde(default)]
    pub command: Option<String>,
}

impl GateFile {
    fn gate(&self) -> Result<wardswarm_node::agent::gate::Gate> {
        use wardswarm_node::agent::gate::Gate;
        match (&self.lease, &self.command) {
            (Some(l), None) => Ok(Gate::Lease(l.clone())),
            (None, Some(c)) => Ok(Gate::Command(c.clone())),
            _ => bail!("[agent.gate] needs exactly one of lease = \"FILE\" or command = \"...\""),
        }
    }
}

/// The environment variable that lets a build with test faults accept `agent.fault`.
pub const TEST_FAULTS_ENV: &str = "WARDSWARM_TEST_FAULTS";

/// Checks the `agent.fault` key. A production build has no faults and refuses the key; a build with
/// test faults accepts it only with `WARDSWARM_TEST_FAULTS=1`, so a test config copied to a device
/// fails loudly.
fn agent_fault(a: &AgentFile, cfg: &mut AgentConfig) -> Result<()> {
    let Some(name) = &a.fault else {
        return Ok(());
    };
    if std::env::var(TEST_FAULTS_ENV).as_deref() != Ok("1") {
        bail!("agent.fault = {name:?}: fault injection is for tests only; remove the `fault` key");
    }
    set_test_fault(cfg, name).with_context(|| format!("agent.fault = {name:?}"))
}

/// `[agent.slots]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum SlotsFile {
    /// Image files and a boot-state file in a folder.
    File {
        /// The folder (slot-a.img, slot-b.img, boot.json).
        dir: PathBuf,
    },
    /// Block devices and bootloader commands.
    Block {
        /// Slot A's device.
        a: PathBuf,
        /// Slot B's device.
        b: PathBuf,
        /// Bootloader commands.
        commands: BootCommands,
    },
}

/// Durations as humans write them ("5s", "2m").
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/0".into()]
}
fn yes() -> bool {
    true
}
fn factory() -> String {
    "factory".into()
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}

/// The gateway's configuration file (TOML). See `docs/examples/gateway.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// The ward.
    pub ward: String,
    /// Identity key.
    pub key: PathBuf,
    /// Membership certificate (role gateway).
    pub certificate: PathBuf,
    /// The trust root.
    pub trust_root: PathBuf,
    /// State folder (store, database).
    pub state: PathBuf,
    /// The origin's base URL (where index.json is).
    pub origin: String,
    /// Origin poll interval.
    #[serde(default = "sixty_seconds", with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// HTTP API address.
    #[serde(default)]
    pub api_listen: Option<SocketAddr>,
    /// The read routes answer without a token.
    #[serde(default)]
    pub api_open_reads: bool,
    /// Serve the API over TLS: `api_tls = { cert = "api.crt", key = "api.key" }` (PEM).
    #[serde(default)]
    pub api_tls: Option<ApiTlsFile>,
    /// Swarm listen addresses.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Peers to dial.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// mDNS.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// Connections the gateway opens to members it discovers (default 8); every device dials its
    /// gateway anyway.
    #[serde(default = "target_peers")]
    pub target_peers: usize,
    /// Download the newest full image before any device asks.
    #[serde(default)]
    pub prefetch: bool,
    /// Bytes per HTTP range request.
    #[serde(default)]
    pub range_bytes: Option<String>,
    /// WAN download cap and schedule.
    #[serde(default)]
    pub wan: CapFile,
    /// LAN upload cap (to the ward).
    #[serde(default)]
    pub upload: CapFile,
    /// Super-seeding: show each device only groups no device has yet (default on).
    #[serde(default = "yes")]
    pub super_seed: bool,
    /// The ward's certificate revocation list (default `<state>/revocations.json`). Replace it with
    /// a newer list (`wardswarm cert revoke`) and the gateway puts it in force within seconds.
    #[serde(default)]
    pub revocations: Option<PathBuf>,
    /// Most devices of the ward rebooting into a new release at once (default 2).
    #[serde(default = "two")]
    pub reboot_limit: usize,
    /// The ward's maintenance window, for rollouts that set none:
    /// `{ schedule = "0 22 * * 1-5", duration = "6h", timezone = "Europe/Berlin" }`.
    #[serde(default)]
    pub window: Option<wardswarm_node::rollout::WindowSpec>,
}

fn two() -> usize {
    2
}

fn target_peers() -> usize {
    wardswarm_node::net::config::defaults::TARGET_PEERS
}

fn read_doc(p: &Path, max: usize) -> Result<Vec<u8>> {
    match wardswarm_node::fsutil::read_capped(p, max as u64)
        .with_context(|| format!("reading {}", p.display()))?
    {
        Ok(b) => Ok(b),
        Err(len) => bail!("{}: {len} bytes is over the {max}-byte cap", p.display()),
    }
}

fn parse_addrs(v: &[String]) -> Result<Vec<libp2p::Multiaddr>> {
    v.iter()
        .map(|a| a.parse().with_context(|| format!("address {a:?}")))
        .collect()
}

/// Identity, certificate and root, checked against each other.
fn identity(
    key: &Path,
    cert: &Path,
    root: &Path,
    ward: &str,
) -> Result<(libp2p::identity::Keypair, Certificate, TrustRoot)> {
    let key = SecretKey::read(key)?;
    let r = TrustRoot::parse_self_signed(&read_doc(root, DocKind::Root.max_bytes())?)
        .with_context(|| root.display().to_string())?;
    let c = Certificate::parse(&read_doc(cert, DocKind::Membership.max_bytes())?)
        .with_context(|| cert.display().to_string())?;
    let keypair = key.to_libp2p();
    let peer_id = keypair.public().to_peer_id();
    c.verify(
        &r,
        &peer_id.to_string(),
        ward,
        wardswarm_node::Timestamp::now(),
    )
    .with_context(|| format!("{} does not admit this node", cert.display()))?;
    Ok((keypair, c, r))
}

fn read_config<T: serde::de::DeserializeOwned>(config: &Path, what: &str) -> Result<T> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid {what} configuration", config.display()))
}

async fn print_addrs(handle: &Handle) -> Result<()> {
    println!("peer id {}", handle.peer_id());
    for _ in 0..100 {
        if !handle.listen_addrs().await?.is_empty() {
            // A wildcard listener reports one address per interface, in quick succession.
            tokio::time::sleep(Duration::from_millis(100)).await;
            for a in handle.listen_addrs().await? {
                println!("listening on {a}");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the node did not start listening within 2 s")
}

async fn terminated() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn slots(s: &SlotsFile) -> Arc<dyn Slots> {
    match s {
        SlotsFile::File { dir } => Arc::new(FileSlots::new(dir)),
        SlotsFile::Block { a, b, commands } => Arc::new(BlockSlots {
            a: a.clone(),
            b: b.clone(),
            commands: commands.clone(),
        }),
    }
}

fn agent_config(a: &AgentFile) -> Result<AgentConfig> {
    let mut acfg = AgentConfig::new(&a.state, &a.hardware);
    acfg.product = a.product.clone();
    acfg.labels = a.labels.clone();
    acfg.install = a.install;
    acfg.gate = a.gate.as_ref().map(GateFile::gate).transpose()?;
    acfg.factory_version = a.factory_version.clone();
    acfg.factory_counter = a.factory_counter;
    acfg.health_check = a.health_check.clone();
    acfg.health_timeout = a.health_timeout;
    acfg.report_interval = a.report_interval;
    agent_fault(a, &mut acfg)?;
    Ok(acfg)
}

/// Runs the node (and its agent) until SIGTERM or Ctrl-C.
pub fn run_node(config: PathBuf) -> Result<()> {
    let f: NodeFile = read_config(&config, "node")?;
    let agent = f
        .agent
        .as_ref()
        .map(|a| Ok::<_, anyhow::Error>((agent_config(a)?, slots(&a.slots))))
        .transpose()
        .with_context(|| format!("{}: [agent]", config.display()))?;
    let (keypair, cert, root) = identity(&f.key, &f.certificate, &f.trust_root, &f.ward)?;
    let cfg = Config {
        listen: parse_addrs(&f.listen)?,
        bootstrap: parse_addrs(&f.bootstrap)?,
        mdns: f.mdns,
        target_peers: f.target_peers,
        ward: f.ward.clone(),
        upload: f.upload.schedule().map_err(anyhow::Error::msg)?,
        download: f.download.schedule().map_err(anyhow::Error::msg)?,
        revocations_file: f.revocations.clone().or_else(|| {
            f.agent
                .as_ref()
                .map(|a| a.state.join(wardswarm_seeder::gateway::REVOCATIONS_FILE))
        }),
        ..Config::default()
    };
    runtime()?.block_on(async move {
        let mut dev = Device::start(device::Spec {
            store: f.store.clone(),
            node: cfg,
            keypair,
            cert,
            root,
            agent,
        })?;
        print_addrs(&dev.node).await?;
        let failed = tokio::select! {
            r = terminated() => { r?; None }
            r = dev.agent_stopped() => Some(r),
        };
        tracing::info!("stopping");
        let stopped = dev.stop().await;
        println!("stopped");
        match failed {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(stopped?),
        }
    })
}

/// Runs the ward gateway until SIGTERM or Ctrl-C.
pub fn run_seeder(config: PathBuf) -> Result<()> {
    let f: GatewayFile = read_config(&config, "gateway")?;
    let (keypair, cert, root) = identity(&f.key, &f.certificate, &f.trust_root, &f.ward)?;
    let mut origin = f.origin.clone();
    if !origin.ends_with('/') {
        origin.push('/');
    }
    let origin: reqwest_url::Url = origin
        .parse()
        .with_context(|| format!("origin {:?} is not a URL", f.origin))?;
    let node = Config {
        listen: parse_addrs(&f.listen)?,
        bootstrap: parse_addrs(&f.bootstrap)?,
        mdns: f.mdns,
        target_peers: f.target_peers,
        ward: f.ward.clone(),
        upload: f.upload.schedule().map_err(anyhow::Error::msg)?,
        revocations_file: f.revocations.clone(),
        ..Config::default()
    };
    let mut cfg = GatewayConfig::new(origin, &f.state, node);
    cfg.poll_interval = f.poll_interval;
    cfg.api_listen = f.api_listen;
    cfg.api_open_reads = f.api_open_reads;
    cfg.api_tls = f
        .api_tls
        .as_ref()
        .map(|t| wardswarm_seeder::gateway::ApiTls {
            cert: t.cert.clone(),
            key: t.key.clone(),
        });
    cfg.prefetch = f.prefetch;
    cfg.super_seed = f.super_seed;
    if f.reboot_limit == 0 {
        bail!("{}: reboot_limit must be at least 1", config.display());
    }
    if let Some(w) = &f.window {
        wardswarm_node::rollout::Window::new(w.clone())
            .with_context(|| format!("{}: window", config.display()))?;
    }
    cfg.rollouts = wardswarm_node::rollout::WardPolicy {
        reboot_limit: f.reboot_limit,
        window: f.window.clone(),
    };
    cfg.wan = f.wan.schedule().map_err(anyhow::Error::msg)?;
    if let Some(r) = &f.range_bytes {
        cfg.range_bytes = wardswarm_node::units::parse_size(r).map_err(anyhow::Error::msg)?;
    }
    runtime()?.block_on(async move {
        let gw = Gateway::start(cfg, keypair, &cert, root).await?;
        print_addrs(gw.node()).await?;
        if let Some(a) = gw.api_addr() {
            println!("api on {}://{a}/api/v1/devices", gw.api_scheme());
        }
        terminated().await?;
        tracing::info!("stopping");
        gw.shutdown().await;
        println!("stopped");
        Ok(())
    })
}

mod reqwest_url {
    pub use wardswarm_seeder::gateway::Url;
}
