//! The requester's side of a transfer: one GET to one peer, the response read under the download cap
//! and verified group by group into the store on a blocking thread, each verified group reported to
//! the actor (and so to the scheduler).

use std::{
    cell::RefCell,
    io::{self, Read},
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use futures::{AsyncReadExt, FutureExt};
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{pass_cap, Buffers, Link, PIPE_BUF, PIPE_DEPTH};
use crate::{
    net::{
        actor::{Internal, LocalFailure, Shared},
        admission::source_label,
        metrics::{self, TransferLabels},
        streams::{open, timed, Deadline},
        wire::{self, Get, Protocol, Status},
    },
    scheduler::{Outcome, ReqId},
    store::{Entry, Incoming, ReceiveError},
};

/// A request the scheduler asked for.
#[derive(Debug)]
pub(in crate::net) struct Request {
    pub entry: Arc<Entry>,
    pub peer: PeerId,
    pub req: ReqId,
    pub get: Get,
    pub cancel: CancellationToken,
}

/// How a response status ends a request, if it does.
fn refused(status: Status) -> Option<Outcome> {
    match status {
        Status::Ok => None,
        Status::NotFound => Some(Outcome::NotFound),
        Status::Limited => Some(Outcome::Limited),
        Status::Forbidden => Some(Outcome::Forbidden),
    }
}

/// Runs one request to its end and tells the actor how it ended (not when it was cancelled).
pub(in crate::net) async fn run(s: Arc<Shared>, mut control: libp2p_stream::Control, r: Request) {
    let Request {
        entry,
        peer,
        req,
        get,
        cancel,
    } = r;
    let root = get.root;
    let t = s.cfg.io_timeout;
    s.metrics
        .groups_requested
        .inc_by(get.groups().count() as u64);
    // libp2p-stream buffers one inbound stream per connection: a burst of opens can see a stream dropped
    // by the responder before it is read. That is not the peer's fault; retry a few times, jittered.
    // A pooled stream the responder has meanwhile closed is no attempt: the next one is tried at once.
    let mut attempt = 0u64;
    let opened = loop {
        let r = tokio::select! {
            r = async {
                let (mut st, session, reused) =
                    link(&s, &mut control, peer, t).await.map_err(|e| (e, false))?;
                let status = timed(t, wire::send_get(&mut st, &get))
                    .await
                    .map_err(|e| (e, reused))?;
                Ok::<_, (io::Error, bool)>((st, session, status))
            } => r,
            _ = cancel.cancelled() => {
                s.metrics.transfer_ended(metrics::CANCELLED);
                return;
            }
        };
        attempt += 1;
        match r {
            Err((e, true)) if e.kind() != io::ErrorKind::TimedOut => attempt -= 1,
            Err((e, _)) if attempt < 5 && e.kind() != io::ErrorKind::TimedOut => {
                tokio::time::sleep(Duration::from_millis(5 + (req * 7 + attempt * 13) % 40)).await;
            }
            other => break other.map_err(|(e, _)| e),
        }
    };
    let finish = |outcome, local: Option<LocalFailure>| {
        s.metrics.transfer_ended(match local {
            Some(_) => metrics::LOCAL_FAILURE,
            None => Outcome::as_str(outcome),
        });
        Internal::Finished {
            root,
            req,
            outcome,
            local,
        }
    };
    let (mut st, session, status) = match opened {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(%peer, %root, error = %e, "transfer request failed");
            let _ = s.internal.send(finish(Outcome::Truncated, None)).await;
            return;
        }
    };
    tracing::debug!(%peer, %root, ?status, runs = get.runs.len(), "transfer status");
    if let Some(outcome) = refused(status) {
        // After "forbidden" the responder ends the stream; after the other refusals it waits for the
        // next GET.
        if session && status != Status::Forbidden {
            s.links.put(peer, st);
        }
        let _ = s.internal.send(finish(outcome, None)).await;
        return;
    }
    let label = TransferLabels {
        artifact: root.short(),
        source: source_label(s.members.borrow().role_of(&peer)).into(),
    };
    let reading = Reading {
        s: &s,
        st: &mut st,
        session,
        label: &label,
        cancel: &cancel,
    };
    let (ended, result) = if super::inline(&get) {
        let limit = super::max_encoded(get.groups().count() as u64);
        receive_inline(reading, limit, &entry, &get.runs, req).await
    } else {
        receive_piped(reading, entry, get.runs, req).await
    };
    if let Some(groups) = result.verified.filter(|g| !g.is_empty()) {
        let _ = s
            .internal
            .send(Internal::Progress { root, req, groups })
            .await;
    }
    let result = result.result;
    if cancel.is_cancelled() {
        s.metrics.transfer_ended(metrics::CANCELLED);
        return;
    }
    // Only a stream whose response ended in-band, all of it verified, carries the next GET.
    if session && ended && matches!(result, Ok(Ok(_))) {
        s.links.put(peer, st);
    }
    let msg = match result {
        Ok(Ok(_)) => finish(Outcome::Done, None),
        Ok(Err(ReceiveError::Corrupt(detail))) => {
            tracing::warn!(target: "wardswarm::security", %peer, %root, %detail, "peer sent data that does not verify");
            finish(Outcome::Corrupt, None)
        }
        Ok(Err(ReceiveError::Truncated(e))) => {
            tracing::debug!(%peer, %root, error = %e, "transfer truncated");
            finish(Outcome::Truncated, None)
        }
        Ok(Err(ReceiveError::Local(e))) => {
            finish(Outcome::Truncated, Some(LocalFailure::Store(Arc::new(e))))
        }
        Err(e) => finish(Outcome::Truncated, Some(LocalFailure::Task(e))),
    };
    let _ = s.internal.send(msg).await;
}

