//! Wire formats of the ward protocols, as plain async functions over `AsyncRead + AsyncWrite`
//! (testable without a swarm). Every message has a size cap checked before its body is read.
//!
//! | protocol | opener sends | responder sends |
//! |---|---|---|
//! | `/wardswarm/admission/1` | frame: its membership certificate | frame: its certificate, or nothing (closes) |
//! | `/wardswarm/have/1` | frame: `HAVE` (root, length, bitmap of verified groups) | nothing |
//! | `/wardswarm/announce/1` | frame: a signed release manifest | nothing |
//! | `/wardswarm/peers/1` | frame: where the other admitted members listen | nothing |
//! | `/wardswarm/peers/2` | `peers/1` frames, one after another on one long-lived stream | nothing |
//! | `/wardswarm/report/1` | frame: a device's status report (JSON) | nothing |
//! | `/wardswarm/report/2` | `report/1` frames, one after another on one long-lived stream | nothing |
//! | `/wardswarm/revocations/1` | frame: a signed certificate revocation list | nothing |
//! | `/wardswarm/transfer/1` | frame: `GET` (root, length, up to 64 runs of groups) | status byte, then the bao encoding of exactly those groups |
//! | `/wardswarm/transfer/2` | `GET` frames, one at a time, on one long-lived stream | per GET: status byte; for `ok`, the encoding in chunks (4-byte length, bytes), then a 4-byte zero |
//!
//! A frame is a 4-byte big-endian length and that many bytes.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::{groups::GroupSet, hash::Hash, outboard};

/// Admission (membership certificates).
pub const ADMISSION: StreamProtocol = StreamProtocol::new("/wardswarm/admission/1");
/// Availability of chunk groups.
pub const HAVE: StreamProtocol = StreamProtocol::new("/wardswarm/have/1");
/// Availability on one long-lived stream per peer: HAVE frames one after another (see
/// `net::availability`). Peers that do not speak it get `HAVE`, a stream per frame.
pub const HAVE_STREAM: StreamProtocol = StreamProtocol::new("/wardswarm/have/2");
/// Signed release announcements.
pub const ANNOUNCE: StreamProtocol = StreamProtocol::new("/wardswarm/announce/1");
/// Chunk-group transfer, one GET per stream (the responder closes the stream after its answer).
pub const TRANSFER: StreamProtocol = StreamProtocol::new("/wardswarm/transfer/1");
/// Chunk-group transfer, GET after GET on one long-lived stream: each response ends in-band (see
/// [`write_chunk_header`]), so the stream stays open for the next GET and a refusal costs one byte,
/// not a stream. Peers that do not speak it get [`TRANSFER`].
pub const TRANSFER_SESSION: StreamProtocol = StreamProtocol::new("/wardswarm/transfer/2");
/// Peer exchange: where the other admitted members listen (see `net::exchange`).
pub const PEERS: StreamProtocol = StreamProtocol::new("/wardswarm/peers/1");
/// Certificate revocation lists: one signed list per stream (see `net::revocation`).
pub const REVOCATIONS: StreamProtocol = StreamProtocol::new("/wardswarm/revocations/1");
/// Device status reports to the ward gateway: one JSON frame per stream.
pub const REPORT: StreamProtocol = StreamProtocol::new("/wardswarm/report/1");
/// Status reports one after another on one long-lived stream (as `have/2` for HAVE frames).
pub const REPORT_STREAM: StreamProtocol = StreamProtocol::new("/wardswarm/report/2");
/// Peer lists one after another on one long-lived stream (as `have/2` for HAVE frames).
pub const PEERS_STREAM: StreamProtocol = StreamProtocol::new("/wardswarm/peers/2");
/// The gateway's rollout directive to one device (JSON, one per stream; from the gateway only).
pub const DIRECTIVE: StreamProtocol = StreamProtocol::new("/wardswarm/directive/1");
/// The ward protocols, for dispatching inbound streams by an exhaustive match: a stream of any
/// other protocol is refused during protocol negotiation and never reaches a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// [`ADMISSION`].
    Admission,
    /// [`HAVE`].
    Have,
    /// [`HAVE_STREAM`].
    HaveStream,
    /// [`ANNOUNCE`].
    Announce,
    /// [`TRANSFER`].
    Transfer,
    /// [`TRANSFER_SESSION`].
    TransferSession,
    /// [`REPORT`].
    Report,
    /// [`REPORT_STREAM`].
    ReportStream,
    /// [`PEERS`].
    Peers,
    /// [`PEERS_STREAM`].
    PeersStream,
    /// [`REVOCATIONS`].
    Revocations,
    /// [`DIRECTIVE`].
    Directive,
}

