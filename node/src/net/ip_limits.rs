//! Connection limits per remote IP address, a `NetworkBehaviour` beside libp2p's
//! `connection_limits` (which counts globally and per peer id, never per address).
//!
//! Goals: a few hosts that open sockets and never finish a handshake cannot fill the node's pending
//! slots, so a member still gets in while such a flood runs (with the short handshake timeout, see
//! `Config::handshake_timeout`); nor can one host hold many established connections under fresh peer
//! ids. Non-goals: outbound connections (we chose to dial them), rate limiting accepted bytes.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Inbound connections still in their handshake, per remote IP.
    pub pending_per_ip: usize,
    /// Established inbound connections per remote IP.
    pub established_per_ip: usize,
}

/// Why a connection was refused (the swarm logs it as the listen failure's cause).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{what} connections from {ip} reached the per-address limit of {limit}")]
pub struct Exceeded {
    /// The remote address.
    pub ip: IpAddr,
    /// `pending` or `established`.
    pub what: &'static str,
    /// The limit.
    pub limit: usize,
}

/// Tracks inbound connections by remote IP.
#[derive(Debug)]
pub struct Behaviour {
    limits: Limits,
    pending: HashMap<IpAddr, HashSet<ConnectionId>>,
    established: HashMap<IpAddr, HashSet<ConnectionId>>,
    ip_of: HashMap<ConnectionId, IpAddr>,
}

fn ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

fn forget(map: &mut HashMap<IpAddr, HashSet<ConnectionId>>, ip: IpAddr, id: ConnectionId) {
    if let Some(set) = map.get_mut(&ip) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(&ip);
        }
    }
}

impl Behaviour {
    /// A behaviour enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            established: HashMap::new(),
            ip_of: HashMap::new(),
        }
    }

    fn check(
        map: &HashMap<IpAddr, HashSet<ConnectionId>>,
        ip: IpAddr,
        limit: usize,
        what: &'static str,
    ) -> Result<(), ConnectionDenied> {
        if map.get(&ip).map_or(0, HashSet::len) >= limit {
            return Err(ConnectionDenied::new(Exceeded { ip, what, limit }));
        }
        Ok(())
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip(remote) else {
            return Ok(());
        };
        Self::check(&self.pending, ip, self.limits.pending_per_ip, "pending")?;
        self.pending.entry(ip).or_default().insert(id);
        self.ip_of.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let Some(ip) = self.ip_of.get(&id).copied().or_else(|| ip(remote)) else {
            return Ok(dummy::ConnectionHandler);
        };
        forget(&mut self.pending, ip, id);
        let r = Self::check(
            &self.established,
            ip,
            self.limits.established_per_ip,
            "established",
        );
        if r.is_err() {
            self.ip_of.remove(&id);
        }
        r.map(|()| dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            // Counted once every behaviour accepted it, so a denial elsewhere leaves no trace here.
            FromSwarm::ConnectionEstablished(e) if e.endpoint.is_listener() => {
                if let Some(ip) = self.ip_of.get(&e.connection_id).copied() {
                    self.established
                        .entry(ip)
                        .or_default()
                        .insert(e.connection_id);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                if let Some(ip) = self.ip_of.remove(&connection_id) {
                    forget(&mut self.pending, ip, connection_id);
                    forget(&mut self.established, ip, connection_id);
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
