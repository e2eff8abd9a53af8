//! Bandwidth caps: one limiter per direction per node, shared by every peer, connection and transfer.
//!
//! Bytes are counted in cells of 1 KiB (1-byte cells ran 7 % over at high rates from rounding; measured
//! in `../shared/docs/measured-here.md`), with an explicit burst of 20 ms of traffic (at least one
//! slice) and one [`grid::TICK`], so the rate over any second stays within a few percent of the cap.
//! A cap can change at run time (schedules); `None` means unlimited, `Some(0)` means nothing passes
//! (upload: leech only).
//!
//! A transfer held up by a cap sleeps until the next instant of the process-wide [`grid`] after its
//! tokens are due, not until the instant they are due: every transfer waiting on any cap of the
//! process wakes at the same instants, and the runtime wakes once a tick for all of them instead of
//! once for each. Paced traffic is otherwise a stream of lone wake-ups: a parked thread woken, a
//! slice sent, the thread parked again, each costing more than the bytes
//! (`docs/performance.md`). The extra tick of burst keeps the rate: tokens earned while a waiter
//! waits for the tick are not lost to a full bucket.

use std::{
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use governor::{clock::Clock, DefaultDirectRateLimiter as Limiter, Quota, RateLimiter};

use super::grid;

/// Bytes per limiter cell.
pub const CELL: u64 = 1024;
/// Largest slice passed through a limiter at once (two chunk groups).
const MAX_SLICE: usize = 32 * 1024;
/// A slice is this fraction of a second of traffic (33 ms), 1 to 32 KiB: at the ward's 1 MB/s, 32 KiB.
/// Every slice crosses the whole stack alone (timer, transfer task, yamux, noise, `sendto`, and back
/// up on the other side): 32 KiB instead of 16 KiB cut the live ward-50's CPU by about a tenth, and
/// a slice and a tick of burst keep any second within 1 + 1/30 + 1/100 of the cap
/// (`docs/performance.md`, issue 15's twentieth pass).
const SLICES_PER_SECOND: u64 = 30;
fn slice_for(rate: u64) -> usize {
    ((rate / SLICES_PER_SECOND) as usize).clamp(CELL as usize, MAX_SLICE)
}

/// A rate cap that can be changed while in use.
#[derive(Debug, Clone)]
pub struct Cap {
    inner: Arc<RwLock<CapState>>,
    /// Transfers waiting for this cap's tokens queue here, first come first served: only the one
    /// at the head waits on the limiter. Every waiter checking the limiter itself, each woken at the
    /// same tick for the same tokens, made six failed checks (a timer wake-up each) for every slice
    /// that passed on the live ward-50 (`docs/performance.md`, issue 15's twenty-fourth pass).
    turn: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
struct CapState {
    /// Bytes not yet a whole cell, summed over every transfer through this cap (a per-transfer
    /// remainder would let each short transfer pass up to 1 KiB free: 3 % over at 500 KB/s).
    pending: CellMeter,
    rate: Option<u64>,
    limiter: Option<Arc<Limiter>>,
    burst_cells: u32,
}

impl Cap {
    /// A cap of `rate` bytes per second (`None`: unlimited).
    pub fn new(rate: Option<u64>) -> Self {
        let c = Self {
            inner: Arc::new(RwLock::new(CapState {
                pending: CellMeter::default(),
                rate: None,
                limiter: None,
                burst_cells: 0,
            })),
            turn: Arc::default(),
        };
        c.set(rate);
        c
    }

    /// Changes the cap (a schedule boundary, an operator command).
    pub fn set(&self, rate: Option<u64>) {
        let mut st = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if st.rate == rate && (st.limiter.is_some() || rate.is_none() || rate == Some(0)) {
            return;
        }
        st.rate = rate;
        st.limiter = None;
        st.burst_cells = 0;
        if let Some(r) = rate.filter(|r| *r > 0) {
            let cells_per_sec = (r as f64 / CELL as f64).max(1e-3);
            let period = Duration::from_secs_f64(1.0 / cells_per_sec);
            // Burst: 20 ms of traffic (2 % of any one-second window), at least one slice, and a
            // tick's worth for the wait to the tick.
            let slice_cells = slice_for(r).div_ceil(CELL as usize) as u32;
            let tick_cells = (cells_per_sec * grid::TICK.as_secs_f64()).ceil() as u32;
            let burst = ((cells_per_sec * 0.02).ceil() as u32).max(slice_cells) + tick_cells;
            if let (Some(q), Some(b)) = (Quota::with_period(period), NonZeroU32::new(burst)) {
                st.limiter = Some(Arc::new(RateLimiter::direct(q.allow_burst(b))));
                st.burst_cells = burst;
            }
        }
    }

    /// How many bytes to pass through this cap at a time: 33 ms of traffic, 1 to 32 KiB. Tokens are
    /// taken before a slice is written, and a slice held up by back-pressure goes out later in a lump;
    /// with several transfers each may hold one, so slices must be small next to the cap. Without a
    /// cap nothing is metered out, and a read or write takes whatever buffer its caller has.
    pub fn slice_bytes(&self) -> usize {
        self.rate().map_or(usize::MAX, slice_for)
    }

    /// The current cap.
    pub fn rate(&self) -> Option<u64> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).rate
    }

    /// Waits until `bytes` more bytes may pass (counted in cells, the remainder carried over to the next
    /// caller); returns how long it waited.
    pub async fn acquire_bytes(&self, bytes: u64) -> Duration {
        let cells = self
            .inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .add(bytes);
        self.acquire_cells(cells).await
    }

    /// Waits until `cells` cells may pass; returns how long it waited (time throttled). Callers take
    /// turns ([`Cap::turn`]): a caller finds the tokens it needs at once only if no one is waiting.
    pub async fn acquire_cells(&self, mut cells: u64) -> Duration {
        let start = Instant::now();
        if cells == 0 || self.rate().is_none() {
            return start.elapsed();
        }
        let _turn = match self.turn.try_lock() {
            Ok(t) => t,
            Err(_) => self.turn.lock().await,
        };
        while cells > 0 {
            let (rate, limiter, burst) = {
                let st = self.inner.read().unwrap_or_else(|e| e.into_inner());
                (st.rate, st.limiter.clone(), st.burst_cells)
            };
            match (rate, limiter) {
                (None, _) => break,
                (Some(0), _) | (Some(_), None) => {
                    // Paused (cap zero): wait for the cap to change.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (Some(_), Some(l)) => {
                    let n = cells.min(u64::from(burst)) as u32;
                    let Some(nz) = NonZeroU32::new(n) else { break };
                    // `n` never exceeds the burst, so this cannot fail; treat failure as "no limit".
                    // The wait is a tokio timer, not governor's `until_n_ready`: that one sleeps on
                    // futures-timer's global thread, two cross-thread wake-ups per wait, which cost a
                    // ward more CPU than its ciphers (docs/performance.md).
                    match l.check_n(nz) {
                        Err(_) => break,
                        Ok(Ok(())) => cells -= u64::from(n),
                        Ok(Err(not_until)) => {
                            let wait = not_until.wait_time_from(l.clock().now());
                            grid::sleep(wait).await;
                        }
                    }
                }
            }
        }
        start.elapsed()
    }
}

