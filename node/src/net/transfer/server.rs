//! The responder's side of a transfer: read the GET, decide ([`crate::net::policy::serve`]), then
//! stream the store's bao encoding to the peer under the upload cap.

use std::{
    io::{self, Write},
    sync::Arc,
};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;

use super::{pass_cap, PIPE_BUF, PIPE_DEPTH};
use crate::net::{
    actor::Shared,
    admission::{admitted_role, source_label},
    metrics::TransferLabels,
    policy::{self, ServeRequest},
    streams::timed,
    wire::{self, Status},
};

/// Answers one inbound GET.
pub(in crate::net) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let t = s.cfg.io_timeout;
    let Ok(get) = timed(t, wire::read_get(&mut st)).await else {
        return;
    };
    let role = admitted_role(&s, &peer).await;
    let entry = s.store.get(&get.root).filter(|e| {
        let have = e.have();
        e.length() == get.length && get.groups().all(|g| have.contains(g))
    });
    let max_serving = s.cfg.max_inbound_transfers;
    let mut status = policy::serve(ServeRequest {
        admitted: role.is_some(),
        uploads: s.upload.rate() != Some(0),
        holds: entry.is_some(),
        serving: max_serving.saturating_sub(s.serving.available_permits()),
        max_serving,
    });
    let permit = match status {
        Status::Ok => s.serving.clone().try_acquire_owned().ok(),
        _ => None,
    };
    if status == Status::Ok && permit.is_none() {
        // Another transfer took the last slot since the decision.
        status = Status::Limited;
    }
    #[cfg(feature = "test-faults")]
    if status == Status::Ok && crate::net::faults::stall(s.cfg.fault, &s.shutdown).await {
        return;
    }
    if status != Status::Ok {
        let _ = timed(t, wire::write_status(&mut st, status)).await;
        let _ = st.close().await;
        return;
    }
    let Some(entry) = entry else {
        return;
    };
    // "Ok" goes out with the first bytes of the encoding, not in a frame and a send of its own.
    let label = TransferLabels {
        artifact: get.root.short(),
        source: source_label(role).into(),
    };
    // The encoder reads the store on a blocking thread and hands the bao stream over in large
    // buffers; this task passes them to the peer under the upload cap.
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    let encoder = tokio::task::spawn_blocking(move || {
        let mut w = PipeWriter::new(tx);
        w.buf.push(Status::Ok as u8);
        entry
            .serve(&get.runs, &mut w)
            .map_err(|e| e.to_string())
            .and(w.flush().map_err(|e| e.to_string()))
    });
    let sent = send_pipe(&s, &mut st, rx, &label).await;
    let encoded = encoder.await;
    drop(permit);
    match (encoded, sent) {
        (Ok(Err(e)), _) => tracing::debug!(%peer, error = %e, "serving stopped"),
        (Err(e), _) => tracing::debug!(%peer, error = %e, "serving task failed"),
        (_, Err(e)) => tracing::debug!(%peer, error = %e, "serving stopped: the stream failed"),
        _ => {}
    }
}

/// The blocking encoder's output: fills `PIPE_BUF` buffers and hands them to `send_pipe`.
struct PipeWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(PIPE_BUF),
        }
    }

    fn hand_over(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_BUF));
        self.tx.blocking_send(full).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream to the peer closed before the response was sent",
            )
        })
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIPE_BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIPE_BUF {
            self.hand_over()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.hand_over()
        }
    }
}

/// Sends the encoder's buffers to the peer in cap slices, then closes the stream. Returns when the
/// encoder is done (its sender dropped) or the stream fails; dropping `rx` then stops the encoder.
async fn send_pipe(
    s: &Shared,
    st: &mut Stream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    label: &TransferLabels,
) -> io::Result<()> {
    let t = s.cfg.io_timeout;
    // The status byte at the head of the first buffer is protocol, not artifact bytes: the meters
    // count only the encoding.
    let mut unmetered = 1u64;
    // Looked up once, not per slice: a family lookup hashes the labels under a lock.
    let sent = s.metrics.sent_bytes.get_or_create(label).clone();
    while let Some(buf) = rx.recv().await {
        #[cfg(feature = "test-faults")]
        let buf = {
            let mut buf = buf;
            crate::net::faults::corrupt(s.cfg.fault, &mut buf);
            buf
        };
        let mut at = 0;
        while at < buf.len() {
            // Small slices keep the rate over any second close to the cap (see `Cap::slice_bytes`).
            let end = buf.len().min(at + s.upload.slice_bytes());
            let n = (end - at) as u64;
            pass_cap(s, &s.upload, "upload", n).await;
            timed(t, st.write_all(&buf[at..end])).await?;
            let n = n - std::mem::take(&mut unmetered).min(n);
            sent.inc_by(n);
            s.metrics.sent_all.inc_by(n);
            at = end;
        }
    }
    timed(t, st.flush()).await?;
    timed(t, st.close()).await
}
