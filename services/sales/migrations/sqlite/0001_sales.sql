-- Carts per (store, terminal), completed sales and refunds.
CREATE TABLE cart_items (
    id          INTEGER PRIMARY KEY,
    store_id    TEXT    NOT NULL,
    terminal_id TEXT    NOT NULL,
    sku         TEXT    NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    UNIQUE (store_id, terminal_id, sku)
);

-- The sale as the customer's receipt shows it is kept whole in `body` (a redstore.sales.v1.Sale).
CREATE TABLE sales (
    sale_id       TEXT PRIMARY KEY,
    store_id      TEXT    NOT NULL,
    terminal_id   TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    body          BLOB    NOT NULL
) WITHOUT ROWID;
CREATE INDEX sales_by_store ON sales (store_id, sale_id);

CREATE TABLE refunds (
    refund_id     TEXT PRIMARY KEY,
    sale_id       TEXT    NOT NULL REFERENCES sales (sale_id),
    created_at_ms INTEGER NOT NULL,
    body          BLOB    NOT NULL
) WITHOUT ROWID;
