//! Pure checkout arithmetic: pricing lines, price overrides and settling tenders. No I/O.

use std::collections::BTreeMap;

use redstore_platform::access_token::Role;
use redstore_platform::caller::Caller;
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

/// A line priced from the catalog, or at a supervisor's override of its price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
    /// The catalog's price and the reason, when the price was overridden.
    pub overridden: Option<(Money, String)>,
}

impl PricedLine {
    pub fn to_proto(&self) -> pb::SaleLine {
        let (list_price, override_reason) = match &self.overridden {
            Some((list, reason)) => (Some(list.to_proto()), reason.clone()),
            None => (None, String::new()),
        };
        pb::SaleLine {
            sku: self.sku.clone(),
            name: self.name.clone(),
            quantity: self.quantity,
            unit_price: Some(self.unit_price.to_proto()),
            line_total: Some(self.line_total.to_proto()),
            quantity_refunded: 0,
            list_price,
            override_reason,
        }
    }
}

/// A supervisor's price for a sku in one checkout, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceOverride {
    pub price: Money,
    pub reason: String,
    /// The first request line that carries it, for errors (`lines[2]`).
    pub field: String,
}

/// The longest override reason, in characters.
pub const MAX_OVERRIDE_REASON_CHARS: usize = 200;

/// The price overrides of a checkout's lines, by sku: each with a reason, and the same on every
/// line of its sku ([`price_line`] holds the price itself to the catalog's).
pub fn parse_overrides(lines: &[pb::CheckoutLine]) -> Result<BTreeMap<String, PriceOverride>> {
    let mut overrides: BTreeMap<String, PriceOverride> = BTreeMap::new();
    let mut plain: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let field = format!("lines[{i}]");
        let Some(price) = line.unit_price_override.as_ref() else {
            if !line.override_reason.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.override_reason"),
                    "is only for a line with a unit_price_override",
                ));
            }
            plain.insert(&line.sku, i);
            continue;
        };
        let price = Money::from_proto(&format!("{field}.unit_price_override"), Some(price))?;
        let reason = redstore_platform::text::text(
            &format!("{field}.override_reason"),
            &line.override_reason,
            MAX_OVERRIDE_REASON_CHARS,
        )
        .map_err(|e| match e {
            Error::InvalidArgument { field, reason } if reason == "is required" => {
                Error::invalid(field, "is required with a unit_price_override: say why the price changes")
            }
            other => other,
        })?;
        let same_sku = |other: &str| {
            Error::invalid(
                format!("{field}.unit_price_override"),
                format!("{other}: every line of sku {:?} must carry the same override and reason", line.sku),
            )
        };
        if let Some(&at) = plain.get(line.sku.as_str()) {
            return Err(same_sku(&format!("lines[{at}] has none")));
        }
        match overrides.get(&line.sku) {
            Some(earlier) if earlier.price != price || earlier.reason != reason => {
                return Err(same_sku(&format!("{} differs", earlier.field)));
            }
            Some(_) => {}
            None => {
                overrides.insert(line.sku.clone(), PriceOverride { price, reason, field });
            }
        }
    }
    if let Some((sku, first)) = overrides.iter().find(|(sku, _)| plain.contains_key(sku.as_str())) {
        let at = plain[sku.as_str()];
        return Err(Error::invalid(
            format!("lines[{at}].unit_price_override"),
            format!("is missing, but {} overrides sku {sku:?}: every line of a sku carries the same", first.field),
        ));
    }
    Ok(overrides)
}

/// A price override is a supervisor's: PERMISSION_DENIED, naming the line, for a cashier.
pub fn may_override(caller: &Caller, overrides: &BTreeMap<String, PriceOverride>) -> Result<()> {
    let Some(first) = overrides.values().next() else { return Ok(()) };
    match caller {
        Caller::Service => Ok(()),
        Caller::Staff(claims) if claims.role >= Role::Supervisor => Ok(()),
        Caller::Staff(claims) => Err(Error::PermissionDenied(format!(
            "{}.unit_price_override: a price override needs a supervisor or above; {} is signed in as a {}",
            first.field,
            claims.sub,
            claims.role.as_str()
        ))),
    }
}

