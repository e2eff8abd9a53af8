//! Signed documents: one canonical byte form, size caps before parsing, threshold signatures.
//!
//! A signed document is stored as exactly these bytes (see `docs/formats.md`):
//!
//! ```text
//! {"signed":<BODY>,"signatures":[{"key":"ed25519:<hex>","sig":"<128 hex>"},...]}\n
//! ```
//!
//! `BODY` is the compact JSON that `serde_json` writes for the document's Rust type: fields in
//! declaration order, no white space, no floats. A signature covers
//! `"wardswarm-sig-v1\n" || TYPE || "\n" || BODY`, where `TYPE` is the body's `type` field, so a
//! signature made for one kind of document never validates another. What is signed is exactly what
//! is stored: a reader checks that the file is byte-for-byte the canonical encoding of what it parsed
//! and refuses anything else, so there is never a second spelling of the same document.

use std::collections::BTreeSet;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    hash::IdParseError,
    keys::{PublicKeyId, SecretKey},
};

/// Domain separation prefix of every signature.
const SIG_CONTEXT: &[u8] = b"wardswarm-sig-v1\n";

/// More signatures than any sane threshold needs; bounds verification work on hostile input.
pub const MAX_SIGNATURES: usize = 32;

/// The kinds of signed document, with their `type` string, format version and size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// The trust root (`wardswarm/root`).
    Root,
    /// A release manifest (`wardswarm/release`).
    Release,
    /// A ward membership certificate (`wardswarm/membership`).
    Membership,
    /// The origin's index of releases (`wardswarm/index`).
    Index,
    /// A ward's certificate revocation list (`wardswarm/revocations`).
    Revocations,
}

impl DocKind {
    /// The `type` field.
    pub const fn type_str(self) -> &'static str {
        match self {
            Self::Root => "wardswarm/root",
            Self::Release => "wardswarm/release",
            Self::Membership => "wardswarm/membership",
            Self::Index => "wardswarm/index",
            Self::Revocations => "wardswarm/revocations",
        }
    }
    /// The one format version this build reads and writes.
    pub const fn format(self) -> u32 {
        1
    }
    /// Size cap, checked before any parsing. A root with 3 roles of 32 keys and 32 signatures is about
    /// 12 KiB; a manifest with dozens of delta artifacts is a few KiB; an index lists many releases.
    pub const fn max_bytes(self) -> usize {
        match self {
            Self::Root => 64 * 1024,
            Self::Release => 64 * 1024,
            Self::Membership => 4 * 1024,
            Self::Index => 1024 * 1024,
            // 2,048 entries of a peer id (52 characters) and a device id (up to 128), with room.
            Self::Revocations => 512 * 1024,
        }
    }
}