/// How a response was received: the decoder's result (`Err`: its task failed), and for an inline
/// decode the groups it verified, to report before the end (a piped decoder reports its own).
struct Received {
    result: Result<Result<u64, ReceiveError>, String>,
    verified: Option<Vec<u64>>,
}

/// A response being read: the stream and what reading it takes.
struct Reading<'a> {
    s: &'a Shared,
    st: &'a mut Stream,
    /// A `transfer/2` stream (the response ends in-band).
    session: bool,
    label: &'a TransferLabels,
    cancel: &'a CancellationToken,
}

/// Receives a small response (`super::INLINE_GROUPS`) whole, then verifies it into the store here.
/// Returns whether the stream may carry the next GET, and the result. At most `limit` bytes are
/// taken (`super::max_encoded`): a peer that sends more is cut off there, and what verified is kept.
///
/// Groups are reported when the response ends, except that the first [`HANDOVER_BYTES`] of a longer
/// one are verified and reported as soon as they are here, as the pipe hands them to its decoder:
/// a slow peer's response is not taken for stalled by the scheduler before it ends.
async fn receive_inline(
    r: Reading<'_>,
    limit: usize,
    entry: &Entry,
    runs: &[std::ops::Range<u64>],
    req: ReqId,
) -> (bool, Received) {
    let Reading {
        s,
        st,
        session,
        label,
        cancel,
    } = r;
    let (tx, mut rx) = mpsc::channel::<io::Result<Filled>>(PIPE_DEPTH);
    // A response of more groups than a hand-off holds reports its first ones early.
    let handover_groups = (HANDOVER_BYTES as u64) / crate::outboard::GROUP_BYTES;
    let mut early_done = runs.iter().map(|r| r.end - r.start).sum::<u64>() <= handover_groups;
    // Verifies what `bytes` holds; also says how many bytes the encoding did not take.
    let decode = |bytes: &[u8], error| {
        let mut verified = Vec::new();
        let mut whole = Whole { bytes, error };
        let r = entry.receive(runs, &mut whole, |g| verified.push(g));
        (r, verified, whole.bytes.len())
    };
    // Collects on this same task what `receive_pipe` reads; dropping `rx` (over the limit, or a
    // first part that does not verify) stops it.
    let collect = async move {
        let mut all = Vec::new();
        while let Some(b) = rx.recv().await {
            match b {
                Ok(b) if all.is_empty() => all = b.into_bytes(),
                Ok(b) => {
                    all.extend_from_slice(&b);
                    s.buffers.give(b.buf);
                }
                Err(e) => return (all, Some(e), None),
            }
            if all.len() > limit {
                break;
            }
            if !early_done && all.len() >= HANDOVER_BYTES && !rx.is_closed() {
                early_done = true;
                match decode(&all, None) {
                    (Ok(_) | Err(ReceiveError::Truncated(_)), groups, _) => {
                        if !groups.is_empty() {
                            let (root, req) = (entry.root(), req);
                            let _ = s
                                .internal
                                .send(Internal::Progress { root, req, groups })
                                .await;
                        }
                    }
                    (Err(e), groups, _) => return (all, None, Some((Err(e), groups, 0))),
                }
            }
        }
        (all, None, None)
    };
    let (ended, (bytes, error, failed)) = tokio::select! {
        r = async { tokio::join!(receive_pipe(s, st, session, tx, label), collect) } => r,
        _ = cancel.cancelled() => {
            // Nothing more verified; the caller sees the cancellation and reports no result.
            let cancelled = Received { result: Ok(Ok(0)), verified: None };
            return (false, cancelled);
        }
    };
    // The whole response, again from its start: groups verified early are checked again but not
    // reported twice (the store reports only groups new to it).
    let (result, verified, unread) = failed.unwrap_or_else(|| decode(&bytes, error));
    s.buffers.give(bytes);
    let received = Received {
        result: Ok(result),
        verified: Some(verified),
    };
    // A response with bytes past its encoding is verified as far as it goes, but its stream, whose
    // peer sends what it should not, carries no further GET (the pipe's decoder drops it too).
    (ended && unread == 0, received)
}

