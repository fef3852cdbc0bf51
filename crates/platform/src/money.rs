//! Money as integer minor units of an ISO 4217 currency. Never a float.

use std::fmt;

use redstore_proto::common;

use crate::error::{Error, Result};
use crate::text::quote;

/// An ISO 4217 alphabetic currency code: three upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(field: &str, code: &str) -> Result<Self> {
        let bytes = code.as_bytes();
        match bytes {
            [a, b, c] if bytes.iter().all(u8::is_ascii_uppercase) => Ok(Self([*a, *b, *c])),
            _ => Err(Error::invalid(
                field,
                format!("{} is not an ISO 4217 currency code (three upper-case letters, e.g. \"EUR\")", quote(code)),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from three ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in minor units of one currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Money {
    pub currency: Currency,
    pub minor: i64,
}

impl Money {
    pub fn new(currency: Currency, minor: i64) -> Self {
        Self { currency, minor }
    }

    pub fn zero(currency: Currency) -> Self {
        Self { currency, minor: 0 }
    }

    /// Parses a required Money field of a request.
    pub fn from_proto(field: &str, value: Option<&common::Money>) -> Result<Self> {
        let value = value.ok_or_else(|| Error::invalid(field, "is required"))?;
        let currency = Currency::parse(&format!("{field}.currency_code"), &value.currency_code)?;
        Ok(Self { currency, minor: value.units_minor })
    }

    pub fn to_proto(self) -> common::Money {
        common::Money { currency_code: self.currency.as_str().to_owned(), units_minor: self.minor }
    }

    /// Adds two amounts of the same currency; `None` on a currency mismatch or overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then_some(())?;
        Some(Money { currency: self.currency, minor: self.minor.checked_add(other.minor)? })
    }

    /// Subtracts an amount of the same currency; `None` on a currency mismatch or overflow.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then_some(())?;
        Some(Money { currency: self.currency, minor: self.minor.checked_sub(other.minor)? })
    }

    /// Multiplies a unit price by a quantity; `None` on overflow.
    pub fn checked_mul(self, quantity: i64) -> Option<Money> {
        Some(Money { currency: self.currency, minor: self.minor.checked_mul(quantity)? })
    }

    /// Sums amounts of one currency; `None` on a currency mismatch or overflow. The sum of no
    /// amounts is zero in `currency`.
    pub fn sum(currency: Currency, amounts: impl IntoIterator<Item = Money>) -> Option<Money> {
        amounts.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn eur() -> Currency {
        Currency::parse("c", "EUR").unwrap()
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(Currency::parse("price.currency_code", "EUR").is_ok());
        let err = Currency::parse("price.currency_code", "eur").unwrap_err();
        assert_eq!(err.field(), Some("price.currency_code"));
        assert!(Currency::parse("c", "EURO").is_err());
        assert!(Currency::parse("c", "").is_err());
    }

    #[test]
    fn mixed_currencies_do_not_add() {
        let usd = Currency::parse("c", "USD").unwrap();
        assert_eq!(Money::new(eur(), 1).checked_add(Money::new(usd, 1)), None);
    }

    #[test]
    fn display_shows_minor_units_as_decimals() {
        assert_eq!(Money::new(eur(), 1999).to_string(), "19.99 EUR");
        assert_eq!(Money::new(eur(), -5).to_string(), "-0.05 EUR");
    }

    proptest! {
        #[test]
        fn addition_is_commutative_and_subtraction_undoes_it(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000) {
            let (x, y) = (Money::new(eur(), a), Money::new(eur(), b));
            prop_assert_eq!(x.checked_add(y), y.checked_add(x));
            prop_assert_eq!(x.checked_add(y).and_then(|s| s.checked_sub(y)), Some(x));
        }

        #[test]
        fn line_totals_sum_to_the_same_total_in_any_order(lines in prop::collection::vec((0i64..100_000, 1i64..1_000), 0..20)) {
            let totals: Vec<Money> = lines.iter().map(|(p, q)| Money::new(eur(), *p).checked_mul(*q).unwrap()).collect();
            let forward = Money::sum(eur(), totals.iter().copied()).unwrap();
            let backward = Money::sum(eur(), totals.iter().rev().copied()).unwrap();
            prop_assert_eq!(forward, backward);
            let expected: i64 = lines.iter().map(|(p, q)| p * q).sum();
            prop_assert_eq!(forward.minor, expected);
        }

        #[test]
        fn overflow_is_reported_not_wrapped(a in (i64::MAX / 2)..i64::MAX) {
            prop_assert_eq!(Money::new(eur(), a).checked_add(Money::new(eur(), a)), None);
            prop_assert_eq!(Money::new(eur(), a).checked_mul(3), None);
        }

        #[test]
        fn proto_round_trip(minor in any::<i64>()) {
            let m = Money::new(eur(), minor);
            prop_assert_eq!(Money::from_proto("price", Some(&m.to_proto())).unwrap(), m);
        }
    }
}
