//! Maintenance windows *(pure)*: a cron schedule of start times in a named IANA time zone, and how
//! long each window stays open. Evaluated wherever a decision is made, on the device as on the
//! gateway, from the window's text alone: a device fed by its peers while the gateway is away still
//! honours it, and a named zone (not a UTC offset) keeps clinical hours right across daylight saving.
//!
//! The schedule is the classic five cron fields, matched against the zone's local wall-clock time:
//! minute (0–59), hour (0–23), day of month (1–31), month (1–12), day of week (0–7, 0 and 7 are
//! Sunday). A field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of
//! those. As in Vixie cron, when both day fields are restricted a day matching either one counts.
//! Daylight saving: a start time that falls in the skipped hour does not happen that day; one in
//! the repeated hour opens the window at its first occurrence.

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Longest window: a week.
pub const MAX_DURATION_SECS: u64 = 7 * 86_400;
/// How far ahead [`Window::next_open`] looks.
const LOOKAHEAD_MINUTES: u64 = 400 * 24 * 60;

/// A window as written in a rollout, a ward's settings or a directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Start times: five cron fields, e.g. `0 22 * * 1-5` (22:00 on weekdays).
    pub schedule: String,
    /// How long each window stays open, e.g. `6h`, `90m`.
    pub duration: String,
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
}

/// A window is malformed; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window schedule {schedule:?}: {reason}")]
    Schedule { schedule: String, reason: String },
    #[error("window duration {0:?}: give a length from 1m to 7d, e.g. 6h or 90m")]
    Duration(String),
    #[error(
        "window timezone {zone:?} is not an IANA time zone name (e.g. Europe/Berlin): {reason}"
    )]
    TimeZone { zone: String, reason: String },
}

/// One cron field as a bit set of the values it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn parse(text: &str, lo: u32, hi: u32) -> Result<Self, String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (
                    r,
                    s.parse::<u32>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or(format!("bad step in {part:?}"))?,
                ),
                None => (part, 1),
            };
            let (a, b) = if range == "*" {
                (lo, hi)
            } else if let Some((a, b)) = range.split_once('-') {
                (num(a, lo, hi)?, num(b, lo, hi)?)
            } else {
                let v = num(range, lo, hi)?;
                // `5/15` means from 5 to the end in steps of 15.
                (v, if part.contains('/') { hi } else { v })
            };
            if a > b {
                return Err(format!("range {range:?} runs backwards"));
            }
            let mut v = a;
            while v <= b {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(Self {
            bits,
            star: text == "*",
        })
    }
    fn has(self, v: u32) -> bool {
        self.bits & (1 << v) != 0
    }
}

fn num(s: &str, lo: u32, hi: u32) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number from {lo} to {hi}")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

impl Cron {
    fn parse(s: &str) -> Result<Self, String> {
        let f: Vec<&str> = s.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = f[..] else {
            return Err(format!(
                "{} fields; five are needed: minute hour day-of-month month day-of-week",
                f.len()
            ));
        };
        let mut dow = Field::parse(dow, 0, 7)?;
        if dow.has(7) {
            dow.bits |= 1;
        }
        Ok(Self {
            minute: Field::parse(minute, 0, 59)?,
            hour: Field::parse(hour, 0, 23)?,
            dom: Field::parse(dom, 1, 31)?,
            month: Field::parse(month, 1, 12)?,
            dow,
        })
    }

    fn matches(&self, t: &jiff::civil::DateTime) -> bool {
        let (dom, dow) = (
            self.dom.has(t.day() as u32),
            self.dow.has(t.weekday().to_sunday_zero_offset() as u32),
        );
        let day = match (self.dom.star, self.dow.star) {
            (false, false) => dom || dow,
            _ => dom && dow,
        };
        day && self.minute.has(t.minute() as u32)
            && self.hour.has(t.hour() as u32)
            && self.month.has(t.month() as u32)
    }
}

