//! The gateway's control plane: API tokens with roles, rollouts persisted in the gateway's
//! database, and the gateway's own hash-chained audit log of every mutating call.
//!
//! Tokens are `wst_<id>_<secret>`; only the BLAKE3 hash of the secret is stored, and a presented
//! token is checked by comparing hashes (BLAKE3's comparison is constant-time). Roles:
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read |
//! | `operator` | read; create, start, pause, resume and stop rollouts |
//! | `approver` | read; approve and deny rollouts (never one it created: four eyes) |
//! | `admin` | everything, and manage tokens |
//!
//! On first start the gateway creates one `admin` token and writes it to `<state>/admin.token`
//! (mode 0600): the way in for the operator, who then makes the others.

use std::{collections::BTreeMap, path::Path, sync::Mutex};

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use wardswarm_node::{
    agent::audit::AuditLog,
    rollout::{DeviceInfo, Rollout, RolloutError, RolloutSpec},
    Timestamp,
};

use crate::db::{Db, DbError, Table};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Runs rollouts.
    Operator,
    /// Approves and denies rollouts.
    Approver,
    /// Everything, and tokens.
    Admin,
}

impl Role {
    /// The API's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected viewer, operator, approver or admin"
            )),
        }
    }
}

/// What a call wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Any read.
    Read,
    /// Create, start, pause, resume, stop a rollout.
    Operate,
    /// Approve or deny a rollout.
    Approve,
    /// Manage tokens, override a device's clinical-use gate.
    Admin,
}

impl Role {
    /// "a viewer token", "an operator token", … for messages.
    pub fn token_phrase(self) -> String {
        let r = self.as_str();
        let article = if r.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {r} token")
    }

    /// Whether this role has `p`.
    pub fn may(self, p: Permission) -> bool {
        match p {
            Permission::Read => true,
            Permission::Operate => matches!(self, Self::Operator | Self::Admin),
            Permission::Approve => matches!(self, Self::Approver | Self::Admin),
            Permission::Admin => self == Self::Admin,
        }
    }
}

/// A stored token (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its id (the middle part of the token).
    pub id: String,
    /// Who or what it is for.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// BLAKE3 of the secret, hex.
    pub hash: String,
    /// When it was made.
    pub created: Timestamp,
    /// Revoked tokens authenticate nothing.
    #[serde(default)]
    pub revoked: bool,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Principal {
    /// How audit records and rollouts name the caller: `<name> (token <id>)`.
    pub fn who(&self) -> String {
        format!("{} (token {})", self.name, self.id)
    }
}

/// Why a control-plane call failed; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("audit log: {0}")]
    Audit(String),
    #[error("writing the first admin token: {0}")]
    TokenFile(String),
    #[error("no rollout {0}")]
    NoRollout(u64),
    #[error("no token {0}")]
    NoToken(String),
    #[error("{0}")]
    Rollout(#[from] RolloutError),
    #[error("token name {0:?} must be 1 to 64 characters of A-Z a-z 0-9 . - _ @")]
    BadName(String),
    #[error("token {0} is the last live admin token: create another admin token first, or nobody could manage tokens")]
    LastAdmin(String),
}

/// One audit record of the gateway's control plane.
#[derive(Debug, Serialize)]
struct AuditRecord<'a> {
    who: &'a str,
    role: Role,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
}

/// Tokens, rollouts and the audit log.
#[derive(Debug)]
pub struct Control {
    tokens: Mutex<BTreeMap<String, TokenRecord>>,
    rollouts: Mutex<BTreeMap<u64, Rollout>>,
    audit: Mutex<AuditLog>,
}

const ROLLOUT_SEQ: &str = "rollout_seq";
/// The first admin token, written on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

