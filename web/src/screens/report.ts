// Today's sales report from analytics (a manager): the day's figures, net sales by hour as a
// chart (an SVG drawn here, with the same numbers in a table beside it for screen readers and
// for reading exact figures), and the top products.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Granularity, type SalesBucket } from "../../gen/redstore/analytics/v1/analytics_pb";
import { analytics, describe, retried, startOfToday } from "../api";
import { formatMoney } from "../money";
import { signedIn } from "../session";
import { h, show } from "../ui";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag: string, attributes: Record<string, string | number>, text?: string): SVGElement {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** Bars of net sales per hour of the day (0 to 23). */
function chart(buckets: SalesBucket[]): SVGElement {
  const byHour = new Map<number, bigint>();
  for (const bucket of buckets) {
    if (!bucket.start) continue;
    byHour.set(timestampDate(bucket.start).getHours(), bucket.figures?.net?.unitsMinor ?? 0n);
  }
  const most = [...byHour.values()].reduce((a, b) => (b > a ? b : a), 1n);
  const width = 24 * 30;
  const height = 200;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height + 24}`, role: "img", "aria-label": "Net sales by hour", class: "chart" });
  for (let hour = 0; hour < 24; hour++) {
    const net = byHour.get(hour) ?? 0n;
    const barHeight = net > 0n ? Math.max(2, Number((net * BigInt(height)) / most)) : 0;
    root.append(svg("rect", { x: hour * 30 + 4, y: height - barHeight, width: 22, height: barHeight, class: "bar" }));
    if (hour % 3 === 0) root.append(svg("text", { x: hour * 30 + 15, y: height + 18, "text-anchor": "middle" }, `${hour}h`));
  }
  return root;
}

export function reportScreen(root: HTMLElement): void {
  const storeId = signedIn()?.storeId ?? "";
  const body = h("div", {}, h("p", { class: "message" }, "Loading…"));
  root.append(h("section", { class: "panel" }, h("h1", {}, "Today's sales"), body));

  async function load(): Promise<void> {
    const report = await retried(() =>
      analytics.getSalesReport({ storeId, from: startOfToday(), granularity: Granularity.HOUR, topProductsLimit: 10 }),
    );
    const totals = report.totals[0];
    const figure = (label: string, value: string) => h("div", { class: "figure" }, h("dt", {}, label), h("dd", {}, value));
    show(
      body,
      totals
        ? h(
            "dl",
            { class: "figures" },
            figure("Sales", String(totals.salesCount)),
            figure("Units sold", String(totals.unitsSold)),
            figure("Gross", formatMoney(totals.gross)),
            figure("Refunds", formatMoney(totals.refunds)),
            figure("Net", formatMoney(totals.net)),
          )
        : h("p", { class: "message" }, "No sales yet today"),
      h(
        "div",
        { class: "report" },
        h("figure", {}, chart(report.buckets), h("figcaption", {}, "Net sales by hour")),
        h(
          "table",
          { class: "list", "aria-label": "Net sales by hour" },
          h("thead", {}, h("tr", {}, h("th", {}, "Hour"), h("th", {}, "Sales"), h("th", {}, "Net"))),
          h(
            "tbody",
            {},
            ...report.buckets.map((bucket) =>
              h(
                "tr",
                {},
                h("td", {}, bucket.start ? timestampDate(bucket.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : ""),
                h("td", {}, String(bucket.figures?.salesCount ?? 0n)),
                h("td", {}, formatMoney(bucket.figures?.net)),
              ),
            ),
          ),
        ),
      ),
      h("h2", {}, "Top products"),
      h(
        "table",
        { class: "list", "aria-label": "Top products" },
        h("thead", {}, h("tr", {}, h("th", {}, "Product"), h("th", {}, "Sold"), h("th", {}, "Refunded"), h("th", {}, "Net"))),
        h(
          "tbody",
          {},
          ...report.topProducts.map((product) =>
            h(
              "tr",
              { "data-sku": product.sku },
              h("td", {}, product.name || product.sku),
              h("td", {}, String(product.unitsSold)),
              h("td", {}, String(product.unitsRefunded)),
              h("td", {}, formatMoney(product.net)),
            ),
          ),
        ),
      ),
    );
  }

  load().catch((failure) => show(body, h("p", { class: "message error", role: "alert" }, describe(failure))));
}
