// The chain's products as the screens show them: loaded whole (page by page), and searched the
// same way on the till and the stock list.

import type { Product } from "../gen/redstore/inventory/v1/inventory_pb";
import { inventory, retried } from "./api";

/** Every product of the chain, in sku order. */
export async function allProducts(): Promise<Product[]> {
  const products: Product[] = [];
  let pageToken = "";
  do {
    const answer = await retried(() => inventory.listProducts({ page: { pageSize: 500, pageToken } }));
    products.push(...answer.products);
    pageToken = answer.page?.nextPageToken ?? "";
  } while (pageToken);
  return products;
}

/** The products whose name or sku holds what was typed, or one of whose barcodes starts with it;
 * all of them for nothing typed. */
export function search(products: Iterable<Product>, typed: string): Product[] {
  const query = typed.trim().toLowerCase();
  return [...products].filter(
    (p) => !query || p.name.toLowerCase().includes(query) || p.sku.toLowerCase().includes(query) || p.barcodes.some((b) => b.startsWith(query)),
  );
}