/// Receives a response through the pipe into a decoder on a blocking thread, which verifies and
/// reports groups as they arrive. Returns whether the stream may carry the next GET, and the result.
async fn receive_piped(
    r: Reading<'_>,
    entry: Arc<Entry>,
    runs: Vec<std::ops::Range<u64>>,
    req: ReqId,
) -> (bool, Received) {
    let Reading {
        s,
        st,
        session,
        label,
        cancel,
    } = r;
    let root = entry.root();
    let internal = s.internal.clone();
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    // Buffers the decoder is done with go back to the node's pool to be filled again: no allocation
    // and no zeroing per hand-off.
    let buffers = s.buffers.clone();
    let decoder = tokio::task::spawn_blocking(move || {
        let progress = Progress {
            tx: internal,
            root,
            req,
            groups: Rc::default(),
        };
        let reader = PipeReader::new(rx, buffers, progress.clone());
        let r = entry.receive(&runs, reader, |group| {
            let held = {
                let mut groups = progress.groups.borrow_mut();
                groups.push(group);
                groups.len()
            };
            if held >= MAX_PROGRESS_GROUPS {
                progress.flush();
            }
        });
        // What was verified is reported before the request's end.
        progress.flush();
        r
    });
    // Cancelling drops the pipe's sender: the decoder sees the stream end and stops. A decoder that
    // stops first (all verified, or a corrupt group) closes the pipe, and reading stops at once.
    let watch = tx.clone();
    let ended = tokio::select! {
        e = receive_pipe(s, st, session, tx, label) => e,
        _ = watch.closed() => false,
        _ = cancel.cancelled() => false,
    };
    drop(watch);
    let result = decoder
        .await
        .map_err(|e| format!("receive task failed: {e}"));
    (
        ended,
        Received {
            result,
            verified: None,
        },
    )
}

/// A whole response held in memory, and the stream error that ended it early, if one did.
struct Whole<'a> {
    bytes: &'a [u8],
    error: Option<io::Error>,
}

impl Read for Whole<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.bytes.is_empty() {
            return self.error.take().map_or(Ok(0), Err);
        }
        Read::read(&mut self.bytes, out)
    }
}

