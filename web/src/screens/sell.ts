// The till: the store's products with their live stock, the cart of this terminal (kept by the
// server, so a reload or another cashier finds it as it was), scanning, and paying. Every change
// to the cart is one RPC whose answer is the whole cart, shown as it comes.

import { describe, retried, sales } from "../api";
import { allProducts, search as searchProducts } from "../catalog";
import type { Product } from "../../gen/redstore/inventory/v1/inventory_pb";
import type { Cart, CartLine } from "../../gen/redstore/sales/v1/sales_pb";
import type { LiveStock } from "../live";
import { formatMoney } from "../money";
import { cameraAvailable, cameraDialog } from "../camera";
import { listenForScans } from "../scanner";
import { signedIn } from "../session";
import { errorTone, h, newKey, show } from "../ui";
import { payDialog } from "./pay";
import { receiptDialog } from "./receipt";

/** Products shown at once; a search narrows the rest. */
const SHOWN = 60;

export function sellScreen(root: HTMLElement, live: LiveStock): () => void {
  const who = signedIn();
  if (!who) return () => undefined;
  const { storeId, terminalId } = who;
  const products = new Map<string, Product>();
  let cart: Cart | undefined;
  let busy = false;

  const message = h("p", { class: "message", role: "status" });
  const search = h("input", {
    id: "scan",
    type: "search",
    placeholder: "Scan, type a barcode or search",
    "aria-label": "Scan, type a barcode or search by name",
    autocomplete: "off",
    enterkeyhint: "go",
  });
  const productList = h("ul", { class: "products", "aria-label": "Products" });
  const lines = h("ul", { class: "cart-lines", "aria-label": "Cart" });
  const total = h("output", { class: "total", id: "total" });
  const pay = h("button", { type: "button", class: "primary pay", disabled: true, onclick: () => void startPayment() }, "Pay");
  const clear = h("button", { type: "button", disabled: true, onclick: () => void change(() => sales.clearCart({ idempotencyKey: newKey(), storeId, terminalId })) }, "Clear");

  root.append(
    h(
      "div",
      { class: "till" },
      h(
        "section",
        { class: "catalog", "aria-label": "Products" },
        h(
          "div",
          { class: "scan-row" },
          search,
          cameraAvailable() ? h("button", { type: "button", onclick: () => cameraDialog((code) => void scan(code)) }, "Camera") : null,
        ),
        message,
        productList,
      ),
      h(
        "section",
        { class: "cart", "aria-label": "Cart" },
        h("h2", {}, "Cart"),
        lines,
        h("p", { class: "total-row" }, h("span", {}, "Total"), total),
        h("div", { class: "actions" }, clear, pay),
      ),
    ),
  );

  function say(text: string, error = false): void {
    message.className = error ? "message error" : "message";
    show(message, text);
    if (error) errorTone();
  }

  function stockText(sku: string): string {
    const quantity = live.quantities.get(sku);
    return quantity === undefined ? "" : `${quantity} in stock`;
  }

  function renderProducts(): void {
    const matching = searchProducts(products.values(), search.value);
    show(
      productList,
      ...matching.slice(0, SHOWN).map((product) =>
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "product", "data-sku": product.sku, onclick: () => void add(product.sku) },
            h("span", { class: "name" }, product.name),
            h("span", { class: "price" }, formatMoney(product.price)),
            h("span", { class: "stock", "data-sku": product.sku }, stockText(product.sku)),
          ),
        ),
      ),
      matching.length > SHOWN ? h("li", { class: "more" }, `${matching.length - SHOWN} more: search to narrow`) : null,
    );
  }

  function renderStock(changed: string[] | "all"): void {
    for (const element of root.querySelectorAll<HTMLElement>(".stock[data-sku]")) {
      const sku = element.dataset.sku ?? "";
      if (changed !== "all" && !changed.includes(sku)) continue;
      const text = stockText(sku);
      if (element.textContent !== text) {
        element.textContent = text;
        element.classList.toggle("out", (live.quantities.get(sku) ?? 1n) <= 0n);
      }
    }
  }

  function lineView(line: CartLine): HTMLLIElement {
    const setQuantity = (quantity: bigint) =>
      change(() => sales.setCartItemQuantity({ idempotencyKey: newKey(), storeId, terminalId, sku: line.sku, quantity }));
    return h(
      "li",
      { class: "cart-line", "data-sku": line.sku },
      h("span", { class: "name" }, line.name),
      h("span", { class: "unit" }, formatMoney(line.unitPrice)),
      h(
        "span",
        { class: "quantity" },
        h("button", { type: "button", "aria-label": `One ${line.name} less`, onclick: () => void setQuantity(line.quantity - 1n) }, "−"),
        h("output", { "aria-label": `Quantity of ${line.name}` }, String(line.quantity)),
        h("button", { type: "button", "aria-label": `One ${line.name} more`, onclick: () => void setQuantity(line.quantity + 1n) }, "+"),
      ),
      h("span", { class: "line-total" }, formatMoney(line.lineTotal)),
      h("span", { class: "stock", "data-sku": line.sku }, stockText(line.sku)),
      h(
        "button",
        {
          type: "button",
          class: "remove",
          "aria-label": `Remove ${line.name}`,
          onclick: () => void change(() => sales.removeCartItem({ idempotencyKey: newKey(), storeId, terminalId, sku: line.sku })),
        },
        "×",
      ),
    );
  }

  function renderCart(): void {
    const cartLines = cart?.lines ?? [];
    show(lines, ...cartLines.map(lineView), cartLines.length ? null : h("li", { class: "empty" }, "Scan a product to start a sale"));
    show(total, formatMoney(cart?.total) || "—");
    pay.disabled = clear.disabled = cartLines.length === 0;
    renderStock("all");
  }

  /** Runs one cart change; its answer is the cart to show. A failure leaves the cart as it was. */
  async function change(call: () => Promise<{ cart?: Cart }>): Promise<boolean> {
    try {
      const answer = await retried(call);
      cart = answer.cart;
      renderCart();
      return true;
    } catch (failure) {
      say(describe(failure), true);
      return false;
    }
  }

  async function add(sku: string): Promise<void> {
    if (await change(() => sales.addCartItem({ idempotencyKey: newKey(), storeId, terminalId, sku, quantity: 1n }))) {
      say(`Added ${products.get(sku)?.name ?? sku}`);
    }
  }

  async function scan(code: string): Promise<void> {
    if (busy) {
      say("Finish or cancel the payment before scanning", true);
      return;
    }
    const scanId = newKey();
    try {
      const answer = await retried(() => sales.scan({ storeId, terminalId, scanId, code, quantity: 0n }));
      cart = answer.cart;
      renderCart();
      if (answer.result.case === "line") say(`${answer.result.value.name}: ${answer.result.value.quantity} in cart`);
    } catch (failure) {
      say(`${code}: ${describe(failure)}`, true);
    }
  }

  async function startPayment(): Promise<void> {
    if (!cart?.total || busy) return;
    busy = true;
    try {
      const sale = await payDialog(cart.total, (tenders, key) =>
        retried(() => sales.checkout({ idempotencyKey: key, storeId, terminalId, lines: [], tenders })).then((a) => a.sale),
      );
      if (sale) {
        receiptDialog(sale, who?.displayName ?? "");
      }
    } finally {
      busy = false;
      await refreshCart();
      search.focus();
    }
  }

  async function refreshCart(): Promise<void> {
    await change(() => sales.getCart({ storeId, terminalId }));
  }

  async function loadProducts(): Promise<void> {
    for (const product of await allProducts()) products.set(product.sku, product);
    renderProducts();
  }


  search.addEventListener("input", renderProducts);
  search.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const text = search.value.trim();
    if (/^\d{6,14}$/.test(text)) {
      search.value = "";
      renderProducts();
      void scan(text);
      return;
    }
    const only = productList.querySelectorAll<HTMLButtonElement>("button.product");
    if (only.length === 1) {
      search.value = "";
      only[0].click();
      renderProducts();
    }
  });
  const stopStock = live.onChange(renderStock);
  const stopScans = listenForScans((code) => void scan(code));
  renderCart();
  loadProducts().catch((failure) => say(describe(failure), true));
  void refreshCart();
  search.focus();
  return () => {
    stopStock();
    stopScans();
  };
}
