//! Deterministic fixtures for tests, benchmarks and simulations: pseudo-random bytes and a small trust
//! root with seeded keys. Nothing here is used on a production path.

use std::time::Duration;

use crate::{
    keys::SecretKey,
    root::{Role, RoleName, TrustRoot},
    time::Timestamp,
};

/// The one seeded generator for tests, benchmarks, simulations and the demo's images: xorshift64
/// (Marsaglia's 13/7/17 triple). Fast, not cryptographic; a seed gives the same sequence on every
/// machine, so print it when a test fails.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included: it is mixed into a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// A generator that starts at `state` as given (zero becomes one), for sequences that must
    /// match those of earlier versions.
    pub fn from_state(state: u64) -> Self {
        Self(state.max(1))
    }
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value in `0..n` (`n` > 0; modulo bias is negligible for the small `n` used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// `true` with probability `p`, in steps of one in a million.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.below(1_000_000) as f64) / 1e6 < p
    }
    /// Fills `buf`, 8 bytes (little-endian) per step.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
    }
}

/// `len` pseudo-random bytes, one per step of [`Rng::new`]`(seed)` (incompressible; same bytes for
/// the same seed).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// Writes `size` incompressible bytes from [`Rng::new`]`(seed)` to `path`.
pub fn write_random(path: &std::path::Path, size: u64, seed: u64) -> std::io::Result<()> {
    write_stream(path, size, Rng::new(seed))
}

/// Writes `size` bytes of `rng`'s stream ([`Rng::fill`]) to `path`.
pub fn write_stream(path: &std::path::Path, size: u64, mut rng: Rng) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        rng.fill(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
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

/// The fixtures the fuzz targets (`node/fuzz`) check their inputs against, and that the seed
/// corpus (`cargo run -p wardswarm-node --example fuzz_seeds`) is built from: fixed keys, a fixed
/// time, a fixed artifact and delta base, so a crash found once reproduces anywhere.
pub mod fuzz {
    use std::time::Duration;

    use super::{bytes, TestKeys};
    use crate::{root::TrustRoot, time::Timestamp};

    /// The fixtures' "now": 2027-01-15.
    pub const NOW: u64 = 1_800_000_000;
    /// The ward of the fixtures' certificates and lists.
    pub const WARD: &str = "icu-3";
    /// Five full chunk groups and a partial sixth.
    pub const ARTIFACT_LEN: usize = 5 * 16384 + 777;

    /// The time the fixtures are valid at.
    pub fn now() -> Timestamp {
        Timestamp::from_unix(NOW)
    }
    /// The trust root (TestKeys, valid ten years from `NOW`).
    pub fn root() -> TrustRoot {
        TestKeys::default().root(now(), Duration::from_secs(10 * 365 * 86_400))
    }
    /// The artifact the transfer targets receive.
    pub fn artifact() -> Vec<u8> {
        bytes(ARTIFACT_LEN, 0xf022)
    }
    /// The base the delta target applies deltas to: random bytes around a gzip member, so that
    /// format 5's base streams have something to inflate.
    pub fn base() -> Vec<u8> {
        let mut b = bytes(32 << 10, 0xba5e);
        b.extend_from_slice(&gzip(&lines(0, 800), 9));
        b.extend_from_slice(&bytes(32 << 10, 0xba5f));
        b
    }
    /// Numbered text lines `from..to`.
    pub fn lines(from: u32, to: u32) -> Vec<u8> {
        (from..to)
            .flat_map(|i| format!("{i} changed the package's files\n").into_bytes())
            .collect()
    }
    /// A gzip member of `data` at zlib `level`.
    pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        // Writing to a Vec cannot fail.
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }
}