impl Protocol {
    /// Every protocol a node accepts.
    pub const ALL: [Self; 12] = [
        Self::Admission,
        Self::Have,
        Self::HaveStream,
        Self::Announce,
        Self::Transfer,
        Self::TransferSession,
        Self::Report,
        Self::ReportStream,
        Self::Peers,
        Self::PeersStream,
        Self::Revocations,
        Self::Directive,
    ];
    /// The versioned protocol id.
    pub const fn id(self) -> StreamProtocol {
        match self {
            Self::Admission => ADMISSION,
            Self::Have => HAVE,
            Self::HaveStream => HAVE_STREAM,
            Self::Announce => ANNOUNCE,
            Self::Transfer => TRANSFER,
            Self::TransferSession => TRANSFER_SESSION,
            Self::Report => REPORT,
            Self::ReportStream => REPORT_STREAM,
            Self::Peers => PEERS,
            Self::PeersStream => PEERS_STREAM,
            Self::Revocations => REVOCATIONS,
            Self::Directive => DIRECTIVE,
        }
    }
    /// The long-lived version of a one-frame protocol, carrying its frames one after another, if it
    /// has one.
    pub const fn long_lived(self) -> Option<Self> {
        match self {
            Self::Have => Some(Self::HaveStream),
            Self::Report => Some(Self::ReportStream),
            Self::Peers => Some(Self::PeersStream),
            _ => None,
        }
    }
    /// A later version, which a node from before it does not speak (it then gets the `/1` one).
    pub const fn is_later_version(self) -> bool {
        matches!(
            self,
            Self::HaveStream | Self::ReportStream | Self::PeersStream | Self::TransferSession
        )
    }
    /// The protocol of an id, if it is one of ours.
    pub fn from_id(id: &StreamProtocol) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.id() == *id)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id().as_ref())
    }
}

/// Largest status report.
pub const MAX_REPORT_FRAME: usize = 16 * 1024;

/// A certificate is at most 4 KiB (see `signed::DocKind::Membership`).
pub const MAX_CERT_FRAME: usize = 4 * 1024;
/// A manifest is at most 64 KiB.
pub const MAX_ANNOUNCE_FRAME: usize = 64 * 1024;
/// A HAVE bitmap of 1 MiB covers a 128 GiB artifact.
pub const MAX_HAVE_FRAME: usize = 1024 * 1024 + 64;
/// Runs one GET may carry.
pub const MAX_GET_RUNS: usize = 64;
/// Largest GET frame: root, length, run count, runs.
const MAX_GET_LEN: usize = 32 + 8 + 2 + MAX_GET_RUNS * 16;
/// The most groups one GET may ask for (64 MiB): bounds the responder's work per request.
pub const MAX_GET_GROUPS: u64 = 4096;

/// Response status of a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The bao encoding follows.
    Ok = 0,
    /// The responder does not hold all requested groups.
    NotFound = 1,
    /// Rate limited or busy: retry later (not a refusal of the requester).
    Limited = 2,
    /// The requester is not an admitted ward member.
    Forbidden = 3,
}