/// Counts bytes into whole cells, carrying the remainder, so small writes are neither free nor
/// rounded up.
#[derive(Debug, Default)]
pub struct CellMeter {
    pending: u64,
}

impl CellMeter {
    /// Adds bytes; returns the whole cells to acquire now.
    pub fn add(&mut self, bytes: u64) -> u64 {
        self.pending += bytes;
        let cells = self.pending / CELL;
        self.pending %= CELL;
        cells
    }
}

/// A cap that changes with the time of day, e.g. a lower cap during clinical hours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Cap outside every window.
    pub default: Option<u64>,
    /// Windows in minutes of the day `[from, to)`, first match wins; `from > to` wraps midnight.
    pub windows: Vec<Window>,
    /// Offset of local time from UTC, in minutes (hospital local time), when no `timezone` is set.
    pub utc_offset_minutes: i32,
    /// The hospital's IANA time zone: windows follow its wall clock across daylight saving (a
    /// fixed offset would shift clinical hours by an hour twice a year). Wins over the offset.
    pub timezone: Option<jiff::tz::TimeZone>,
}

/// One window of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Start, minutes after local midnight.
    pub from: u32,
    /// End (exclusive), minutes after local midnight.
    pub to: u32,
    /// The cap inside the window.
    pub rate: Option<u64>,
}

