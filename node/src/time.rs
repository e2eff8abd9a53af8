//! Timestamps in signed documents: whole seconds, UTC, written as RFC 3339 (`2027-01-31T08:00:00Z`).

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Seconds since the Unix epoch, UTC. Sub-second precision is dropped so that there is one text form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Largest timestamp we write: 9999-12-31T23:59:59Z, the end of RFC 3339's four-digit years.
    pub const MAX: Timestamp = Timestamp(253_402_300_799);

    /// The current wall-clock time (the only place the library reads the clock; callers pass it on).
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self(secs)
    }
    /// From seconds since the epoch.
    pub const fn from_unix(secs: u64) -> Self {
        Self(secs)
    }
    /// Seconds since the epoch.
    pub const fn as_unix(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_secs()).min(Self::MAX.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_secs(self.0.min(Self::MAX.0));
        write!(f, "{}", humantime::format_rfc3339_seconds(t))
    }
}
impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A timestamp string that is not `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 UTC time in whole seconds such as 2027-01-31T08:00:00Z")]
pub struct TimestampParseError(String);

impl FromStr for Timestamp {
    type Err = TimestampParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimestampParseError(s.chars().take(40).collect());
        // Only the canonical form: 20 characters, 'T' separator, 'Z' zone, no fraction.
        if s.len() != 20 || !s.ends_with('Z') || s.as_bytes().get(10) != Some(&b'T') {
            return Err(bad());
        }
        let t = humantime::parse_rfc3339(s).map_err(|_| bad())?;
        let secs = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_secs();
        Ok(Self(secs))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let t: Timestamp = "2027-01-31T08:00:00Z".parse().expect("valid");
        assert_eq!(t.to_string(), "2027-01-31T08:00:00Z");
        for bad in [
            "2027-01-31T08:00:00.5Z",
            "2027-01-31 08:00:00Z",
            "2027-01-31T08:00:00+00:00",
            "",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        assert_eq!(
            Timestamp::from_unix(u64::MAX).to_string(),
            "9999-12-31T23:59:59Z"
        );
    }
}
