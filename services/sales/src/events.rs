//! The events sales writes to the log, built from the sale and refund records.

use redstore_proto::events::{SaleCompleted, SaleLineFact, SaleRefunded, event_envelope::Payload};
use redstore_proto::sales::{Refund, Sale, SaleLine};

fn facts(lines: &[SaleLine]) -> Vec<SaleLineFact> {
    lines
        .iter()
        .map(|l| SaleLineFact {
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price.clone(),
            line_total: l.line_total.clone(),
        })
        .collect()
}

pub fn sale_completed(sale: &Sale) -> Payload {
    Payload::SaleCompleted(SaleCompleted {
        sale_id: sale.sale_id.clone(),
        terminal_id: sale.terminal_id.clone(),
        lines: facts(&sale.lines),
        total: sale.total.clone(),
    })
}

pub fn sale_refunded(refund: &Refund, terminal_id: &str) -> Payload {
    Payload::SaleRefunded(SaleRefunded {
        refund_id: refund.refund_id.clone(),
        sale_id: refund.sale_id.clone(),
        terminal_id: terminal_id.to_owned(),
        lines: facts(&refund.lines),
        amount: refund.amount.clone(),
    })
}
