//! Format 4's coder for the add literals: a binary arithmetic coder driven by a context-mixing model
//! whose contexts include the base bytes under each add byte (`docs/deltas.md`).
//!
//! An add byte is new minus base where the base matches approximately. On code it is mostly zero,
//! and where it is not, it is usually part of a branch or data displacement whose target moved: the
//! bytes of that displacement in the base, and the base address they point to, tell which target it
//! is, and targets that moved once moved for every reference. LZMA2 sees only the add bytes; this
//! model also sees the base under them, which the device reads anyway to apply the delta.
//!
//! Each add byte is coded as a "non-zero?" bit, then (if non-zero) its eight bits from the top, each
//! bit predicted by [`CONTEXTS`] adaptive counters in hashed, checked tables of fixed size, mixed by
//! a small online logistic mixer and refined by one adaptive probability map. Everything is integer
//! arithmetic on fixed tables, so the encoder and every decoder compute the same predictions on any
//! machine. Memory is fixed: [`CONTEXTS`] tables of 2^[`TABLE_BITS`] four-byte slots (10 MiB) and a
//! 4 MiB map, whatever the delta's size.

use std::io::{self, Read};

/// Slots per context table, as a power of two. Part of the format: encoder and decoder must agree.
pub const TABLE_BITS: u32 = 18;
/// Base bytes the model sees from each add byte on, itself included (fewer at a control's end).
pub const LOOKAHEAD: usize = 4;
/// How many hashed contexts predict each bit.
pub const CONTEXTS: usize = 10;
/// Inputs to the mixer: one per context and a bias.
const INPUTS: usize = CONTEXTS + 1;
/// Mixer weight sets: the non-zero bit by recent zero run (4), the value bits by bit position (8).
const SETS: usize = 12;
/// An adaptive counter's rate, 1/(2n + 3) after n updates, stops falling at n = LIMIT.
const LIMIT: u32 = 255;
/// Weights are kept within this (16.16 fixed point): a hostile stream cannot overflow them.
const MAX_WEIGHT: i32 = 16 << 16;

/// The logistic function at 33 points, 1/(1 + e^(-(i - 16) / 2)), scaled to 4096.
const SQUASH: [i32; 33] = [
    1, 2, 4, 6, 10, 17, 27, 45, 74, 120, 194, 311, 488, 747, 1102, 1546, 2048, 2550, 2994, 3349,
    3608, 3785, 3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090, 4092, 4094, 4095,
];

/// 4096 / (1 + e^(-d / 256)), interpolated, for d in 1/256 units.
fn squash(d: i32) -> i32 {
    if d > 2047 {
        return 4095;
    }
    if d < -2047 {
        return 1;
    }
    let w = d & 127;
    let i = ((d >> 7) + 16) as usize;
    (SQUASH[i] * (128 - w) + SQUASH[i + 1] * w + 64) >> 7
}

fn hash(a: u32, b: u32) -> u32 {
    (a.wrapping_mul(0x9E37_79B1) ^ b)
        .wrapping_mul(0x85EB_CA6B)
        .rotate_left(13)
}

/// What the model knows of the next add byte: the base bytes from it to the end of its control
/// (at most [`LOOKAHEAD`]), and where it is in the base and the target.
pub struct Ctx<'a> {
    pub base: &'a [u8],
    pub base_pos: u64,
    pub target_pos: u64,
}

/// The model. Boxed: its tables are 14 MiB.
pub struct Model {
    /// Inverse of [`squash`] on 12-bit probabilities.
    stretch: Vec<i16>,
    /// Counter rates: 2^18 / (2n + 3).
    rate: [u32; LIMIT as usize + 1],
    /// Per context: slots of (8-bit check, 16-bit probability, 8-bit count), in buckets of four.
    tables: Vec<Vec<u32>>,
    hashes: [u32; CONTEXTS],
    slot: [usize; CONTEXTS],
    input: [i32; INPUTS],
    weights: Vec<i32>,
    set: usize,
    mixed: i32,
    /// The adaptive probability map: per (base byte, node), 33 interpolation points (16-bit).
    apm: Vec<u16>,
    apm_at: usize,
    p: i32,
    /// Base bytes and add bytes of the last four coded bytes, newest first.
    olds: [u8; 4],
    adds: [u8; 4],
    zero_run: u32,
    last_nonzero: u8,
    base_byte: u8,
}

