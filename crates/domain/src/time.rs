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

    /// `d` later (saturating): when a lease taken now ends.
    pub fn after(self, d: std::time::Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(d.as_micros().min(i64::MAX as u128) as i64),
        )
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
        match self.rfc3339_bytes() {
            // ASCII digits and separators only.
            Some(b) => b.iter().map(|&c| char::from(c)).collect(),
            None => self.to_rfc3339_slow(),
        }
    }

    /// The same text for years 0000 to 9999, written without the `time` crate's formatter:
    /// every run on the wire carries three timestamps, and that formatter was a twentieth of
    /// a GET's CPU in a profile.
    fn rfc3339_bytes(self) -> Option<[u8; 24]> {
        let ms = self.0.div_euclid(1000);
        let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (0..width).rev() {
                b[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, sod / 3600);
        put(14, 2, sod / 60 % 60);
        put(17, 2, sod % 60);
        put(20, 3, milli);
        Some(b)
    }

    fn to_rfc3339_slow(self) -> String {
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

/// Year, month (1-12) and day (1-31) of the proleptic Gregorian calendar for `days` since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339_bytes() {
            // ASCII only, so always UTF-8; no String is allocated.
            Some(b) => s.serialize_str(std::str::from_utf8(&b).unwrap_or_default()),
            None => s.serialize_str(&self.to_rfc3339_slow()),
        }
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

    #[test]
    fn the_fast_format_is_the_time_crates_to_the_millisecond() {
        // A deterministic walk of uneven steps from 1970 to 9999, and the ends of the range.
        let last = Timestamp::parse_rfc3339("9999-12-31T23:59:59.999999Z")
            .unwrap()
            .0;
        let mut samples = vec![0, -1, 1, 999, 1000, 86_399_999_999, 86_400_000_000, last];
        let (mut t, mut step) = (0_i64, 1_i64);
        while t < last {
            samples.push(t);
            t += step;
            step = step * 7 % 1_000_003_331 + 37 * 86_400_000_000 + 12_345;
        }
        // Around every new year, leap day and end of February from 1970 to 2500.
        for year in 1970..2500 {
            for md in ["01-01", "02-28", "02-29", "03-01", "12-31"] {
                if let Ok(t) = Timestamp::parse_rfc3339(&format!("{year}-{md}T00:00:00Z")) {
                    samples.extend([t.0 - 1, t.0, t.0 + 1, t.0 + 86_399_999_999]);
                }
            }
        }
        for t in samples {
            let t = Timestamp(t);
            assert_eq!(t.to_rfc3339(), t.to_rfc3339_slow(), "{}", t.0);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.to_rfc3339_slow()));
        }
        // Before year 0 the slow path answers, as it always did.
        let ancient = Timestamp(-63_000_000_000_000_000);
        assert_eq!(ancient.rfc3339_bytes(), None);
        assert_eq!(ancient.to_rfc3339(), ancient.to_rfc3339_slow());
    }
}
