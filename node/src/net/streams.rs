//! Stream helpers shared by the protocols: time limits on every stream operation, opening a stream,
//! and each admitted peer's outbox, a bounded queue of one-frame messages (HAVE, ANNOUNCE, REPORT)
//! drained by one task per peer.

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

/// Opens a stream of `proto` to `peer` within `t`.
pub(super) async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    proto: Protocol,
    t: Duration,
) -> io::Result<Stream> {
    timed(t, async {
        control
            .open_stream(peer, proto.id())
            .await
            .map_err(|e| io::Error::other(e.to_string()))
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
    /// Starts the task that sends `peer`'s frames, one stream each, in order.
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

async fn drain(
    s: Arc<Shared>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut rx: mpsc::Receiver<Frame>,
) {
    let t = s.cfg.io_timeout;
    loop {
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = s.shutdown.cancelled() => None,
        };
        let Some(f) = frame else { return };
        let r = async {
            let mut st = open(&mut control, peer, f.proto, t).await?;
            timed(t, wire::write_frame(&mut st, &f.body)).await?;
            timed(t, st.close()).await
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(%peer, proto = %f.proto, error = %e, "send failed");
        }
    }
}
