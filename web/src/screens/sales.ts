// Today's sales of the store, newest first, and any sale found by its receipt's sale id: its
// receipt shown again (a failed print is printed again from here), and for a supervisor or above
// a refund of some or all of what is left.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Role } from "../../gen/redstore/auth/v1/auth_pb";
import { type Sale, SaleStatus } from "../../gen/redstore/sales/v1/sales_pb";
import { describe, retried, sales, startOfToday } from "../api";
import { formatMoney } from "../money";
import { signedIn } from "../session";
import { field, h, show } from "../ui";
import { receiptDialog } from "./receipt";
import { refundDialog } from "./refund";

const STATUS: Partial<Record<SaleStatus, string>> = {
  [SaleStatus.COMPLETED]: "Completed",
  [SaleStatus.PARTIALLY_REFUNDED]: "Partly refunded",
  [SaleStatus.REFUNDED]: "Refunded",
};

export function salesScreen(root: HTMLElement): void {
  const who = signedIn();
  if (!who) return;
  const storeId = who.storeId;
  const receiptId = h("input", { id: "receipt-id", autocapitalize: "none", spellcheck: "false", autocomplete: "off" });
  const find = h("form", { class: "find" }, field("Sale id (on the receipt)", receiptId), h("button", { type: "submit" }, "Find"));
  const message = h("p", { class: "message", role: "status" });
  const rows = h("tbody", {});
  const table = h(
    "table",
    { class: "list", "aria-label": "Today's sales" },
    h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Terminal"), h("th", {}, "Total"), h("th", {}, "Status"), h("th", {}, h("span", { class: "visually-hidden" }, "Open")))),
    rows,
  );
  root.append(h("section", { class: "panel" }, h("h1", {}, "Sales today"), find, message, table));

  function open(sale: Sale): void {
    const refundable = sale.lines.some((line) => line.quantity > line.quantityRefunded);
    const mayRefund = (signedIn()?.role ?? Role.UNSPECIFIED) >= Role.SUPERVISOR;
    const refund = h("button", { type: "button", onclick: () => void startRefund() }, "Refund…");
    const dialog = receiptDialog(sale, "", "Close", refundable && mayRefund ? [refund] : []);
    async function startRefund(): Promise<void> {
      dialog.close();
      const after = await refundDialog(sale, who?.terminalId ?? "");
      if (after) {
        await load();
        open(after);
      }
    }
  }

  async function findSale(saleId: string): Promise<void> {
    try {
      const { sale } = await retried(() => sales.getSale({ saleId }));
      if (sale) open(sale);
    } catch (failure) {
      message.className = "message error";
      show(message, describe(failure));
    }
  }

  async function load(): Promise<void> {
    const createdFrom = startOfToday();
    const today: Sale[] = [];
    let pageToken = "";
    do {
      const answer = await retried(() =>
        sales.listSales({ storeId, createdFrom, page: { pageSize: 500, pageToken } }),
      );
      today.push(...answer.sales);
      pageToken = answer.page?.nextPageToken ?? "";
    } while (pageToken);
    today.reverse();
    show(
      rows,
      ...today.map((sale) =>
        h(
          "tr",
          { "data-sale": sale.saleId },
          h("td", {}, sale.createdAt ? timestampDate(sale.createdAt).toLocaleTimeString() : ""),
          h("td", {}, sale.terminalId),
          h("td", {}, formatMoney(sale.total)),
          h("td", {}, STATUS[sale.status] ?? ""),
          h("td", {}, h("button", { type: "button", onclick: () => open(sale), "aria-label": `Open the sale of ${formatMoney(sale.total)}` }, "Open")),
        ),
      ),
    );
    message.className = "message";
    show(message, today.length ? `${today.length} ${today.length === 1 ? "sale" : "sales"} today` : "No sales yet today");
  }

  find.addEventListener("submit", (event) => {
    event.preventDefault();
    const saleId = receiptId.value.trim();
    if (saleId) void findSale(saleId);
  });
  load().catch((failure) => {
    message.className = "message error";
    show(message, describe(failure));
  });
}