impl Schedule {
    /// A fixed cap.
    pub fn fixed(rate: Option<u64>) -> Self {
        Self {
            default: rate,
            windows: vec![],
            utc_offset_minutes: 0,
            timezone: None,
        }
    }
    /// The cap at a Unix time (seconds).
    pub fn rate_at(&self, unix_secs: u64) -> Option<u64> {
        let zoned = self.timezone.as_ref().and_then(|tz| {
            let t = jiff::Timestamp::from_second(unix_secs as i64).ok()?;
            let d = tz.to_datetime(t);
            Some(d.hour() as u32 * 60 + d.minute() as u32)
        });
        let minute = zoned.unwrap_or_else(|| {
            let local = unix_secs as i64 + i64::from(self.utc_offset_minutes) * 60;
            (local.rem_euclid(86_400) / 60) as u32
        });
        for w in &self.windows {
            let inside = if w.from <= w.to {
                minute >= w.from && minute < w.to
            } else {
                minute >= w.from || minute < w.to
            };
            if inside {
                return w.rate;
            }
        }
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_windows() {
        let s = Schedule {
            default: Some(10_000_000),
            windows: vec![
                Window {
                    from: 7 * 60,
                    to: 19 * 60,
                    rate: Some(1_000_000),
                },
                Window {
                    from: 23 * 60,
                    to: 60,
                    rate: None,
                },
            ],
            utc_offset_minutes: 60,
            timezone: None,
        };
        let day = 86_400 * 20_000;
        assert_eq!(s.rate_at(day + 6 * 3600), Some(1_000_000), "07:00 local");
        assert_eq!(
            s.rate_at(day + 5 * 3600 + 59 * 60),
            Some(10_000_000),
            "06:59 local"
        );
        assert_eq!(s.rate_at(day + 18 * 3600), Some(10_000_000), "19:00 local");
        assert_eq!(
            s.rate_at(day + 22 * 3600 + 30 * 60),
            None,
            "23:30 local wraps"
        );
    }

    /// Waiters pass in the order they came: a small request behind a large one waits its turn,
    /// although its few tokens come first.
    #[tokio::test]
    async fn waiters_take_turns() {
        // 100 cells a second; the burst (a slice, 4 cells, and a tick's cell) is spent at once.
        let cap = Cap::new(Some(100 * CELL));
        let burst = u64::from(cap.inner.read().expect("cap").burst_cells);
        assert_eq!(burst, 5);
        let run = async {
            assert!(cap.acquire_cells(burst).await < Duration::from_millis(5));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (a, b) = (cap.clone(), cap.clone());
            let (ta, tb) = (tx.clone(), tx);
            tokio::spawn(async move {
                a.acquire_cells(5).await;
                ta.send("large").expect("send");
            });
            // The test's runtime has one thread: the large request is waiting for its tokens when
            // the small one asks.
            tokio::task::yield_now().await;
            tokio::spawn(async move {
                b.acquire_cells(1).await;
                tb.send("small").expect("send");
            });
            (rx.recv().await, rx.recv().await)
        };
        let order = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("both pass within the cap's time");
        assert_eq!(order, (Some("large"), Some("small")));
    }

    #[test]
    fn meter_carries_remainder() {
        let mut m = CellMeter::default();
        assert_eq!(m.add(64), 0);
        assert_eq!(m.add(1000), 1);
        assert_eq!(m.add(16 * 1024), 16);
        assert_eq!(m.pending, 40);
    }
}
