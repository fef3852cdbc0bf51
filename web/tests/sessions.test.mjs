// A terminal nobody touches locks to its PIN screen (here after 3 s: `--auth-idle-lock 3s`),
// shows nothing of the store while locked, and the cashier's PIN unlocks it as they left it.

import assert from "node:assert/strict";
import { test } from "node:test";
import { newTerminal, registerTerminal, sharedServer, signInWithCode, tillFor } from "./harness.mjs";

const shared = sharedServer(["--auth-idle-lock", "3s"]);

test("a terminal left alone locks, shows nothing of the store, and its cashier's PIN unlocks it", async () => {
  const page = await tillFor(shared.browser, shared.server, "till-1", "cashier-1");
  await page.getByRole("button", { name: "My PIN" }).click();
  await page.getByLabel("New PIN (4 to 8 digits)").fill("2580");
  await page.getByRole("button", { name: "Set PIN" }).click();
  await page.getByRole("dialog", { name: "Set my PIN" }).waitFor({ state: "detached" });
  await page.locator('.product[data-sku="SKU-0003"]').click();
  const name = await page.locator('.cart-line[data-sku="SKU-0003"] .name').textContent();

  await page.getByRole("heading", { name: "Locked" }).waitFor({ timeout: 10_000 });
  const shown = await page.locator("body").innerText();
  assert.ok(!shown.includes(name), "a locked terminal shows nothing of the cart or the products");

  await page.getByLabel("PIN").fill("9999");
  await page.getByRole("button", { name: "Unlock" }).click();
  await page.getByRole("alert").getByText(/./).waitFor();
  assert.equal(await page.getByRole("heading", { name: "Locked" }).count(), 1, "a wrong PIN leaves it locked");

  await page.getByLabel("PIN").fill("2580");
  await page.getByRole("button", { name: "Unlock" }).click();
  await page.locator('.cart-line[data-sku="SKU-0003"]').waitFor();
  await page.locator(".connection[data-state=live]").waitFor();
});

test("a mistyped staff ID is corrected without reloading the page", async () => {
  const page = await newTerminal(shared.browser, shared.server);
  await registerTerminal(page, shared.server, "till-2");
  await page.getByLabel("Staff ID").fill("casheir-1");
  await page.getByRole("button", { name: "Send me a code" }).click();
  await page.getByLabel("The 6-digit code we sent you").waitFor();
  await page.getByRole("button", { name: "Use another staff ID" }).click();
  assert.equal(await page.getByLabel("The 6-digit code we sent you").count(), 0);
  await signInWithCode(page, shared.server, "cashier-1");
  await page.locator(".connection[data-state=live]").waitFor();
});
