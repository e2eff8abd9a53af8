//! Starting a device, the one way the daemon (`wardswarm node`), the demo and the live simulation
//! engine all do it: open the store, spawn the swarm node, and, for a device with an agent, create the
//! agent over its A/B slots and run its boot loop (a file-slots "reboot" starts the next boot at once;
//! a real reboot never returns).

use std::{path::PathBuf, sync::Arc, time::Duration};

use libp2p::identity::Keypair;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    agent::{
        runtime::{Agent, AgentConfig, AgentError, Exit, Report},
        slots::Slots,
    },
    membership::Certificate,
    net::{self, Handle, NodeError},
    root::TrustRoot,
    store::{Store, StoreError},
};

/// What a device runs.
#[derive(Debug)]
pub struct Spec {
    /// The verified chunk store's folder.
    pub store: PathBuf,
    /// The swarm node's settings.
    pub node: net::Config,
    /// The node's identity (its peer id is in `cert`).
    pub keypair: Keypair,
    /// Its ward membership certificate.
    pub cert: Certificate,
    /// The trust root.
    pub root: TrustRoot,
    /// The update agent and its slots; `None` for a plain member that only seeds and relays.
    pub agent: Option<(AgentConfig, Arc<dyn Slots>)>,
}

/// Starting or running a device failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Store(StoreError),
    #[error("{0}")]
    Node(NodeError),
    #[error("the device agent failed: {0}")]
    Agent(AgentError),
    #[error("the device agent panicked: {0}")]
    Panicked(String),
}

/// A running device.
#[derive(Debug)]
pub struct Device {
    /// Its swarm node.
    pub node: Handle,
    /// Its store.
    pub store: Arc<Store>,
    /// The agent's status, if it has an agent.
    pub status: Option<watch::Receiver<Report>>,
    stop: CancellationToken,
    agent: Option<JoinHandle<Result<(), AgentError>>>,
    node_task: JoinHandle<()>,
}

/// How long a stopping node may take to sync its store and close.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Device {
    /// Starts the device. Call it inside a tokio runtime.
    pub fn start(spec: Spec) -> Result<Self, DeviceError> {
        let store = Arc::new(Store::open(&spec.store).map_err(DeviceError::Store)?);
        let (node, node_task) = net::spawn(
            spec.node,
            spec.keypair,
            &spec.cert,
            spec.root.clone(),
            store.clone(),
        )
        .map_err(DeviceError::Node)?;
        let stop = CancellationToken::new();
        let (status, agent) = match spec.agent {
            None => (None, None),
            Some((cfg, slots)) => {
                let (agent, status) =
                    match Agent::new(cfg, slots, store.clone(), node.clone(), spec.root) {
                        Ok(x) => x,
                        Err(e) => {
                            node_task.abort();
                            return Err(DeviceError::Agent(e));
                        }
                    };
                let task = tokio::spawn(boot_loop(agent, stop.clone()));
                (Some(status), Some(task))
            }
        };
        Ok(Self {
            node,
            store,
            status,
            stop,
            agent,
            node_task,
        })
    }

    /// Resolves when the agent stops by itself (it failed or panicked); never for a device without
    /// an agent or whose agent runs on.
    pub async fn agent_stopped(&mut self) -> Result<(), DeviceError> {
        match self.agent.as_mut() {
            None => std::future::pending().await,
            Some(t) => {
                let r = t.await;
                self.agent = None;
                flatten(r)
            }
        }
    }

    /// Stops the agent and the node (the store and slots stay as they are, as after a power cut
    /// that fsync ordering survives) and waits for both, bounded.
    pub async fn stop(mut self) -> Result<(), DeviceError> {
        self.stop.cancel();
        let agent = match self.agent.take() {
            Some(t) => tokio::time::timeout(STOP_TIMEOUT, t)
                .await
                .map_or(Ok(()), flatten),
            None => Ok(()),
        };
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.node.shutdown()).await;
        let _ = tokio::time::timeout(STOP_TIMEOUT, &mut self.node_task).await;
        agent
    }
}

fn flatten(r: Result<Result<(), AgentError>, tokio::task::JoinError>) -> Result<(), DeviceError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DeviceError::Agent(e)),
        Err(e) => Err(DeviceError::Panicked(e.to_string())),
    }
}

async fn boot_loop(mut agent: Agent, stop: CancellationToken) -> Result<(), AgentError> {
    loop {
        match agent.run_boot(&stop).await? {
            Exit::Reboot => {
                tracing::info!("simulated reboot (file slots): restarting the agent");
            }
            Exit::Stopped => return Ok(()),
        }
    }
}
