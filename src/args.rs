//! Command-line argument rules shared by several subcommands.

use std::time::Duration;

/// Durations on the command line (`90d`, `12h`, `30m`, `2years`, `1d 12h`), with an error that says
/// how to write one.
pub fn parse_period(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        let t = s.trim();
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
            format!("{t} needs a unit: {t}d for days, {t}h for hours, {t}m for minutes")
        } else {
            format!("{s:?} is not a duration ({e}); write it like 90d, 12h or 2years")
        }
    })
}

/// The largest counter `release build` takes without `--force-counter` (2^53, also the largest
/// integer a JSON reader with doubles reads exactly).
pub const MAX_PLAIN_COUNTER: u64 = 1 << 53;
