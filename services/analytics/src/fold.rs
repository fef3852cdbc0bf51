//! What a batch of sale and refund events adds to the rollups, added up in memory: each backend
//! then writes one row per (store, minute, currency) and per (store, minute, sku, currency),
//! however many events the batch holds.

use std::collections::BTreeMap;

use redstore_platform::time::timestamp_ms;
use redstore_proto::common::Money;
use redstore_proto::events::{EventEnvelope, event_envelope::Payload};

const MINUTE_MS: i64 = 60_000;

/// A minute rollup row's key: store, minute (ms since the epoch), currency.
pub type MinuteKey<'a> = (&'a str, i64, String);

/// A product rollup row's key: store, minute, sku, currency.
pub type ProductKey<'a> = (&'a str, i64, &'a str, String);

/// What a batch adds to a minute rollup row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteFigures {
    pub sales: i64,
    pub units_sold: i64,
    pub gross_minor: i64,
    pub refunds: i64,
    pub units_refunded: i64,
    pub refunds_minor: i64,
}

/// What a batch adds to a product rollup row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProductDelta<'a> {
    /// The product's name on the batch's latest line: the row keeps the newest name.
    pub name: &'a str,
    pub sold: i64,
    pub refunded: i64,
    pub net_minor: i64,
}

/// The rows a batch of events adds to.
#[derive(Debug, Default)]
pub struct Fold<'a> {
    pub minutes: BTreeMap<MinuteKey<'a>, MinuteFigures>,
    pub products: BTreeMap<ProductKey<'a>, ProductDelta<'a>>,
}

fn parts(m: Option<&Money>) -> (String, i64) {
    m.map_or((String::new(), 0), |m| (m.currency_code.clone(), m.units_minor))
}

