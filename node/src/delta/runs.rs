//! The add bytes' zero runs (formats 3 and 4), both ways: [`ZeroRuns`] splits them as the diff
//! writes them, and [`Adds`] gives them back to the applier, for every format.

use std::io::{self, Read};

use super::{cm, get_varint, malformed, put_varint, Section, ZERO_RUN_MIN};

/// The add bytes of format 3 as they are written: runs of at least [`ZERO_RUN_MIN`] zeros taken out,
/// the rest kept as literals. `pairs` holds (literal count, zero count) LEB128 pairs: that many
/// literal bytes, then that many zeros. The add bytes are mostly zeros (every byte where the base
/// matches exactly); a root file system image's are 99.6 % zeros, and LZMA2 spent most of its time
/// on them.
#[derive(Default)]
pub(super) struct ZeroRuns {
    pairs: Vec<u8>,
    literals: Vec<u8>,
    /// Literal bytes since the last pair.
    pending: u64,
    /// Zeros seen since the last non-zero byte, not yet written either way.
    zeros: u64,
    /// Where the literals lie in the base and the target (format 4's model needs each one's place).
    segments: Vec<cm::Segment>,
    /// Where the pending zeros lie, while they may still become literals (fewer than
    /// [`ZERO_RUN_MIN`]).
    zero_segments: Vec<cm::Segment>,
}

/// Appends `len` bytes at `off` into `at` to `segments`, joined to the last one where they follow it.
fn add_segment(segments: &mut Vec<cm::Segment>, at: &cm::Segment, off: u64, len: u64) {
    let s = cm::Segment {
        base_pos: at.base_pos + off,
        target_pos: at.target_pos + off,
        len,
        base_end: at.base_end,
    };
    match segments.last_mut() {
        Some(l)
            if l.base_pos + l.len == s.base_pos
                && l.target_pos + l.len == s.target_pos
                && l.base_end == s.base_end =>
        {
            l.len += len
        }
        _ => segments.push(s),
    }
}

impl ZeroRuns {
    /// One control's add bytes, which lie where `at` says (its `len` unused).
    pub(super) fn push(&mut self, mut data: &[u8], at: &cm::Segment) {
        let mut off = 0;
        while !data.is_empty() {
            let z = data.iter().position(|&b| b != 0).unwrap_or(data.len());
            self.zeros += z as u64;
            if z > 0 && self.zeros < ZERO_RUN_MIN {
                add_segment(&mut self.zero_segments, at, off, z as u64);
            } else if self.zeros >= ZERO_RUN_MIN {
                self.zero_segments.clear();
            }
            off += z as u64;
            data = &data[z..];
            if data.is_empty() {
                break;
            }
            self.settle_zeros();
            let n = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            self.literals.extend_from_slice(&data[..n]);
            self.pending += n as u64;
            add_segment(&mut self.segments, at, off, n as u64);
            off += n as u64;
            data = &data[n..];
        }
    }

    /// The zeros before a non-zero byte (or the end): a run of their own, or literals.
    fn settle_zeros(&mut self) {
        if self.zeros >= ZERO_RUN_MIN {
            put_varint(&mut self.pairs, self.pending);
            put_varint(&mut self.pairs, self.zeros);
            self.pending = 0;
        } else {
            self.literals
                .resize(self.literals.len() + self.zeros as usize, 0);
            self.pending += self.zeros;
            for z in std::mem::take(&mut self.zero_segments) {
                if z.len > 0 {
                    add_segment(&mut self.segments, &z, 0, z.len);
                }
            }
        }
        self.zero_segments.clear();
        self.zeros = 0;
    }

    /// The pairs, the literals and where the literals lie. No pair is (0, 0).
    pub(super) fn finish(mut self) -> (Vec<u8>, Vec<u8>, Vec<cm::Segment>) {
        self.settle_zeros();
        if self.pending > 0 {
            put_varint(&mut self.pairs, self.pending);
            put_varint(&mut self.pairs, 0);
        }
        (self.pairs, self.literals, self.segments)
    }
}

