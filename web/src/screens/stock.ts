// A manager's stock list: every product with the store's stock (live, as the till shows it),
// searchable, and adjustments (goods received, damaged, lost, a count) with a reason and a note.

import { AdjustmentReason, type Product } from "../../gen/redstore/inventory/v1/inventory_pb";
import { describe, inventory, retried } from "../api";
import { allProducts, search as searchProducts } from "../catalog";
import type { LiveStock } from "../live";
import { signedIn } from "../session";
import { field, h, show } from "../ui";
import { modal, submits } from "./dialog";

const REASONS: [AdjustmentReason, string][] = [
  [AdjustmentReason.RECEIVED, "Goods received"],
  [AdjustmentReason.DAMAGED, "Damaged"],
  [AdjustmentReason.LOST, "Lost or stolen"],
  [AdjustmentReason.COUNT_CORRECTION, "Stock count"],
];

export function stockScreen(root: HTMLElement, live: LiveStock): () => void {
  const storeId = signedIn()?.storeId ?? "";
  const products: Product[] = [];
  const search = h("input", { id: "stock-search", type: "search", "aria-label": "Search products", placeholder: "Search by name, SKU or barcode", autocomplete: "off" });
  const message = h("p", { class: "message", role: "status" });
  const rows = h("tbody", {});
  root.append(
    h(
      "section",
      { class: "panel" },
      h("h1", {}, "Stock"),
      search,
      message,
      h(
        "table",
        { class: "list", "aria-label": "Stock" },
        h("thead", {}, h("tr", {}, h("th", {}, "SKU"), h("th", {}, "Product"), h("th", {}, "In stock"), h("th", {}, h("span", { class: "visually-hidden" }, "Adjust")))),
        rows,
      ),
    ),
  );

  const quantity = (sku: string) => live.quantities.get(sku)?.toString() ?? "";

  function render(): void {
    show(
      rows,
      ...searchProducts(products, search.value)
        .map((product) =>
          h(
            "tr",
            { "data-sku": product.sku },
            h("td", {}, product.sku),
            h("td", {}, product.name),
            h("td", { class: "quantity", "data-sku": product.sku }, quantity(product.sku)),
            h("td", {}, h("button", { type: "button", "aria-label": `Adjust ${product.name}`, onclick: () => adjustDialog(product, storeId) }, "Adjust")),
          ),
        ),
    );
  }

  async function load(): Promise<void> {
    products.push(...(await allProducts()));
    render();
  }


  search.addEventListener("input", render);
  const stop = live.onChange((changed) => {
    for (const cell of rows.querySelectorAll<HTMLElement>("td.quantity")) {
      const sku = cell.dataset.sku ?? "";
      if (changed === "all" || changed.includes(sku)) cell.textContent = quantity(sku);
    }
  });
  load().catch((failure) => {
    message.className = "message error";
    show(message, describe(failure));
  });
  return stop;
}

function adjustDialog(product: Product, storeId: string): void {
  const change = h("input", { id: "adjust-change", inputmode: "numeric", required: true, autocomplete: "off", placeholder: "+12 or -3" });
  const reason = h("select", { id: "adjust-reason" }, ...REASONS.map(([value, label]) => h("option", { value: String(value) }, label)));
  const note = h("input", { id: "adjust-note", required: true, maxlength: 500, autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Adjust");
  const form = h(
    "form",
    { method: "dialog", novalidate: true },
    h("h2", {}, `Adjust ${product.name}`),
    field("Change in units (negative takes stock away)", change),
    field("Reason", reason),
    field("Note", note),
    error,
    h("div", { class: "actions" }, h("button", { type: "button", class: "cancel", onclick: () => dialog.close() }, "Cancel"), submit),
  );
  const dialog = modal(`Adjust ${product.name}`, form);
  submits(form, error, () => {
    const text = change.value.replace(/\s/g, "");
    if (!/^[+-]?\d{1,13}$/.test(text) || BigInt(text) === 0n) return "The change is a whole number of units, not 0";
    if (!note.value.trim()) return "Add a note: it goes in the audit log with the adjustment";
    return async (key) => {
      await retried(() =>
        inventory.adjustStock({
          idempotencyKey: key,
          storeId,
          sku: product.sku,
          quantityDelta: BigInt(text),
          reason: Number(reason.value) as AdjustmentReason,
          note: note.value.trim(),
        }),
      );
      dialog.close();
    };
  });
  change.focus();
}
