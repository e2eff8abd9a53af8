//! The device's local audit log: JSON lines, each chained to the previous line by hash.
//!
//! ```text
//! {"seq":0,"time":"2026-11-22T19:40:00Z","prev":"blake3:000…","record":{…}}
//! {"seq":1,"time":"…","prev":"blake3:<BLAKE3 of line 0's bytes, without the newline>","record":{…}}
//! ```
//!
//! Removing, reordering or editing a line breaks the chain at the next line, which `wardswarm audit
//! verify FILE` reports by line number. Every append is fsynced. A line torn by a power cut (no final
//! newline) is cut off when the log is reopened, and the cut is itself logged.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{hash::Hash, time::Timestamp};

/// The `prev` of the first line.
pub const GENESIS: Hash = Hash::from_bytes([0; 32]);
/// Longest line accepted when reading a log back.
const MAX_LINE: usize = 64 * 1024;

/// A fault in an audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("audit log {path}, line {line}: {reason}")]
    Broken {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    time: String,
    prev: Hash,
    record: serde_json::Value,
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    last: Hash,
}

/// Reads a log, checking the chain; returns the number of good lines, the last line's hash, and the
/// byte length of the good prefix. A final line without a newline is reported as `torn`.
fn scan(path: &Path) -> Result<(u64, Hash, u64, bool), AuditError> {
    let io = |source| AuditError::Io {
        path: path.into(),
        cause: source,
    };
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, GENESIS, 0, false)),
        Err(e) => return Err(io(e)),
    };
    let mut r = BufReader::new(f);
    let (mut seq, mut last, mut good) = (0u64, GENESIS, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io)?;
        if n == 0 {
            return Ok((seq, last, good, false));
        }
        if buf.last() != Some(&b'\n') {
            if n > MAX_LINE {
                return Err(AuditError::Broken {
                    path: path.into(),
                    line: seq + 1,
                    reason: format!("line longer than {MAX_LINE} bytes"),
                });
            }
            return Ok((seq, last, good, true));
        }
        let body = &buf[..buf.len() - 1];
        let broken = |reason: String| AuditError::Broken {
            path: path.into(),
            line: seq + 1,
            reason,
        };
        let l: Line = serde_json::from_slice(body).map_err(|e| broken(e.to_string()))?;
        if l.seq != seq {
            return Err(broken(format!(
                "sequence number {} where {seq} was expected (a line was removed or reordered)",
                l.seq
            )));
        }
        if l.prev != last {
            return Err(broken(format!(
                "prev is {}, but the previous line hashes to {last} (the previous line was altered or removed)",
                l.prev
            )));
        }
        last = Hash::of(body);
        seq += 1;
        good += buf.len() as u64;
    }
}

use std::io::Read as _;

impl AuditLog {
    /// Opens (creating) a log, verifying the whole chain; a torn last line is cut off and noted.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AuditError> {
        let path = path.into();
        let (seq, last, good, torn) = scan(&path)?;
        let io = |source| AuditError::Io {
            path: path.clone(),
            cause: source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        if torn {
            file.set_len(good).map_err(io)?;
        }
        let mut log = Self {
            path,
            file,
            seq,
            last,
        };
        if torn {
            log.append(&serde_json::json!({"event": "audit log: a torn last line (power cut during a write) was cut off"}))?;
        }
        Ok(log)
    }

    /// Appends a record and fsyncs it.
    pub fn append(&mut self, record: &impl Serialize) -> Result<Hash, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            cause: source,
        };
        let record = serde_json::to_value(record).map_err(|e| io(io::Error::other(e)))?;
        let line = Line {
            seq: self.seq,
            time: Timestamp::now().to_string(),
            prev: self.last,
            record,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| io(io::Error::other(e)))?;
        let h = Hash::of(&bytes);
        bytes.push(b'\n');
        self.file.write_all(&bytes).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.seq += 1;
        self.last = h;
        Ok(h)
    }

    /// Lines written so far.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// No lines yet.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// The hash of the last line (the chain head).
    pub fn head(&self) -> Hash {
        self.last
    }
}

/// Verifies a log file: returns the number of lines and the chain head, or the first broken line.
pub fn verify(path: &Path) -> Result<(u64, Hash), AuditError> {
    // A log that is not there proves nothing: "0 records, chain intact" would read as a clean bill.
    if let Err(cause) = crate::fsutil::open_regular(path) {
        return Err(AuditError::Io {
            path: path.into(),
            cause,
        });
    }
    let (n, head, _, torn) = scan(path)?;
    if torn {
        return Err(AuditError::Broken {
            path: path.into(),
            line: n + 1,
            reason: "last line has no newline (torn write)".into(),
        });
    }
    Ok((n, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_detects_edits_and_survives_a_torn_line() -> Result<(), AuditError> {
        let d = tempfile::tempdir().map_err(|e| AuditError::Io {
            path: "tmp".into(),
            cause: e,
        })?;
        let p = d.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p)?;
        for i in 0..3 {
            log.append(&serde_json::json!({ "i": i }))?;
        }
        assert_eq!(verify(&p)?.0, 3);
        let text = std::fs::read_to_string(&p).map_err(|e| AuditError::Io {
            path: p.clone(),
            cause: e,
        })?;
        // Edit line 2: line 3's prev no longer matches.
        let edited = text.replacen("{\"i\":1}", "{\"i\":9}", 1);
        std::fs::write(&p, &edited).map_err(|e| AuditError::Io {
            path: p.clone(),
            cause: e,
        })?;
        match verify(&p) {
            Err(AuditError::Broken { line: 3, .. }) => {}
            other => panic!("edit not caught: {other:?}"),
        }
        // Drop line 1: line 2's seq is wrong.
        let dropped: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        std::fs::write(&p, dropped).map_err(|e| AuditError::Io {
            path: p.clone(),
            cause: e,
        })?;
        assert!(matches!(
            verify(&p),
            Err(AuditError::Broken { line: 1, .. })
        ));
        // A torn tail is cut off on open, and the cut is logged.
        std::fs::write(&p, format!("{text}{{\"seq\":3,\"ti")).map_err(|e| AuditError::Io {
            path: p.clone(),
            cause: e,
        })?;
        assert!(verify(&p).is_err());
        let log = AuditLog::open(&p)?;
        assert_eq!(log.len(), 4);
        assert_eq!(verify(&p)?.0, 4);
        Ok(())
    }
}