/// A document could not be read: it is not a well-formed Wardswarm document of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("{kind} is {len} bytes, over the {max}-byte cap")]
    TooLarge {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} is not valid: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("{kind} is not in canonical form (it must be byte-for-byte what Wardswarm writes; was it edited?)")]
    NotCanonical { kind: &'static str },
    #[error("expected a {expected} document, found type {found:?}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("{kind} has format version {found}; this version of Wardswarm reads only format {supported}")]
    UnsupportedFormat {
        kind: &'static str,
        found: u64,
        supported: u32,
    },
    #[error("{kind}: {cause}")]
    Id {
        kind: &'static str,
        cause: IdParseError,
    },
    #[error("{kind} has {count} {what}, more than the limit of {max}")]
    TooMany {
        kind: &'static str,
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// The signatures on a document do not satisfy the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the document carries no signature")]
    Unsigned,
    #[error("signature by {key} does not verify (tampered document or forged signature)")]
    Invalid { key: PublicKeyId },
    #[error("key {key} signed more than once; a key counts once toward a threshold")]
    Duplicate { key: PublicKeyId },
    #[error("signature by {key}, which is not a key of the {roles} role")]
    SignerNotInRole { key: PublicKeyId, roles: String },
    #[error("{role} role: {valid} valid signature(s), threshold is {threshold}")]
    BelowThreshold {
        role: String,
        valid: usize,
        threshold: u32,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    signed: &'a RawValue,
    signatures: Vec<RawSignature>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    key: String,
    sig: String,
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    format: u64,
}

/// One signature on a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Who signed.
    pub key: PublicKeyId,
    /// The 64-byte ed25519 signature.
    pub sig: [u8; 64],
}

/// A parsed, canonical signed document whose signatures have not been checked yet.
#[derive(Debug, Clone)]
pub struct Signed<B> {
    /// The typed body.
    pub body: B,
    /// The exact signed body bytes.
    pub body_bytes: Vec<u8>,
    /// The signatures, in file order.
    pub signatures: Vec<Signature>,
    kind: DocKind,
}

/// The message a signature covers.
fn signing_message(kind: DocKind, body: &[u8]) -> Vec<u8> {
    let t = kind.type_str().as_bytes();
    let mut m = Vec::with_capacity(SIG_CONTEXT.len() + t.len() + 1 + body.len());
    m.extend_from_slice(SIG_CONTEXT);
    m.extend_from_slice(t);
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

impl<B: Serialize + DeserializeOwned> Signed<B> {
    /// Wraps a body, unsigned so far.
    pub fn new(kind: DocKind, body: B) -> Result<Self, DocError> {
        let body_bytes = serde_json::to_vec(&body).map_err(|e| DocError::Malformed {
            kind: kind.type_str(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            body,
            body_bytes,
            signatures: Vec::new(),
            kind,
        })
    }

    /// Adds a signature by `key`. Signing twice with the same key is a no-op.
    pub fn sign(&mut self, key: &SecretKey) {
        let id = key.public_id();
        if self.signatures.iter().any(|s| s.key == id) {
            return;
        }
        let sig = key.sign(&signing_message(self.kind, &self.body_bytes));
        // Kept in key order: the one canonical order of the envelope.
        let at = self.signatures.partition_point(|s| s.key < id);
        self.signatures.insert(at, Signature { key: id, sig });
    }

    /// The canonical file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let sigs: Vec<RawSignature> = self
            .signatures
            .iter()
            .map(|s| RawSignature {
                key: s.key.to_string(),
                sig: hex::encode(s.sig),
            })
            .collect();
        encode_envelope(&self.body_bytes, &sigs)
    }

    /// Parses a document of `kind`: size cap, envelope, type and format, typed body, canonical form.
    pub fn parse(kind: DocKind, bytes: &[u8]) -> Result<Self, DocError> {
        let k = kind.type_str();
        if bytes.len() > kind.max_bytes() {
            return Err(DocError::TooLarge {
                kind: k,
                len: bytes.len(),
                max: kind.max_bytes(),
            });
        }
        let malformed = |e: serde_json::Error| DocError::Malformed {
            kind: k,
            reason: e.to_string(),
        };
        let env: RawEnvelope<'_> = serde_json::from_slice(bytes).map_err(malformed)?;
        let body_text = env.signed.get();
        // Type and format first, so that a future format is reported as such, not as a parse error.
        let header: Header = serde_json::from_str(body_text).map_err(malformed)?;
        if header.kind != k {
            return Err(DocError::WrongType {
                expected: k,
                found: header.kind.chars().take(64).collect(),
            });
        }
        if header.format != u64::from(kind.format()) {
            return Err(DocError::UnsupportedFormat {
                kind: k,
                found: header.format,
                supported: kind.format(),
            });
        }
        if env.signatures.len() > MAX_SIGNATURES {
            return Err(DocError::TooMany {
                kind: k,
                what: "signatures",
                count: env.signatures.len(),
                max: MAX_SIGNATURES,
            });
        }
        let body: B = serde_json::from_str(body_text).map_err(malformed)?;
        let canonical_body = serde_json::to_vec(&body).map_err(malformed)?;
        if canonical_body != body_text.as_bytes()
            || encode_envelope(&canonical_body, &env.signatures) != bytes
        {
            return Err(DocError::NotCanonical { kind: k });
        }
        let mut signatures = Vec::with_capacity(env.signatures.len());
        for s in &env.signatures {
            let key: PublicKeyId = s
                .key
                .parse()
                .map_err(|cause| DocError::Id { kind: k, cause })?;
            let mut sig = [0u8; 64];
            if s.sig.len() != 128 || hex::decode_to_slice(&s.sig, &mut sig).is_err() {
                return Err(DocError::Malformed {
                    kind: k,
                    reason: format!("signature by {key} is not 64 bytes of hex"),
                });
            }
            // One spelling of each signature (lowercase hex, as written) and one order (ascending
            // key): a relay cannot make a second spelling of the same document. A key repeated in
            // place is left to `check_signatures`, which names it.
            let in_order = signatures.last().is_none_or(|p: &Signature| p.key <= key);
            if s.key != key.to_string() || s.sig != hex::encode(sig) || !in_order {
                return Err(DocError::NotCanonical { kind: k });
            }
            signatures.push(Signature { key, sig });
        }
        Ok(Self {
            body,
            body_bytes: canonical_body,
            signatures,
            kind,
        })
    }

    /// Checks the signatures against one or more role requirements.
    ///
    /// The policy is strict: every signature must be by a key of one of the roles, no key may sign
    /// twice, every signature must verify, and each role must reach its threshold. An unexpected or
    /// broken signature refuses the document instead of being skipped, so that a tampered document is
    /// reported as such.
    pub fn check_signatures(&self, roles: &[RoleRequirement<'_>]) -> Result<(), SignatureError> {
        if self.signatures.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        let msg = signing_message(self.kind, &self.body_bytes);
        let mut seen = BTreeSet::new();
        for s in &self.signatures {
            if !seen.insert(s.key) {
                return Err(SignatureError::Duplicate { key: s.key });
            }
            if !roles.iter().any(|r| r.keys.contains(&s.key)) {
                let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
                return Err(SignatureError::SignerNotInRole {
                    key: s.key,
                    roles: names.join(" or "),
                });
            }
            if !s.key.verify(&msg, &s.sig) {
                return Err(SignatureError::Invalid { key: s.key });
            }
        }
        for r in roles {
            let valid = self
                .signatures
                .iter()
                .filter(|s| r.keys.contains(&s.key))
                .count();
            if valid < r.threshold as usize {
                return Err(SignatureError::BelowThreshold {
                    role: r.name.clone(),
                    valid,
                    threshold: r.threshold,
                });
            }
        }
        Ok(())
    }
}

fn encode_envelope(body: &[u8], sigs: &[RawSignature]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64 + sigs.len() * 220);
    out.extend_from_slice(b"{\"signed\":");
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"signatures\":");
    // Serializing a Vec of two-string structs cannot fail.
    out.extend_from_slice(&serde_json::to_vec(sigs).unwrap_or_else(|_| b"[]".to_vec()));
    out.extend_from_slice(b"}\n");
    out
}

/// One role's keys and threshold, as a signature check needs them.
#[derive(Debug, Clone)]
pub struct RoleRequirement<'a> {
    /// Name for error messages, e.g. `release` or `root (version 3)`.
    pub name: String,
    /// The role's keys.
    pub keys: &'a [PublicKeyId],
    /// How many distinct keys must sign.
    pub threshold: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(rename = "type")]
        kind: String,
        format: u32,
        n: u64,
    }

    fn body() -> Body {
        Body {
            kind: "wardswarm/release".into(),
            format: 1,
            n: 7,
        }
    }

    #[test]
    fn round_trip_is_byte_exact_and_reformatting_is_refused() -> anyhow::Result<()> {
        let k = SecretKey::from_seed([1; 32]);
        let mut d = Signed::new(DocKind::Release, body())?;
        d.sign(&k);
        let bytes = d.to_bytes();
        let back = Signed::<Body>::parse(DocKind::Release, &bytes)?;
        assert_eq!(back.to_bytes(), bytes);
        let keys = [k.public_id()];
        back.check_signatures(&[RoleRequirement {
            name: "release".into(),
            keys: &keys,
            threshold: 1,
        }])?;

        let spaced = String::from_utf8(bytes.clone())?.replacen("\"n\":7", "\"n\": 7", 1);
        assert!(matches!(
            Signed::<Body>::parse(DocKind::Release, spaced.as_bytes()),
            Err(DocError::NotCanonical { .. })
        ));
        let no_newline = &bytes[..bytes.len() - 1];
        assert!(matches!(
            Signed::<Body>::parse(DocKind::Release, no_newline),
            Err(DocError::NotCanonical { .. })
        ));
        assert!(matches!(
            Signed::<Body>::parse(DocKind::Root, &bytes),
            Err(DocError::WrongType { .. })
        ));
        Ok(())
    }

    #[test]
    fn uppercase_hex_and_reordered_signatures_are_not_canonical() -> anyhow::Result<()> {
        let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let mut d = Signed::new(DocKind::Release, body())?;
        // Signed in either order, the bytes are the same.
        d.sign(&b);
        d.sign(&a);
        let mut e = Signed::new(DocKind::Release, body())?;
        e.sign(&a);
        e.sign(&b);
        let bytes = d.to_bytes();
        assert_eq!(bytes, e.to_bytes());
        Signed::<Body>::parse(DocKind::Release, &bytes)?;
        let text = String::from_utf8(bytes)?;

        let sig = hex::encode(d.signatures[0].sig);
        let upper = text.replacen(&sig, &sig.to_uppercase(), 1);
        assert_ne!(upper, text);
        assert!(matches!(
            Signed::<Body>::parse(DocKind::Release, upper.as_bytes()),
            Err(DocError::NotCanonical { .. })
        ));

        let entry = |s: &Signature| {
            format!(
                "{{\"key\":\"{}\",\"sig\":\"{}\"}}",
                s.key,
                hex::encode(s.sig)
            )
        };
        let (first, second) = (entry(&d.signatures[0]), entry(&d.signatures[1]));
        let swapped = text.replacen(
            &format!("{first},{second}"),
            &format!("{second},{first}"),
            1,
        );
        assert_ne!(swapped, text);
        assert!(matches!(
            Signed::<Body>::parse(DocKind::Release, swapped.as_bytes()),
            Err(DocError::NotCanonical { .. })
        ));
        let doubled = text.replacen(&first, &format!("{first},{first}"), 1);
        let keys = [a.public_id(), b.public_id()];
        let role = [RoleRequirement {
            name: "release".into(),
            keys: &keys,
            threshold: 2,
        }];
        assert!(matches!(
            Signed::<Body>::parse(DocKind::Release, doubled.as_bytes())?.check_signatures(&role),
            Err(SignatureError::Duplicate { .. })
        ));
        Ok(())
    }
}
