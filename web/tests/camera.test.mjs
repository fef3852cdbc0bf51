// Scanning with the iPad's camera. Chromium on Linux has no BarcodeDetector, so the test gives the
// page one that reads whatever code the test holds "in view"; the camera is Chromium's fake one.
// What is tested is the terminal's part: the camera opens, a code read is scanned once however
// long it stays in view, and again when it comes back.

import assert from "node:assert/strict";
import { test } from "node:test";
import { sharedServer, tillFor } from "./harness.mjs";

const shared = sharedServer();

function barcodeDetector() {
  window.BarcodeDetector = class {
    async detect() {
      return window.inView ? [{ rawValue: window.inView }] : [];
    }
  };
}

test("a code held to the camera is scanned once while in view, and again when it comes back", async () => {
  const page = await tillFor(shared.browser, shared.server, "till-1", "cashier-1", { before: barcodeDetector });
  await page.context().grantPermissions(["camera"]);
  const token = await shared.server.token("manager-1");
  const { product } = await shared.server.call("redstore.inventory.v1.InventoryService/GetProduct", { sku: "SKU-0008" }, token);
  await page.getByRole("button", { name: "Camera" }).click();
  await page.getByRole("dialog", { name: "Camera scanner" }).waitFor();
  await page.waitForFunction(() => document.querySelector("dialog video")?.readyState >= 2);

  const quantity = page.locator('.cart-line[data-sku="SKU-0008"] output');
  await page.evaluate((code) => (window.inView = code), product.barcodes[0]);
  await quantity.getByText("1").waitFor();
  await page.waitForTimeout(1000);
  assert.equal(await quantity.textContent(), "1", "a code that stays in view is one scan");

  await page.evaluate(() => (window.inView = null));
  await page.waitForTimeout(2300);
  await page.evaluate((code) => (window.inView = code), product.barcodes[0]);
  await quantity.getByText("2").waitFor();

  await page.evaluate(() => (window.inView = "4006381333931"));
  await page.locator(".message.error").getByText(/4006381333931/).waitFor();
  await page.getByRole("button", { name: "Done" }).click();
  await page.getByRole("dialog", { name: "Camera scanner" }).waitFor({ state: "detached" });
});
