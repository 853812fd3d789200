//! Money. Every amount is an integer number of millicents (1/1000 of a cent) so that prices that
//! are a fraction of a cent are kept exactly. On the wire (the API, the CLI's `--json`) money is
//! an integer of micro-USD in a field named `…Usd`, as runbase.net's `costUsd`; people see
//! dollars and cents.

use serde::{Serialize, Serializer};
use std::fmt;
use std::ops::{Add, Neg, Sub};

/// An amount of money in millicents (1 cent = 1000 millicents). Signed so that ledger entries
/// can be debits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millicents(pub i64);

impl Millicents {
    pub const ZERO: Millicents = Millicents(0);
    pub const PER_CENT: i64 = 1000;
    /// The largest balance or spend limit Runbase holds: 2^53 micro-USD (about $9 billion), the
    /// largest integer a JSON client in JavaScript reads exactly, so `balanceUsd` is always exact.
    pub const MAX_BALANCE: Millicents = Millicents((1 << 53) / 10);

    /// Whole cents to millicents; `None` on overflow.
    pub fn from_cents(cents: i64) -> Option<Self> {
        cents.checked_mul(Self::PER_CENT).map(Millicents)
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Millicents)
    }

    pub fn checked_mul(self, factor: i64) -> Option<Self> {
        self.0.checked_mul(factor).map(Millicents)
    }

    /// The amount in micro-USD (1 USD = 1,000,000), the unit of money on the wire (`costUsd`,
    /// `balanceUsd`): exact, since one millicent is ten micro-USD. Saturates at the `i64` range.
    pub fn micro_usd(self) -> i64 {
        self.0.saturating_mul(10)
    }

    /// Micro-USD back to millicents, rounding a fraction of a millicent up (a price is never
    /// rounded in the user's disfavour when it is charged, nor a limit when it is set).
    pub fn from_micro_usd(micro: i64) -> Self {
        Millicents(micro.div_euclid(10) + i64::from(micro.rem_euclid(10) != 0))
    }
}

/// Whole cents as dollars, e.g. `$5.00`.
pub fn format_cents(cents: i64) -> String {
    Millicents(cents.saturating_mul(Millicents::PER_CENT)).usd()
}

impl Millicents {
    /// As dollars for people: `$12.30`, `-$0.04`, and a fraction of a cent kept exactly
    /// (`$0.03925`), never rounded.
    pub fn usd(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        // 1 dollar = 100_000 millicents.
        let (dollars, rest) = (abs / 100_000, abs % 100_000);
        let frac = format!("{rest:05}");
        let frac = frac.trim_end_matches('0');
        let frac = if frac.len() < 2 {
            format!("{frac:0<2}")
        } else {
            frac.to_owned()
        };
        format!("{sign}${dollars}.{frac}")
    }
}

impl fmt::Display for Millicents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (cents, milli) = (abs / 1000, abs % 1000);
        if milli == 0 {
            write!(f, "{sign}{cents}¢")
        } else {
            let frac = format!("{milli:03}");
            write!(f, "{sign}{cents}.{}¢", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Millicents {
    /// Serialized as an integer of micro-USD (see [`Millicents::micro_usd`]).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.micro_usd())
    }
}

impl Add for Millicents {
    type Output = Millicents;
    fn add(self, o: Self) -> Self {
        Millicents(self.0 + o.0)
    }
}

impl Sub for Millicents {
    type Output = Millicents;
    fn sub(self, o: Self) -> Self {
        Millicents(self.0 - o.0)
    }
}

impl Neg for Millicents {
    type Output = Millicents;
    fn neg(self) -> Self {
        Millicents(-self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_for_people() {
        assert_eq!(Millicents(0).usd(), "$0.00");
        assert_eq!(Millicents(1_230_000).usd(), "$12.30");
        assert_eq!(Millicents(-4_000).usd(), "-$0.04");
        assert_eq!(Millicents(3_925).usd(), "$0.03925");
        assert_eq!(format_cents(500), "$5.00");
    }

    #[test]
    fn micro_usd_is_exact() {
        // 6 cents = 6000 millicents = 60000 micro-USD.
        assert_eq!(Millicents(6000).micro_usd(), 60_000);
        assert_eq!(Millicents(3_925).micro_usd(), 39_250);
        assert_eq!(Millicents::from_micro_usd(39_250), Millicents(3_925));
        assert_eq!(Millicents::from_micro_usd(39_251), Millicents(3_926));
        assert_eq!(Millicents(i64::MAX).micro_usd(), i64::MAX);
    }

    #[test]
    fn cents_for_people() {
        assert_eq!(Millicents(-1500).to_string(), "-1.5¢");
        assert_eq!(Millicents(3000).to_string(), "3¢");
    }
}
