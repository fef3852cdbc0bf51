// The terminal's screens at both iPad sizes, either way up, checked with axe-core (WCAG 2 A and
// AA: contrast, names of controls, landmarks) in the browser, and with touch targets of 44 px.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { test } from "node:test";
import { newTerminal, registerTerminal, sharedServer, signInWithCode } from "./harness.mjs";

const axeSource = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const SIZES = [
  { width: 1024, height: 768 },
  { width: 1180, height: 820 },
  { width: 768, height: 1024 },
  { width: 820, height: 1180 },
];

const shared = sharedServer();

/** axe's WCAG 2 A/AA violations on the page as it is, and controls smaller than 44 px. */
async function check(page, screen) {
  // axe is injected as a script: the context bypasses the page's CSP for it (only in this test).
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: axeSource });
  const { violations } = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  const described = violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
  assert.deepEqual(described, [], `${screen}: accessibility violations`);
  const small = await page.evaluate(() =>
    [...document.querySelectorAll("button, input, select")]
      .filter((e) => e.offsetParent !== null || e.closest("dialog[open]"))
      .map((e) => ({ e, r: e.getBoundingClientRect() }))
      .filter(({ r }) => r.width > 0 && (r.height < 44 || r.width < 44))
      .map(({ e, r }) => `${e.tagName.toLowerCase()} "${e.textContent || e.getAttribute("aria-label") || e.id}" ${Math.round(r.width)}×${Math.round(r.height)}`),
  );
  assert.deepEqual(small, [], `${screen}: touch targets under 44 px`);
}

test("every screen passes axe and has touch-sized controls at iPad sizes, landscape and portrait", async () => {
  const page = await newTerminal(shared.browser, shared.server, { bypassCSP: true });
  const atEverySize = async (screen) => {
    for (const size of SIZES) {
      await page.setViewportSize(size);
      await check(page, `${screen} at ${size.width}×${size.height}`);
    }
  };
  await page.getByRole("heading", { name: "Set up this iPad" }).waitFor();
  await atEverySize("set-up");
  await registerTerminal(page, shared.server, "till-1");
  await atEverySize("sign-in");
  // A manager: every screen is theirs.
  await signInWithCode(page, shared.server, "manager-1");
  await page.locator(".connection[data-state=live]").waitFor();
  await page.locator('.product[data-sku="SKU-0001"]').click();
  await page.locator('.cart-line[data-sku="SKU-0001"]').waitFor();
  await atEverySize("till");
  await page.getByRole("button", { name: "Pay" }).click();
  await page.getByLabel("Cash tendered").fill("50");
  await atEverySize("payment");
  await page.getByRole("button", { name: "Complete sale" }).click();
  await page.getByRole("article", { name: "Receipt" }).waitFor();
  await atEverySize("receipt");
  await page.getByRole("button", { name: "New sale" }).click();
  await page.getByRole("link", { name: "Sales" }).click();
  await page.locator("tr[data-sale]").first().waitFor();
  await atEverySize("sales");
  await page.getByRole("link", { name: "Stock" }).click();
  await page.locator("tr[data-sku] td.quantity").first().getByText(/\d/).waitFor();
  await atEverySize("stock");
  await page.getByRole("button", { name: /^Adjust/ }).first().click();
  await atEverySize("adjustment");
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.getByRole("link", { name: "Report" }).click();
  await page.getByRole("heading", { name: "Today's sales" }).waitFor();
  await page.locator(".figures, .message").first().waitFor();
  await atEverySize("report");
  await page.getByRole("button", { name: "Lock" }).click();
  await page.getByRole("heading", { name: "Locked" }).waitFor();
  await atEverySize("locked");
});
