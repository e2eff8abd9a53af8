//! The node's settings: one struct with defaults, a doc comment per field, and `validate` for rules
//! that span fields.

use std::time::Duration;

use libp2p::{multiaddr::Protocol, Multiaddr};

use super::{caps::Schedule, wire};
use crate::{scheduler, seeding};

/// Node settings. Every field has a default; `validate` checks rules that span fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (default `/ip4/0.0.0.0/tcp/0`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and redial while disconnected, with `/p2p/<peer id>` (e.g. the gateway).
    pub bootstrap: Vec<Multiaddr>,
    /// Discover ward peers by mDNS (default on).
    pub mdns: bool,
    /// Exchange admitted members' addresses with admitted members, and dial the ones learned
    /// (default on): a ward forms a swarm from one bootstrap address where multicast is blocked.
    pub peer_exchange: bool,
    /// How often mDNS re-queries (default 5 s; libp2p's 5-minute default is far too slow for a ward).
    pub mdns_query_interval: Duration,
    /// The ward this node belongs to; certificates for other wards are refused.
    pub ward: String,
    /// Upload cap schedule (default unlimited). A cap of zero makes the node leech only.
    pub upload: Schedule,
    /// Download cap schedule (default unlimited).
    pub download: Schedule,
    /// A peer that has not proved membership by then is disconnected (default 5 s).
    pub admission_timeout: Duration,
    /// Connections this node opens itself, to members it learned of by peer exchange or mDNS,
    /// until it has this many in all (default 8): admitted members, dials in flight and peers it
    /// dialed that are still in admission count; a peer that dialed it counts once admitted, so
    /// sockets from non-members cannot keep it from dialing its ward. Inbound connections are
    /// accepted up to `max_connections`, so a ward forms a random graph of degree about
    /// `target_peers` to twice that, not a full mesh: every device is also connected to its
    /// gateway, so the graph is connected whatever the draw. Bootstrap peers (the gateway) are
    /// always dialed.
    pub target_peers: usize,
    /// Established connections in total (default 256).
    pub max_connections: u32,
    /// Established connections per peer (default 2: allows a simultaneous dial).
    pub max_connections_per_peer: u32,
    /// Inbound connections still in their handshake, in total (default 64).
    pub max_pending_incoming: u32,
    /// Inbound connections still in their handshake from one IP address (default 8): a host that
    /// opens sockets and never speaks cannot take every pending slot.
    pub max_pending_per_ip: usize,
    /// Established inbound connections from one IP address (default 16; a device uses one or two).
    pub max_connections_per_ip: usize,
    /// Time for a connection's TCP, noise and yamux handshake (default 3 s; a ward LAN needs well
    /// under one): a socket that never speaks frees its slot this fast.
    pub handshake_timeout: Duration,
    /// Transfers served at once (default 32); more are answered "limited, retry later".
    pub max_inbound_transfers: usize,
    /// Timeout of any one network operation: opening a stream, a read, a write (default 10 s).
    pub io_timeout: Duration,
    /// How often changed availability is pushed to peers (default 250 ms), with up to 8 admitted
    /// peers; see [`super::availability::have_period`].
    pub have_interval: Duration,
    /// Scheduler tick (default 100 ms).
    pub tick: Duration,
    /// Scheduler policy.
    pub scheduler: scheduler::Config,
    /// Super-seeding (the ward gateway): show each device only groups no device has yet, so each byte
    /// leaves this node about once (default off; the gateway turns it on).
    pub seeding: Option<seeding::Config>,
    /// Where the node keeps the newest certificate revocation list it verified (default none: kept
    /// in memory only). Read at start, replaced atomically when a newer list arrives, so a restart
    /// does not forget a revocation. See [`crate::revocation`].
    pub revocations_file: Option<std::path::PathBuf>,
    /// Deliberate misbehaviour (test builds only: the `test-faults` feature).
    #[cfg(feature = "test-faults")]
    pub fault: Option<super::faults::Fault>,
}

/// The defaults of [`Config`], as constants the model engine reads too.
pub mod defaults {
    use std::time::Duration;

