// The receipt of a sale, on screen and printable: the print stylesheet (style.css, @media print)
// lays it out for an 80 mm receipt printer and hides everything else.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type Sale, TenderType } from "../../gen/redstore/sales/v1/sales_pb";
import { formatMoney } from "../money";
import { h } from "../ui";
import { modal } from "./dialog";

/** Shows a sale's receipt; `actions` go beside Print (a refund, say), `done` names the close. */
export function receiptDialog(sale: Sale, cashier: string, done = "New sale", actions: HTMLElement[] = []): HTMLDialogElement {
  const when = sale.createdAt ? timestampDate(sale.createdAt).toLocaleString() : "";
  const row = (label: string, value: string, cls = "") => h("tr", { class: cls }, h("th", { scope: "row" }, label), h("td", {}, value));
  const receipt = h(
    "article",
    { class: "receipt", id: "receipt", "aria-label": "Receipt" },
    h("h2", {}, "Red Store"),
    h("p", {}, `${sale.storeId} · ${sale.terminalId}`),
    h("p", {}, when),
    h(
      "table",
      { class: "receipt-lines" },
      h(
        "tbody",
        {},
        ...sale.lines.map((line) =>
          h(
            "tr",
            { "data-sku": line.sku },
            h("td", {}, `${line.quantity} × ${line.name}`),
            h("td", {}, formatMoney(line.lineTotal)),
          ),
        ),
      ),
    ),
    h(
      "table",
      { class: "receipt-totals" },
      h(
        "tbody",
        {},
        row("Total", formatMoney(sale.total), "total"),
        ...sale.tenders.map((t) => row(t.type === TenderType.CARD ? "Card" : "Cash", formatMoney(t.amount))),
        row("Change", formatMoney(sale.change) || "—", "change"),
      ),
    ),
    sale.refunded && sale.refunded.unitsMinor > 0n ? h("p", { class: "refunded" }, `Refunded ${formatMoney(sale.refunded)}`) : null,
    h("p", { class: "sale-id" }, `Sale ${sale.saleId}`),
    cashier ? h("p", {}, `Served by ${cashier}`) : null,
  );
  const dialog = modal(
    "Receipt",
    receipt,
    h(
      "div",
      { class: "actions no-print" },
      h("button", { type: "button", onclick: () => print() }, "Print"),
      ...actions,
      // The next sale starts with Enter (or a touch); printing is a deliberate choice.
      h("button", { type: "button", class: "primary", autofocus: true, onclick: () => dialog.close() }, done),
    ),
  );
  // What the print stylesheet prints, alone.
  dialog.classList.add("receipt-dialog");
  return dialog;
}
