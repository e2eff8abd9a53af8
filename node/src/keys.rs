//! ed25519 signing keys and their public ids.
//!
//! A private key file is a standard PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), so `openssl pkey`
//! can read it; it is written with mode 0600 and never overwritten. A public key id is the key itself,
//! written `ed25519:<64 hex digits>`; there is no separate key-id hash to get wrong.

use std::{fmt, io, path::Path, str::FromStr};

use ed25519_dalek::{
    pkcs8::{spki::der::pem::LineEnding, DecodePrivateKey, EncodePrivateKey},
    Signer, SigningKey, Verifier, VerifyingKey,
};

use crate::{
    fsutil,
    hash::{parse_prefixed, IdParseError},
};

/// The only signature algorithm Wardswarm accepts.
pub const KEY_ALG: &str = "ed25519";

/// A PEM private key is about 120 bytes; anything far larger is not one of ours.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// Loading, writing or parsing a key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {cause}")]
    Read { path: String, cause: io::Error },
    #[error(
        "{path} already exists; refusing to overwrite a key (move it away or pick another path)"
    )]
    Exists { path: String },
    #[error("cannot write key file {path}: {cause}")]
    Write { path: String, cause: io::Error },
    #[error("{path} is not an ed25519 PKCS#8 PEM private key ({reason})")]
    Malformed { path: String, reason: String },
    #[error("key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: String, mode: u32 },
    #[error(transparent)]
    Id(#[from] IdParseError),
    #[error("{0:?} is neither a key file nor a public key id (ed25519:<hex>)")]
    NotKeyOrId(String),
}

/// An ed25519 public key, which is also its id. Holds the 32 compressed bytes, checked at parse time
/// to be a valid curve point; small enough to copy and to put in errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKeyId([u8; 32]);

impl PublicKeyId {
    /// The raw 32-byte public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Checks `sig` over `msg` with strict verification (rejects small-order keys and malleable forms).
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        key.verify_strict(msg, &sig).is_ok() && key.verify(msg, &sig).is_ok()
    }
    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.as_bytes()[..4])
    }
}

impl PartialOrd for PublicKeyId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PublicKeyId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for PublicKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_ALG}:{}", hex::encode(self.as_bytes()))
    }
}
impl fmt::Debug for PublicKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl FromStr for PublicKeyId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_prefixed::<32>(s, "key", KEY_ALG)?;
        VerifyingKey::from_bytes(&bytes)
            .map(|k| Self(k.to_bytes()))
            .map_err(|_| IdParseError::BadEncoding {
                what: "key",
                bytes: 32,
                value: s.chars().take(80).collect(),
            })
    }
}

/// An ed25519 private key. Its `Debug` shows only the public id.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_id())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }
    /// A key from 32 seed bytes (tests and simulations use seeded keys).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }
    /// The libp2p identity of this key (same ed25519 key), so one key file serves a node.
    pub fn to_libp2p(&self) -> libp2p::identity::Keypair {
        let mut seed = self.0.to_bytes();
        let kp = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed);
        // `ed25519_from_bytes` zeroes the buffer it is given; it only fails on a wrong length.
        kp.unwrap_or_else(|_| libp2p::identity::Keypair::generate_ed25519())
    }

    /// The public id.
    pub fn public_id(&self) -> PublicKeyId {
        PublicKeyId(self.0.verifying_key().to_bytes())
    }
    /// Signs a message.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
    /// The key as PKCS#8 PEM text: version 1 (RFC 5208, the private key alone), which OpenSSL 3.0
    /// reads (`openssl pkey`); it refuses ed25519 keys in version 2 with the public key beside.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let v1 = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        };
        let pem = v1
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Malformed {
                path: "<memory>".into(),
                reason: e.to_string(),
            })?;
        Ok(pem.to_string())
    }

    /// Writes the key to a new file with mode 0600; refuses to replace an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let p = path.display().to_string();
        let pem = self.to_pem()?;
        fsutil::write_new(path, pem.as_bytes(), 0o600).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyError::Exists { path: p.clone() }
            } else {
                KeyError::Write {
                    path: p.clone(),
                    cause: source,
                }
            }
        })
    }

    /// Reads a PKCS#8 PEM key file. Refuses a file that group or others can read, as ssh does.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let p = path.display().to_string();
        let read_err = |source| KeyError::Read {
            path: p.clone(),
            cause: source,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: p,
                mode: mode & 0o777,
            });
        }
        let bytes = match fsutil::read_capped(path, MAX_KEY_FILE_BYTES).map_err(read_err)? {
            Ok(b) => b,
            Err(len) => {
                return Err(KeyError::Malformed {
                    path: p,
                    reason: format!("{len} bytes is too large"),
                })
            }
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Malformed {
            path: p.clone(),
            reason: "not UTF-8 text".into(),
        })?;
        SigningKey::from_pkcs8_pem(text)
            .map(Self)
            .map_err(|e| KeyError::Malformed {
                path: p,
                reason: e.to_string(),
            })
    }
}

/// A command-line key argument: a private key file, or just a public id.
#[derive(Debug, Clone)]
pub enum KeyArg {
    /// A key file was given: the key can sign.
    Secret(SecretKey),
    /// Only the public id was given.
    Public(PublicKeyId),
}

impl KeyArg {
    /// Parses `ed25519:<hex>` as an id, anything else as a path to a key file.
    pub fn load(arg: &str) -> Result<Self, KeyError> {
        if arg.starts_with(&format!("{KEY_ALG}:")) {
            return Ok(Self::Public(arg.parse()?));
        }
        let path = Path::new(arg);
        if !path.exists() {
            return Err(KeyError::NotKeyOrId(arg.to_string()));
        }
        SecretKey::read(path).map(Self::Secret)
    }
    /// The public id in either case.
    pub fn public_id(&self) -> PublicKeyId {
        match self {
            Self::Secret(k) => k.public_id(),
            Self::Public(id) => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_file_round_trip_and_refusals() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("release.key");
        let k = SecretKey::generate();
        k.write_new(&path)?;
        let back = SecretKey::read(&path)?;
        assert_eq!(back.public_id(), k.public_id());
        assert!(matches!(
            SecretKey::generate().write_new(&path),
            Err(KeyError::Exists { .. })
        ));

        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        assert!(matches!(
            SecretKey::read(&path),
            Err(KeyError::Permissions { .. })
        ));

        let id = k.public_id().to_string();
        assert_eq!(id.parse::<PublicKeyId>()?, k.public_id());
        assert!(matches!(
            format!("rsa:{}", "00".repeat(32)).parse::<PublicKeyId>(),
            Err(IdParseError::UnknownAlgorithm { .. })
        ));
        Ok(())
    }

    #[test]
    fn signatures_verify_and_fail_when_altered() {
        let k = SecretKey::from_seed([7; 32]);
        let mut sig = k.sign(b"msg");
        assert!(k.public_id().verify(b"msg", &sig));
        assert!(!k.public_id().verify(b"msh", &sig));
        sig[0] ^= 1;
        assert!(!k.public_id().verify(b"msg", &sig));
    }
}
