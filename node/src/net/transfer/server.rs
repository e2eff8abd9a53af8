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
    streams::{timed, Deadline},
    wire::{self, Status},
};

/// Answers one inbound GET (`transfer/1`), then closes the stream.
pub(in crate::net) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let t = s.cfg.io_timeout;
    let Ok(get) = timed(t, wire::read_get(&mut st)).await else {
        return;
    };
    let _ = respond(&s, peer, &mut st, get, false).await;
    let _ = timed(t, st.close()).await;
}

/// Answers GET after GET on one `transfer/2` stream, until the peer closes it, falls silent for
/// [`super::SESSION_IDLE`], sends a malformed GET, or a response fails (then the stream is dropped;
/// the peer may open another). A peer that is not admitted gets "forbidden" and the stream ends.
pub(in crate::net) async fn inbound_session(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    loop {
        let get = tokio::select! {
            g = timed(super::SESSION_IDLE, wire::read_get(&mut st)) => g,
            _ = s.shutdown.cancelled() => return,
        };
        let Ok(get) = get else {
            return;
        };
        if !respond(&s, peer, &mut st, get, true).await {
            let _ = timed(s.cfg.io_timeout, st.close()).await;
            return;
        }
    }
}

/// Decides on one GET ([`policy::serve`]) and answers it: the status byte, and for `ok` the store's
/// encoding under the upload cap, in chunks that end in-band if `session` (`transfer/2`). `true` if
/// the answer went out whole and the stream may carry the next GET.
async fn respond(s: &Shared, peer: PeerId, st: &mut Stream, get: wire::Get, session: bool) -> bool {
    let t = s.cfg.io_timeout;
    let role = admitted_role(s, &peer).await;
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
        return false;
    }
    let Some(entry) = entry.filter(|_| status == Status::Ok) else {
        let sent = timed(t, wire::write_status(st, status)).await.is_ok();
        return sent && status != Status::Forbidden;
    };
    // "Ok" goes out with the first bytes of the encoding, not in a frame and a send of its own.
    let label = TransferLabels {
        artifact: get.root.short(),
        source: source_label(role).into(),
    };
    // A small response is encoded here, whole, before it is sent (`super::INLINE_GROUPS`). A larger
    // one is encoded on a blocking thread that hands the bao stream over in large buffers while this
    // task passes them to the peer under the upload cap.
    let inline = super::inline(&get);
    let encode = move |tx| {
        let mut w = PipeWriter::new(tx, session);
        // `finish` only after a whole encoding: after a failed hand-over there is nothing to end.
        entry
            .serve(&get.runs, &mut w)
            .map_err(|e| e.to_string())
            .and_then(|()| w.finish().map_err(|e| e.to_string()))
    };
    let (encoded, sent) = if inline {
        let (tx, rx) = mpsc::channel(INLINE_BUFS);
        let encoded = encode(Handover::Held(tx));
        (Ok(encoded), send_pipe(s, st, rx, &label).await)
    } else {
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let encoder = tokio::task::spawn_blocking(move || encode(Handover::Pipe(tx)));
        let sent = send_pipe(s, st, rx, &label).await;
        (encoder.await, sent)
    };
    drop(permit);
    match (encoded, sent) {
        (Ok(Ok(())), Ok(())) => true,
        (Ok(Err(e)), _) => {
            tracing::debug!(%peer, error = %e, "serving stopped");
            false
        }
        (Err(e), _) => {
            tracing::debug!(%peer, error = %e, "serving task failed");
            false
        }
        (_, Err(e)) => {
            tracing::debug!(%peer, error = %e, "serving stopped: the stream failed");
            false
        }
    }
}

/// Buffers an inline response can fill: `super::max_encoded` of `super::INLINE_GROUPS` groups, its
/// status byte and chunk headers, in `PIPE_BUF` buffers, with room to spare.
const INLINE_BUFS: usize = 4;
const _: () = assert!(super::max_encoded(super::INLINE_GROUPS) + 64 < (INLINE_BUFS - 1) * PIPE_BUF);

/// Where a [`PipeWriter`]'s full buffers go.
enum Handover {
    /// To `send_pipe` running on another task while this encoder runs on a blocking thread: waits
    /// while the pipe is full.
    Pipe(mpsc::Sender<(Vec<u8>, u64)>),
    /// Held until the whole (small) response is encoded on the sending task itself, then sent.
    Held(mpsc::Sender<(Vec<u8>, u64)>),
}

/// The encoder's output: fills `PIPE_BUF` buffers and hands them to `send_pipe`, each with the
/// count of its protocol bytes (the status byte, chunk headers), which the meters leave out. In a
/// session each buffer is one chunk: its header is reserved at the chunk's start and filled in when
/// the buffer is handed over.
struct PipeWriter {
    tx: Handover,
    buf: Vec<u8>,
    /// Protocol bytes in `buf`.
    overhead: u64,
    /// Chunked (`transfer/2`): where the open chunk's header is in `buf`.
    chunk: Option<usize>,
}

impl PipeWriter {
    fn new(tx: Handover, session: bool) -> Self {
        let mut w = Self {
            tx,
            buf: Vec::with_capacity(PIPE_BUF),
            overhead: 1,
            chunk: session.then_some(0),
        };
        w.buf.push(Status::Ok as u8);
        w.open_chunk();
        w
    }

    fn open_chunk(&mut self) {
        if self.chunk.is_some() {
            self.chunk = Some(self.buf.len());
            self.buf.extend_from_slice(&[0; 4]);
            self.overhead += 4;
        }
    }

    /// Bytes of the encoding in `buf` (past the open chunk's header).
    fn data_len(&self) -> usize {
        match self.chunk {
            Some(head) => self.buf.len() - head - 4,
            None => self.buf.len(),
        }
    }

