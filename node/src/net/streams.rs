//! Stream helpers shared by the protocols: time limits on every stream operation, opening a stream,
//! and each admitted peer's outbox, a bounded queue of one-frame messages (HAVE, ANNOUNCE, REPORT,
//! peer lists, revocation lists) drained by one task per peer: HAVE frames, reports and peer lists
//! each on one long-lived stream (`have/2`, `report/2`, `peers/2`), the rest a stream each.

use std::{future::Future, io, sync::Arc, time::Duration};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;

use super::{
    actor::Shared,
    wire::{self, Protocol},
};

/// Runs `f` with a time limit; running over is `TimedOut`.
pub(super) async fn timed<T>(d: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(d, f).await.map_err(|_| timed_out())?
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// [`timed`] for a loop of many operations on one stream (a paced transfer's reads or writes, one
/// per cap slice): each operation gets the same limit, but they share one timer, which is moved
/// only when it fires before an operation's limit (at most once per limit). A timer per operation
/// was an insertion into the runtime's timer wheel and a removal per slice, on both sides of every
/// paced transfer.
pub(super) struct Deadline {
    limit: Duration,
    started: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    pub(super) fn new(limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            limit,
            started: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// Runs `f`, failing with `TimedOut` if it takes longer than the limit.
    pub(super) async fn run<T>(&mut self, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        self.started = tokio::time::Instant::now();
        let mut f = std::pin::pin!(f);
        loop {
            tokio::select! {
                biased;
                r = &mut f => return r,
                () = &mut self.timer => {
                    let due = self.started + self.limit;
                    if tokio::time::Instant::now() >= due {
                        return Err(timed_out());
                    }
                    // Set for an earlier operation: wait on for this one's limit.
                    self.timer.as_mut().reset(due);
                }
            }
        }
    }
}

/// Opens a stream of `proto` to `peer` within `t`, and counts it.
pub(super) async fn open(
    s: &Shared,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    proto: Protocol,
    t: Duration,
) -> io::Result<Stream> {
    tracing::trace!(%peer, ?proto, "opening a stream");
    s.metrics.stream_opened(proto.id().as_ref(), "outbound");
    timed(t, async {
        control
            .open_stream(peer, proto.id())
            .await
            .map_err(|e| match e {
                // Kept apart: a peer refusing a protocol version is not a failed stream.
                libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => {
                    io::Error::new(io::ErrorKind::Unsupported, e.to_string())
                }
                _ => io::Error::other(e.to_string()),
            })
    })
    .await
}

/// Inbound streams handled at once, per protocol; past it a new stream is dropped at once (the
/// opener sees a reset). One-frame handlers are short: they read one frame, or a GET and a status
/// byte; long-lived ones are bounded per connection. Serving itself is bounded by
/// `max_inbound_transfers`.
pub(super) fn inbound_limit(p: Protocol, cfg: &super::Config) -> usize {
    match p {
        Protocol::Admission | Protocol::Announce | Protocol::Peers => 64,
        // A list may be 512 KiB: 16 at once bound the memory to 8 MiB.
        Protocol::Revocations => 16,
        Protocol::Have | Protocol::Report => 256,
        // One long-lived stream per admitted peer (a reconnect may leave a second one briefly).
        Protocol::HaveStream | Protocol::ReportStream | Protocol::PeersStream => {
            cfg.max_connections as usize * 2
        }
        Protocol::Directive => 16,
        Protocol::Transfer => cfg.max_inbound_transfers.saturating_mul(4),
        // Long-lived: a peer keeps a few per connection (its requests in flight, then idle ones).
        Protocol::TransferSession => (cfg.max_connections as usize).saturating_mul(4),
    }
}

/// Frames waiting for one peer. A HAVE round sends one frame per artifact, announcements are rare:
/// 64 is many rounds' worth, and past it frames are dropped and counted, never queued without end
/// (the peer of a dropped HAVE gets a full refresh at the next round).
pub(super) const OUTBOX_FRAMES: usize = 64;

/// One message for a peer's outbox.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub proto: Protocol,
    pub body: Arc<Vec<u8>>,
}

/// An admitted peer's outbox. Dropping it ends its task once the queued frames are sent.
#[derive(Debug)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Frame>,
}

impl Outbox {
    /// Starts the task that sends `peer`'s frames in order.
    pub fn spawn(s: Arc<Shared>, control: libp2p_stream::Control, peer: PeerId) -> Self {
        let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
        tokio::spawn(drain(s, control, peer, rx));
        Self { tx }
    }

    /// Queues a frame; `false` if the outbox is full (the frame is dropped).
    pub fn push(&self, proto: Protocol, body: Arc<Vec<u8>>) -> bool {
        self.tx.try_send(Frame { proto, body }).is_ok()
    }
}

/// How the outbox sends one protocol's frames to its peer, for a protocol with a long-lived version
/// ([`Protocol::long_lived`]).
enum Link {
    /// No long-lived stream open now.
    Closed,
    /// The open stream and when a frame last went out on it.
    Open(Stream, tokio::time::Instant),
    /// The peer does not speak the long-lived version: a stream per frame.
    Unsupported,
}

/// An outbox's long-lived links, by one-frame protocol (at most one per protocol that has one).
#[derive(Default)]
struct Links(Vec<(Protocol, Link)>);