impl Status {
    fn from_byte(b: u8) -> io::Result<Self> {
        Ok(match b {
            0 => Self::Ok,
            1 => Self::NotFound,
            2 => Self::Limited,
            3 => Self::Forbidden,
            other => return Err(invalid(format!("unknown status byte {other}"))),
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Frames up to this size are written with their length in one write.
const SMALL_FRAME: usize = 64 * 1024;

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| invalid("frame too large".into()))?;
    // One write for a small frame: on a muxed stream each write is a frame of its own (a yamux
    // header, a noise frame and a send), so a length written apart from its body doubles them.
    if body.len() <= SMALL_FRAME {
        let mut buf = Vec::with_capacity(4 + body.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(body);
        w.write_all(&buf).await?;
    } else {
        w.write_all(&len.to_be_bytes()).await?;
        w.write_all(body).await?;
    }
    w.flush().await
}

/// Reads one frame of at most `max` bytes; a larger announced length is refused before reading it.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(invalid(format!(
            "frame of {len} bytes is over the {max}-byte cap"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// A request for a set of runs of chunk groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// The artifact's bao root.
    pub root: Hash,
    /// Its signed length (both sides must agree, or proofs fail).
    pub length: u64,
    /// Ascending, non-overlapping, non-empty runs of groups.
    pub runs: Vec<std::ops::Range<u64>>,
}

impl Get {
    /// Encodes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(42 + self.runs.len() * 16);
        v.extend_from_slice(self.root.as_bytes());
        v.extend_from_slice(&self.length.to_be_bytes());
        v.extend_from_slice(&(self.runs.len().min(u16::MAX as usize) as u16).to_be_bytes());
        for r in &self.runs {
            v.extend_from_slice(&r.start.to_be_bytes());
            v.extend_from_slice(&r.end.to_be_bytes());
        }
        v
    }
    /// Decodes and checks: 1 to 64 runs, each non-empty, ascending and disjoint, inside the artifact,
    /// at most 4096 groups in all.
    pub fn from_bytes(b: &[u8]) -> io::Result<Self> {
        if b.len() < 42 {
            return Err(invalid(format!("GET of {} bytes is too short", b.len())));
        }
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut root = [0u8; 32];
        root.copy_from_slice(&b[..32]);
        let length = u(32);
        let n = u16::from_be_bytes([b[40], b[41]]) as usize;
        if n == 0 || n > MAX_GET_RUNS || b.len() != 42 + n * 16 {
            return Err(invalid(format!(
                "GET with {n} runs in {} bytes is malformed",
                b.len()
            )));
        }
        let groups = outboard::groups(length);
        let mut runs = Vec::with_capacity(n);
        let mut total = 0u64;
        let mut prev_end = 0u64;
        for i in 0..n {
            let (start, end) = (u(42 + i * 16), u(50 + i * 16));
            if start >= end || end > groups || (i > 0 && start < prev_end) {
                return Err(invalid(format!(
                    "GET run {start}..{end} is invalid for {groups} groups"
                )));
            }
            total += end - start;
            prev_end = end;
            runs.push(start..end);
        }
        if total > MAX_GET_GROUPS {
            return Err(invalid(format!(
                "GET asks for {total} groups, more than {MAX_GET_GROUPS}"
            )));
        }
        Ok(Self {
            root: Hash::from_bytes(root),
            length,
            runs,
        })
    }
    /// Every group asked for.
    pub fn groups(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|r| r.clone())
    }
}

/// Sends a GET and reads the status byte.
pub async fn send_get<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    get: &Get,
) -> io::Result<Status> {
    write_frame(s, &get.to_bytes()).await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Status::from_byte(b[0])
}

/// Reads a GET (responder side).
pub async fn read_get<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Get> {
    Get::from_bytes(&read_frame(r, MAX_GET_LEN).await?)
}

/// Writes the status byte of a response.
pub async fn write_status<W: AsyncWrite + Unpin>(w: &mut W, s: Status) -> io::Result<()> {
    w.write_all(&[s as u8]).await?;
    w.flush().await
}

/// Largest chunk of a `transfer/2` response: a responder sends its encoder's buffers (64 KiB); a
/// larger announced chunk is refused before it is read.
pub const MAX_RESPONSE_CHUNK: usize = 1024 * 1024;

/// The 4-byte header of a `transfer/2` response chunk of `len` bytes; `0` ends the response.
pub fn write_chunk_header(out: &mut [u8], len: usize) {
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
}

/// The length in a `transfer/2` chunk header, `0` at the end of the response; a chunk over
/// [`MAX_RESPONSE_CHUNK`] is refused.
pub fn chunk_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_RESPONSE_CHUNK {
        return Err(invalid(format!(
            "response chunk of {len} bytes is over the {MAX_RESPONSE_CHUNK}-byte cap"
        )));
    }
    Ok(len)
}

