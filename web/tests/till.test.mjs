// The till in a real browser: two iPads as two terminals of one store, scanning with a
// keyboard-wedge scanner, paying, and what the API says afterwards.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Server, WiFi, launchBrowser, newTerminal, tillFor, wedgeScan } from "./harness.mjs";

let server;
let browser;
let manager;
/** Two iPads of store-1, signed in for the whole day as a shop's are: till-1 and till-2. */
let one;
let two;
/** till-2 reaches the server over this. */
let wifi;
/** sku → { barcode, name } of the demo catalog. */
const catalog = new Map();

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
  manager = await server.token("manager-1");
  const { products } = await server.call("redstore.inventory.v1.InventoryService/ListProducts", { page: { pageSize: 100 } }, manager);
  for (const product of products) catalog.set(product.sku, { barcode: product.barcodes[0], name: product.name });
  one = await tillFor(browser, server, "till-1", "cashier-1");
  wifi = await WiFi.to(server);
  two = await tillFor(browser, server, "till-2", "supervisor-1", { via: wifi });
});

after(async () => {
  await browser?.close();
  wifi?.close();
  await server?.stop();
});

async function stockOf(sku) {
  const { stock } = await server.call("redstore.inventory.v1.InventoryService/GetStock", { storeId: "store-1", sku }, manager);
  return Number(stock.quantity ?? 0);
}

/** Pays with the dialog open: waits for the receipt, answers the sale's id and closes it. */
async function receiptOf(page) {
  const receipt = page.getByRole("article", { name: "Receipt" });
  await receipt.waitFor();
  const saleId = (await receipt.locator(".sale-id").textContent()).replace("Sale ", "");
  return { receipt, saleId, close: () => page.getByRole("button", { name: "New sale" }).click() };
}

function shownStock(page, sku) {
  return page.locator(`.product[data-sku="${sku}"] .stock`);
}

