//! The agent's settings ([`AgentConfig`]) and its test-only faults.

use std::{path::PathBuf, time::Duration};

#[cfg(feature = "test-faults")]
use serde::{Deserialize, Serialize};

use super::directed::Clock;
use crate::rollout::InstallMode;

/// Test-only fault injection (feature `test-faults`; never in a production build).
#[cfg(feature = "test-faults")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentFault {
    /// Halfway through writing the slot, create `install-paused` in the state folder and block, so a
    /// test can kill the process mid-install at a known point.
    PauseInstall,
}

/// A named test fault could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("this build has no test faults (they compile only with the `test-faults` feature)")]
    NotCompiled,
    #[error("{0:?} is not a test fault of this build (known: pause-install)")]
    Unknown(String),
}

/// Sets the test fault named `name` (as in a config file: `pause-install`). A production build
/// has none and always refuses.
pub fn set_test_fault(cfg: &mut AgentConfig, name: &str) -> Result<(), FaultError> {
    #[cfg(feature = "test-faults")]
    {
        cfg.fault = Some(
            serde_json::from_value(serde_json::Value::String(name.into()))
                .map_err(|_| FaultError::Unknown(name.into()))?,
        );
        Ok(())
    }
    #[cfg(not(feature = "test-faults"))]
    {
        let _ = (cfg, name);
        Err(FaultError::NotCompiled)
    }
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// State folder: `state.json`, `audit.jsonl`.
    pub dir: PathBuf,
    /// This device's hardware id (must be in a release's hardware list).
    pub hardware: String,
    /// The product this device runs (`None`: any).
    pub product: Option<String>,
    /// Labels rollouts select devices by (`labels = ["icu-3", "bed-12"]`), reported to the gateway.
    pub labels: Vec<String>,
    /// Version name and counter of the provisioned (factory) image, used on first start only.
    pub factory_version: String,
    /// Counter of the factory image: the initial anti-rollback floor.
    pub factory_counter: u64,
    /// Shell command run in the new slot after the reboot; exit 0 commits.
    pub health_check: Option<String>,
    /// Health check time limit; running over counts as a failure.
    pub health_timeout: Duration,
    /// How often to report status to the gateway while nothing changes.
    pub report_interval: Duration,
    /// The clinical-use gate, asked before install, reboot and commit (`None`: always free).
    pub gate: Option<super::gate::Gate>,
    /// Only what the gateway directs (the default), or every verified release.
    pub install: InstallMode,
    /// The clock windows and directive expiries are judged by.
    pub clock: Clock,
    /// Test-only fault.
    #[cfg(feature = "test-faults")]
    pub fault: Option<AgentFault>,
}

impl AgentConfig {
    /// Defaults for everything but the folder and hardware id.
    pub fn new(dir: impl Into<PathBuf>, hardware: &str) -> Self {
        Self {
            dir: dir.into(),
            hardware: hardware.into(),
            product: None,
            labels: vec![],
            factory_version: "factory".into(),
            factory_counter: 0,
            health_check: None,
            health_timeout: Duration::from_secs(60),
            report_interval: Duration::from_secs(5),
            gate: None,
            install: InstallMode::Directed,
            clock: Clock::system(),
            #[cfg(feature = "test-faults")]
            fault: None,
        }
    }
}