impl Links {
    fn get(&mut self, proto: Protocol) -> &mut Link {
        let i = match self.0.iter().position(|(p, _)| *p == proto) {
            Some(i) => i,
            None => {
                self.0.push((proto, Link::Closed));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    /// When the first open stream falls idle.
    fn next_idle(&self) -> Option<tokio::time::Instant> {
        self.0
            .iter()
            .filter_map(|(_, l)| match l {
                Link::Open(_, last) => Some(*last + super::availability::IDLE),
                _ => None,
            })
            .min()
    }

    /// Closes the streams idle since `before` (all of them with `None`).
    async fn close(&mut self, t: Duration, before: Option<tokio::time::Instant>) {
        for (_, l) in &mut self.0 {
            let idle = matches!(l, Link::Open(_, last) if before.is_none_or(|b| *last + super::availability::IDLE <= b));
            if idle {
                if let Link::Open(mut st, _) = std::mem::replace(l, Link::Closed) {
                    let _ = timed(t, st.close()).await;
                }
            }
        }
    }
}

async fn drain(
    s: Arc<Shared>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut rx: mpsc::Receiver<Frame>,
) {
    let t = s.cfg.io_timeout;
    let mut links = Links::default();
    #[cfg(feature = "test-faults")]
    let v1_only = s.cfg.fault == Some(super::Fault::V1Only);
    #[cfg(not(feature = "test-faults"))]
    let v1_only = false;
    loop {
        let idle_at = links.next_idle();
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = s.shutdown.cancelled() => None,
            _ = async { tokio::time::sleep_until(idle_at.unwrap_or_else(tokio::time::Instant::now)).await }, if idle_at.is_some() => {
                links.close(t, Some(tokio::time::Instant::now())).await;
                continue;
            }
        };
        let Some(f) = frame else {
            links.close(t, None).await;
            return;
        };
        if let Some(long) = f.proto.long_lived().filter(|_| !v1_only) {
            let link = links.get(f.proto);
            if !matches!(link, Link::Unsupported) {
                match send_long(&s, &mut control, peer, t, link, long, &f.body).await {
                    Ok(()) => {
                        frame_sent(&s, long);
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, proto = %long, error = %e, "frame on the long-lived stream failed");
                        if !matches!(link, Link::Unsupported) {
                            frame_lost(&s, peer, f.proto);
                            continue;
                        }
                    }
                }
            }
        }
        let r = async {
            let mut st = open(&s, &mut control, peer, f.proto, t).await?;
            timed(t, wire::write_frame(&mut st, &f.body)).await?;
            timed(t, st.close()).await
        }
        .await;
        match r {
            Ok(()) => frame_sent(&s, f.proto),
            Err(e) => {
                tracing::debug!(%peer, proto = %f.proto, error = %e, "send failed");
                frame_lost(&s, peer, f.proto);
            }
        }
    }
}

/// Counts a frame that went out on a stream of `proto` (`wardswarm_frames_sent_total`).
fn frame_sent(s: &Shared, proto: Protocol) {
    s.metrics
        .frames_sent
        .get_or_create(&super::metrics::ProtocolLabels {
            protocol: proto.id().as_ref().into(),
        })
        .inc();
}

/// Tells the actor a HAVE frame to `peer` was lost, so that `peer` gets our availability in full at
/// the next round. Other frames heal by their own rounds (peer lists, reports). If the actor's queue
/// is full, the peer's periodic refresh heals it instead.
fn frame_lost(s: &Shared, peer: PeerId, proto: Protocol) {
    if proto == Protocol::Have {
        let _ = s
            .internal
            .try_send(super::actor::Internal::HaveLost { peer });
    }
}

/// Sends one frame on the peer's long-lived `long` stream, opening it first if need be. A failed
/// write drops the stream (the frame is lost: the peer of a lost HAVE gets a full refresh at the next
/// round, peer lists heal at their next refresh, reports at the next report); the next frame opens
/// a new one. A peer that refuses `long` is marked `Unsupported` and the caller falls back to a
/// stream per frame.
async fn send_long(
    s: &Shared,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    t: Duration,
    link: &mut Link,
    long: Protocol,
    body: &[u8],
) -> io::Result<()> {
    let mut st = match std::mem::replace(link, Link::Closed) {
        Link::Open(st, _) => st,
        Link::Unsupported => {
            *link = Link::Unsupported;
            return Err(io::Error::other(format!("{long} unsupported")));
        }
        Link::Closed => match open(s, control, peer, long, t).await {
            Ok(st) => st,
            Err(e) => {
                if e.kind() == io::ErrorKind::Unsupported {
                    *link = Link::Unsupported;
                }
                return Err(e);
            }
        },
    };
    timed(t, wire::write_frame(&mut st, body)).await?;
    *link = Link::Open(st, tokio::time::Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation that completes after `after`.
    async fn op(after: Duration) -> io::Result<u32> {
        tokio::time::sleep(after).await;
        Ok(7)
    }

    /// Real time, with margins of seconds against a limit of 2 s (the workspace's tokio has no
    /// paused clock outside its own tests).
    #[tokio::test]
    async fn a_deadline_limits_each_operation_not_their_sum() {
        let limit = Duration::from_secs(2);
        let mut d = Deadline::new(limit);
        // Operations within the limit, 3 s in all, with waits between them that do not count
        // against the next (a cap's wait).
        for _ in 0..6 {
            assert_eq!(
                d.run(op(Duration::from_millis(300))).await.expect("within"),
                7
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // One that would take far longer fails at its own limit, however long the deadline lived.
        let start = tokio::time::Instant::now();
        let e = d.run(op(Duration::from_secs(60))).await.expect_err("over");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= limit);
        // And the deadline serves the next operation as before.
        assert_eq!(
            d.run(op(Duration::from_millis(10))).await.expect("within"),
            7
        );
    }
}