/// Prices a line at the catalog's `list_price`, or at its override; `field` names it (e.g.
/// `lines[2]`) for errors. An override is in the list price's currency and at most it.
pub fn price_line(
    field: &str,
    sku: &str,
    name: &str,
    quantity: i64,
    list_price: Money,
    price_override: Option<&PriceOverride>,
) -> Result<PricedLine> {
    let (unit_price, overridden) = match price_override {
        None => (list_price, None),
        Some(o) => {
            let f = format!("{}.unit_price_override", o.field);
            if o.price.currency != list_price.currency {
                return Err(Error::invalid(
                    f,
                    format!("is in {}; sku {sku:?} is priced in {}", o.price.currency, list_price.currency),
                ));
            }
            if o.price.minor < 0 {
                return Err(Error::invalid(f, format!("is {}; it must not be negative", o.price)));
            }
            if o.price.minor > list_price.minor {
                return Err(Error::invalid(
                    f,
                    format!("is {}; an override lowers the price, at most the catalog's {list_price}", o.price),
                ));
            }
            (o.price, Some((list_price, o.reason.clone())))
        }
    };
    let line_total = unit_price
        .checked_mul(quantity)
        .ok_or_else(|| Error::invalid(format!("{field}.quantity"), format!("{quantity} is too large to price")))?;
    Ok(PricedLine { sku: sku.to_owned(), name: name.to_owned(), quantity, unit_price, line_total, overridden })
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

/// The lowest sale id a sale made at or after `from` can have. Sale ids are UUIDv7s, whose text
/// sorts by the millisecond they were made in, so this is a cursor that lists sales from `from`.
pub fn first_sale_id_from(from: &prost_types::Timestamp) -> Result<String> {
    let ms = redstore_platform::time::timestamp_ms(from);
    // UUIDv7 holds 48 bits of milliseconds: up to the year 10889.
    let ms = u64::try_from(ms)
        .ok()
        .filter(|ms| *ms < 1 << 48 && (0..1_000_000_000).contains(&from.nanos))
        .ok_or_else(|| Error::invalid("created_from", "must be a time after 1970 and before the year 10000"))?;
    Ok(uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid().to_string())
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
            price_line("lines[0]", "a", "A", 2, eur(100), None).unwrap(),
            price_line("lines[1]", "b", "B", 1, usd, None).unwrap(),
        ];
        assert_eq!(total("lines", &lines).unwrap_err().field(), Some("lines[1].sku"));
        assert_eq!(total("lines", &lines[..1]).unwrap(), eur(200));
    }

    fn line(sku: &str, quantity: i64, price: Option<Money>, reason: &str) -> pb::CheckoutLine {
        pb::CheckoutLine {
            sku: sku.into(),
            quantity,
            unit_price_override: price.map(Money::to_proto),
            override_reason: reason.into(),
        }
    }

    #[test]
    fn an_override_lowers_a_price_with_a_reason_on_every_line_of_its_sku() {
        let overrides = parse_overrides(&[
            line("a", 1, None, ""),
            line("b", 2, Some(eur(150)), "damaged box"),
            line("b", 1, Some(eur(150)), "damaged box"),
        ])
        .expect("valid");
        let b = overrides.get("b").expect("b's override");
        assert_eq!((b.price, b.reason.as_str(), b.field.as_str()), (eur(150), "damaged box", "lines[1]"));
        let priced = price_line("lines[0]", "b", "B", 3, eur(499), Some(b)).expect("priced");
        assert_eq!((priced.unit_price, priced.line_total), (eur(150), eur(450)));
        let shown = priced.to_proto();
        assert_eq!(shown.list_price, Some(eur(499).to_proto()));
        assert_eq!(shown.override_reason, "damaged box");
        assert_eq!(
            price_line("lines[0]", "b", "B", 1, eur(150), Some(b)).expect("at the list price").unit_price,
            eur(150)
        );

        let field = |lines: &[pb::CheckoutLine]| parse_overrides(lines).unwrap_err().field().map(str::to_owned);
        assert_eq!(field(&[line("b", 1, Some(eur(150)), "")]).as_deref(), Some("lines[0].override_reason"));
        assert_eq!(field(&[line("b", 1, None, "why")]).as_deref(), Some("lines[0].override_reason"));
        let split = [line("b", 1, Some(eur(150)), "x"), line("b", 1, Some(eur(140)), "x")];
        assert_eq!(field(&split).as_deref(), Some("lines[1].unit_price_override"));
        let half = [line("b", 1, None, ""), line("b", 1, Some(eur(140)), "x")];
        assert_eq!(field(&half).as_deref(), Some("lines[1].unit_price_override"));
        let half = [line("b", 1, Some(eur(140)), "x"), line("b", 1, None, "")];
        assert_eq!(field(&half).as_deref(), Some("lines[1].unit_price_override"));

        let negative = PriceOverride { price: eur(-1), ..b.clone() };
        let refused = price_line("lines[0]", "b", "B", 1, eur(100), Some(&negative)).unwrap_err();
        assert_eq!(refused.field(), Some("lines[1].unit_price_override"), "never negative");
        let raise = price_line("lines[0]", "b", "B", 1, eur(100), Some(b)).unwrap_err();
        assert_eq!(raise.field(), Some("lines[1].unit_price_override"), "an override never raises a price");
        let usd = PriceOverride { price: Money::new(Currency::parse("c", "USD").unwrap(), 1), ..b.clone() };
        let other = price_line("lines[0]", "b", "B", 1, eur(100), Some(&usd)).unwrap_err();
        assert_eq!(other.field(), Some("lines[1].unit_price_override"));
    }

    #[test]
    fn a_start_time_before_1970_is_refused_naming_the_field() {
        let before = prost_types::Timestamp { seconds: -1, nanos: 0 };
        let err = first_sale_id_from(&before).unwrap_err();
        assert!(err.to_string().contains("created_from"), "{err}");
    }

    proptest::proptest! {
        /// A sale made in or after the start time sorts after its cursor; one made before, not.
        #[test]
        fn sales_from_a_start_time_sort_after_its_cursor(
            from_ms in 0u64..(1 << 47),
            offset in -100_000i64..100_000,
            random in proptest::array::uniform10(proptest::num::u8::ANY),
        ) {
            let cursor = first_sale_id_from(&redstore_platform::time::timestamp(from_ms as i64)).unwrap();
            let made_ms = (from_ms as i64 + offset).max(0) as u64;
            // A made id's random bits are never all zeroes (2^-80), which the cursor's are.
            let mut random = random;
            random[9] |= 1;
            let sale_id = uuid::Builder::from_unix_timestamp_millis(made_ms, &random).into_uuid().to_string();
            proptest::prop_assert_eq!(sale_id > cursor, made_ms >= from_ms, "{} vs {}", sale_id, cursor);
        }
    }

    proptest::proptest! {
        /// An override never charges more than the catalog, and a line is what it says it is:
        /// priced at the override when one is given (keeping the list price), else at the list.
        #[test]
        fn an_overridden_line_never_costs_more_than_the_catalogs(
            list in 0i64..10_000_000,
            asked in -10_000i64..10_010_000,
            quantity in 1i64..1_000_000,
        ) {
            let o = PriceOverride { price: eur(asked), reason: "why".into(), field: "lines[0]".into() };
            match price_line("lines[0]", "s", "S", quantity, eur(list), Some(&o)) {
                Ok(line) => {
                    proptest::prop_assert!((0..=list).contains(&asked));
                    proptest::prop_assert_eq!(line.unit_price, eur(asked));
                    proptest::prop_assert_eq!(line.line_total, eur(asked * quantity));
                    proptest::prop_assert!(line.line_total.minor <= list * quantity);
                    proptest::prop_assert_eq!(line.overridden, Some((eur(list), "why".to_owned())));
                }
                Err(e) => {
                    proptest::prop_assert!(asked > list || asked < 0, "{} refused: {}", asked, e);
                    proptest::prop_assert_eq!(e.field(), Some("lines[0].unit_price_override"));
                }
            }
            let plain = price_line("lines[0]", "s", "S", quantity, eur(list), None).unwrap();
            proptest::prop_assert_eq!((plain.unit_price, plain.overridden), (eur(list), None));
        }
    }

    #[test]
    fn only_a_supervisor_or_above_overrides_a_price() {
        let overrides = parse_overrides(&[line("b", 1, Some(eur(1)), "price match")]).unwrap();
        let staff = |role: Role| {
            Caller::Staff(std::sync::Arc::new(redstore_platform::access_token::Claims {
                sub: "casey".into(),
                role,
                store: Some("store-1".into()),
                device: Some("till-1".into()),
                iat: 0,
                exp: 0,
                jti: String::new(),
                sid: String::new(),
                scope: None,
            }))
        };
        let refused = may_override(&staff(Role::Cashier), &overrides).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.to_string().starts_with("lines[0].unit_price_override"), "{refused}");
        assert!(may_override(&staff(Role::Cashier), &BTreeMap::new()).is_ok(), "no override, no question");
        for role in [Role::Supervisor, Role::Manager, Role::Admin] {
            assert!(may_override(&staff(role), &overrides).is_ok(), "{role:?}");
        }
        assert!(may_override(&Caller::Service, &overrides).is_ok());
    }
}
