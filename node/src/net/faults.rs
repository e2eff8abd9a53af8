//! Deliberate misbehaviour, for tests and simulations of hostile or broken peers. Compiled only with
//! the `test-faults` feature, which tests and simulations turn on and production builds do not.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How a node misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve chunk groups with one byte flipped (a liar).
    CorruptServe,
    /// Accept transfer requests and never answer (a staller).
    StallServe,
    /// Speak the first versions only, as a node from before `have/2`, `report/2`, `peers/2` and
    /// `transfer/2`: refuse those streams, open none (the `/1` versions instead).
    V1Only,
}

/// A liar flips a byte deep in each buffer it serves: the receiver's verification must catch it.
pub(super) fn corrupt(fault: Option<Fault>, buf: &mut [u8]) {
    if fault == Some(Fault::CorruptServe) && buf.len() >= 1024 {
        let i = buf.len() / 2;
        buf[i] ^= 0x5a;
    }
}

/// A staller accepts a transfer and never answers; `true` if this node is one (it has then waited
/// until shutdown or an hour).
pub(super) async fn stall(fault: Option<Fault>, shutdown: &CancellationToken) -> bool {
    if fault != Some(Fault::StallServe) {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {},
        _ = shutdown.cancelled() => {},
    }
    true
}