describe("the till", () => {
  test("a cash sale scanned on one terminal changes the stock the other terminal shows", async () => {
    const milk = catalog.get("SKU-0001");
    const before = await stockOf("SKU-0001");
    await shownStock(two, "SKU-0001").getByText(`${before} in stock`).waitFor();

    // Focus is nowhere in particular: the scanner's burst is caught all the same.
    await one.locator("h2", { hasText: "Cart" }).click();
    await wedgeScan(one, milk.barcode);
    await wedgeScan(one, milk.barcode);
    const line = one.locator('.cart-line[data-sku="SKU-0001"]');
    await line.getByLabel(`Quantity of ${milk.name}`).getByText("2").waitFor();

    await one.getByRole("button", { name: "Pay" }).click();
    await one.getByLabel("Cash tendered").fill("20");
    await one.locator("#change").getByText(/^Change/).waitFor();
    await one.getByRole("button", { name: "Complete sale" }).click();
    const { receipt, saleId, close } = await receiptOf(one);

    await shownStock(two, "SKU-0001").getByText(`${before - 2} in stock`).waitFor();
    const { sale } = await server.call("redstore.sales.v1.SalesService/GetSale", { saleId }, manager);
    assert.equal(sale.terminalId, "till-1");
    assert.equal(sale.lines[0].sku, "SKU-0001");
    assert.equal(Number(sale.lines[0].quantity), 2);
    const change = 2000 - Number(sale.total.unitsMinor);
    assert.equal(Number(sale.change.unitsMinor), change);
    assert.match(await receipt.locator(".change td").textContent(), new RegExp((change / 100).toFixed(2).replace(".", "\\.")));
    assert.equal(await one.locator(".cart-line").count(), 0, "the cart is empty after the sale");
    await close();
  });

  test("a bad code says why and leaves the cart as it was", async () => {
    const page = one;
    await wedgeScan(page, catalog.get("SKU-0002").barcode);
    await page.locator('.cart-line[data-sku="SKU-0002"]').waitFor();
    await wedgeScan(page, "4006381333931");
    await page.locator(".message.error").getByText(/4006381333931/).waitFor();
    assert.equal(await page.locator(".cart-line").count(), 1);
    await page.getByRole("button", { name: "Clear" }).click();
    await page.getByText("Scan a product to start a sale").waitFor();
  });

  test("a split tender pays part by card and the rest in cash", async () => {
    const page = one;
    await page.locator('.product[data-sku="SKU-0005"]').click();
    await page.locator('.cart-line[data-sku="SKU-0005"]').waitFor();
    await page.getByRole("button", { name: "Pay" }).click();
    await page.getByLabel("Card").fill("1");
    await page.getByRole("button", { name: "Rest in cash" }).click();
    await page.locator("#change").getByText(/^Change/).waitFor();
    await page.getByRole("button", { name: "Complete sale" }).click();
    const { saleId, close } = await receiptOf(page);
    const { sale } = await server.call("redstore.sales.v1.SalesService/GetSale", { saleId }, manager);
    const paid = Object.fromEntries(sale.tenders.map((t) => [t.type, Number(t.amount.unitsMinor)]));
    assert.equal(paid.TENDER_TYPE_CARD, 100);
    assert.equal(paid.TENDER_TYPE_CASH, Number(sale.total.unitsMinor) - 100);
    assert.equal(sale.change?.unitsMinor ?? "0", "0");
    await close();
  });

  test("the last unit of a strict store, sold from two terminals at once, sells once and the other says why", async () => {
    const sku = "SKU-0007";
    await server.call(
      "redstore.inventory.v1.InventoryService/AdjustStock",
      { idempotencyKey: `last-${sku}`, storeId: "store-1", sku, quantityDelta: String(1 - (await stockOf(sku))), reason: "ADJUSTMENT_REASON_COUNT_CORRECTION", note: "one left" },
      manager,
    );
    for (const page of [one, two]) {
      await shownStock(page, sku).getByText("1 in stock").waitFor();
      await page.locator(`.product[data-sku="${sku}"]`).click();
      await page.locator(`.cart-line[data-sku="${sku}"]`).waitFor();
      await page.getByRole("button", { name: "Pay" }).click();
      await page.getByRole("button", { name: "Card" }).click();
    }
    await Promise.all([one, two].map((page) => page.getByRole("button", { name: "Complete sale" }).click()));
    const outcome = async (page) => {
      const receipt = page.getByRole("article", { name: "Receipt" });
      const refusal = page.getByRole("dialog", { name: "Payment" }).getByRole("alert");
      await Promise.race([receipt.waitFor(), refusal.getByText(/./).waitFor()]);
      return (await receipt.count()) ? "sold" : await refusal.textContent();
    };
    const outcomes = await Promise.all([outcome(one), outcome(two)]);
    assert.equal(outcomes.filter((o) => o === "sold").length, 1, `one page sells: ${outcomes}`);
    const why = outcomes.find((o) => o !== "sold");
    assert.match(why, new RegExp(sku), "the refusal names the sku");
    assert.equal(await stockOf(sku), 0);
    for (const page of [one, two]) await shownStock(page, sku).getByText("0 in stock").waitFor();
    const sold = outcomes[0] === "sold" ? one : two;
    const refused = outcomes[0] === "sold" ? two : one;
    await sold.getByRole("button", { name: "New sale" }).click();
    await refused.getByRole("button", { name: "Cancel" }).click();
    await refused.locator(`.cart-line[data-sku="${sku}"]`).getByRole("button", { name: /^Remove/ }).click();
    await refused.getByText("Scan a product to start a sale").waitFor();
  });

  test("a terminal that lost its connection catches up on the stock it missed", async () => {
    const skus = ["SKU-0010", "SKU-0011"];
    const before = await Promise.all(skus.map(stockOf));
    wifi.drop();
    await two.locator(".connection[data-state=reconnecting]").waitFor();
    for (const sku of skus) {
      await one.locator(`.product[data-sku="${sku}"]`).click();
      await one.locator(`.cart-line[data-sku="${sku}"]`).waitFor();
    }
    await one.getByRole("button", { name: "Pay" }).click();
    await one.getByRole("button", { name: "Exact cash" }).click();
    await one.getByRole("button", { name: "Complete sale" }).click();
    await (await receiptOf(one)).close();
    await shownStock(one, skus[1]).getByText(`${before[1] - 1} in stock`).waitFor();
    assert.equal(await shownStock(two, skus[0]).textContent(), `${before[0]} in stock`, "offline, the page cannot know yet");
    wifi.restore();
    await two.locator(".connection[data-state=live]").waitFor();
    for (const [i, sku] of skus.entries()) await shownStock(two, sku).getByText(`${before[i] - 1} in stock`).waitFor();
  });

  test("a colleague takes over a terminal with their PIN, and back", async () => {
    const setPin = async (page, pin) => {
      await page.getByRole("button", { name: "My PIN" }).click();
      await page.getByLabel("New PIN (4 to 8 digits)").fill(pin);
      await page.getByRole("button", { name: "Set PIN" }).click();
      await page.getByRole("dialog", { name: "Set my PIN" }).waitFor({ state: "detached" });
    };
    await setPin(one, "2580");
    await setPin(two, "4096");
    const switchTo = async (page, staffId, pin) => {
      await page.getByRole("button", { name: "Switch cashier" }).click();
      await page.getByRole("dialog", { name: "Switch cashier" }).getByLabel("Staff ID").fill(staffId);
      await page.getByRole("dialog", { name: "Switch cashier" }).getByLabel("PIN").fill(pin);
      await page.getByRole("button", { name: "Switch", exact: true }).click();
    };
    await switchTo(one, "supervisor-1", "1111");
    const dialog = one.getByRole("dialog", { name: "Switch cashier" });
    await dialog.getByRole("alert").getByText(/./).waitFor();
    // The right PIN typed into the same dialog after a wrong one.
    await dialog.getByLabel("PIN").fill("4096");
    await one.getByRole("button", { name: "Switch", exact: true }).click();
    await one.locator(".cashier[title^='supervisor-1']").waitFor();
    await switchTo(one, "cashier-1", "2580");
    await one.locator(".cashier[title^='cashier-1']").waitFor();
  });

  test("a supervisor finds a sale by its receipt and refunds part of it with a reason; the stock comes back", async () => {
    const sku = "SKU-0012";
    const before = await stockOf(sku);
    for (let i = 0; i < 3; i++) await one.locator(`.product[data-sku="${sku}"]`).click();
    await one.locator(`.cart-line[data-sku="${sku}"] output`).getByText("3").waitFor();
    await one.getByRole("button", { name: "Pay" }).click();
    await one.getByRole("button", { name: "Card" }).click();
    await one.getByRole("button", { name: "Complete sale" }).click();
    const { saleId, close } = await receiptOf(one);
    await close();
    await shownStock(one, sku).getByText(`${before - 3} in stock`).waitFor();

    await two.getByRole("link", { name: "Sales" }).click();
    await two.locator(`tr[data-sale="${saleId}"]`).waitFor();
    await two.getByLabel("Sale id (on the receipt)").fill(saleId);
    await two.getByRole("button", { name: "Find" }).click();
    await two.getByRole("button", { name: "Refund…" }).click();
    const refund = two.getByRole("dialog", { name: "Refund" });
    await refund.getByRole("spinbutton").fill("1");
    await refund.getByRole("button", { name: "Refund" }).click();
    await refund.getByRole("alert").getByText(/reason/).waitFor();
    await refund.getByLabel("Reason").fill("crushed box");
    await refund.getByRole("button", { name: "Refund" }).click();
    await two.getByRole("article", { name: "Receipt" }).locator(".refunded").waitFor();
    await two.getByRole("button", { name: "Close" }).click();

    await shownStock(one, sku).getByText(`${before - 2} in stock`).waitFor();
    const { sale } = await server.call("redstore.sales.v1.SalesService/GetSale", { saleId }, manager);
    assert.equal(sale.status, "SALE_STATUS_PARTIALLY_REFUNDED");
    assert.equal(Number(sale.lines[0].quantityRefunded), 1);
    const { events } = await server.call("redstore.auth.v1.AuthService/ListAuditEvents", { storeId: "store-1" }, manager);
    const recorded = events.find((e) => e.action === "sale.refunded" && JSON.stringify(e).includes(saleId));
    assert.ok(recorded, "the refund is in the audit log");
    assert.match(JSON.stringify(recorded), /crushed box/);
    assert.match(JSON.stringify(recorded), /supervisor-1/);
    await two.getByRole("link", { name: "Till" }).click();
  });

  test("a cashier has no manager screens: none offered, and none shown when asked for by address", async () => {
    const nav = one.getByRole("navigation", { name: "Screens" });
    assert.deepEqual(await nav.getByRole("link").allTextContents(), ["Till", "Sales"]);
    for (const path of ["stock", "report"]) {
      await one.goto(`/#/${path}`);
      await one.getByRole("alert").getByText(/needs a manager/).waitFor();
      assert.equal(await one.locator("table").count(), 0, `${path}: nothing of the store is shown`);
    }
    await one.getByRole("link", { name: "Sales" }).click();
    await one.locator("tr[data-sale]").first().getByRole("button").click();
    await one.getByRole("article", { name: "Receipt" }).waitFor();
    assert.equal(await one.getByRole("button", { name: "Refund…" }).count(), 0, "a cashier is offered no refund");
    await one.getByRole("button", { name: "Close" }).click();
    await one.getByRole("link", { name: "Till" }).click();
    await one.locator(".product").first().waitFor();
  });

  test("a sale is made from the keyboard alone", async () => {
    const page = one;
    const sku = "SKU-0014";
    await page.locator("#scan").focus();
    // Typed as a person types: slower than a scanner.
    await page.keyboard.type(catalog.get(sku).name.slice(0, 8), { delay: 90 });
    await page.keyboard.press("Enter");
    await page.locator(`.cart-line[data-sku="${sku}"]`).waitFor();
    for (let tabs = 0; !(await page.evaluate(() => document.activeElement?.textContent === "Pay")); tabs++) {
      assert.ok(tabs < 100, "Pay is reached with Tab");
      await page.keyboard.press("Tab");
    }
    await page.keyboard.press("Enter");
    await page.getByRole("dialog", { name: "Payment" }).waitFor();
    await page.keyboard.press("Tab");
    await page.keyboard.type("100", { delay: 90 });
    await page.keyboard.press("Enter");
    const { saleId } = await receiptOf(page);
    await page.keyboard.press("Enter");
    await page.getByRole("article", { name: "Receipt" }).waitFor({ state: "detached" });
    const { sale } = await server.call("redstore.sales.v1.SalesService/GetSale", { saleId }, manager);
    assert.equal(sale.lines[0].sku, sku);
    assert.equal(sale.tenders[0].type, "TENDER_TYPE_CASH");
  });
});

test("a page that is not signed in shows nothing of the store", async () => {
  const page = await newTerminal(browser, server);
  await page.getByRole("heading", { name: "Set up this iPad" }).waitFor();
  const text = await page.locator("body").innerText();
  for (const { name } of catalog.values()) assert.ok(!text.includes(name), `a signed-out page shows ${name}`);
  await page.context().close();
});
