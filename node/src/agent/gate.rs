//! The clinical-use gate: whether the device may install, reboot or commit now. The agent asks it
//! before each of the three and waits, reporting `gated: in_use`, while it says the device is in use.
//!
//! Two kinds, set in the device's config:
//! - **lease** (`[agent.gate] lease = "/run/bedside/lease.json"`): a bedside application holds the
//!   device by writing `{"in_use": true, "holder": "...", "expires": "<RFC 3339>"}` and renewing it.
//!   No file, or `{"in_use": false}`, means free. A lease past its expiry still means *in use*:
//!   an application that stopped renewing may have crashed mid-therapy, so only an explicit release
//!   (delete the file or write `in_use: false`) lets the update go on. An unreadable file is in use.
//! - **command** (`[agent.gate] command = "..."`, run by `sh -c`): exit 0 means free, exit 1 in use;
//!   anything else (another code, a signal, no answer within 10 s) is in use too, with the reason.
//!
//! Fail safe everywhere: when the gate cannot say "free", the device waits.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::time::Timestamp;

/// How the gate is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// A lease file a bedside application holds.
    Lease(PathBuf),
    /// A command: exit 0 free, 1 in use.
    Command(String),
}

/// What the gate said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The device may go on.
    Free,
    /// It is in use; why, for the report and the log.
    InUse(String),
}

/// Longest a gate command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting agent asks again.
pub const POLL: Duration = Duration::from_secs(2);
/// Largest lease file read.
const MAX_LEASE: u64 = 16 * 1024;

#[derive(Debug, Deserialize)]
struct Lease {
    in_use: bool,
    #[serde(default)]
    holder: Option<String>,
    #[serde(default)]
    expires: Option<String>,
}

/// Judges a lease file's bytes (`None`: there is no file) at `now`.
pub fn judge_lease(bytes: Option<&[u8]>, now: Timestamp) -> Verdict {
    let Some(b) = bytes else {
        return Verdict::Free;
    };
    let lease: Lease = match serde_json::from_slice(b) {
        Ok(l) => l,
        Err(e) => return Verdict::InUse(format!("lease file unreadable ({e}): waiting")),
    };
    if !lease.in_use {
        return Verdict::Free;
    }
    let holder = lease
        .holder
        .unwrap_or_else(|| "a bedside application".into());
    match lease.expires.as_deref().map(str::parse::<Timestamp>) {
        Some(Ok(t)) if now >= t => Verdict::InUse(format!(
            "in use by {holder}; its lease expired at {t} without a release: waiting"
        )),
        Some(Err(_)) => Verdict::InUse(format!("in use by {holder} (lease expiry unreadable)")),
        _ => Verdict::InUse(format!("in use by {holder}")),
    }
}

impl Gate {
    /// Asks the gate once.
    pub async fn check(&self) -> Verdict {
        match self {
            Self::Lease(path) => {
                let p = path.clone();
                let read =
                    tokio::task::spawn_blocking(move || crate::fsutil::read_capped(&p, MAX_LEASE))
                        .await;
                match read {
                    Ok(Ok(Ok(b))) => judge_lease(Some(&b), Timestamp::now()),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Verdict::Free,
                    Ok(Ok(Err(len))) => {
                        Verdict::InUse(format!("lease file is {len} bytes, over the cap: waiting"))
                    }
                    Ok(Err(e)) => Verdict::InUse(format!(
                        "lease file {} unreadable ({e}): waiting",
                        path.display()
                    )),
                    Err(e) => Verdict::InUse(format!("reading the lease failed ({e}): waiting")),
                }
            }
            Self::Command(cmd) => {
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status();
                match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
                    Ok(Ok(s)) if s.code() == Some(0) => Verdict::Free,
                    Ok(Ok(s)) if s.code() == Some(1) => {
                        Verdict::InUse("the clinical-use check says in use".into())
                    }
                    Ok(Ok(s)) => {
                        Verdict::InUse(format!("the clinical-use check failed ({s}): waiting"))
                    }
                    Ok(Err(e)) => Verdict::InUse(format!(
                        "the clinical-use check could not run ({e}): waiting"
                    )),
                    Err(_) => Verdict::InUse(format!(
                        "the clinical-use check gave no answer within {} s: waiting",
                        COMMAND_TIMEOUT.as_secs()
                    )),
                }
            }
        }
    }
}

/// Waits until the gate says free (at once without a gate), publishing the reason while it waits
/// through `waiting` (the agent's reports read it) and logging each new reason once.
pub async fn wait_free(
    gate: Option<Gate>,
    stage: &'static str,
    waiting: std::sync::Arc<std::sync::Mutex<Option<String>>>,
) {
    let Some(gate) = gate else { return };
    let mut last: Option<String> = None;
    loop {
        match gate.check().await {
            Verdict::Free => {
                if last.is_some() {
                    tracing::info!(stage, "clinical-use gate free: going on");
                }
                *waiting.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return;
            }
            Verdict::InUse(why) => {
                if last.as_deref() != Some(why.as_str()) {
                    tracing::info!(stage, reason = %why, "clinical-use gate: waiting");
                    last = Some(why.clone());
                }
                *waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_fail_safe() {
        let now: Timestamp = "2027-01-15T10:00:00Z".parse().expect("t");
        assert_eq!(judge_lease(None, now), Verdict::Free, "no lease file");
        assert_eq!(
            judge_lease(Some(br#"{"in_use":false}"#), now),
            Verdict::Free
        );
        let held = br#"{"in_use":true,"holder":"infusion 7","expires":"2027-01-15T10:05:00Z"}"#;
        assert!(
            matches!(judge_lease(Some(held), now), Verdict::InUse(r) if r.contains("infusion 7"))
        );
        let stale = br#"{"in_use":true,"holder":"infusion 7","expires":"2027-01-15T09:00:00Z"}"#;
        assert!(
            matches!(judge_lease(Some(stale), now), Verdict::InUse(r) if r.contains("expired")),
            "an expired lease keeps the device waiting"
        );
        assert!(matches!(
            judge_lease(Some(b"garbage"), now),
            Verdict::InUse(_)
        ));
    }

    #[tokio::test]
    async fn commands_and_files() {
        assert_eq!(Gate::Command("exit 0".into()).check().await, Verdict::Free);
        assert!(matches!(
            Gate::Command("exit 1".into()).check().await,
            Verdict::InUse(_)
        ));
        assert!(matches!(
            Gate::Command("exit 7".into()).check().await,
            Verdict::InUse(r) if r.contains("failed")
        ));
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("lease.json");
        let g = Gate::Lease(p.clone());
        assert_eq!(g.check().await, Verdict::Free);
        std::fs::write(&p, br#"{"in_use":true}"#).expect("write");
        assert!(matches!(g.check().await, Verdict::InUse(_)));
        std::fs::remove_file(&p).expect("release");
        assert_eq!(g.check().await, Verdict::Free);
    }
}
