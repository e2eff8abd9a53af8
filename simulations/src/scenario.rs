//! The scenario format (TOML). Documented in `docs/simulations.md`; examples in
//! `simulations/scenarios/`.
//!
//! ```toml
//! name = "ward-50"
//! artifact = "32MiB"          # F: the artifact every device needs
//! wards = 1                   # identical wards, each with its own gateway
//! seed = 1
//!
//! [gateway]
//! wan = "10MB"                # WAN download cap, bytes per second
//! upload = "4MB"              # LAN upload cap
//!
//! [[devices]]                 # a group of devices; groups are numbered in order
//! count = 50
//! upload = "1MB"
//! download = "4MB"
//! installed = "old"           # "old": needs the artifact; "new": already holds it (and seeds)
//! join = "0s"                 # late joiners: when they come up
//! behaviour = "honest"        # or "corrupt" (serves flipped bytes), "stall", "non_member"
//!
//! [[events]]
//! kind = "crash"              # a device is killed (its store survives) ...
//! at = "10s"
//! device = 3
//! restart_after = "5s"        # ... and comes back
//! ```

use std::{path::Path, time::Duration};

use serde::Deserialize;
use wardswarm_node::units::{parse_rate, parse_size};

/// A scenario, validated and in numbers.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// F, bytes.
    pub artifact: u64,
    pub wards: usize,
    pub gateway: GatewaySpec,
    /// One-way LAN latency.
    pub latency: Duration,
    /// Every node also announces itself and browses with mDNS on the ward LAN (netns engine; the
    /// devices keep the gateway in `bootstrap`).
    pub mdns: bool,
    /// Devices of one ward, in order.
    pub devices: Vec<DeviceSpec>,
    pub events: Vec<Event>,
    pub clinical: Option<Clinical>,
    /// A rollout of the release over the ward (`[rollout]`; see [`crate::rollout`]).
    pub rollout: Option<crate::rollout::RolloutScenario>,
    /// Give up after this long (every engine).
    pub timeout: Duration,
}

/// The ward gateway.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// WAN download cap, bytes/s (`None`: unlimited).
    pub wan: Option<u64>,
    /// LAN upload cap, bytes/s.
    pub upload: Option<u64>,
}

/// How a device behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// A ward member that updates.
    #[default]
    Honest,
    /// A member that serves corrupted data (its peers must ban it).
    Corrupt,
    /// A member that accepts requests and never answers.
    Stall,
    /// A node without a valid membership certificate (must be refused admission).
    NonMember,
}

/// What a device runs at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Installed {
    /// The old release: it needs the artifact.
    #[default]
    Old,
    /// Already updated: it holds the artifact and serves it.
    New,
}

/// One device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub upload: Option<u64>,
    pub download: Option<u64>,
    pub installed: Installed,
    pub join: Duration,
    pub behaviour: Behaviour,
}

impl DeviceSpec {
    /// Is this a device whose update the scenario measures?
    pub fn measured(&self) -> bool {
        self.behaviour == Behaviour::Honest && self.installed == Installed::Old
    }
}

/// A timed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Device `device` is killed at `at`; it restarts `restart_after` later (if set).
    Crash {
        at: Duration,
        device: usize,
        restart_after: Option<Duration>,
    },
    /// A cap changes at `at` (a schedule boundary).
    Cap {
        at: Duration,
        target: CapTarget,
        rate: Option<u64>,
    },
    /// The gateway leaves: at a time, or once every group is held by some device.
    GatewayLeaves { at: Option<Duration> },
}

/// Which cap an event changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapTarget {
    GatewayWan,
    GatewayUpload,
    /// Every device's upload.
    DevicesUpload,
    /// Every device's download.
    DevicesDownload,
}

/// A clinical traffic flow across the ward LAN (netns engine).
#[derive(Debug, Clone)]
pub struct Clinical {
    /// Offered rate, bytes/s.
    pub rate: u64,
    /// LAN port speed of every namespace on the ward bridge, bytes/s.
    pub port: u64,
    /// The device whose port the flow shares.
    pub device: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "one")]
    seed: u64,
    artifact: String,
    #[serde(default = "one_usize")]
    wards: usize,
    gateway: GatewayFile,
    #[serde(default)]
    lan: LanFile,
    devices: Vec<DeviceFile>,
    #[serde(default)]
    events: Vec<EventFile>,
    #[serde(default)]
    clinical: Option<ClinicalFile>,
    #[serde(default)]
    rollout: Option<crate::rollout::RolloutFile>,
    #[serde(default = "default_timeout")]
    timeout: String,
}