impl Model {
    pub fn new() -> Box<Self> {
        let mut stretch = vec![0i16; 4096];
        let mut next = 0usize;
        for x in -2047..=2047 {
            let v = squash(x) as usize;
            for s in stretch.iter_mut().take(v + 1).skip(next) {
                *s = x as i16;
            }
            next = next.max(v + 1);
        }
        for s in stretch.iter_mut().skip(next) {
            *s = 2047;
        }
        let mut rate = [0u32; LIMIT as usize + 1];
        for (n, r) in rate.iter_mut().enumerate() {
            *r = (1u32 << 18) / (n as u32 * 2 + 3);
        }
        let row: Vec<u16> = (0..33)
            .map(|i| (squash(i * 128 - 2048) * 16) as u16)
            .collect();
        let apm = row.repeat(256 * 256);
        Box::new(Model {
            stretch,
            rate,
            tables: (0..CONTEXTS)
                .map(|_| vec![32768u32 << 8; 1 << TABLE_BITS])
                .collect(),
            hashes: [0; CONTEXTS],
            slot: [0; CONTEXTS],
            input: [0; INPUTS],
            weights: vec![1 << 14; SETS * INPUTS],
            set: 0,
            mixed: 2048,
            apm,
            apm_at: 0,
            p: 2048,
            olds: [0; 4],
            adds: [0; 4],
            zero_run: 0,
            last_nonzero: 0,
            base_byte: 0,
        })
    }

    /// Codes one add byte: `value` is the byte when encoding and ignored when decoding; returns the
    /// byte coded. One function for both directions keeps the two in step.
    pub fn code<C: Coder>(&mut self, c: &mut C, ctx: &Ctx<'_>, value: u8) -> io::Result<u8> {
        self.begin(ctx);
        let nonzero = self.bit(c, 0, u32::from(value != 0))?;
        let mut byte = 0u8;
        if nonzero != 0 {
            let mut node = 1u32;
            for k in (0..8).rev() {
                let b = self.bit(c, node, u32::from(value >> k) & 1)?;
                node = node << 1 | b;
            }
            byte = node as u8;
        }
        self.olds = [self.base_byte, self.olds[0], self.olds[1], self.olds[2]];
        self.adds = [byte, self.adds[0], self.adds[1], self.adds[2]];
        if byte == 0 {
            self.zero_run = self.zero_run.saturating_add(1);
        } else {
            self.zero_run = 0;
            self.last_nonzero = byte;
        }
        Ok(byte)
    }

    fn begin(&mut self, ctx: &Ctx<'_>) {
        let at = |j: usize| u32::from(ctx.base.get(j).copied().unwrap_or(0));
        let o = at(0);
        let [o1, o2, o3, _] = self.olds.map(u32::from);
        let [a1, a2, a3, a4] = self.adds.map(u32::from);
        let p4 = (ctx.target_pos & 3) as u32;
        let run = match self.zero_run {
            r @ 0..=15 => r,
            r => 48 - r.leading_zeros(),
        };
        // The four base bytes from here as a little-endian word, and the same word had it started
        // one byte back: a displacement's bytes, and the base address it points to (x86 `rel32`
        // counts from the end of the word), alone and with the shift between target and base
        // positions, since a reference's add is its target's move minus its own.
        let w0 = o | at(1) << 8 | at(2) << 16 | at(3) << 24;
        let w1 = o1 | o << 8 | at(1) << 16 | at(2) << 24;
        let pos = ctx.base_pos as u32;
        let t0 = pos.wrapping_add(4).wrapping_add(w0);
        let t1 = pos.wrapping_add(3).wrapping_add(w1);
        let shift = (ctx.target_pos as u32).wrapping_sub(pos);
        self.hashes = [
            hash(2, o | o1 << 8),
            hash(4, a1 | a2 << 8 | p4 << 16),
            hash(5, o1 | o2 << 8 | o3 << 16 | p4 << 24),
            hash(6, run | u32::from(self.last_nonzero) << 8 | p4 << 16),
            hash(7, a1 | a2 << 8 | a3 << 16 | a4 << 24),
            hash(20, w0),
            hash(30, t0),
            hash(hash(31, t1), a1),
            hash(hash(40, t0), shift),
            hash(hash(hash(41, t1), a1), shift),
        ];
        self.base_byte = o as u8;
    }