/// Which groups of an artifact a peer has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    /// The artifact's bao root.
    pub root: Hash,
    /// Its length.
    pub length: u64,
    /// Verified groups.
    pub groups: GroupSet,
}

impl Have {
    /// Encodes: root, length, then the bitmap.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40 + self.groups.to_bytes().len());
        v.extend_from_slice(self.root.as_bytes());
        v.extend_from_slice(&self.length.to_be_bytes());
        v.extend_from_slice(&self.groups.to_bytes());
        v
    }
    /// Decodes; the bitmap must be exactly as long as the length implies.
    pub fn from_bytes(b: &[u8]) -> io::Result<Self> {
        if b.len() < 40 {
            return Err(invalid("HAVE too short".into()));
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(&b[..32]);
        let length = u64::from_be_bytes(b[32..40].try_into().unwrap_or([0; 8]));
        let groups = outboard::groups(length);
        if (b.len() - 40) as u64 != groups.div_ceil(8) {
            return Err(invalid(format!(
                "HAVE bitmap of {} bytes does not fit {groups} groups",
                b.len() - 40
            )));
        }
        Ok(Self {
            root: Hash::from_bytes(root),
            length,
            groups: GroupSet::from_bytes(groups, &b[40..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn get_round_trips(root in any::<[u8; 32]>(), length in 1u64..(1 << 40), a in any::<u64>(), lens in proptest::collection::vec(1u64..64, 1..MAX_GET_RUNS)) {
            let groups = outboard::groups(length);
            let mut runs = vec![];
            let mut at = a % groups;
            for l in lens {
                if at >= groups { break; }
                let end = (at + l).min(groups);
                runs.push(at..end);
                at = end + 1;
            }
            let g = Get { root: Hash::from_bytes(root), length, runs };
            prop_assert_eq!(Get::from_bytes(&g.to_bytes()).expect("valid"), g);
        }

        #[test]
        fn have_round_trips(root in any::<[u8; 32]>(), length in 0u64..(1 << 26), bits in proptest::collection::vec(any::<u64>(), 0..50)) {
            let mut set = GroupSet::new(outboard::groups(length));
            for b in bits { set.insert(b % set.len().max(1)); }
            let h = Have { root: Hash::from_bytes(root), length, groups: set };
            prop_assert_eq!(Have::from_bytes(&h.to_bytes()).expect("valid"), h);
        }
    }

    #[test]
    fn oversized_and_invalid_messages_are_refused() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut buf, &[0u8; 100]).await.expect("write");
            let err = read_frame(&mut &buf[..], 99).await.expect_err("over cap");
            assert!(err.to_string().contains("over the 99-byte cap"));
            // A truncated frame is an error, not a short read.
            assert!(read_frame(&mut &buf[..50], 1000).await.is_err());
        });
        let g = Get {
            root: Hash::of(b"x"),
            length: 10 * 16384,
            runs: vec![5..11],
        };
        assert!(Get::from_bytes(&g.to_bytes()).is_err(), "past the end");
        let g = Get {
            runs: vec![3..3],
            ..g
        };
        assert!(Get::from_bytes(&g.to_bytes()).is_err(), "empty run");
        let g = Get {
            runs: vec![4..6, 5..7],
            ..g
        };
        assert!(Get::from_bytes(&g.to_bytes()).is_err(), "overlapping runs");
        let g = Get { runs: vec![], ..g };
        assert!(Get::from_bytes(&g.to_bytes()).is_err(), "no run");
        assert!(
            Have::from_bytes(&[0u8; 42]).is_err(),
            "bitmap length must match"
        );
        assert_eq!(chunk_len([0, 0, 0, 0]).expect("end"), 0);
        assert_eq!(chunk_len([0, 1, 0, 0]).expect("64 KiB"), 65_536);
        let err = chunk_len([0, 16, 0, 1]).expect_err("over the cap");
        assert!(
            err.to_string().contains("over the 1048576-byte cap"),
            "{err}"
        );
    }
}
