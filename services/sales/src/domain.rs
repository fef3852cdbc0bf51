//! Pure checkout arithmetic: pricing lines and settling tenders. No I/O.

use redstore_platform::error::{Error, Result};
use redstore_platform::limits;
use redstore_platform::money::Money;
use redstore_proto::sales as pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenderKind {
    Cash,
    Card,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tender {
    pub kind: TenderKind,
    pub amount: Money,
}

impl Tender {
    pub fn to_proto(self) -> pb::Tender {
        let kind = match self.kind {
            TenderKind::Cash => pb::TenderType::Cash,
            TenderKind::Card => pb::TenderType::Card,
        };
        pb::Tender { r#type: kind as i32, amount: Some(self.amount.to_proto()) }
    }
}

/// Parses the tenders of a checkout: at least one, each cash or card with a positive amount.
pub fn parse_tenders(tenders: &[pb::Tender]) -> Result<Vec<Tender>> {
    if tenders.is_empty() {
        return Err(Error::invalid("tenders", "at least one tender (cash or card) is required"));
    }
    limits::at_most("tenders", tenders, limits::MAX_TENDERS)?;
    tenders
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = match pb::TenderType::try_from(t.r#type) {
                Ok(pb::TenderType::Cash) => TenderKind::Cash,
                Ok(pb::TenderType::Card) => TenderKind::Card,
                _ => {
                    return Err(Error::invalid(
                        format!("tenders[{i}].type"),
                        "must be TENDER_TYPE_CASH or TENDER_TYPE_CARD",
                    ));
                }
            };
            let amount = Money::from_proto(&format!("tenders[{i}].amount"), t.amount.as_ref())?;
            if !(1..=limits::MAX_TENDER_MINOR).contains(&amount.minor) {
                return Err(Error::invalid(
                    format!("tenders[{i}].amount.units_minor"),
                    format!("is {}; a tender is 1 to {} minor units", amount.minor, limits::MAX_TENDER_MINOR),
                ));
            }
            Ok(Tender { kind, amount })
        })
        .collect()
}

/// Whether a cart of `lines` lines can take a sku (`in_cart`: it has a line of it already): a
/// cart holds at most what one sale may (`MAX_SALE_LINES` lines).
pub fn cart_has_room(store_id: &str, terminal_id: &str, lines: usize, in_cart: bool) -> Result<()> {
    if in_cart || lines < limits::MAX_SALE_LINES {
        return Ok(());
    }
    Err(Error::precondition(
        "CART",
        format!("terminal:{terminal_id}"),
        format!(
            "the cart of terminal {terminal_id:?} in store {store_id:?} holds {lines} lines, the most one sale may \
             have; check it out or remove a line first"
        ),
    ))
}

/// The refusal of an add that would take a cart line past `MAX_LINE_QUANTITY`.
pub fn cart_line_too_large(sku: &str, adding: i64) -> Error {
    Error::invalid(
        "quantity",
        format!("adding {adding} would put more than {} of sku {sku:?} on one cart line", limits::MAX_LINE_QUANTITY),
    )
}

/// A cart line's total; a line too large to price (it can only be left from before the limits)
/// is refused rather than shown with a wrong total.
pub fn cart_line_total(unit_price: Money, sku: &str, quantity: i64) -> Result<Money> {
    unit_price.checked_mul(quantity).ok_or_else(|| {
        Error::precondition(
            "CART",
            format!("sku:{sku}"),
            format!("the cart line of sku {sku:?} ({quantity} units) is too large to price; set a lower quantity"),
        )
    })
}

/// A line priced from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

impl PricedLine {
    pub fn to_proto(&self) -> pb::SaleLine {
        pb::SaleLine {
            sku: self.sku.clone(),
            name: self.name.clone(),
            quantity: self.quantity,
            unit_price: Some(self.unit_price.to_proto()),
            line_total: Some(self.line_total.to_proto()),
            quantity_refunded: 0,
        }
    }
}

/// Prices a line; `field` names it (e.g. `lines[2]`) for errors.
pub fn price_line(field: &str, sku: &str, name: &str, quantity: i64, unit_price: Money) -> Result<PricedLine> {
    let line_total = unit_price
        .checked_mul(quantity)
        .ok_or_else(|| Error::invalid(format!("{field}.quantity"), format!("{quantity} is too large to price")))?;
    Ok(PricedLine { sku: sku.to_owned(), name: name.to_owned(), quantity, unit_price, line_total })
}