    /// Predicts, codes and learns one bit at `node` (0: non-zero?, 1..=255: the value's bit tree).
    fn bit<C: Coder>(&mut self, c: &mut C, node: u32, bit: u32) -> io::Result<u32> {
        let p = self.predict(node);
        let bit = c.bit(p, bit)?;
        self.update(bit);
        Ok(bit)
    }

    fn predict(&mut self, node: u32) -> i32 {
        let mask = (1u32 << TABLE_BITS) - 1;
        let node_hash = node.wrapping_mul(0x2545_F491);
        // First every context's bucket, each read once: the reads do not depend on one another, so
        // the processor fetches the ten cache lines at once (the search below would wait for each
        // in turn; this is most of the model's time).
        let mut buckets = [(0usize, 0u32); CONTEXTS];
        let mut touched = 0u32;
        for (k, b) in buckets.iter_mut().enumerate() {
            let h = (self.hashes[k] ^ node_hash).wrapping_mul(0x9E37_79B1);
            *b = ((h & mask) as usize & !3, h >> 24);
            touched ^= self.tables[k][b.0];
        }
        // And the adaptive probability map's row for this base byte and node (66 bytes, two
        // cache lines at most), which is known now but otherwise read only after the mix.
        let row = (usize::from(self.base_byte) << 8 | (node as usize & 255)) * 33;
        touched ^= u32::from(self.apm[row]) ^ u32::from(self.apm[row + 32]);
        std::hint::black_box(touched);
        for (k, &(bucket, check)) in buckets.iter().enumerate() {
            let t = &mut self.tables[k];
            // The slot with this check, else the bucket's least used one, reset.
            let mut found = None;
            let mut least = bucket;
            for j in bucket..bucket + 4 {
                if t[j] >> 24 == check {
                    found = Some(j);
                    break;
                }
                if t[j] & 255 < t[least] & 255 {
                    least = j;
                }
            }
            let j = found.unwrap_or_else(|| {
                t[least] = check << 24 | 32768 << 8;
                least
            });
            self.slot[k] = j;
            let p = (t[j] >> 12) & 0xfff;
            self.input[k] = i32::from(self.stretch[p as usize]);
        }
        self.input[CONTEXTS] = 256;
        self.set = if node == 0 {
            self.zero_run.min(3) as usize
        } else {
            3 + (32 - node.leading_zeros()) as usize
        };
        let w = &self.weights[self.set * INPUTS..][..INPUTS];
        let dot: i64 = self
            .input
            .iter()
            .zip(w)
            .map(|(&x, &w)| i64::from(x) * i64::from(w))
            .sum();
        let d = ((dot >> 16).clamp(-2047, 2047)) as i32;
        self.mixed = squash(d);
        let ctx = usize::from(self.base_byte) << 8 | (node as usize & 255);
        let s = d + 2048;
        let (lo, frac) = ((s >> 7) as usize, s & 127);
        let at = ctx * 33 + lo;
        self.apm_at = at + (frac >> 6) as usize;
        let refined =
            (i32::from(self.apm[at]) * (128 - frac) + i32::from(self.apm[at + 1]) * frac) >> 11;
        self.p = ((self.mixed + 3 * refined) >> 2).clamp(1, 4095);
        self.p
    }

    fn update(&mut self, bit: u32) {
        let err = ((bit as i32) << 12) - self.mixed;
        let w = &mut self.weights[self.set * INPUTS..][..INPUTS];
        for (w, &x) in w.iter_mut().zip(&self.input) {
            *w = (*w + ((x * err) >> 10)).clamp(-MAX_WEIGHT, MAX_WEIGHT);
        }
        let target = ((bit << 16) - bit) as i32;
        for k in 0..CONTEXTS {
            let s = &mut self.tables[k][self.slot[k]];
            let n = *s & 255;
            let p = ((*s >> 8) & 0xffff) as i32;
            let step = ((i64::from(target - p) * i64::from(self.rate[n as usize])) >> 18) as i32;
            let p = (p + step) as u32;
            *s = (*s & 0xff00_0000) | p << 8 | (n + u32::from(n < LIMIT));
        }
        let a = &mut self.apm[self.apm_at];
        let goal = ((bit as i32) << 16) + ((bit as i32) << 5) - 2 * bit as i32;
        *a = (i32::from(*a) + ((goal - i32::from(*a)) >> 6)) as u16;
    }
}

