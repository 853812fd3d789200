//! Timestamps: microseconds since the Unix epoch in storage; on the wire, RFC 3339 UTC with
//! exactly three fractional digits and `Z` (`2026-06-01T12:00:04.200Z`), as runbase.net shows.

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1000) as i64)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp (any offset), from 1970 to 9999 in UTC: what the wire
    /// format can write back (`0000-01-01T00:30:00+01:00` would be year -1).
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let t = OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("not an RFC 3339 timestamp ({e})"))?
            .to_offset(time::UtcOffset::UTC);
        if !(1970..=9999).contains(&t.year()) {
            return Err("a timestamp must be between 1970 and 9999 (UTC)".into());
        }
        Ok(Timestamp((t.unix_timestamp_nanos() / 1000) as i64))
    }

    /// `2026-06-01T12:00:04.200Z`: UTC, milliseconds always written (truncated, so a time is
    /// never shown later than it happened).
    pub fn to_rfc3339(self) -> String {
        const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let nanos = i128::from(self.0.div_euclid(1000)) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(FORMAT).ok())
            .unwrap_or_default()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-11-25T05:39:22.123456Z").unwrap();
        assert_eq!(t.micros() % 1_000_000, 123_456);
        assert_eq!(t.to_rfc3339(), "2026-11-25T05:39:22.123Z");
        let t = Timestamp::parse_rfc3339("2026-11-25T06:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T05:00:00.000Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("0000-01-01T00:30:00+01:00").is_err());
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
    }
}
