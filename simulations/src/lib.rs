//! Ward simulations for CI (issue 5): scenarios, live/model/netns engines and reports. Today the
//! scheduler's simulated-network harness lives in `node/tests/scheduler_sim.rs`.
