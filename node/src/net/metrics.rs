//! Per-node metrics (no global registry: a simulation reads every node's counters).
//!
//! Names follow Prometheus conventions with units; labels are small sets (never peer ids or error text).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of transfer byte counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// First 8 hex digits of the artifact's bao root.
    pub artifact: String,
    /// Role of the other side: `gateway` or `peer`.
    pub source: String,
}

/// Labels of the throttle counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `upload` or `download`.
    pub direction: String,
}

/// Labels of the frame counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// The protocol id of the stream that carried it, e.g. `/wardswarm/have/2`.
    pub protocol: String,
}

/// Labels of the stream counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// The protocol id, e.g. `/wardswarm/transfer/1`.
    pub protocol: String,
    /// `outbound` (we opened it) or `inbound`.
    pub direction: String,
}

/// Labels of the transfer counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// How a transfer we requested ended: `done`, `corrupt`, `truncated`, `limited`, `forbidden`,
    /// `not_found`, `cancelled` or `local_failure`.
    pub outcome: String,
}

/// The transfer outcome of a request we cancelled (beside [`crate::scheduler::Outcome`]'s).
pub const CANCELLED: &str = "cancelled";
/// The transfer outcome of a request that failed on our side (store, task).
pub const LOCAL_FAILURE: &str = "local_failure";

/// One node's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Artifact bytes (bao encoding, proofs included) received, by artifact and source kind.
    pub received_bytes: Family<TransferLabels, Counter>,
    /// Artifact bytes sent, by artifact and the receiver's kind.
    pub sent_bytes: Family<TransferLabels, Counter>,
    /// All artifact bytes sent (the sum of `sent_bytes`).
    pub sent_all: Counter,
    /// All artifact bytes received (the sum of `received_bytes`).
    pub received_all: Counter,
    /// Release announcements refused (bad signature, expired, malformed).
    pub announcements_refused: Counter,
    /// Chunk groups verified and stored.
    pub groups_verified: Counter,
    /// Chunk groups that failed verification (a peer sent bad data).
    pub verification_failures: Counter,
    /// Peers banned for serving corrupt data.
    pub peers_banned: Counter,
    /// Connections closed because the peer did not prove ward membership.
    pub admission_refused: Counter,
    /// Seconds spent waiting on a cap, by direction.
    pub throttled_seconds: Family<DirectionLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Admitted ward peers currently connected.
    pub peers_admitted: Gauge,
    /// Connections open, admitted or not, counting each of several to one peer.
    pub connections_open: Gauge,
    /// Inbound streams dropped because their protocol's handlers were all busy.
    pub inbound_streams_dropped: Counter,
    /// Rollout directives refused because they did not come from the ward's gateway.
    pub directives_refused: Counter,
    /// Frames (HAVE, ANNOUNCE, REPORT) dropped because a peer's outbox was full.
    pub outbound_frames_dropped: Counter,
    /// Ward-protocol streams opened, by protocol and direction: the per-peer chatter a ward pays
    /// for beside its bytes (each stream costs a negotiation, frames, timers and tasks).
    pub streams_opened: Family<StreamLabels, Counter>,
    /// Frames sent from the outbox (availability, announcements, reports, peer lists), by the
    /// protocol that carried them: with `streams_opened`, what a ward says besides its bytes.
    pub frames_sent: Family<ProtocolLabels, Counter>,
    /// Transfers this node requested, by how they ended.
    pub transfers: Family<OutcomeLabels, Counter>,
    /// Chunk groups asked for in transfer requests (a group asked twice counts twice).
    pub groups_requested: Counter,
}

