//! `wardswarm node --config FILE`: run a ward swarm member (seeds its store, relays announcements).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use wardswarm_node::{
    membership::Certificate,
    net::node::{self, Config},
    root::TrustRoot,
    signed::DocKind,
    store::Store,
    SecretKey,
};


/// The node's configuration file (TOML). See `docs/examples/node.toml`.
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
    /// Upload cap.
    #[serde(default)]
    pub upload: CapFile,
    /// Download cap.
    #[serde(default)]
    pub download: CapFile,
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/0".into()]
}
fn yes() -> bool {
    true
}

pub use wardswarm_node::units::CapFile;

fn read_doc(p: &std::path::Path, max: usize) -> Result<Vec<u8>> {
    match wardswarm_node::fsutil::read_capped(p, max as u64)
        .with_context(|| format!("reading {}", p.display()))?
    {
        Ok(b) => Ok(b),
        Err(len) => bail!("{}: {len} bytes is over the {max}-byte cap", p.display()),
    }
}

/// Runs the node until SIGTERM or Ctrl-C.
pub fn run(config: PathBuf) -> Result<()> {
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let f: NodeFile = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid node configuration", config.display()))?;
    let key = SecretKey::read(&f.key)?;
    let root = TrustRoot::parse_self_signed(&read_doc(&f.trust_root, DocKind::Root.max_bytes())?)
        .with_context(|| f.trust_root.display().to_string())?;
    let cert = Certificate::parse(&read_doc(&f.certificate, DocKind::Membership.max_bytes())?)
        .with_context(|| f.certificate.display().to_string())?;
    let keypair = key.to_libp2p();
    let peer_id = keypair.public().to_peer_id();
    cert.verify(
        &root,
        &peer_id.to_string(),
        &f.ward,
        wardswarm_node::Timestamp::now(),
    )
    .with_context(|| format!("{} does not admit this node", f.certificate.display()))?;
    let parse_addrs = |v: &[String]| -> Result<Vec<libp2p::Multiaddr>> {
        v.iter()
            .map(|a| a.parse().with_context(|| format!("address {a:?}")))
            .collect()
    };
    let cfg = Config {
        listen: parse_addrs(&f.listen)?,
        bootstrap: parse_addrs(&f.bootstrap)?,
        mdns: f.mdns,
        ward: f.ward.clone(),
        upload: f.upload.schedule().map_err(anyhow::Error::msg)?,
        download: f.download.schedule().map_err(anyhow::Error::msg)?,
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = Arc::new(Store::open(&f.store)?);
        let (handle, join) = node::spawn(cfg, keypair, &cert, root, store)?;
        println!("peer id {peer_id}");
        // Print listen addresses as they come up (full multiaddrs).
        let mut printed = 0;
        for _ in 0..50 {
            let addrs = handle.listen_addrs().await?;
            for a in addrs.iter().skip(printed) {
                println!("listening on {a}");
            }
            printed = addrs.len();
            if printed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("stopping");
        handle.shutdown().await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
        println!("stopped");
        Ok::<_, anyhow::Error>(())
    })
}
