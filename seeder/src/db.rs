//! The gateway's state in an embedded database (redb): devices, releases and counters. Artifact bytes
//! live in the verified store beside it; this holds what must survive a restart besides them.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const DEVICES: TableDefinition<'_, &str, &str> = TableDefinition::new("devices");
const RELEASES: TableDefinition<'_, &str, &str> = TableDefinition::new("releases");
const TOKENS: TableDefinition<'_, &str, &str> = TableDefinition::new("tokens");
const ROLLOUTS: TableDefinition<'_, &str, &str> = TableDefinition::new("rollouts");

/// A database fault (local: the gateway's own disk or file).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("gateway database {path}: {cause}")]
    Open {
        path: std::path::PathBuf,
        cause: Box<redb::DatabaseError>,
    },
    #[error("gateway database: {0}")]
    Redb(Box<redb::Error>),
    #[error("gateway database record: {0}")]
    Json(serde_json::Error),
}

fn e(x: impl Into<redb::Error>) -> DbError {
    DbError::Redb(Box::new(x.into()))
}

/// The gateway database.
#[derive(Debug)]
pub struct Db {
    db: Database,
}

/// Which JSON table.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    /// Devices by id.
    Devices,
    /// Releases by manifest hash.
    Releases,
    /// API tokens by id (hashes only).
    Tokens,
    /// Rollouts by id.
    Rollouts,
}

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static str> {
        match self {
            Self::Devices => DEVICES,
            Self::Releases => RELEASES,
            Self::Tokens => TOKENS,
            Self::Rollouts => ROLLOUTS,
        }
    }
}

impl Db {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let db = Database::create(path).map_err(|cause| DbError::Open {
            path: path.into(),
            cause: Box::new(cause),
        })?;
        let w = db.begin_write().map_err(e)?;
        w.open_table(META).map_err(e)?;
        w.open_table(DEVICES).map_err(e)?;
        w.open_table(RELEASES).map_err(e)?;
        w.open_table(TOKENS).map_err(e)?;
        w.open_table(ROLLOUTS).map_err(e)?;
        w.commit().map_err(e)?;
        Ok(Self { db })
    }

    /// A counter or marker.
    pub fn meta(&self, key: &str) -> Result<Option<u64>, DbError> {
        let r = self.db.begin_read().map_err(e)?;
        let t = r.open_table(META).map_err(e)?;
        Ok(t.get(key).map_err(e)?.map(|v| v.value()))
    }

    /// Sets a counter or marker.
    pub fn set_meta(&self, key: &str, value: u64) -> Result<(), DbError> {
        let w = self.db.begin_write().map_err(e)?;
        {
            let mut t = w.open_table(META).map_err(e)?;
            t.insert(key, value).map_err(e)?;
        }
        w.commit().map_err(e)
    }

    /// Stores a JSON record.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), DbError> {
        let json = serde_json::to_string(value).map_err(DbError::Json)?;
        let w = self.db.begin_write().map_err(e)?;
        {
            let mut t = w.open_table(table.def()).map_err(e)?;
            t.insert(key, json.as_str()).map_err(e)?;
        }
        w.commit().map_err(e)
    }

    /// Removes a record (absent is fine).
    pub fn delete(&self, table: Table, key: &str) -> Result<(), DbError> {
        let w = self.db.begin_write().map_err(e)?;
        {
            let mut t = w.open_table(table.def()).map_err(e)?;
            t.remove(key).map_err(e)?;
        }
        w.commit().map_err(e)
    }

    /// All records of a table, skipping (and logging) any that no longer parse.
    pub fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, DbError> {
        let r = self.db.begin_read().map_err(e)?;
        let t = r.open_table(table.def()).map_err(e)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(e)? {
            let (k, v) = item.map_err(e)?;
            match serde_json::from_str(v.value()) {
                Ok(x) => out.push((k.value().to_string(), x)),
                Err(x) => tracing::warn!(key = k.value(), error = %x, "skipping unreadable record"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() -> Result<(), DbError> {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("g.redb");
        {
            let db = Db::open(&p)?;
            db.set_meta("wan_bytes", 42)?;
            db.put(
                Table::Devices,
                "pump-1",
                &serde_json::json!({"state": "idle"}),
            )?;
        }
        let db = Db::open(&p)?;
        assert_eq!(db.meta("wan_bytes")?, Some(42));
        let all: Vec<(String, serde_json::Value)> = db.all(Table::Devices)?;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1["state"], "idle");
        Ok(())
    }
}