impl Incoming for Whole<'_> {
    fn drained(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A stream for one GET to `peer`: an idle `transfer/2` stream if one is kept, else a new one;
/// `transfer/1` for a peer that refused `transfer/2`. Also says whether it is a `transfer/2` stream
/// and whether it was kept (a kept stream may have been closed by the responder meanwhile).
async fn link(
    s: &Shared,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    t: Duration,
) -> io::Result<(Stream, bool, bool)> {
    let v1 = |st| (st, false, false);
    #[cfg(feature = "test-faults")]
    if s.cfg.fault == Some(crate::net::Fault::V1Only) {
        return open(s, control, peer, Protocol::Transfer, t).await.map(v1);
    }
    match s.links.take(&peer) {
        Link::Idle(st) => return Ok((st, true, true)),
        Link::V1Only => return open(s, control, peer, Protocol::Transfer, t).await.map(v1),
        Link::Open => {}
    }
    match open(s, control, peer, Protocol::TransferSession, t).await {
        Ok(st) => Ok((st, true, false)),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            s.links.mark_v1_only(peer);
            open(s, control, peer, Protocol::Transfer, t).await.map(v1)
        }
        Err(e) => Err(e),
    }
}

/// A progress message carries at most this many groups (1 MiB): a response that never lets the
/// decoder wait still reports as it goes, well inside the scheduler's stall timeout.
const MAX_PROGRESS_GROUPS: usize = 64;

/// Groups the decoder verified, reported to the actor (and so the scheduler) in one message each
/// time the decoder is about to wait for bytes, when it holds `MAX_PROGRESS_GROUPS`, and at the
/// end: not a message per group.
#[derive(Clone)]
struct Progress {
    tx: mpsc::Sender<Internal>,
    root: crate::Hash,
    req: ReqId,
    groups: Rc<RefCell<Vec<u64>>>,
}

impl Progress {
    fn flush(&self) {
        let groups = std::mem::take(&mut *self.groups.borrow_mut());
        if !groups.is_empty() {
            let (root, req) = (self.root, self.req);
            let _ = self
                .tx
                .blocking_send(Internal::Progress { root, req, groups });
        }
    }
}

/// The blocking decoder's input: buffers filled by `receive_pipe`. The end of the channel is the end
/// of the stream; a stream error arrives as an error.
struct PipeReader {
    rx: mpsc::Receiver<io::Result<Filled>>,
    buffers: Arc<Buffers>,
    buf: Filled,
    at: usize,
    progress: Progress,
}