/// The add stream: whole (formats 1 and 2) or as zero runs and literals (format 3, [`ZeroRuns`]).
pub(super) enum Adds<R: Read> {
    Whole(Section<R>),
    Runs {
        pairs: Box<Section<R>>,
        literals: Box<Section<R>>,
        /// Of the current pair: literal bytes, then zeros, still to give.
        literal: u64,
        zeros: u64,
    },
    /// Format 4: as `Runs`, the literals decoded by the model, which needs each one's context.
    Modeled {
        pairs: Box<Section<R>>,
        literals: Box<cm::Decoder<Section<R>>>,
        /// Made at the first literal: 14 MiB, not worth making for a delta that fails before it.
        model: Option<Box<cm::Model>>,
        literal: u64,
        zeros: u64,
    },
}

/// The next (literals, zeros) pair of format 3 or 4, or `None` at the end of the add bytes.
fn next_pair(pairs: &mut impl Read) -> io::Result<Option<(u64, u64)>> {
    let truncated = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => malformed("truncated zero run"),
        _ => e,
    };
    let Some(l) = get_varint(pairs).map_err(truncated)? else {
        return Ok(None);
    };
    let z = get_varint(pairs)
        .map_err(truncated)?
        .ok_or_else(|| malformed("truncated zero run"))?;
    if l == 0 && z == 0 {
        return Err(malformed("an empty zero run"));
    }
    Ok(Some((l, z)))
}

impl<R: Read> Adds<R> {
    /// Format 4: the next add byte, given its context.
    pub(super) fn modeled(&mut self, ctx: &cm::Ctx<'_>) -> io::Result<u8> {
        let Self::Modeled {
            pairs,
            literals,
            model,
            literal,
            zeros,
        } = self
        else {
            return Err(io::Error::other(
                "delta: add bytes read without their model",
            ));
        };
        while *literal == 0 && *zeros == 0 {
            (*literal, *zeros) =
                next_pair(pairs)?.ok_or_else(|| malformed("add stream too short"))?;
        }
        if *literal > 0 {
            *literal -= 1;
            return model
                .get_or_insert_with(cm::Model::new)
                .code(literals.as_mut(), ctx, 0);
        }
        *zeros -= 1;
        Ok(0)
    }

    /// At the last control: every add byte must have been used, and every stream read to its end.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        let past = || Err(malformed("data past the last control"));
        match self {
            Self::Modeled {
                pairs,
                literals,
                literal,
                zeros,
                ..
            } => {
                if *literal > 0 || *zeros > 0 || next_pair(pairs)?.is_some() {
                    return past();
                }
                literals.finish()
            }
            _ => match self.read(&mut [0u8])? {
                0 => Ok(()),
                _ => past(),
            },
        }
    }
}

impl<R: Read> Read for Adds<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (pairs, literals, literal, zeros) = match self {
            Self::Whole(s) => return s.read(buf),
            Self::Modeled { .. } => {
                return Err(io::Error::other(
                    "delta: modeled add bytes read as a stream",
                ))
            }
            Self::Runs {
                pairs,
                literals,
                literal,
                zeros,
            } => (pairs, literals, literal, zeros),
        };
        if buf.is_empty() {
            return Ok(0);
        }
        while *literal == 0 && *zeros == 0 {
            let Some(pair) = next_pair(pairs)? else {
                // The end of the add bytes: every literal must have been used.
                return if literals.read(&mut [0u8])? == 0 {
                    Ok(0)
                } else {
                    Err(malformed("add literals past the last zero run"))
                };
            };
            (*literal, *zeros) = pair;
        }
        if *literal > 0 {
            let n = (*literal).min(buf.len() as u64) as usize;
            literals
                .read_exact(&mut buf[..n])
                .map_err(|_| malformed("add literals too short"))?;
            *literal -= n as u64;
            return Ok(n);
        }
        let n = (*zeros).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *zeros -= n as u64;
        Ok(n)
    }
}
