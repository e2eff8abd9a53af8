//! Content hashes: BLAKE3, written `blake3:<64 hex digits>`.
//!
//! The algorithm prefix is part of every hash string so that a document naming an algorithm we do not
//! implement is refused with [`IdParseError::UnknownAlgorithm`] instead of being misread.

use std::{fmt, io::Read, str::FromStr};

/// The only content-hash algorithm Wardswarm accepts.
pub const HASH_ALG: &str = "blake3";

/// Why a `alg:hex` identifier (a hash or a key id) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The string has no `alg:` prefix.
    #[error("{what} {value:?} has no algorithm prefix (expected \"{expected}:<hex>\")")]
    MissingAlgorithm {
        what: &'static str,
        expected: &'static str,
        value: String,
    },
    /// The prefix names an algorithm this build does not implement.
    #[error("unknown {what} algorithm {alg:?} (this version supports only {expected})")]
    UnknownAlgorithm {
        what: &'static str,
        expected: &'static str,
        alg: String,
    },
    /// The hex part is not the right length or not hex.
    #[error("{what} {value:?} is not {bytes} bytes of lowercase hex after the prefix")]
    BadEncoding {
        what: &'static str,
        bytes: usize,
        value: String,
    },
}

/// Splits `alg:hex` and decodes exactly `N` bytes of lowercase hex. Shared by hashes and key ids.
pub(crate) fn parse_prefixed<const N: usize>(
    s: &str,
    what: &'static str,
    expected: &'static str,
) -> Result<[u8; N], IdParseError> {
    let Some((alg, hex_part)) = s.split_once(':') else {
        return Err(IdParseError::MissingAlgorithm {
            what,
            expected,
            value: truncate(s),
        });
    };
    if alg != expected {
        return Err(IdParseError::UnknownAlgorithm {
            what,
            expected,
            alg: truncate(alg),
        });
    }
    let bad = || IdParseError::BadEncoding {
        what,
        bytes: N,
        value: truncate(s),
    };
    // Only lowercase hex is canonical; `hex` would also accept uppercase.
    if hex_part.len() != 2 * N || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// Keeps error messages short when a peer or a file sends a huge string.
fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A BLAKE3 hash. Also the bao root of an artifact (bao's root is plain BLAKE3 of the bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; 32]);

impl Hash {
    /// Wraps raw hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// BLAKE3 of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        blake3::hash(data).into()
    }
    /// Lowercase hex without the algorithm prefix (used in file names).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}
impl From<Hash> for blake3::Hash {
    fn from(h: Hash) -> Self {
        blake3::Hash::from_bytes(h.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HASH_ALG}:{}", hex::encode(self.0))
    }
}
impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl FromStr for Hash {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_prefixed::<32>(s, "hash", HASH_ALG).map(Self)
    }
}

/// Streams a reader through BLAKE3 in bounded memory; returns the hash and the byte count.
pub fn hash_reader(mut r: impl Read) -> std::io::Result<(Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hasher.finalize().into(), n))
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let h = Hash::of(b"ward");
        let s = h.to_string();
        assert!(s.starts_with("blake3:"));
        assert_eq!(s.parse::<Hash>(), Ok(h));
    }

    #[test]
    fn refuses_other_algorithms_and_bad_hex() {
        let hexpart = "00".repeat(32);
        assert!(matches!(
            format!("sha256:{hexpart}").parse::<Hash>(),
            Err(IdParseError::UnknownAlgorithm { alg, .. }) if alg == "sha256"
        ));
        assert!(matches!(
            hexpart.parse::<Hash>(),
            Err(IdParseError::MissingAlgorithm { .. })
        ));
        assert!(matches!(
            format!("blake3:{}", "AB".repeat(32)).parse::<Hash>(),
            Err(IdParseError::BadEncoding { .. })
        ));
        assert!(matches!(
            "blake3:00".parse::<Hash>(),
            Err(IdParseError::BadEncoding { .. })
        ));
    }
}