impl<'a> Fold<'a> {
    /// Adds one event (each event once: the caller skips ids counted before). Events other than
    /// a completed sale or a refund add nothing.
    pub fn add(&mut self, event: &'a EventEnvelope) {
        let at = event.occurred_at.as_ref().map_or(0, timestamp_ms);
        let minute = at - at.rem_euclid(MINUTE_MS);
        let store = event.store_id.as_str();
        let (lines, refund, currency, amount) = match &event.payload {
            Some(Payload::SaleCompleted(s)) => {
                let (c, a) = parts(s.total.as_ref());
                (&s.lines, false, c, a)
            }
            Some(Payload::SaleRefunded(r)) => {
                let (c, a) = parts(r.amount.as_ref());
                (&r.lines, true, c, a)
            }
            _ => return,
        };
        let units: i64 = lines.iter().map(|l| l.quantity).sum();
        let figures = self.minutes.entry((store, minute, currency)).or_default();
        if refund {
            figures.refunds += 1;
            figures.units_refunded += units;
            figures.refunds_minor += amount;
        } else {
            figures.sales += 1;
            figures.units_sold += units;
            figures.gross_minor += amount;
        }
        for line in lines {
            let (currency, total) = parts(line.line_total.as_ref());
            let p = self.products.entry((store, minute, line.sku.as_str(), currency)).or_default();
            p.name = line.name.as_str();
            if refund {
                p.refunded += line.quantity;
                p.net_minor -= total;
            } else {
                p.sold += line.quantity;
                p.net_minor += total;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use redstore_proto::events::{SaleCompleted, SaleLineFact, SaleRefunded};

    use super::*;

    fn money(units_minor: i64) -> Option<Money> {
        Some(Money { currency_code: "EUR".into(), units_minor })
    }

    fn event(store: &str, at_ms: i64, refund: bool, lines: &[(&str, i64, i64)]) -> EventEnvelope {
        let lines: Vec<SaleLineFact> = lines
            .iter()
            .map(|&(sku, quantity, total)| SaleLineFact {
                sku: sku.into(),
                name: format!("name of {sku}"),
                quantity,
                line_total: money(total),
                ..Default::default()
            })
            .collect();
        let total = lines.iter().map(|l| l.line_total.as_ref().unwrap().units_minor).sum();
        let payload = if refund {
            Payload::SaleRefunded(SaleRefunded { lines, amount: money(total), ..Default::default() })
        } else {
            Payload::SaleCompleted(SaleCompleted { lines, total: money(total), ..Default::default() })
        };
        redstore_platform::eventlog::envelope(uuid::Uuid::now_v7(), store, 1, at_ms, payload)
    }

    #[test]
    fn a_sale_and_a_refund_meet_in_their_minute_and_sku() {
        let events = [
            event("s1", 61_000, false, &[("A", 2, 500), ("B", 1, 300)]),
            event("s1", 119_999, true, &[("A", 1, 250)]),
            event("s1", 120_000, false, &[("A", 1, 250)]),
        ];
        let mut fold = Fold::default();
        events.iter().for_each(|e| fold.add(e));
        let first = fold.minutes[&("s1", 60_000, "EUR".to_owned())];
        assert_eq!(
            first,
            MinuteFigures {
                sales: 1,
                units_sold: 3,
                gross_minor: 800,
                refunds: 1,
                units_refunded: 1,
                refunds_minor: 250
            }
        );
        let a = fold.products[&("s1", 60_000, "A", "EUR".to_owned())];
        assert_eq!((a.sold, a.refunded, a.net_minor), (2, 1, 250));
        assert_eq!(fold.minutes[&("s1", 120_000, "EUR".to_owned())].sales, 1);
    }

    type Made = (&'static str, i64, bool, Vec<(&'static str, i64, i64)>);

    fn made() -> impl Strategy<Value = Vec<Made>> {
        let line = (prop::sample::select(vec!["A", "B", "C"]), 1i64..50, 0i64..10_000);
        let one =
            (prop::sample::select(vec!["s1", "s2"]), 0i64..300_000, any::<bool>(), prop::collection::vec(line, 1..4));
        prop::collection::vec(one, 0..40)
    }

    proptest! {
        /// Each minute row counts its minute's sales and refunds of its store, and each product
        /// row its sku's units and net amount, whatever the batch mixes.
        #[test]
        fn every_row_adds_up_its_minutes_events(made in made()) {
            let events: Vec<_> =
                made.iter().map(|(store, at, refund, lines)| event(store, *at, *refund, lines)).collect();
            let mut fold = Fold::default();
            events.iter().for_each(|e| fold.add(e));
            for (&(store, minute, ref currency), figures) in &fold.minutes {
                prop_assert_eq!(currency.as_str(), "EUR");
                let of = |refund: bool| made.iter().filter(move |m| m.0 == store && m.1 / 60_000 * 60_000 == minute && m.2 == refund);
                let expect = MinuteFigures {
                    sales: of(false).count() as i64,
                    units_sold: of(false).flat_map(|m| &m.3).map(|l| l.1).sum(),
                    gross_minor: of(false).flat_map(|m| &m.3).map(|l| l.2).sum(),
                    refunds: of(true).count() as i64,
                    units_refunded: of(true).flat_map(|m| &m.3).map(|l| l.1).sum(),
                    refunds_minor: of(true).flat_map(|m| &m.3).map(|l| l.2).sum(),
                };
                prop_assert_eq!(*figures, expect);
            }
            prop_assert_eq!(fold.minutes.len(), made.iter().map(|m| (m.0, m.1 / 60_000)).collect::<std::collections::BTreeSet<_>>().len());
            for (&(store, minute, sku, _), p) in &fold.products {
                let lines = made
                    .iter()
                    .filter(|m| m.0 == store && m.1 / 60_000 * 60_000 == minute)
                    .flat_map(|m| m.3.iter().filter(|l| l.0 == sku).map(move |l| (m.2, l)));
                let (mut sold, mut refunded, mut net) = (0, 0, 0);
                for (refund, l) in lines {
                    if refund { refunded += l.1; net -= l.2; } else { sold += l.1; net += l.2; }
                }
                prop_assert_eq!((p.sold, p.refunded, p.net_minor), (sold, refunded, net));
            }
        }
    }
}