/// The total of priced lines, all in one currency; a line in another currency is named.
pub fn total(field: &str, lines: &[PricedLine]) -> Result<Money> {
    let first = lines.first().ok_or_else(|| Error::invalid(field, "must have at least one line"))?;
    let currency = first.unit_price.currency;
    let mut sum = Money::zero(currency);
    for (i, line) in lines.iter().enumerate() {
        if line.unit_price.currency != currency {
            return Err(Error::invalid(
                format!("{field}[{i}].sku"),
                format!(
                    "{:?} is priced in {} but this sale is in {currency}; sell it in a separate sale",
                    line.sku, line.unit_price.currency
                ),
            ));
        }
        sum = sum.checked_add(line.line_total).ok_or_else(|| Error::invalid(field, "the total is too large"))?;
    }
    Ok(sum)
}

/// Settles tenders against a total and returns the change to hand back. Tenders must be in the
/// sale's currency and cover the total; only cash gives change, so cards alone may not exceed
/// what is due.
pub fn settle(total: Money, tenders: &[Tender]) -> Result<Money> {
    let currency = total.currency;
    for (i, t) in tenders.iter().enumerate() {
        if t.amount.currency != currency {
            return Err(Error::invalid(
                format!("tenders[{i}].amount.currency_code"),
                format!("is {} but the sale is in {currency}", t.amount.currency),
            ));
        }
    }
    let sum_of = |kind: Option<TenderKind>| {
        Money::sum(currency, tenders.iter().filter(|t| kind.is_none_or(|k| t.kind == k)).map(|t| t.amount))
            .ok_or_else(|| Error::invalid("tenders", "the amounts are too large"))
    };
    let tendered = sum_of(None)?;
    let change = tendered.checked_sub(total).ok_or_else(|| Error::invalid("tenders", "the amounts are too large"))?;
    if change.minor < 0 {
        let missing = Money::new(currency, -change.minor);
        return Err(Error::invalid("tenders", format!("cover {tendered} of a {total} total; {missing} is missing")));
    }
    // Cards are charged exactly; with them at most the total, the change (tendered - total) is at
    // most the cash tendered, so change always comes out of cash.
    let card = sum_of(Some(TenderKind::Card))?;
    if card.minor > total.minor {
        return Err(Error::invalid(
            "tenders",
            format!("card tenders of {card} exceed the {total} total; only cash gives change"),
        ));
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use redstore_platform::money::Currency;

    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(Currency::parse("c", "EUR").unwrap(), minor)
    }

    fn cash(minor: i64) -> Tender {
        Tender { kind: TenderKind::Cash, amount: eur(minor) }
    }

    fn card(minor: i64) -> Tender {
        Tender { kind: TenderKind::Card, amount: eur(minor) }
    }

    #[test]
    fn cash_gives_change() {
        assert_eq!(settle(eur(1250), &[cash(2000)]).unwrap(), eur(750));
        assert_eq!(settle(eur(1250), &[card(1000), cash(500)]).unwrap(), eur(250));
    }

    #[test]
    fn exact_card_payment_has_no_change() {
        assert_eq!(settle(eur(1250), &[card(1250)]).unwrap(), eur(0));
    }

    #[test]
    fn short_tenders_say_what_is_missing() {
        let err = settle(eur(1250), &[cash(1000)]).unwrap_err();
        assert_eq!(err.field(), Some("tenders"));
        assert!(err.to_string().contains("2.50 EUR is missing"), "{err}");
    }

    #[test]
    fn cards_cannot_be_overpaid() {
        assert!(settle(eur(1000), &[card(1500)]).is_err());
    }

    #[test]
    fn tenders_in_another_currency_are_named() {
        let usd = Money::new(Currency::parse("c", "USD").unwrap(), 5000);
        let err = settle(eur(1000), &[cash(100), Tender { kind: TenderKind::Cash, amount: usd }]).unwrap_err();
        assert_eq!(err.field(), Some("tenders[1].amount.currency_code"));
    }

    #[test]
    fn totals_reject_mixed_currencies() {
        let usd = Money::new(Currency::parse("c", "USD").unwrap(), 100);
        let lines = vec![
            price_line("lines[0]", "a", "A", 2, eur(100)).unwrap(),
            price_line("lines[1]", "b", "B", 1, usd).unwrap(),
        ];
        assert_eq!(total("lines", &lines).unwrap_err().field(), Some("lines[1].sku"));
        assert_eq!(total("lines", &lines[..1]).unwrap(), eur(200));
    }
}
