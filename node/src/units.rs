//! Sizes, rates and bandwidth schedules as operators write them in configuration files.

use serde::Deserialize;

use crate::net::caps::{Schedule, Window};

/// Parses `64MiB`, `200MB`, `1GiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 64MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a rate in bytes per second (`10MB`, `512KiB`) or `unlimited` (`None`).
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    if s.trim() == "unlimited" {
        return Ok(None);
    }
    parse_size(s)
        .map(Some)
        .map_err(|e| format!("rate {s:?}: {e} (bytes per second, e.g. 10MB, or unlimited)"))
}

fn minutes(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("time {s:?} must be HH:MM"))?;
    let h: u32 = h.parse().map_err(|_| format!("time {s:?} must be HH:MM"))?;
    let m: u32 = m.parse().map_err(|_| format!("time {s:?} must be HH:MM"))?;
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("time {s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

/// A cap in a configuration file: a default rate and time windows in hospital local time.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapFile {
    /// Rate outside the windows (`unlimited` if absent).
    #[serde(default)]
    pub default: Option<String>,
    /// Hospital local time offset from UTC (prefer `timezone`: an offset drifts at daylight saving).
    #[serde(default)]
    pub utc_offset_minutes: i32,
    /// The hospital's IANA time zone, e.g. `Europe/Berlin`: windows follow its wall clock.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Windows with their own rate.
    #[serde(default)]
    pub window: Vec<WindowFile>,
}

/// One schedule window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    /// Start, `HH:MM`.
    pub from: String,
    /// End, `HH:MM` (may wrap past midnight).
    pub to: String,
    /// Rate inside the window.
    pub rate: String,
}

impl CapFile {
    /// The schedule it describes.
    pub fn schedule(&self) -> Result<Schedule, String> {
        let default = match &self.default {
            None => None,
            Some(s) => parse_rate(s)?,
        };
        let windows = self
            .window
            .iter()
            .map(|w| {
                Ok(Window {
                    from: minutes(&w.from)?,
                    to: minutes(&w.to)?,
                    rate: parse_rate(&w.rate)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let timezone = match &self.timezone {
            None => None,
            Some(_) if self.utc_offset_minutes != 0 => {
                return Err("give timezone or utc_offset_minutes, not both".into())
            }
            Some(z) => Some(jiff::tz::TimeZone::get(z).map_err(|e| {
                format!("timezone {z:?} is not an IANA time zone name (e.g. Europe/Berlin): {e}")
            })?),
        };
        Ok(Schedule {
            default,
            windows,
            utc_offset_minutes: self.utc_offset_minutes,
            timezone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_windows() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("2XB").is_err());
        assert_eq!(parse_rate("unlimited"), Ok(None));
        assert!(minutes("25:00").is_err());
        let c = CapFile {
            default: Some("1MB".into()),
            utc_offset_minutes: 0,
            timezone: None,
            window: vec![WindowFile {
                from: "07:00".into(),
                to: "19:00".into(),
                rate: "0".into(),
            }],
        };
        let s = c.schedule().expect("valid");
        assert_eq!(s.rate_at(8 * 3600), Some(0));
        assert_eq!(s.rate_at(20 * 3600), Some(1_000_000));
    }

    #[test]
    fn cap_windows_follow_a_named_zone_across_daylight_saving() {
        let c = CapFile {
            default: Some("20MB".into()),
            utc_offset_minutes: 0,
            timezone: Some("Europe/Berlin".into()),
            window: vec![WindowFile {
                from: "07:00".into(),
                to: "19:00".into(),
                rate: "4MB".into(),
            }],
        };
        let s = c.schedule().expect("valid");
        let at = |t: &str| t.parse::<jiff::Timestamp>().expect("time").as_second() as u64;
        // 07:00 in Berlin is 06:00 UTC in winter and 05:00 UTC in summer.
        assert_eq!(s.rate_at(at("2027-01-15T06:00:00Z")), Some(4_000_000));
        assert_eq!(s.rate_at(at("2027-01-15T05:30:00Z")), Some(20_000_000));
        assert_eq!(s.rate_at(at("2027-07-15T05:00:00Z")), Some(4_000_000));
        assert_eq!(s.rate_at(at("2027-07-15T04:59:00Z")), Some(20_000_000));
        let both = CapFile {
            utc_offset_minutes: 60,
            ..c.clone()
        };
        assert!(both.schedule().is_err());
        let bad = CapFile {
            timezone: Some("+01:00".into()),
            ..c
        };
        assert!(bad.schedule().expect_err("refused").contains("IANA"));
    }
}