fn one() -> u64 {
    1
}
fn one_usize() -> usize {
    1
}
fn default_timeout() -> String {
    "600s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    wan: String,
    upload: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LanFile {
    #[serde(default)]
    latency: Option<String>,
    #[serde(default)]
    mdns: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    count: usize,
    upload: String,
    download: String,
    #[serde(default)]
    installed: Installed,
    #[serde(default)]
    join: Option<String>,
    #[serde(default)]
    behaviour: Behaviour,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    kind: String,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    device: Option<usize>,
    #[serde(default)]
    restart_after: Option<String>,
    #[serde(default)]
    cap: Option<String>,
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    after_one_copy: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClinicalFile {
    rate: String,
    port: String,
    #[serde(default)]
    device: usize,
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("scenario {path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn dur(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("duration {s:?}: {e}"))
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            cause: source,
        })?;
        Self::parse(&text).map_err(|reason| ScenarioError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let artifact = parse_size(&f.artifact)?;
        if artifact == 0 || artifact > 16 << 30 {
            return Err("artifact must be 1 B to 16 GiB".into());
        }
        if f.wards == 0 || f.wards > 1000 {
            return Err("wards must be 1 to 1000".into());
        }
        let mut devices = Vec::new();
        for g in &f.devices {
            let d = DeviceSpec {
                upload: parse_rate(&g.upload)?,
                download: parse_rate(&g.download)?,
                installed: g.installed,
                join: g.join.as_deref().map(dur).transpose()?.unwrap_or_default(),
                behaviour: g.behaviour,
            };
            if d.download == Some(0) && d.measured() {
                return Err("a device that must update cannot have a download cap of 0".into());
            }
            devices.extend(std::iter::repeat_n(d, g.count));
        }
        if !devices.iter().any(DeviceSpec::measured) {
            return Err("the scenario needs at least one honest device on the old release".into());
        }
        if devices.len() > 5_000 {
            return Err("at most 5,000 devices per ward".into());
        }
        let mut events = Vec::new();
        for e in &f.events {
            let at = e.at.as_deref().map(dur).transpose()?;
            let need_at = || at.ok_or_else(|| format!("event {} needs `at`", e.kind));
            events.push(match e.kind.as_str() {
                "crash" => {
                    let device = e.device.ok_or("crash needs `device`")?;
                    if device >= devices.len() {
                        return Err(format!("crash: no device {device}"));
                    }
                    Event::Crash {
                        at: need_at()?,
                        device,
                        restart_after: e.restart_after.as_deref().map(dur).transpose()?,
                    }
                }
                "cap" => Event::Cap {
                    at: need_at()?,
                    target: match e.cap.as_deref() {
                        Some("gateway_wan") => CapTarget::GatewayWan,
                        Some("gateway_upload") => CapTarget::GatewayUpload,
                        Some("devices_upload") => CapTarget::DevicesUpload,
                        Some("devices_download") => CapTarget::DevicesDownload,
                        other => {
                            return Err(format!(
                                "cap event: `cap` must be gateway_wan, gateway_upload, devices_upload or devices_download, not {other:?}"
                            ))
                        }
                    },
                    rate: parse_rate(e.rate.as_deref().ok_or("cap event needs `rate`")?)?,
                },
                "gateway_leaves" => {
                    if at.is_none() && !e.after_one_copy {
                        return Err("gateway_leaves needs `at` or `after_one_copy = true`".into());
                    }
                    Event::GatewayLeaves { at }
                }
                other => {
                    return Err(format!(
                        "unknown event kind {other:?} (crash, cap, gateway_leaves)"
                    ))
                }
            });
        }
        let clinical = match &f.clinical {
            None => None,
            Some(c) => {
                let rate = parse_rate(&c.rate)?.ok_or("clinical rate must be finite")?;
                let port = parse_rate(&c.port)?.ok_or("clinical port speed must be finite")?;
                if c.device >= devices.len() {
                    return Err(format!("clinical: no device {}", c.device));
                }
                Some(Clinical {
                    rate,
                    port,
                    device: c.device,
                })
            }
        };
        let rollout = match f.rollout {
            Some(r) => Some(r.check(devices.len())?),
            None => None,
        };
        Ok(Self {
            name: f.name,
            description: f.description,
            seed: f.seed,
            artifact,
            wards: f.wards,
            gateway: GatewaySpec {
                wan: parse_rate(&f.gateway.wan)?,
                upload: parse_rate(&f.gateway.upload)?,
            },
            latency: f
                .lan
                .latency
                .as_deref()
                .map(dur)
                .transpose()?
                .unwrap_or(Duration::from_micros(500)),
            mdns: f.lan.mdns,
            devices,
            events,
            clinical,
            rollout,
            timeout: dur(&f.timeout)?,
        })
    }

    /// Devices per ward whose update is measured (honest, on the old release).
    pub fn measured(&self) -> usize {
        self.devices.iter().filter(|d| d.measured()).count()
    }
}