/// A checked window.
#[derive(Debug, Clone)]
pub struct Window {
    spec: WindowSpec,
    cron: Cron,
    duration: u64,
    tz: TimeZone,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Window {
    /// Checks a window: five valid cron fields, a duration from a minute to a week, a known zone.
    pub fn new(spec: WindowSpec) -> Result<Self, WindowError> {
        let cron = Cron::parse(&spec.schedule).map_err(|reason| WindowError::Schedule {
            schedule: spec.schedule.clone(),
            reason,
        })?;
        let duration = humantime::parse_duration(&spec.duration)
            .ok()
            .map(|d| d.as_secs())
            .filter(|s| (60..=MAX_DURATION_SECS).contains(s))
            .ok_or_else(|| WindowError::Duration(spec.duration.clone()))?;
        let tz = TimeZone::get(&spec.timezone).map_err(|e| WindowError::TimeZone {
            zone: spec.timezone.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            spec,
            cron,
            duration,
            tz,
        })
    }

    /// The window as written.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    fn starts_at(&self, minute: u64) -> bool {
        let local = |secs: i64| {
            jiff::Timestamp::from_second(secs)
                .ok()
                .map(|t| self.tz.to_datetime(t))
        };
        let Some(here) = local((minute * 60) as i64) else {
            return false;
        };
        // In the repeated hour of a fall-back the same wall-clock minute comes twice: only the
        // first one starts a window.
        if local((minute * 60) as i64 - 3600) == Some(here) {
            return false;
        }
        self.cron.matches(&here)
    }