/// One direction of the arithmetic coder.
pub trait Coder {
    /// Codes `bit` (encoding) or reads one (decoding), `p` the 12-bit probability of a one.
    fn bit(&mut self, p: i32, bit: u32) -> io::Result<u32>;
}

/// The arithmetic encoder (32-bit, carry-less: the range shrinks until its top bytes agree).
pub struct Encoder {
    low: u32,
    high: u32,
    pub out: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            low: 0,
            high: u32::MAX,
            out: Vec::new(),
        }
    }
}

impl Encoder {
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&self.low.to_be_bytes());
        self.out
    }
}

fn split(low: u32, high: u32, p: i32) -> u32 {
    low + ((u64::from(high - low) * p as u64) >> 12) as u32
}

impl Coder for Encoder {
    fn bit(&mut self, p: i32, bit: u32) -> io::Result<u32> {
        let mid = split(self.low, self.high, p);
        if bit != 0 {
            self.high = mid;
        } else {
            self.low = mid + 1;
        }
        while (self.low ^ self.high) & 0xff00_0000 == 0 {
            self.out.push((self.high >> 24) as u8);
            self.low <<= 8;
            self.high = self.high << 8 | 255;
        }
        Ok(bit)
    }
}

/// The arithmetic decoder, reading the coded literals. It reads exactly what the encoder wrote:
/// needing a byte past the end means the stream was truncated.
pub struct Decoder<R: Read> {
    low: u32,
    high: u32,
    x: u32,
    input: R,
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl<R: Read> Decoder<R> {
    pub fn new(input: R) -> io::Result<Self> {
        let mut d = Decoder {
            low: 0,
            high: u32::MAX,
            x: 0,
            input,
            buf: vec![0; 16 * 1024],
            at: 0,
            len: 0,
        };
        for _ in 0..4 {
            d.x = d.x << 8 | u32::from(d.next()?);
        }
        Ok(d)
    }

    /// Whether a byte is left, reading more when the buffer is used up.
    fn fill(&mut self) -> io::Result<bool> {
        if self.at == self.len {
            self.len = loop {
                match self.input.read(&mut self.buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            self.at = 0;
        }
        Ok(self.at < self.len)
    }

    fn next(&mut self) -> io::Result<u8> {
        if !self.fill()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed delta: coded add literals truncated",
            ));
        }
        self.at += 1;
        Ok(self.buf[self.at - 1])
    }

    /// At the end: the coded stream must have been used up exactly.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.fill()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed delta: data past the coded add literals",
            ));
        }
        Ok(())
    }
}

impl<R: Read> Coder for Decoder<R> {
    fn bit(&mut self, p: i32, _: u32) -> io::Result<u32> {
        let mid = split(self.low, self.high, p);
        let bit = u32::from(self.x <= mid);
        if bit != 0 {
            self.high = mid;
        } else {
            self.low = mid + 1;
        }
        while (self.low ^ self.high) & 0xff00_0000 == 0 {
            self.low <<= 8;
            self.high = self.high << 8 | 255;
            self.x = self.x << 8 | u32::from(self.next()?);
        }
        Ok(bit)
    }
}

/// Literal add bytes that lie in one control, contiguous: where the first one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub base_pos: u64,
    pub target_pos: u64,
    pub len: u64,
    /// Where the control's add bytes end in the base: the model looks no further.
    pub base_end: u64,
}

/// Codes the literals, which lie at `segments` (in order, lengths summing to `literals.len()`).
#[cfg(test)]
pub fn encode(base: &[u8], segments: &[Segment], literals: &[u8]) -> io::Result<Vec<u8>> {
    encode_unless(base, segments, literals, &|_| false)?
        .ok_or_else(|| io::Error::other("delta: the model stopped that was never told to"))
}

/// How many literals are coded between two asks of [`encode_unless`]'s `enough`.
const ASK_EVERY: u64 = 64 * 1024;

