//! Barcodes are parsed, never trusted: EAN-13, EAN-8 and UPC-A with check-digit verification.
//!
//! Every barcode is normalised to a 13-digit GTIN so that the UPC-A and EAN-13 forms of the same
//! item match (a UPC-A code is an EAN-13 with a leading zero).

use std::fmt;

use crate::error::{Error, Result};
use crate::text::quote;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Symbology {
    Ean13,
    Ean8,
    UpcA,
}

/// A verified barcode, normalised to 13 digits.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Barcode {
    gtin13: String,
    symbology: Symbology,
}

/// The GS1 check digit for the digits before it.
pub fn check_digit(payload: &[u8]) -> u8 {
    // Weights alternate 3, 1, 3, ... starting from the digit next to the check digit.
    let sum: u32 = payload.iter().rev().enumerate().map(|(i, d)| u32::from(*d) * if i % 2 == 0 { 3 } else { 1 }).sum();
    // `sum % 10` is below 10, so the result fits in a u8.
    ((10 - sum % 10) % 10) as u8
}

impl Barcode {
    /// Parses a scanned or typed code. `field` names the request field for error messages.
    pub fn parse(field: &str, code: &str) -> Result<Self> {
        let code = code.trim();
        if code.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if code.len() > 32 {
            return Err(Error::invalid(
                field,
                format!("is {} bytes long; a barcode has at most 13 digits", code.len()),
            ));
        }
        let shown = quote(code);
        if let Some(c) = code.chars().find(|c| !c.is_ascii_digit()) {
            return Err(Error::invalid(
                field,
                format!("{shown} contains {}; a barcode has only digits", quote(c.encode_utf8(&mut [0; 4]))),
            ));
        }
        let digits: Vec<u8> = code.bytes().map(|b| b - b'0').collect();
        let symbology = match digits.len() {
            13 => Symbology::Ean13,
            12 => Symbology::UpcA,
            8 => Symbology::Ean8,
            n => {
                return Err(Error::invalid(
                    field,
                    format!("{shown} has {n} digits; EAN-13 has 13, UPC-A 12 and EAN-8 8"),
                ));
            }
        };
        let (payload, given) = digits.split_at(digits.len() - 1);
        let expected = check_digit(payload);
        if given[0] != expected {
            return Err(Error::invalid(
                field,
                format!(
                    "{shown} fails the {} check digit: the last digit is {}, it should be {expected}",
                    symbology.name(),
                    given[0]
                ),
            ));
        }
        let gtin13 = format!("{code:0>13}");
        Ok(Self { gtin13, symbology })
    }

    /// The 13-digit form used for storage and lookup.
    pub fn gtin13(&self) -> &str {
        &self.gtin13
    }

    pub fn symbology(&self) -> Symbology {
        self.symbology
    }
}

impl Symbology {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ean13 => "EAN-13",
            Self::Ean8 => "EAN-8",
            Self::UpcA => "UPC-A",
        }
    }
}

impl fmt::Display for Barcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.gtin13)
    }
}

/// Builds a valid EAN-13 from a 12-digit payload (used by the demo seed and tests).
pub fn ean13_from_payload(payload: &str) -> String {
    let digits: Vec<u8> = payload.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    format!("{payload}{}", check_digit(&digits))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_codes_parse() {
        // Real-world examples with published check digits.
        assert_eq!(Barcode::parse("code", "4006381333931").unwrap().symbology(), Symbology::Ean13);
        assert_eq!(Barcode::parse("code", "96385074").unwrap().symbology(), Symbology::Ean8);
        assert_eq!(Barcode::parse("code", "036000291452").unwrap().symbology(), Symbology::UpcA);
    }

    #[test]
    fn upc_a_and_its_ean13_form_match() {
        let upc = Barcode::parse("code", "036000291452").unwrap();
        let ean = Barcode::parse("code", "0036000291452").unwrap();
        assert_eq!(upc.gtin13(), ean.gtin13());
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let err = Barcode::parse("barcodes[1]", "4006381333932").unwrap_err();
        assert_eq!(err.field(), Some("barcodes[1]"));
        assert!(err.to_string().contains("check digit"), "{err}");
        assert!(err.to_string().contains("should be 1"), "{err}");
        assert!(Barcode::parse("code", "40063813339").unwrap_err().to_string().contains("11 digits"));
        assert!(Barcode::parse("code", "40063813339X").unwrap_err().to_string().contains("only digits"));
        assert!(Barcode::parse("code", "").unwrap_err().to_string().contains("required"));
    }

    proptest! {
        #[test]
        fn a_computed_check_digit_always_verifies(payload in "[0-9]{12}") {
            let code = ean13_from_payload(&payload);
            prop_assert!(Barcode::parse("code", &code).is_ok());
        }

        #[test]
        fn every_wrong_check_digit_is_rejected(payload in "[0-9]{7}|[0-9]{11}|[0-9]{12}", wrong in 1u8..10) {
            let digits: Vec<u8> = payload.bytes().map(|b| b - b'0').collect();
            let bad = (check_digit(&digits) + wrong) % 10;
            let code = format!("{payload}{bad}");
            prop_assert!(Barcode::parse("code", &code).is_err());
        }

        #[test]
        fn a_single_digit_typo_is_always_caught(payload in "[0-9]{12}", pos in 0usize..13, delta in 1u8..10) {
            let code = ean13_from_payload(&payload);
            let mut bytes = code.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let typo = String::from_utf8(bytes).unwrap();
            prop_assert!(Barcode::parse("code", &typo).is_err());
        }

        #[test]
        fn upc_a_equals_ean13_with_leading_zero(payload in "[0-9]{11}") {
            let digits: Vec<u8> = payload.bytes().map(|b| b - b'0').collect();
            let upc = format!("{payload}{}", check_digit(&digits));
            let ean = format!("0{upc}");
            prop_assert_eq!(Barcode::parse("a", &upc).unwrap().gtin13().to_owned(), Barcode::parse("b", &ean).unwrap().gtin13().to_owned());
        }
    }
}
