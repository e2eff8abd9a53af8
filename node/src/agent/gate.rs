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
//! Consent, for a `soft` rollout: the lease file's `"consent": ["2.0.0"]` (release versions, or
//! `"*"`), or the command run with `WARDSWARM_ASK=consent` and `WARDSWARM_VERSION` exiting 0. A
//! device without a gate never consents: only an admin's audited override moves it on.
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
    #[serde(default)]
    consent: Vec<String>,
}

/// Judges a lease file's bytes for consent to install `version`.
pub fn judge_consent(bytes: Option<&[u8]>, version: &str) -> Verdict {
    let no = || {
        Verdict::InUse(format!(
            "awaiting consent: the bedside application has not consented to {version}"
        ))
    };
    let Some(b) = bytes else { return no() };
    match serde_json::from_slice::<Lease>(b) {
        Ok(l) if l.consent.iter().any(|c| c == version || c == "*") => Verdict::Free,
        Ok(_) => no(),
        Err(e) => Verdict::InUse(format!("lease file unreadable ({e}): no consent")),
    }
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
    /// Asks the gate once whether the device is in use.
    pub async fn check(&self) -> Verdict {
        self.ask(None).await
    }

    /// Asks the gate once for consent to install `version` (a `soft` rollout).
    pub async fn consent(&self, version: &str) -> Verdict {
        self.ask(Some(version)).await
    }

    async fn ask(&self, consent: Option<&str>) -> Verdict {
        match self {
            Self::Lease(path) => {
                let p = path.clone();
                let read =
                    tokio::task::spawn_blocking(move || crate::fsutil::read_capped(&p, MAX_LEASE))
                        .await;
                match read {
                    Ok(Ok(Ok(b))) => match consent {
                        Some(v) => judge_consent(Some(&b), v),
                        None => judge_lease(Some(&b), Timestamp::now()),
                    },
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => match consent {
                        Some(v) => judge_consent(None, v),
                        None => Verdict::Free,
                    },
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
                    .env(
                        "WARDSWARM_ASK",
                        if consent.is_some() {
                            "consent"
                        } else {
                            "in_use"
                        },
                    )
                    .env("WARDSWARM_VERSION", consent.unwrap_or(""))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status();
                match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
                    Ok(Ok(s)) if s.code() == Some(0) => Verdict::Free,
                    Ok(Ok(s)) if s.code() == Some(1) => Verdict::InUse(match consent {
                        Some(v) => format!(
                            "awaiting consent: the clinical-use check has not consented to {v}"
                        ),
                        None => "the clinical-use check says in use".into(),
                    }),
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