/// As [`encode`], asking `enough` with the coded length so far every [`ASK_EVERY`] literals:
/// `None` where it answered yes (the coded length only grows, so a caller that only needs to know
/// the result is at least that long can stop it there).
pub fn encode_unless(
    base: &[u8],
    segments: &[Segment],
    literals: &[u8],
    enough: &dyn Fn(usize) -> bool,
) -> io::Result<Option<Vec<u8>>> {
    let mut model = Model::new();
    let mut enc = Encoder::default();
    let mut at = 0usize;
    let mut ask = ASK_EVERY;
    for s in segments {
        for i in 0..s.len {
            if at as u64 >= ask {
                if enough(enc.out.len()) {
                    tracing::debug!(
                        consumed = at,
                        of = literals.len(),
                        out = enc.out.len(),
                        "delta: the model stopped: its length so far settles the choice"
                    );
                    return Ok(None);
                }
                ask = at as u64 + ASK_EVERY;
            }
            let pos = s.base_pos + i;
            let end = s
                .base_end
                .min(pos + LOOKAHEAD as u64)
                .min(base.len() as u64);
            let ctx = Ctx {
                base: base.get(pos as usize..end as usize).unwrap_or(&[]),
                base_pos: pos,
                target_pos: s.target_pos + i,
            };
            let value = *literals
                .get(at)
                .ok_or_else(|| io::Error::other("delta: literal segments longer than literals"))?;
            model.code(&mut enc, &ctx, value)?;
            at += 1;
        }
    }
    if at != literals.len() {
        return Err(io::Error::other(
            "delta: literal segments shorter than literals",
        ));
    }
    Ok(Some(enc.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(coded: &[u8], base: &[u8], segments: &[Segment]) -> io::Result<Vec<u8>> {
        let mut model = Model::new();
        let mut dec = Decoder::new(coded)?;
        let mut out = vec![];
        for s in segments {
            for i in 0..s.len {
                let pos = s.base_pos + i;
                let end = s
                    .base_end
                    .min(pos + LOOKAHEAD as u64)
                    .min(base.len() as u64);
                let ctx = Ctx {
                    base: &base[pos as usize..end as usize],
                    base_pos: pos,
                    target_pos: s.target_pos + i,
                };
                out.push(model.code(&mut dec, &ctx, 0)?);
            }
        }
        dec.finish()?;
        Ok(out)
    }

    #[test]
    fn squash_and_stretch_are_inverse_and_monotonic() {
        let m = Model::new();
        let mut last = 0;
        for d in -2047..=2047 {
            let p = squash(d);
            assert!(p >= last && (1..=4095).contains(&p));
            last = p;
        }
        for p in 1..4095 {
            let d = i32::from(m.stretch[p as usize]);
            assert!((squash(d) - p).abs() <= 40, "p {p} d {d}");
        }
    }

    #[test]
    fn truncated_or_padded_coded_literals_are_refused() {
        let base: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let lits: Vec<u8> = (0..4000u32).map(|i| (i % 13 == 0) as u8 * 5).collect();
        let seg = [Segment {
            base_pos: 0,
            target_pos: 0,
            len: 4000,
            base_end: 4000,
        }];
        let coded = encode(&base, &seg, &lits).expect("encode");
        assert_eq!(decode(&coded, &base, &seg).expect("decode"), lits);
        let cut = decode(&coded[..coded.len() - 1], &base, &seg).expect_err("truncated");
        assert!(cut.to_string().contains("truncated"), "{cut}");
        let mut padded = coded.clone();
        padded.push(0);
        let pad = decode(&padded, &base, &seg).expect_err("padded");
        assert!(pad.to_string().contains("past"), "{pad}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn literals_come_back(
            base in proptest::collection::vec(any::<u8>(), 1..600),
            lits in proptest::collection::vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..600),
            split_at in 0usize..600,
        ) {
            // Two segments over the base (wrapping), the second with its control ending early.
            let n = lits.len() as u64;
            let k = (split_at as u64).min(n);
            let b = base.len() as u64;
            let segs = [
                Segment { base_pos: 0, target_pos: 10, len: k.min(b), base_end: b },
                Segment { base_pos: 0, target_pos: 1000, len: (n - k.min(b)).min(b / 2), base_end: b / 2 },
            ];
            let total = (segs[0].len + segs[1].len) as usize;
            let coded = encode(&base, &segs, &lits[..total]).expect("encode");
            prop_assert_eq!(decode(&coded, &base, &segs).expect("decode"), lits[..total].to_vec());
        }
    }
}
