// A manager's screens: the stock list with an adjustment (its reason and note in the audit log)
// and today's report, as a chart and tables.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Server, launchBrowser, tillFor } from "./harness.mjs";

let server;
let browser;
let page;
let token;

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
  page = await tillFor(browser, server, "till-1", "manager-1");
  token = await server.token("manager-1");
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function stockOf(sku) {
  const { stock } = await server.call("redstore.inventory.v1.InventoryService/GetStock", { storeId: "store-1", sku }, token);
  return Number(stock.quantity ?? 0);
}

test("a manager adjusts stock with a reason and a note, and the list shows it live", async () => {
  const sku = "SKU-0009";
  const before = await stockOf(sku);
  await page.getByRole("link", { name: "Stock" }).click();
  await page.getByLabel("Search products").fill(sku);
  const row = page.locator(`tr[data-sku="${sku}"]`);
  await row.locator("td.quantity").getByText(String(before)).waitFor();
  await row.getByRole("button").click();
  const dialog = page.getByRole("dialog", { name: /^Adjust/ });
  await dialog.getByLabel(/^Change in units/).fill("0");
  await dialog.getByLabel("Note").fill("delivery 4711");
  await dialog.getByRole("button", { name: "Adjust" }).click();
  await dialog.getByRole("alert").getByText(/not 0/).waitFor();
  await dialog.getByLabel(/^Change in units/).fill("+12");
  await dialog.getByLabel("Reason").selectOption({ label: "Goods received" });
  await dialog.getByRole("button", { name: "Adjust" }).click();
  await dialog.waitFor({ state: "detached" });
  await row.locator("td.quantity").getByText(String(before + 12)).waitFor();
  assert.equal(await stockOf(sku), before + 12);
  const { events } = await server.call("redstore.auth.v1.AuthService/ListAuditEvents", { storeId: "store-1" }, token);
  const adjusted = events.find((e) => JSON.stringify(e).includes("delivery 4711"));
  assert.ok(adjusted, "the adjustment and its note are in the audit log");
});

test("today's report shows the day's sales as a chart and tables", async () => {
  await page.getByRole("link", { name: "Till" }).click();
  await page.locator('.product[data-sku="SKU-0004"]').click();
  await page.locator('.product[data-sku="SKU-0004"]').click();
  await page.locator('.cart-line[data-sku="SKU-0004"] output').getByText("2").waitFor();
  await page.getByRole("button", { name: "Pay" }).click();
  await page.getByRole("button", { name: "Card" }).click();
  await page.getByRole("button", { name: "Complete sale" }).click();
  await page.getByRole("article", { name: "Receipt" }).waitFor();
  await page.getByRole("button", { name: "New sale" }).click();

  // Analytics folds the sale from the event log a moment later: open the report until it has it.
  const top = page.getByRole("table", { name: "Top products" }).locator('tr[data-sku="SKU-0004"]');
  for (let tries = 0; (await top.count()) === 0; tries++) {
    assert.ok(tries < 50, "the sale reaches the report");
    await page.goto("/#/till");
    await page.goto("/#/report");
    await page.getByRole("heading", { name: "Today's sales" }).waitFor();
    await page.locator(".figures, .message").first().waitFor();
    await page.waitForTimeout(200);
  }
  assert.equal((await top.locator("td").nth(1).textContent()).trim(), "2");
  const bars = await page.locator("svg.chart rect.bar").evaluateAll((rects) => rects.filter((r) => Number(r.getAttribute("height")) > 0).length);
  assert.equal(bars, 1, "one hour has sales");
  assert.equal(await page.getByRole("table", { name: "Net sales by hour" }).locator("tbody tr").count(), 1);
});