    /// Whether a window is open at `now`: one started at most `duration` ago.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let t = now.as_unix();
        let minute = t / 60;
        let span = self.duration / 60;
        (0..=span).any(|back| {
            minute.checked_sub(back).is_some_and(|m| {
                let start = m * 60;
                start <= t && t < start + self.duration && self.starts_at(m)
            })
        })
    }

    /// The next time a window opens at or after `now` (`now` itself if one is open), looking up to
    /// 400 days ahead.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        if self.is_open(now) {
            return Some(now);
        }
        let first = now.as_unix().div_ceil(60);
        (first..first + LOOKAHEAD_MINUTES)
            .find(|m| self.starts_at(*m))
            .map(|m| Timestamp::from_unix(m * 60))
    }

    /// When the window open at `now` closes, if one is.
    pub fn closes_at(&self, now: Timestamp) -> Option<Timestamp> {
        let t = now.as_unix();
        let minute = t / 60;
        (0..=self.duration / 60)
            .filter_map(|back| minute.checked_sub(back))
            .filter(|m| self.starts_at(*m))
            .map(|m| m * 60 + self.duration)
            .filter(|end| *end > t)
            .max()
            .map(Timestamp::from_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(schedule: &str, duration: &str, tz: &str) -> Window {
        Window::new(WindowSpec {
            schedule: schedule.into(),
            duration: duration.into(),
            timezone: tz.into(),
        })
        .expect("valid window")
    }

    fn at(s: &str) -> Timestamp {
        let t: jiff::Timestamp = s.parse().expect("timestamp");
        Timestamp::from_unix(t.as_second() as u64)
    }

    #[test]
    fn a_nightly_window_opens_and_closes_in_local_time() {
        let night = w("0 22 * * *", "6h", "Europe/Berlin");
        // Winter: Berlin is UTC+1, so 22:00 local is 21:00 UTC.
        assert!(!night.is_open(at("2027-01-15T20:59:00Z")));
        assert!(night.is_open(at("2027-01-15T21:00:00Z")));
        assert!(night.is_open(at("2027-01-16T02:59:59Z")));
        assert!(!night.is_open(at("2027-01-16T03:00:00Z")));
        assert_eq!(
            night.next_open(at("2027-01-15T12:00:00Z")),
            Some(at("2027-01-15T21:00:00Z"))
        );
        assert_eq!(
            night.closes_at(at("2027-01-16T01:00:00Z")),
            Some(at("2027-01-16T03:00:00Z"))
        );
        // Summer: UTC+2, so the same window opens an hour earlier in UTC. A fixed offset would
        // have opened it at 23:00 local, an hour into clinical handover.
        assert!(night.is_open(at("2027-07-15T20:00:00Z")));
        assert!(!night.is_open(at("2027-07-15T19:59:00Z")));
    }

    #[test]
    fn weekday_ranges_lists_and_steps() {
        // 07:30 and 12:30 on weekdays, for an hour.
        let wd = w("30 7,12 * * 1-5", "1h", "America/New_York");
        // 2027-01-15 is a Friday; New York is UTC-5 in January.
        assert!(wd.is_open(at("2027-01-15T12:45:00Z")));
        assert!(wd.is_open(at("2027-01-15T17:30:00Z")));
        assert!(!wd.is_open(at("2027-01-16T12:45:00Z")), "Saturday");
        assert_eq!(
            wd.next_open(at("2027-01-16T00:00:00Z")),
            Some(at("2027-01-18T12:30:00Z")),
            "Monday"
        );
        let every = w("*/15 * * * *", "5m", "UTC");
        assert!(every.is_open(at("2027-01-15T10:47:00Z")));
        assert!(!every.is_open(at("2027-01-15T10:51:00Z")));
        // Sunday as 7.
        let sunday = w("0 3 * * 7", "1h", "UTC");
        assert!(sunday.is_open(at("2027-01-17T03:30:00Z")));
        // Both day fields restricted: either matches (the 1st, or any Monday).
        let either = w("0 0 1 * 1", "1h", "UTC");
        assert!(
            either.is_open(at("2027-02-01T00:10:00Z")),
            "the 1st, a Monday"
        );
        assert!(either.is_open(at("2027-01-18T00:10:00Z")), "a Monday");
        assert!(
            either.is_open(at("2027-01-01T00:10:00Z")),
            "the 1st, a Friday"
        );
        assert!(!either.is_open(at("2027-01-19T00:10:00Z")));
    }

    #[test]
    fn daylight_saving_skips_and_repeats_are_handled() {
        // Berlin springs forward on 2027-03-28: 02:00 becomes 03:00, so a 02:30 start is skipped.
        let early = w("30 2 * * *", "20m", "Europe/Berlin");
        assert!(
            early.is_open(at("2027-03-27T01:40:00Z")),
            "the day before, UTC+1"
        );
        assert!(
            early.next_open(at("2027-03-27T02:00:00Z")) == Some(at("2027-03-29T00:30:00Z")),
            "no window on the day of the gap; the next at 02:30 UTC+2"
        );
        // Berlin falls back on 2027-10-31: 02:30 local happens twice; the window opens once.
        let starts: Vec<u64> = (0..(6 * 60))
            .map(|m| at("2027-10-30T23:00:00Z").as_unix() / 60 + m)
            .filter(|m| early.starts_at(*m))
            .collect();
        assert_eq!(starts.len(), 1, "{starts:?}");
    }

    #[test]
    fn malformed_windows_are_refused_with_the_field() {
        let bad = |s: &str, d: &str, z: &str| {
            Window::new(WindowSpec {
                schedule: s.into(),
                duration: d.into(),
                timezone: z.into(),
            })
            .expect_err("refused")
            .to_string()
        };
        assert!(bad("0 22 * *", "6h", "UTC").contains("five are needed"));
        assert!(bad("0 24 * * *", "6h", "UTC").contains("0 to 23"));
        assert!(bad("0 22 * * *", "8d", "UTC").contains("duration"));
        assert!(bad("0 22 * * *", "0s", "UTC").contains("duration"));
        assert!(bad("0 22 * * *", "6h", "+02:00").contains("IANA"));
        assert!(bad("0 22 * * *", "6h", "Mars/Olympus").contains("IANA"));
        assert!(bad("5-1 * * * *", "1h", "UTC").contains("backwards"));
        assert!(bad("*/0 * * * *", "1h", "UTC").contains("step"));
    }
}
