//! The process-wide grid of wake-ups: instants [`TICK`] apart, shared by every node, cap and periodic
//! timer of the process.
//!
//! A transfer held up by a cap ([`super::caps`]) sleeps until the first grid instant after its tokens
//! are due, and a node's periodic timers (the actor's ticks, the agent's reports) start on the grid.
//! So the runtime wakes once a tick for all of them, not once for each: paced traffic had been a
//! stream of lone wake-ups (a parked thread woken, a 16 KiB slice sent, the thread parked again),
//! each costing more than its bytes, and what a battery-powered device pays for is wake-ups
//! (`docs/performance.md`, issue 15's sixteenth pass).

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

/// The grid's period.
pub const TICK: Duration = Duration::from_millis(10);

/// The first grid instant at or after `now + wait`.
fn wake_at(now: Instant, wait: Duration) -> Instant {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    let due = now + wait;
    let tick = TICK.as_nanos();
    // `due` + `pad` is a whole number of ticks from the epoch, before or after it.
    let pad = match due.checked_duration_since(*EPOCH) {
        Some(since) => (tick - since.as_nanos() % tick) % tick,
        None => (*EPOCH - due).as_nanos() % tick,
    };
    due + Duration::from_nanos(pad as u64)
}

/// Sleeps at least `wait` (and at least 100 µs: a caller that loops on it never spins), until the
/// next grid instant.
pub async fn sleep(wait: Duration) {
    let at = tokio::time::Instant::from_std(wake_at(Instant::now(), wait));
    // A runtime whose clock is paused ahead of real time would see that instant as past: then the
    // plain wait.
    if at > tokio::time::Instant::now() {
        tokio::time::sleep_until(at).await;
    } else {
        tokio::time::sleep(wait.max(Duration::from_micros(100))).await;
    }
}

/// An interval of `period` whose ticks fall on the grid (when `period` is a whole number of
/// ticks). Panics if `period` is zero, as `tokio::time::interval` does.
pub fn interval(period: Duration) -> tokio::time::Interval {
    let start = tokio::time::Instant::from_std(wake_at(Instant::now(), Duration::ZERO));
    if start >= tokio::time::Instant::now() {
        tokio::time::interval_at(start, period)
    } else {
        // A runtime whose clock is paused ahead of real time: no grid.
        tokio::time::interval(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_fall_on_one_grid_and_never_early() {
        let now = Instant::now();
        let mut ends = Vec::new();
        for wait_us in [0u64, 1, 999, 4_321, 9_999, 10_000, 10_001, 25_000] {
            let wait = Duration::from_micros(wait_us);
            let at = wake_at(now, wait);
            assert!(at >= now + wait, "woken before the tokens are due");
            assert!(at < now + wait + TICK, "more than a tick late");
            ends.push(at);
        }
        // Any two ends are a whole number of ticks apart: the same grid for every waiter.
        let tick = TICK.as_nanos();
        for w in ends.windows(2) {
            assert_eq!((w[1] - w[0]).as_nanos() % tick, 0);
        }
        // A later caller lands on the same grid.
        let later = wake_at(now + Duration::from_micros(3_333), Duration::ZERO);
        assert_eq!(
            later.saturating_duration_since(ends[0]).as_nanos() % tick,
            0
        );
    }
}