fn hash_of(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Control {
    /// Loads tokens and rollouts; opens `<dir>/audit.jsonl`; on first start makes the admin token.
    pub fn open(dir: &Path, db: &Db) -> Result<Self, ControlError> {
        let audit = AuditLog::open(dir.join("audit.jsonl"))
            .map_err(|e| ControlError::Audit(e.to_string()))?;
        let tokens: BTreeMap<String, TokenRecord> = db.all(Table::Tokens)?.into_iter().collect();
        let rollouts = db
            .all::<Rollout>(Table::Rollouts)?
            .into_iter()
            .map(|(_, r)| (r.id, r))
            .collect();
        let c = Self {
            tokens: Mutex::new(tokens),
            rollouts: Mutex::new(rollouts),
            audit: Mutex::new(audit),
        };
        let empty = c
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if empty {
            let system = Principal {
                id: "-".into(),
                name: "gateway".into(),
                role: Role::Admin,
            };
            let (_, token) = c.create_token(db, &system, "admin", Role::Admin)?;
            let path = dir.join(ADMIN_TOKEN_FILE);
            // No token exists, so a file left from an earlier database is stale: replace it.
            wardswarm_node::fsutil::replace(&path, format!("{token}\n").as_bytes(), 0o600)
                .map_err(|e| ControlError::TokenFile(format!("{}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "first start: admin API token written");
        }
        Ok(c)
    }

    fn record(&self, by: &Principal, action: &str, target: &str, outcome: &str) {
        let who = by.who();
        let r = AuditRecord {
            who: &who,
            role: by.role,
            action,
            target,
            outcome,
        };
        let mut log = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = log.append(&r) {
            tracing::error!(error = %e, action, target, "writing the gateway audit log failed");
        }
    }

    /// Records a call refused because the caller's role may not make it.
    pub fn refused_by_role(&self, by: &Principal, action: &str, target: &str) {
        self.record(
            by,
            action,
            target,
            &format!("refused: {} may not do this", by.role.token_phrase()),
        );
    }

    /// The principal a bearer token stands for, if it is a live token.
    pub fn authenticate(&self, bearer: &str) -> Option<Principal> {
        let rest = bearer.strip_prefix("wst_")?;
        let (id, secret) = rest.split_once('_')?;
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let t = tokens.get(id)?;
        let want = blake3::Hash::from_hex(&t.hash).ok()?;
        // blake3::Hash compares in constant time.
        (!t.revoked && blake3::hash(secret.as_bytes()) == want).then(|| Principal {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role,
        })
    }

    /// Makes a token; returns its record and the token text (shown once).
    pub fn create_token(
        &self,
        db: &Db,
        by: &Principal,
        name: &str,
        role: Role,
    ) -> Result<(TokenRecord, String), ControlError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_@".contains(&b));
        if !ok {
            return Err(ControlError::BadName(name.into()));
        }
        let id = random_hex(6);
        let secret = random_hex(32);
        let rec = TokenRecord {
            id: id.clone(),
            name: name.into(),
            role,
            hash: hash_of(&secret),
            created: Timestamp::now(),
            revoked: false,
        };
        db.put(Table::Tokens, &id, &rec)?;
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), rec.clone());
        self.record(
            by,
            "token.create",
            &id,
            &format!("{name} as {}", role.as_str()),
        );
        Ok((rec, format!("wst_{id}_{secret}")))
    }

    /// Every token (without secrets).
    pub fn tokens(&self) -> Vec<TokenRecord> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Revokes a token.
    pub fn revoke_token(&self, db: &Db, by: &Principal, id: &str) -> Result<(), ControlError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let live_admins = tokens
            .values()
            .filter(|t| t.role == Role::Admin && !t.revoked)
            .count();
        let Some(t) = tokens.get_mut(id) else {
            drop(tokens);
            self.record(by, "token.revoke", id, "no such token");
            return Err(ControlError::NoToken(id.into()));
        };
        if t.role == Role::Admin && !t.revoked && live_admins == 1 {
            drop(tokens);
            self.record(by, "token.revoke", id, "refused: the last live admin token");
            return Err(ControlError::LastAdmin(id.into()));
        }
        t.revoked = true;
        db.put(Table::Tokens, id, &*t)?;
        drop(tokens);
        self.record(by, "token.revoke", id, "revoked");
        Ok(())
    }

    /// Creates a rollout over `targets`; it waits for an approver.
    pub fn create_rollout(
        &self,
        db: &Db,
        by: &Principal,
        spec: RolloutSpec,
        targets: &[DeviceInfo],
    ) -> Result<Rollout, ControlError> {
        let id = db.meta(ROLLOUT_SEQ)?.unwrap_or(0) + 1;
        let r = match Rollout::new(id, spec, &by.who(), targets, true) {
            Ok(r) => r,
            Err(e) => {
                self.record(by, "rollout.create", "-", &format!("refused: {e}"));
                return Err(e.into());
            }
        };
        db.set_meta(ROLLOUT_SEQ, id)?;
        db.put(Table::Rollouts, &id.to_string(), &r)?;
        self.rollouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, r.clone());
        self.record(by, "rollout.create", &id.to_string(), "created");
        Ok(r)
    }

    /// Every rollout.
    pub fn rollouts(&self) -> Vec<Rollout> {
        self.rollouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One rollout.
    pub fn rollout(&self, id: u64) -> Option<Rollout> {
        self.rollouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Applies an operator or approver action; every attempt, allowed or not, is audited.
    pub fn act(
        &self,
        db: &Db,
        by: &Principal,
        id: u64,
        action: &str,
        remark: &str,
    ) -> Result<Rollout, ControlError> {
        let name = format!("rollout.{action}");
        let mut all = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = all.get_mut(&id) else {
            drop(all);
            self.record(by, &name, &id.to_string(), "no such rollout");
            return Err(ControlError::NoRollout(id));
        };
        let mut next = r.clone();
        let who = by.who();
        let result = match action {
            "approve" => next.approve(&who, remark),
            "deny" => next.deny(&who, remark),
            "start" => next.start(),
            "pause" => next.pause(if remark.is_empty() {
                "paused by an operator"
            } else {
                remark
            }),
            "resume" => next.resume(),
            "stop" => next.stop(),
            other => Err(RolloutError::Invalid(format!("unknown action {other:?}"))),
        };
        match result {
            Ok(()) => {
                db.put(Table::Rollouts, &id.to_string(), &next)?;
                *r = next.clone();
                drop(all);
                self.record(by, &name, &id.to_string(), "done");
                Ok(next)
            }
            Err(e) => {
                drop(all);
                self.record(by, &name, &id.to_string(), &format!("refused: {e}"));
                Err(e.into())
            }
        }
    }

    /// Overrides `device`'s clinical-use gate in rollout `id` (admin only, checked by the caller);
    /// audited, allowed or not, with the remark.
    pub fn override_gate(
        &self,
        db: &Db,
        by: &Principal,
        id: u64,
        device: &str,
        remark: &str,
    ) -> Result<Rollout, ControlError> {
        let target = format!("{id}/{device}");
        let mut all = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = all.get_mut(&id) else {
            drop(all);
            self.record(by, "rollout.override", &target, "no such rollout");
            return Err(ControlError::NoRollout(id));
        };
        let mut next = r.clone();
        match next.override_gate(device) {
            Ok(()) => {
                db.put(Table::Rollouts, &id.to_string(), &next)?;
                *r = next.clone();
                drop(all);
                tracing::warn!(rollout = id, %device, by = %by.who(), remark, "clinical-use gate overridden");
                self.record(
                    by,
                    "rollout.override",
                    &target,
                    &format!("clinical-use gate overridden: {remark}"),
                );
                Ok(next)
            }
            Err(e) => {
                drop(all);
                self.record(by, "rollout.override", &target, &format!("refused: {e}"));
                Err(e.into())
            }
        }
    }

    /// A device reported `status` for whatever running rollout targets it; persisted if it changed
    /// anything.
    pub fn device_status(
        &self,
        db: &Db,
        device: &str,
        release: &str,
        status: wardswarm_node::rollout::DeviceStatus,
    ) {
        let mut all = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        for r in all.values_mut() {
            if r.spec.release == release && r.may_fetch(device) && r.report(device, status) {
                if let Err(e) = db.put(Table::Rollouts, &r.id.to_string(), &*r) {
                    tracing::warn!(rollout = r.id, error = %e, "saving a rollout failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RolloutSpec {
        serde_json::from_value(serde_json::json!({
            "name": "r", "release": "2.0.0",
            "groups": [{"name": "all", "select": {"by": "rest"}}]
        }))
        .expect("spec")
    }

    #[test]
    fn tokens_roles_four_eyes_audit_and_restart() {
        let d = tempfile::tempdir().expect("tmp");
        let db = Db::open(&d.path().join("g.redb")).expect("db");
        let c = Control::open(d.path(), &db).expect("control");
        let admin_token = std::fs::read_to_string(d.path().join(ADMIN_TOKEN_FILE)).expect("file");
        let admin = c
            .authenticate(admin_token.trim())
            .expect("admin token works");
        assert_eq!(admin.role, Role::Admin);
        let (_, op_t) = c
            .create_token(&db, &admin, "alice", Role::Operator)
            .expect("t");
        let (_, ap_t) = c
            .create_token(&db, &admin, "bob", Role::Approver)
            .expect("t");
        let (view, view_t) = c
            .create_token(&db, &admin, "screen", Role::Viewer)
            .expect("t");
        let op = c.authenticate(&op_t).expect("operator");
        let ap = c.authenticate(&ap_t).expect("approver");
        assert!(c.authenticate("wst_nope_nope").is_none());
        let mut forged = op_t.clone();
        let last = if forged.ends_with('0') { '1' } else { '0' };
        forged.pop();
        forged.push(last);
        assert!(c.authenticate(&forged).is_none(), "a wrong secret");
        assert!(!Role::Viewer.may(Permission::Operate) && !Role::Operator.may(Permission::Approve));
        assert!(Role::Approver.may(Permission::Approve) && Role::Admin.may(Permission::Admin));

        let targets = vec![DeviceInfo {
            id: "pump-1".into(),
            product: None,
            hardware: "rev-c".into(),
            labels: vec![],
        }];
        let r = c
            .create_rollout(&db, &op, spec(), &targets)
            .expect("created");
        assert!(matches!(
            c.act(&db, &op, r.id, "approve", ""),
            Err(ControlError::Rollout(RolloutError::FourEyes { .. }))
        ));
        c.act(&db, &ap, r.id, "approve", "ok").expect("approved");
        c.act(&db, &op, r.id, "start", "").expect("started");
        c.device_status(
            &db,
            "pump-1",
            "2.0.0",
            wardswarm_node::rollout::DeviceStatus::Downloading,
        );
        c.revoke_token(&db, &admin, &view.id).expect("revoked");
        assert!(c.authenticate(&view_t).is_none(), "revoked");
        // The last live admin token cannot be revoked; once there is another, it can.
        assert!(matches!(
            c.revoke_token(&db, &admin, &admin.id),
            Err(ControlError::LastAdmin(_))
        ));
        assert!(c.authenticate(admin_token.trim()).is_some(), "still live");
        let (second, _) = c
            .create_token(&db, &admin, "second-admin", Role::Admin)
            .expect("token");
        c.revoke_token(&db, &admin, &admin.id)
            .expect("another admin remains");
        assert!(matches!(
            c.revoke_token(&db, &admin, &second.id),
            Err(ControlError::LastAdmin(_))
        ));
        drop(c);
        drop(db);

        // A restart carries on: tokens, the rollout mid-run, the audit chain.
        let db = Db::open(&d.path().join("g.redb")).expect("db");
        let c = Control::open(d.path(), &db).expect("control");
        assert!(c.authenticate(&op_t).is_some() && c.authenticate(&view_t).is_none());
        let back = c.rollout(r.id).expect("kept");
        assert_eq!(back.state, wardswarm_node::rollout::RolloutState::Running);
        assert_eq!(
            back.groups[0].devices["pump-1"],
            wardswarm_node::rollout::DeviceStatus::Downloading
        );
        let next = c
            .create_rollout(&db, &op, spec(), &targets)
            .expect("second");
        assert_eq!(next.id, r.id + 1, "ids are not reused");
        let (n, _) = wardswarm_node::agent::audit::verify(&d.path().join("audit.jsonl"))
            .expect("chain intact");
        assert!(n >= 8, "{n} records");
        drop(c);
        drop(db);

        // A database lost while its admin.token stayed: the stale file is replaced, not a bar to
        // starting.
        std::fs::remove_file(d.path().join("g.redb")).expect("rm db");
        let db = Db::open(&d.path().join("g.redb")).expect("db");
        let c = Control::open(d.path(), &db).expect("starts again");
        let fresh = std::fs::read_to_string(d.path().join(ADMIN_TOKEN_FILE)).expect("file");
        assert_ne!(fresh, admin_token);
        assert!(c.authenticate(fresh.trim()).is_some() && c.authenticate(&op_t).is_none());
    }
}
