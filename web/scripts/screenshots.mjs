// Writes the screenshots of the terminal's main screens in docs/terminal/ (iPad sizes), from a
// fresh `redstore up` with the demo chain: `npm run screenshots` after `cargo build`.

import { join } from "node:path";
import { IPAD, Server, launchBrowser, newTerminal, registerTerminal, repo, signInWithCode, wedgeScan } from "../tests/harness.mjs";

const out = join(repo, "docs/terminal");
const server = await Server.start();
const browser = await launchBrowser();
try {
  const manager = await server.token("manager-1");
  const { products } = await server.call("redstore.inventory.v1.InventoryService/ListProducts", { page: { pageSize: 5 } }, manager);
  const page = await newTerminal(browser, server);
  await registerTerminal(page, server, "till-1");
  await page.screenshot({ path: join(out, "sign-in.png") });
  await signInWithCode(page, server, "cashier-1");
  await page.locator(".connection[data-state=live]").waitFor();
  for (const product of products.slice(0, 3)) await wedgeScan(page, product.barcodes[0]);
  await wedgeScan(page, products[0].barcodes[0]);
  await page.locator(".cart-line").nth(2).waitFor();
  await page.screenshot({ path: join(out, "till.png") });
  await page.getByRole("button", { name: "Pay" }).click();
  await page.getByLabel("Card").fill("5");
  await page.getByRole("button", { name: "Rest in cash" }).click();
  await page.getByLabel("Cash tendered").fill("50");
  await page.screenshot({ path: join(out, "pay.png") });
  await page.getByRole("button", { name: "Complete sale" }).click();
  await page.getByRole("article", { name: "Receipt" }).waitFor();
  await page.screenshot({ path: join(out, "receipt.png") });
  await page.getByRole("button", { name: "New sale" }).click();
  await page.setViewportSize({ width: IPAD.height, height: IPAD.width });
  await page.screenshot({ path: join(out, "till-portrait.png") });
  await page.setViewportSize(IPAD);
  // The manager's screens, on another iPad.
  const office = await newTerminal(browser, server);
  await registerTerminal(office, server, "till-2");
  await signInWithCode(office, server, "manager-1");
  await office.getByRole("link", { name: "Sales" }).click();
  await office.locator("tr[data-sale]").first().waitFor();
  await office.screenshot({ path: join(out, "sales.png") });
  await office.getByRole("link", { name: "Stock" }).click();
  await office.locator("tr[data-sku] td.quantity").first().getByText(/\d/).waitFor();
  await office.screenshot({ path: join(out, "stock.png") });
  await office.getByRole("link", { name: "Report" }).click();
  await office.getByRole("table", { name: "Top products" }).locator("tbody tr").first().waitFor();
  await office.screenshot({ path: join(out, "report.png") });
  console.log(`screenshots in ${out}`);
} finally {
  await browser.close();
  await server.stop();
}
