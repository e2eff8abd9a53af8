//! The libp2p side of a node: the network behaviour (connection limits, per-IP limits, identify,
//! ping, mDNS, streams), building the `Swarm` from [`Config`] over TCP with noise and yamux, and how
//! a node dials.

use std::time::Duration;

use libp2p::{
    connection_limits, identify,
    identity::Keypair,
    mdns, noise, ping,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    tcp, yamux, Multiaddr, Swarm,
};

use super::{
    config::Config,
    handle::{NodeError, TransportError},
    ip_limits,
};

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    limits: connection_limits::Behaviour,
    ip_limits: ip_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) stream: libp2p_stream::Behaviour,
}

/// Dial options for `addr` from a fresh local port. With TCP port reuse (libp2p's default once a
/// node listens), two members that dial each other at the same moment, as peer exchange makes them
/// do, meet in one TCP simultaneous open: both sides start noise as the initiator and the handshake
/// fails on both. Port reuse serves NAT hole punching, which a ward LAN does not need.
pub(super) fn fresh_port(addr: Multiaddr) -> libp2p::swarm::dial_opts::DialOpts {
    libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
        .address(addr)
        .allocate_new_port()
        .build()
}

/// What identify tells peers this node runs.
pub const AGENT_VERSION: &str = concat!("wardswarm/", env!("CARGO_PKG_VERSION"));

pub(super) fn build_swarm(cfg: &Config, keypair: Keypair) -> Result<Swarm<Behaviour>, NodeError> {
    let mdns_cfg = mdns::Config {
        query_interval: cfg.mdns_query_interval,
        ..Default::default()
    };
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
        .with_max_pending_incoming(Some(cfg.max_pending_incoming));
    let per_ip = ip_limits::Limits {
        pending_per_ip: cfg.max_pending_per_ip,
        established_per_ip: cfg.max_connections_per_ip,
    };
    let use_mdns = cfg.mdns;
    let handshake = cfg.handshake_timeout;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(TransportError::Noise)?
        .with_behaviour(|key| {
            let mdns = if use_mdns {
                mdns::tokio::Behaviour::new(mdns_cfg, key.public().to_peer_id()).ok()
            } else {
                None
            };
            Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                ip_limits: ip_limits::Behaviour::new(per_ip),
                identify: identify::Behaviour::new(
                    identify::Config::new("/wardswarm/1.0.0".into(), key.public())
                        .with_agent_version(AGENT_VERSION.into()),
                ),
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
                stream: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| -> NodeError { match e {} })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .with_connection_timeout(handshake)
        .build();
    Ok(swarm)
}