impl PipeReader {
    fn new(
        rx: mpsc::Receiver<io::Result<Filled>>,
        buffers: Arc<Buffers>,
        progress: Progress,
    ) -> Self {
        Self {
            rx,
            buffers,
            buf: Filled::default(),
            at: 0,
            progress,
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.buffers.give(std::mem::take(&mut self.buf.buf));
    }
}

impl Incoming for PipeReader {
    fn drained(&self) -> bool {
        self.at == self.buf.len() && self.rx.is_empty()
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            let next = match self.rx.try_recv() {
                Ok(b) => Some(b),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // About to wait: what is verified so far goes to the scheduler first.
                    self.progress.flush();
                    self.rx.blocking_recv()
                }
            };
            match next {
                Some(Ok(b)) => {
                    let used = std::mem::replace(&mut self.buf, b);
                    self.buffers.give(used.buf);
                    self.at = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Bytes `receive_pipe` hands to the decoder: the first `len` of `buf`. `buf` keeps its whole length
/// when it comes back to be filled again, so that nothing is zeroed twice.
#[derive(Debug, Default)]
struct Filled {
    buf: Vec<u8>,
    len: usize,
}

impl Filled {
    fn into_bytes(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }
}

impl std::ops::Deref for Filled {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `receive_pipe` hands bytes to the decoder once it holds this many (four chunk groups) and the next
/// read would wait, or once its buffer is full. Each hand-off wakes the decoder's thread: one per
/// group cost the live ward-50 about 13 % of its CPU (`docs/performance.md`). Progress lags the wire by
/// at most four groups while the peer is slower than the decoder.
const HANDOVER_BYTES: usize = 4 * crate::outboard::GROUP_BYTES as usize;
/// The buffer while the decoder is behind (buffers wait in the pipe): a fast peer's bytes go over in
/// fewer, larger hand-offs. With `PIPE_DEPTH`, at most 1 MiB per transfer in the pipe; a slow peer's
/// transfer (the ward's usual case) keeps `PIPE_BUF` buffers.
pub(super) const RECEIVE_BUF: usize = 4 * PIPE_BUF;

/// Reads a response from the peer under the download cap and hands it to the decoder a group or more
/// at a time. A `transfer/1` response ends with the stream; a `transfer/2` one (`session`) with its
/// empty chunk, and then `true`: the stream may carry the next GET. Stops early on a stream error or
/// a malformed chunk header (passed on to the decoder).
async fn receive_pipe(
    s: &Shared,
    st: &mut Stream,
    session: bool,
    tx: mpsc::Sender<io::Result<Filled>>,
    label: &TransferLabels,
) -> bool {
    let mut deadline = Deadline::new(s.cfg.io_timeout);
    // The next buffer and how much of it to fill: `RECEIVE_BUF` while buffers wait for the decoder,
    // else `PIPE_BUF`. Buffers come from the node's pool ([`Buffers`]) and keep the length they once
    // had, so that filling one again zeroes nothing (zeroing the returned buffers was 2 % of the
    // pair benchmark's fetcher).
    let fresh = |tx: &mpsc::Sender<_>| {
        let behind = tx.capacity() < PIPE_DEPTH;
        let size = if behind { RECEIVE_BUF } else { PIPE_BUF };
        (s.buffers.take(size), size)
    };
    let (mut buf, mut size) = fresh(&tx);
    let mut filled = 0;
    // A session's chunk: bytes of it still to come (0: a header is next), and the header so far.
    let mut chunk_left = 0usize;
    let mut header = [0u8; 4];
    let mut header_at = 0usize;
    // Looked up once, not per read: a family lookup hashes the labels under a lock.
    let received = s.metrics.received_bytes.get_or_create(label).clone();
    let ended = loop {
        let in_header = session && chunk_left == 0;
        let read = if !in_header && filled == size {
            None
        } else {
            let into: &mut [u8] = if in_header {
                &mut header[header_at..]
            } else {
                let mut end = size.min(filled.saturating_add(s.download.slice_bytes()));
                if session {
                    end = end.min(filled + chunk_left);
                }
                &mut buf[filled..end]
            };
            if filled >= HANDOVER_BYTES {
                // Enough for a hand-off: read on only what is already here.
                st.read(into).now_or_never()
            } else {
                Some(deadline.run(st.read(into)).await)
            }
        };
        let Some(read) = read else {
            let (next, next_size) = fresh(&tx);
            let out = std::mem::replace(&mut buf, next);
            size = next_size;
            let len = std::mem::take(&mut filled);
            if tx.send(Ok(Filled { buf: out, len })).await.is_err() {
                return false;
            }
            continue;
        };
        match read {
            // The stream ended: a session's response should have ended first.
            Ok(0) => break Ok(false),
            Ok(n) if in_header => {
                header_at += n;
                if header_at == header.len() {
                    header_at = 0;
                    match wire::chunk_len(header) {
                        Ok(0) => break Ok(true),
                        Ok(len) => chunk_left = len,
                        Err(e) => break Err(e),
                    }
                }
            }
            Ok(n) => {
                filled += n;
                chunk_left = chunk_left.saturating_sub(n);
                received.inc_by(n as u64);
                s.metrics.received_all.inc_by(n as u64);
                pass_cap(s, &s.download, "download", n as u64).await;
            }
            Err(e) => break Err(e),
        }
    };
    if filled == 0 {
        s.buffers.give(buf);
    } else if tx.send(Ok(Filled { buf, len: filled })).await.is_err() {
        return false;
    }
    match ended {
        Ok(ended) => ended,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            false
        }
    }
}
