//! Deterministic fixtures for tests, benchmarks and simulations: pseudo-random bytes and a small trust
//! root with seeded keys. Nothing here is used on a production path.

use std::time::Duration;

use crate::{
    keys::SecretKey,
    root::{Role, RoleName, TrustRoot},
    time::Timestamp,
};

/// `len` pseudo-random bytes from a xorshift generator (incompressible; same bytes for the same seed).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Keys of a test trust root, each role 1-of-1, from fixed seeds.
#[derive(Debug, Clone)]
pub struct TestKeys {
    /// Root key (seed 1).
    pub root: SecretKey,
    /// Release key (seed 2).
    pub release: SecretKey,
    /// Membership key (seed 3).
    pub membership: SecretKey,
}

impl Default for TestKeys {
    fn default() -> Self {
        Self {
            root: SecretKey::from_seed([1; 32]),
            release: SecretKey::from_seed([2; 32]),
            membership: SecretKey::from_seed([3; 32]),
        }
    }
}

impl TestKeys {
    /// A self-signed version-1 root over these keys, valid for `valid`.
    pub fn root(&self, now: Timestamp, valid: Duration) -> TrustRoot {
        let role = |n, k: &SecretKey| {
            Role::new(n, vec![k.public_id()], 1).unwrap_or_else(|e| panic!("test role: {e}"))
        };
        let mut r = TrustRoot::new(
            1,
            now.saturating_add(valid),
            role(RoleName::Root, &self.root),
            role(RoleName::Release, &self.release),
            role(RoleName::Membership, &self.membership),
        )
        .unwrap_or_else(|e| panic!("test root: {e}"));
        r.sign(&self.root, None)
            .unwrap_or_else(|e| panic!("test root: {e}"));
        r
    }
}
