// A refund (a supervisor or above): how many of each line come back (at most what is left of
// it), and why. The server checks both again, returns the stock, and records who did it.

import type { Sale } from "../../gen/redstore/sales/v1/sales_pb";
import { retried, sales } from "../api";
import { formatMoney } from "../money";
import { field, h } from "../ui";
import { closed, modal, submits } from "./dialog";

/** Resolves with the sale after the refund, or undefined when cancelled. */
export function refundDialog(sale: Sale, terminalId: string): Promise<Sale | undefined> {
  const quantities = sale.lines
    .filter((line) => line.quantity > line.quantityRefunded)
    .map((line) => {
      const left = line.quantity - line.quantityRefunded;
      const input = h("input", { type: "number", min: 0, max: String(left), step: 1, value: String(left), inputmode: "numeric", id: `refund-${line.sku}` });
      return { line, left, input };
    });
  const reason = h("input", { id: "refund-reason", required: true, maxlength: 500, autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Refund");
  const form = h(
    "form",
    { method: "dialog", novalidate: true },
    h("h2", {}, "Refund"),
    ...quantities.map(({ line, left, input }) => field(`${line.name} (${left} of ${line.quantity} at ${formatMoney(line.unitPrice)})`, input)),
    field("Reason", reason),
    error,
    h("div", { class: "actions" }, h("button", { type: "button", class: "cancel", onclick: () => dialog.close() }, "Cancel"), submit),
  );
  const dialog = modal("Refund", form);
  let after: Sale | undefined;
  submits(form, error, () => {
    const lines: { sku: string; quantity: bigint }[] = [];
    for (const { line, left, input } of quantities) {
      if (!/^\d+$/.test(input.value)) return `${line.name}: a whole number of units`;
      const quantity = BigInt(input.value);
      if (quantity > left) return `${line.name}: at most ${left} are left to refund`;
      if (quantity > 0n) lines.push({ sku: line.sku, quantity });
    }
    if (lines.length === 0) return "Nothing to refund: give a quantity";
    if (!reason.value.trim()) return "Say why (the reason goes in the audit log)";
    return async (key) => {
      const answer = await retried(() =>
        sales.refund({ idempotencyKey: key, saleId: sale.saleId, lines, reason: reason.value.trim(), terminalId }),
      );
      after = answer.sale;
      dialog.close();
    };
  });
  return closed(dialog).then(() => after);
}
