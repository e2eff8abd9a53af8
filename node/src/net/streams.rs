//! Stream helpers shared by the protocols: time limits on every stream operation, opening a stream,
//! and each admitted peer's outbox, a bounded queue of one-frame messages (HAVE, ANNOUNCE, REPORT)
//! drained by one task per peer: HAVE frames on one long-lived `have/2` stream, the rest a stream
//! each.

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
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))?
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

/// Frames waiting for one peer. A HAVE round sends one frame per artifact, announcements are rare:
/// 64 is many rounds' worth, and past it frames are dropped and counted, never queued without end
/// (a lost HAVE heals at the next full refresh).
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

/// How the outbox sends HAVE frames to its peer.
enum HaveLink {
    /// No `have/2` stream open now.
    Closed,
    /// The open `have/2` stream and when a frame last went out on it.
    Open(Stream, tokio::time::Instant),
    /// The peer does not speak `have/2`: a `have/1` stream per frame.
    Unsupported,
}

async fn drain(
    s: Arc<Shared>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut rx: mpsc::Receiver<Frame>,
) {
    let t = s.cfg.io_timeout;
    let mut link = HaveLink::Closed;
    #[cfg(feature = "test-faults")]
    if s.cfg.fault == Some(super::Fault::V1Only) {
        link = HaveLink::Unsupported;
    }
    loop {
        let idle_at = match &link {
            HaveLink::Open(_, last) => Some(*last + super::availability::IDLE),
            _ => None,
        };
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = s.shutdown.cancelled() => None,
            _ = async { tokio::time::sleep_until(idle_at.unwrap_or_else(tokio::time::Instant::now)).await }, if idle_at.is_some() => {
                if let HaveLink::Open(mut st, _) = std::mem::replace(&mut link, HaveLink::Closed) {
                    let _ = timed(t, st.close()).await;
                }
                continue;
            }
        };
        let Some(f) = frame else {
            if let HaveLink::Open(mut st, _) = link {
                let _ = timed(t, st.close()).await;
            }
            return;
        };
        if f.proto == Protocol::Have && !matches!(link, HaveLink::Unsupported) {
            match send_have(&s, &mut control, peer, t, &mut link, &f.body).await {
                Ok(()) => continue,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HAVE on the long-lived stream failed");
                    if !matches!(link, HaveLink::Unsupported) {
                        continue;
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
        if let Err(e) = r {
            tracing::debug!(%peer, proto = %f.proto, error = %e, "send failed");
        }
    }
}

/// Sends one HAVE frame on the peer's `have/2` stream, opening it first if need be. A failed write
/// drops the stream (the frame is lost, and heals at the next full refresh); the next frame opens a
/// new one. A peer that refuses `have/2` is marked `Unsupported` and the caller falls back to `have/1`.
async fn send_have(
    s: &Shared,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    t: Duration,
    link: &mut HaveLink,
    body: &[u8],
) -> io::Result<()> {
    let mut st = match std::mem::replace(link, HaveLink::Closed) {
        HaveLink::Open(st, _) => st,
        HaveLink::Unsupported => {
            *link = HaveLink::Unsupported;
            return Err(io::Error::other("have/2 unsupported"));
        }
        HaveLink::Closed => match open(s, control, peer, Protocol::HaveStream, t).await {
            Ok(st) => st,
            Err(e) => {
                if e.kind() == io::ErrorKind::Unsupported {
                    *link = HaveLink::Unsupported;
                }
                return Err(e);
            }
        },
    };
    timed(t, wire::write_frame(&mut st, body)).await?;
    *link = HaveLink::Open(st, tokio::time::Instant::now());
    Ok(())
}
