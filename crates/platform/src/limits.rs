//! The published ranges of what clients send: every quantity, amount, repeated field and string
//! has one, checked where a request is parsed, before anything is read or written. The contracts
//! under `proto/` and the README state the same numbers.
//!
//! They are chosen so that no sum the system makes can overflow: a line's total is at most
//! `MAX_LINE_QUANTITY * MAX_UNIT_PRICE_MINOR` (10^16), a sale's at most `MAX_SALE_LINES` of
//! those (5 * 10^18, below `i64::MAX`), and a stock level moves by at most `MAX_STOCK` at a time
//! inside `±MAX_STOCK`.

use crate::error::{Error, Result};

/// Units (or milli-units of weighed goods) on one line of a sale, a cart or a refund.
pub const MAX_LINE_QUANTITY: i64 = 1_000_000;
/// Lines of one sale, cart, refund or applied sale; repeated skus are merged into one line.
pub const MAX_SALE_LINES: usize = 500;
/// A stock level stays within `-MAX_STOCK..=MAX_STOCK`; an adjustment moves it by at most this.
pub const MAX_STOCK: i64 = 1_000_000_000_000;
/// A unit price, in minor units (100 million in a currency with cents).
pub const MAX_UNIT_PRICE_MINOR: i64 = 10_000_000_000;
/// One tender's amount, in minor units.
pub const MAX_TENDER_MINOR: i64 = 100_000_000_000_000_000;
/// Tenders of one checkout.
pub const MAX_TENDERS: usize = 16;
/// Barcodes of one product.
pub const MAX_BARCODES: usize = 32;
/// Characters of a store's or a product's name.
pub const MAX_NAME_CHARS: usize = 200;
/// Characters of a terminal's name.
pub const MAX_TERMINAL_NAME_CHARS: usize = 100;
/// Characters of a note or a reason.
pub const MAX_NOTE_CHARS: usize = 500;
/// Records of one import batch (`ImportProducts`, `ImportStock`): a batch of the largest products
/// (32 barcodes, 200-character names) stays below the 4 MiB message limit.
pub const MAX_IMPORT_RECORDS: usize = 1000;
/// Bytes of a page token.
pub const MAX_PAGE_TOKEN_BYTES: usize = 256;
/// Encoded bytes of the items of one list page (at least one item is always sent): a page stays
/// far below gRPC's default 4 MiB message limit whatever its items hold.
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// Encoded bytes of an opaque blob a service hands another to keep (a checkout's fingerprint, a
/// drafted sale).
pub const MAX_BLOB_BYTES: usize = 256 * 1024;

/// A line quantity: `1..=MAX_LINE_QUANTITY`.
pub fn line_quantity(field: &str, quantity: i64) -> Result<i64> {
    if quantity <= 0 {
        return Err(Error::invalid(field, format!("must be positive, got {quantity}")));
    }
    if quantity > MAX_LINE_QUANTITY {
        return Err(Error::invalid(field, format!("is {quantity}; at most {MAX_LINE_QUANTITY} per line")));
    }
    Ok(quantity)
}

/// At most `max` items in a repeated field, checked before any item is looked at.
pub fn at_most<T>(field: &str, items: &[T], max: usize) -> Result<()> {
    if items.len() > max {
        return Err(Error::invalid(field, format!("has {} items; at most {max} are allowed", items.len())));
    }
    Ok(())
}

/// An opaque blob of at most [`MAX_BLOB_BYTES`].
pub fn blob(field: &str, bytes: usize) -> Result<()> {
    if bytes > MAX_BLOB_BYTES {
        return Err(Error::invalid(field, format!("is {bytes} bytes; at most {MAX_BLOB_BYTES} are allowed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_priced_sale_can_overflow() {
        let line = MAX_LINE_QUANTITY.checked_mul(MAX_UNIT_PRICE_MINOR).expect("a line fits");
        line.checked_mul(MAX_SALE_LINES as i64).expect("a sale fits");
        (MAX_TENDER_MINOR).checked_mul(MAX_TENDERS as i64).expect("tenders fit");
        MAX_STOCK.checked_add(MAX_STOCK).expect("a level plus an adjustment fits");
    }

    #[test]
    fn quantities_name_the_field_and_the_range() {
        assert_eq!(line_quantity("q", 1).unwrap(), 1);
        assert_eq!(line_quantity("q", MAX_LINE_QUANTITY).unwrap(), MAX_LINE_QUANTITY);
        for bad in [0, -1, MAX_LINE_QUANTITY + 1, i64::MAX, i64::MIN] {
            assert_eq!(line_quantity("lines[3].quantity", bad).unwrap_err().field(), Some("lines[3].quantity"));
        }
        assert!(at_most("lines", &[0; 3], 2).is_err());
        assert!(at_most("lines", &[0; 2], 2).is_ok());
    }
}