impl Metrics {
    /// Registers every metric in `registry` under the `wardswarm` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("wardswarm");
        r.register(
            "received",
            "Artifact bytes received (bao encoded)",
            self.received_bytes.clone(),
        );
        r.register(
            "sent",
            "Artifact bytes sent (bao encoded)",
            self.sent_bytes.clone(),
        );
        r.register(
            "lan_sent",
            "All artifact bytes sent to ward peers (bao encoded)",
            self.sent_all.clone(),
        );
        r.register(
            "lan_received",
            "All artifact bytes received from ward peers (bao encoded)",
            self.received_all.clone(),
        );
        r.register(
            "announcements_refused",
            "Release announcements refused (signature, expiry, form)",
            self.announcements_refused.clone(),
        );
        r.register(
            "groups_verified",
            "Chunk groups verified and stored",
            self.groups_verified.clone(),
        );
        r.register(
            "verification_failures",
            "Chunk groups that failed verification",
            self.verification_failures.clone(),
        );
        r.register(
            "peers_banned",
            "Peers banned for corrupt data",
            self.peers_banned.clone(),
        );
        r.register(
            "admission_refused",
            "Connections refused ward membership",
            self.admission_refused.clone(),
        );
        r.register(
            "throttled_seconds",
            "Time spent waiting on a cap",
            self.throttled_seconds.clone(),
        );
        r.register(
            "peers_admitted",
            "Admitted ward peers connected",
            self.peers_admitted.clone(),
        );
        r.register(
            "connections_open",
            "Connections open, each of several to one peer counted",
            self.connections_open.clone(),
        );
        r.register(
            "inbound_streams_dropped",
            "Inbound streams dropped: every handler of their protocol was busy",
            self.inbound_streams_dropped.clone(),
        );
        r.register(
            "directives_refused",
            "Rollout directives refused: they did not come from the ward's gateway",
            self.directives_refused.clone(),
        );
        r.register(
            "outbound_frames_dropped",
            "HAVE, ANNOUNCE and REPORT frames dropped: the peer's outbox was full",
            self.outbound_frames_dropped.clone(),
        );
        r.register(
            "streams_opened",
            "Ward-protocol streams opened, by protocol and direction",
            self.streams_opened.clone(),
        );
        r.register(
            "frames_sent",
            "Frames sent from the outbox (availability, announcements, reports, peer lists), by protocol",
            self.frames_sent.clone(),
        );
        r.register(
            "transfers",
            "Transfers requested, by how they ended",
            self.transfers.clone(),
        );
        r.register(
            "groups_requested",
            "Chunk groups asked for in transfer requests",
            self.groups_requested.clone(),
        );
    }

    /// Counts one transfer ended.
    pub fn transfer_ended(&self, outcome: &str) {
        self.transfers
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Transfers ended so far, `(outcome, count)`.
    pub fn transfers_by_outcome(&self) -> Vec<(String, u64)> {
        crate::scheduler::Outcome::ALL
            .map(|o| o.as_str())
            .into_iter()
            .chain([CANCELLED, LOCAL_FAILURE])
            .filter_map(|o| {
                let n = self
                    .transfers
                    .get(&OutcomeLabels { outcome: o.into() })
                    .map_or(0, |c| c.get());
                (n > 0).then(|| (o.to_string(), n))
            })
            .collect()
    }

    /// Counts one stream opened.
    pub fn stream_opened(&self, protocol: &str, direction: &str) {
        self.streams_opened
            .get_or_create(&StreamLabels {
                protocol: protocol.into(),
                direction: direction.into(),
            })
            .inc();
    }

    /// Streams opened so far, `(protocol, direction, count)`, sorted.
    pub fn streams_opened_by_protocol(&self) -> Vec<(String, String, u64)> {
        let mut v = Vec::new();
        for proto in super::wire::Protocol::ALL {
            for dir in ["outbound", "inbound"] {
                let l = StreamLabels {
                    protocol: proto.id().as_ref().into(),
                    direction: dir.into(),
                };
                let n = self.streams_opened.get(&l).map_or(0, |c| c.get());
                if n > 0 {
                    v.push((l.protocol, l.direction, n));
                }
            }
        }
        v
    }

    /// Frames sent so far, `(protocol, count)`, sorted.
    pub fn frames_sent_by_protocol(&self) -> Vec<(String, u64)> {
        super::wire::Protocol::ALL
            .iter()
            .filter_map(|proto| {
                let l = ProtocolLabels {
                    protocol: proto.id().as_ref().into(),
                };
                let n = self.frames_sent.get(&l).map_or(0, |c| c.get());
                (n > 0).then_some((l.protocol, n))
            })
            .collect()
    }

    /// Bytes received from a source kind, over all artifacts (tests and reports).
    pub fn received_total(&self, artifact: &str, source: &str) -> u64 {
        self.received_bytes
            .get_or_create(&TransferLabels {
                artifact: artifact.into(),
                source: source.into(),
            })
            .get()
    }
    /// Bytes sent to a kind, for one artifact.
    pub fn sent_total(&self, artifact: &str, to: &str) -> u64 {
        self.sent_bytes
            .get_or_create(&TransferLabels {
                artifact: artifact.into(),
                source: to.into(),
            })
            .get()
    }
}
