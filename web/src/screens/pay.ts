// Paying: cash (what the customer hands over, and the change), card, or both. The amounts are
// typed in the currency's units and kept in integer minor units; the server settles them
// (`domain::settle`) and answers the sale with its change.

import type { Money } from "../../gen/redstore/common/v1/common_pb";
import { type Sale, TenderType } from "../../gen/redstore/sales/v1/sales_pb";
import { decimal, formatUnits, fractionDigits, parseAmount } from "../money";
import { field, h, show } from "../ui";
import { closed, modal, submits } from "./dialog";

export interface TenderInit {
  type: TenderType;
  amount: { currencyCode: string; unitsMinor: bigint };
}

type Checkout = (tenders: TenderInit[], idempotencyKey: string) => Promise<Sale | undefined>;

/** Shows the payment dialog; resolves with the sale, or undefined when the cashier cancels. */
export function payDialog(total: Money, checkout: Checkout): Promise<Sale | undefined> {
  const currency = total.currencyCode;
  const due = total.unitsMinor;
  const digits = fractionDigits(currency);
  const amount = (id: string) =>
    h("input", { id, inputmode: "decimal", autocomplete: "off", placeholder: decimal(0n, digits) });
  const cash = amount("cash");
  const card = amount("card");
  const summary = h("output", { class: "change", id: "change", "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert" });
  const complete = h("button", { type: "submit", class: "primary" }, "Complete sale");
  const set = (input: HTMLInputElement, units: bigint) => {
    input.value = units ? decimal(units, digits) : "";
    update();
  };
  const form = h(
    "form",
    { method: "dialog", class: "pay", novalidate: true },
    h("h2", {}, "Pay ", h("span", { class: "due" }, formatUnits(due, currency))),
    h(
      "div",
      { class: "quick" },
      h("button", { type: "button", onclick: () => (set(card, 0n), set(cash, due)) }, "Exact cash"),
      h("button", { type: "button", onclick: () => (set(cash, 0n), set(card, due)) }, "Card"),
    ),
    field("Card", card),
    field("Cash tendered", cash),
    h("button", { type: "button", class: "link", onclick: () => set(cash, rest()) }, "Rest in cash"),
    summary,
    error,
    h("div", { class: "actions" }, h("button", { type: "button", class: "cancel", onclick: () => dialog.close() }, "Cancel"), complete),
  );
  const dialog = modal("Payment", form);
  let answered: Sale | undefined;

  function amounts(): { cash: bigint; card: bigint } | Error {
    const cashUnits = parseAmount(cash.value, currency);
    if (cashUnits instanceof Error) return new Error(`Cash: ${cashUnits.message}`);
    const cardUnits = parseAmount(card.value, currency);
    if (cardUnits instanceof Error) return new Error(`Card: ${cardUnits.message}`);
    return { cash: cashUnits, card: cardUnits };
  }

  function rest(): bigint {
    const now = amounts();
    const left = now instanceof Error ? due : due - now.card;
    return left > 0n ? left : 0n;
  }

  function update(): void {
    const now = amounts();
    if (now instanceof Error) return void show(summary, now.message);
    const paid = now.cash + now.card;
    if (now.card > due) show(summary, "A card pays at most what is due: only cash gives change");
    else if (paid < due) show(summary, `Still due ${formatUnits(due - paid, currency)}`);
    else show(summary, `Change ${formatUnits(paid - due, currency)}`);
  }

  cash.addEventListener("input", update);
  card.addEventListener("input", update);
  submits(form, error, () => {
    const now = amounts();
    if (now instanceof Error) return now.message;
    const tenders: TenderInit[] = [];
    if (now.card > 0n) tenders.push({ type: TenderType.CARD, amount: { currencyCode: currency, unitsMinor: now.card } });
    if (now.cash > 0n) tenders.push({ type: TenderType.CASH, amount: { currencyCode: currency, unitsMinor: now.cash } });
    if (tenders.length === 0) return "Enter what the customer pays";
    return async (key) => {
      answered = await checkout(tenders, key);
      dialog.close();
    };
  });
  update();
  card.focus();
  return closed(dialog).then(() => answered);
}
