//! Helpers shared by the swarm tests: a ward (trust root, membership key, temp folder) whose members
//! run real libp2p nodes on loopback.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use libp2p::{identity::Keypair, Multiaddr};
use wardswarm_node::{
    membership::{Certificate, Role},
    net::{self as node, Config, Event, Handle},
    outboard,
    root::TrustRoot,
    store::Store,
    testkit, Hash, SecretKey, Timestamp,
};

pub const WARD: &str = "icu-3";
pub const T: Duration = Duration::from_secs(60);

pub struct Ward {
    pub root: TrustRoot,
    pub membership: SecretKey,
    pub dir: tempfile::TempDir,
}

pub fn ward() -> Ward {
    let keys = testkit::TestKeys::default();
    let root = keys.root(Timestamp::now(), Duration::from_secs(86_400));
    Ward {
        root,
        membership: keys.membership,
        dir: tempfile::tempdir().expect("tmp"),
    }
}

pub fn data(len: usize, seed: u64) -> Vec<u8> {
    testkit::bytes(len, seed)
}

pub struct Member {
    pub handle: Handle,
    pub store: Arc<Store>,
    pub _join: tokio::task::JoinHandle<()>,
    pub store_dir: std::path::PathBuf,
    pub key: Keypair,
}

impl Ward {
    pub fn cert(&self, key: &Keypair, device: &str, role: Role) -> Certificate {
        let expires = Timestamp::now().saturating_add(Duration::from_secs(3600));
        Certificate::issue(
            WARD,
            device,
            role,
            &key.public().to_peer_id().to_string(),
            expires,
            std::slice::from_ref(&self.membership),
        )
        .expect("cert")
    }

    pub fn config(&self, bootstrap: Vec<Multiaddr>) -> Config {
        Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
            bootstrap,
            mdns: false,
            ward: WARD.into(),
            admission_timeout: Duration::from_secs(2),
            ..Config::default()
        }
    }

    pub async fn start(&self, name: &str, role: Role, cfg: Config, key: Option<Keypair>) -> Member {
        let key = key.unwrap_or_else(Keypair::generate_ed25519);
        let store_dir = self.dir.path().join(name);
        let store = Arc::new(Store::open(&store_dir).expect("store"));
        let cert = self.cert(&key, name, role);
        let (handle, join) =
            node::spawn(cfg, key.clone(), &cert, self.root.clone(), store.clone()).expect("spawn");
        Member {
            handle,
            store,
            _join: join,
            store_dir,
            key,
        }
    }
}

pub async fn addr(h: &Handle) -> Multiaddr {
    tokio::time::timeout(T, async {
        loop {
            if let Some(a) = h.listen_addrs().await.expect("running").into_iter().next() {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("node listens")
}

/// A seed holding `bytes` as a complete artifact.
pub async fn seed(w: &Ward, name: &str, bytes: &[u8], cfg: Config) -> (Member, Hash) {
    let src = w.dir.path().join(format!("{name}-src"));
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("data"), bytes).expect("write");
    let ob = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(src.join("ob"))
        .expect("ob");
    let root = outboard::create(bytes, bytes.len() as u64, &ob).expect("outboard");
    let m = w.start(name, Role::Gateway, cfg, None).await;
    m.store
        .import(root, bytes.len() as u64, &src.join("data"), &src.join("ob"))
        .expect("import");
    m.handle.have_changed(root).await.expect("running");
    (m, root)
}

/// Waits for the first event `pick` accepts.
pub async fn until<R>(
    what: &str,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    mut pick: impl FnMut(Event) -> Option<R>,
) -> R {
    tokio::time::timeout(T, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(r) = pick(e) {
                        return r;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => panic!("the node stopped"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event in time: {what}"))
}
