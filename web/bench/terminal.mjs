// The terminal's two figures (issue #16), measured in headless Chromium against a real
// `redstore up` on this machine:
// - cold load: a registered iPad with a signed-in session opens `/` with an empty cache; the
//   time until the till is usable (products with their live stock, the connection live);
// - scan: a keyboard-wedge scan (typed as a scanner types) until its cart line is painted.
// `cargo build --release && REDSTORE_BIN=target/release/redstore npm --prefix web run bench`
// (`-- --loads N --scans N` to change the counts).

import { parseArgs } from "node:util";
import { Server, launchBrowser, newTerminal, registerTerminal, signInWithCode, wedgeScan } from "../tests/harness.mjs";

const { values } = parseArgs({ options: { loads: { type: "string", default: "20" }, scans: { type: "string", default: "1000" } } });
const loads = Number(values.loads);
const scans = Number(values.scans);

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summary(name, samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const ms = (v) => `${v.toFixed(1)} ms`;
  return `${name}: n=${sorted.length} median ${ms(percentile(sorted, 50))} p95 ${ms(percentile(sorted, 95))} p99 ${ms(percentile(sorted, 99))} max ${ms(sorted.at(-1))}`;
}

const server = await Server.start();
const browser = await launchBrowser();
try {
  const setup = await newTerminal(browser, server);
  await registerTerminal(setup, server, "till-1");
  await signInWithCode(setup, server, "cashier-1");
  await setup.locator(".connection[data-state=live]").waitFor();
  let state = await setup.context().storageState();
  await setup.context().close();

  // Cold loads: each a new browser context (no cache) holding the previous one's storage, as a
  // reloaded iPad keeps its session (a refresh rotates its tokens, so the chain carries them on).
  const loadTimes = [];
  for (let i = 0; i < loads; i++) {
    const context = await browser.newContext({ viewport: { width: 1180, height: 820 }, storageState: state, baseURL: server.url });
    const page = await context.newPage();
    const started = performance.now();
    await page.goto("/");
    await page.locator(".connection[data-state=live]").waitFor();
    await page.locator(".product .stock:not(:empty)").first().waitFor();
    loadTimes.push(performance.now() - started);
    state = await context.storageState();
    await context.close();
  }

  const context = await browser.newContext({ viewport: { width: 1180, height: 820 }, storageState: state, baseURL: server.url });
  const page = await context.newPage();
  await page.goto("/");
  await page.locator(".connection[data-state=live]").waitFor();
  const manager = await server.token("manager-1");
  const { products } = await server.call("redstore.inventory.v1.InventoryService/ListProducts", { page: { pageSize: 5 } }, manager);
  const codes = products.map((p) => p.barcodes[0]);
  // From the scanner's Enter to the frame that shows the cart changed, timed in the page by
  // listeners installed once (before any scan, so none is missed).
  await page.evaluate(() => {
    window.scanTimes = [];
    let enter;
    addEventListener("keydown", (event) => event.key === "Enter" && (enter = performance.now()), { capture: true });
    new MutationObserver(() => {
      if (enter === undefined) return;
      const started = enter;
      enter = undefined;
      requestAnimationFrame(() => window.scanTimes.push(performance.now() - started));
    }).observe(document.querySelector(".cart-lines"), { subtree: true, childList: true, characterData: true });
  });
  for (let i = 0; i < scans; i++) {
    await wedgeScan(page, codes[i % codes.length]);
    await page.waitForFunction((n) => window.scanTimes.length >= n, i + 1);
  }
  const scanTimes = await page.evaluate(() => window.scanTimes);
  console.log(summary("cold load until usable", loadTimes));
  console.log(summary("keyboard-wedge scan until its line shows", scanTimes));
} finally {
  await browser.close();
  await server.stop();
}
