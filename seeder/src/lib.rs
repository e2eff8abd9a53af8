//! The ward gateway (seeder): polls the device maker's origin, downloads each needed artifact once over
//! the WAN and seeds it to the ward swarm. Built in issue 4; today the gateway role is played by
//! `wardswarm_node::net` with the `gateway` membership role (see `wardswarm demo`).