    fn hand_over(&mut self) -> io::Result<()> {
        if let Some(head) = self.chunk {
            let len = self.data_len();
            wire::write_chunk_header(&mut self.buf[head..], len);
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_BUF));
        let overhead = std::mem::take(&mut self.overhead);
        let sent = match &self.tx {
            Handover::Pipe(tx) => tx.blocking_send((full, overhead)).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the stream to the peer closed before the response was sent",
                )
            }),
            // `INLINE_BUFS` holds any response `super::inline` admits.
            Handover::Held(tx) => tx.try_send((full, overhead)).map_err(|_| {
                io::Error::other("an inline response outgrew its buffers (a bug in wardswarm)")
            }),
        };
        if sent.is_err() {
            // Nothing more goes out: no chunk is open in the (empty) buffer.
            self.chunk = None;
        }
        sent
    }

    /// Hands over the rest of the response; in a session, with the empty chunk that ends it.
    fn finish(mut self) -> io::Result<()> {
        if let Some(head) = self.chunk {
            let len = self.data_len();
            if len > 0 {
                wire::write_chunk_header(&mut self.buf[head..], len);
                self.buf.extend_from_slice(&[0; 4]);
                self.overhead += 4;
            }
            // An empty open chunk's header, still zero, is the end.
            self.chunk = None;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hand_over()
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIPE_BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIPE_BUF {
            self.hand_over()?;
            self.open_chunk();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.data_len() == 0 {
            Ok(())
        } else {
            self.hand_over()?;
            self.open_chunk();
            Ok(())
        }
    }
}

/// Sends the encoder's buffers to the peer in cap slices, then flushes. Returns when the encoder is
/// done (its sender dropped) or the stream fails; dropping `rx` then stops the encoder.
async fn send_pipe(
    s: &Shared,
    st: &mut Stream,
    mut rx: mpsc::Receiver<(Vec<u8>, u64)>,
    label: &TransferLabels,
) -> io::Result<()> {
    let mut deadline = Deadline::new(s.cfg.io_timeout);
    // Looked up once, not per slice: a family lookup hashes the labels under a lock.
    let sent = s.metrics.sent_bytes.get_or_create(label).clone();
    // The status byte and chunk headers are protocol, not artifact bytes: the meters count only the
    // encoding.
    while let Some((buf, mut unmetered)) = rx.recv().await {
        #[cfg(feature = "test-faults")]
        let buf = {
            let mut buf = buf;
            crate::net::faults::corrupt(s.cfg.fault, &mut buf);
            buf
        };
        let mut at = 0;
        while at < buf.len() {
            // Small slices keep the rate over any second close to the cap (see `Cap::slice_bytes`).
            let end = buf.len().min(at.saturating_add(s.upload.slice_bytes()));
            let n = (end - at) as u64;
            pass_cap(s, &s.upload, "upload", n).await;
            deadline.run(st.write_all(&buf[at..end])).await?;
            let n = n - std::mem::take(&mut unmetered).min(n);
            sent.inc_by(n);
            s.metrics.sent_all.inc_by(n);
            at = end;
        }
    }
    deadline.run(st.flush()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `PipeWriter` hands over for `data` written in pieces of `piece` bytes, and the
    /// protocol bytes it counted.
    fn written(data: &[u8], piece: usize, session: bool) -> (Vec<u8>, u64) {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut w = PipeWriter::new(Handover::Pipe(tx), session);
        for p in data.chunks(piece) {
            w.write_all(p).expect("write");
        }
        w.finish().expect("finish");
        let (mut out, mut overhead) = (Vec::new(), 0);
        while let Ok((b, o)) = rx.try_recv() {
            out.extend_from_slice(&b);
            overhead += o;
        }
        (out, overhead)
    }

    #[test]
    fn a_session_response_is_chunks_that_end_in_band() {
        for (len, piece) in [
            (0, 1),
            (1, 1),
            (PIPE_BUF - 5, 7),
            (PIPE_BUF, 4096),
            (300_001, 65_536),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (out, overhead) = written(&data, piece.max(1), true);
            assert_eq!(out[0], Status::Ok as u8);
            // Parse: chunks of at most `PIPE_BUF`, then a zero header, then nothing.
            let (mut at, mut got, mut chunks) = (1, Vec::new(), 0u64);
            loop {
                let len = wire::chunk_len(out[at..at + 4].try_into().expect("header"))
                    .expect("within the cap");
                at += 4;
                chunks += 1;
                if len == 0 {
                    break;
                }
                assert!(len <= PIPE_BUF);
                got.extend_from_slice(&out[at..at + len]);
                at += len;
            }
            assert_eq!(at, out.len(), "nothing after the end of the response");
            assert_eq!(got, data, "the chunks give back the encoding");
            assert_eq!(
                overhead,
                1 + 4 * chunks,
                "status byte and headers are not metered"
            );
        }
    }

    #[test]
    fn a_writer_whose_peer_went_away_fails_without_panicking() {
        for session in [true, false] {
            let (tx, rx) = mpsc::channel(1);
            drop(rx);
            let mut w = PipeWriter::new(Handover::Pipe(tx), session);
            assert!(w.write_all(&vec![7u8; 3 * PIPE_BUF]).is_err());
            // What `respond` no longer does after a failed encoding; it must not panic either.
            let _ = w.finish();
        }
    }

    #[test]
    fn a_transfer_1_response_is_the_status_byte_and_the_encoding() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (out, overhead) = written(&data, 10_000, false);
        assert_eq!(out[0], Status::Ok as u8);
        assert_eq!(&out[1..], &data[..]);
        assert_eq!(overhead, 1);
    }
}