    /// See [`super::Config::target_peers`].
    pub const TARGET_PEERS: usize = 8;
    /// See [`super::Config::max_inbound_transfers`].
    pub const MAX_INBOUND_TRANSFERS: usize = 32;
    /// See [`super::Config::have_interval`].
    pub const HAVE_INTERVAL: Duration = Duration::from_millis(250);
    /// See [`super::Config::tick`].
    pub const TICK: Duration = Duration::from_millis(100);
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![Multiaddr::empty()
                .with(Protocol::Ip4(std::net::Ipv4Addr::UNSPECIFIED))
                .with(Protocol::Tcp(0))],
            bootstrap: vec![],
            mdns: true,
            peer_exchange: true,
            mdns_query_interval: Duration::from_secs(5),
            ward: "ward".into(),
            upload: Schedule::default(),
            download: Schedule::default(),
            admission_timeout: Duration::from_secs(5),
            target_peers: defaults::TARGET_PEERS,
            max_connections: 256,
            max_connections_per_peer: 2,
            max_pending_incoming: 64,
            max_pending_per_ip: 8,
            max_connections_per_ip: 16,
            handshake_timeout: Duration::from_secs(3),
            max_inbound_transfers: defaults::MAX_INBOUND_TRANSFERS,
            io_timeout: Duration::from_secs(10),
            have_interval: defaults::HAVE_INTERVAL,
            tick: defaults::TICK,
            scheduler: scheduler::Config::default(),
            seeding: None,
            revocations_file: None,
            #[cfg(feature = "test-faults")]
            fault: None,
        }
    }
}

/// A node setting is wrong; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("listen needs at least one address")]
    NoListenAddress,
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "scheduler.max_request_groups is {value}; it must be 1 to {}",
        wire::MAX_GET_GROUPS
    )]
    RequestGroups { value: u64 },
    #[error("bootstrap address {addr} needs /p2p/<peer id>")]
    BootstrapWithoutPeer { addr: Multiaddr },
    #[error("the certificate is for peer {certificate}, but this node's key is peer {key}")]
    CertificateForAnotherPeer { certificate: String, key: String },
    #[error("a status report or directive of {len} bytes is over the {max}-byte cap")]
    ReportTooLarge { len: usize, max: usize },
}

impl Config {
    /// Checks rules that span fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::NoListenAddress);
        }
        let positive = [
            ("target_peers", self.target_peers == 0),
            ("max_connections", self.max_connections == 0),
            (
                "max_connections_per_peer",
                self.max_connections_per_peer == 0,
            ),
            ("max_inbound_transfers", self.max_inbound_transfers == 0),
            ("max_pending_incoming", self.max_pending_incoming == 0),
            ("max_pending_per_ip", self.max_pending_per_ip == 0),
            ("max_connections_per_ip", self.max_connections_per_ip == 0),
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("io_timeout", self.io_timeout.is_zero()),
            ("tick", self.tick.is_zero()),
            ("have_interval", self.have_interval.is_zero()),
            ("admission_timeout", self.admission_timeout.is_zero()),
        ];
        if let Some((field, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero { field });
        }
        let g = self.scheduler.max_request_groups;
        if g == 0 || g > wire::MAX_GET_GROUPS {
            return Err(ConfigError::RequestGroups { value: g });
        }
        if let Some(addr) = self
            .bootstrap
            .iter()
            .find(|b| !b.iter().any(|p| matches!(p, Protocol::P2p(_))))
        {
            return Err(ConfigError::BootstrapWithoutPeer { addr: addr.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_each_rule_names_its_field() {
        assert_eq!(Config::default().validate(), Ok(()));
        let c = Config {
            tick: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero { field: "tick" }));
        let mut c = Config::default();
        c.scheduler.max_request_groups = wire::MAX_GET_GROUPS + 1;
        let e = c.validate().expect_err("too many groups");
        assert!(e.to_string().contains("max_request_groups"), "{e}");
        let c = Config {
            bootstrap: vec!["/ip4/127.0.0.1/tcp/1".parse().expect("addr")],
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BootstrapWithoutPeer { .. })
        ));
    }
}
