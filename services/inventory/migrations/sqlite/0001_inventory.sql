-- Stores, terminals, the catalog with its barcodes, and stock per store.
CREATE TABLE stores (
    store_id        TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    oversell_policy TEXT NOT NULL CHECK (oversell_policy IN ('strict', 'allow_negative')),
    created_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE terminals (
    store_id    TEXT NOT NULL REFERENCES stores (store_id),
    terminal_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    PRIMARY KEY (store_id, terminal_id)
) WITHOUT ROWID;

CREATE TABLE products (
    sku           TEXT PRIMARY KEY,
    name          TEXT    NOT NULL,
    currency_code TEXT    NOT NULL,
    price_minor   INTEGER NOT NULL CHECK (price_minor >= 0),
    active        INTEGER NOT NULL DEFAULT 1,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE product_barcodes (
    gtin13 TEXT PRIMARY KEY,
    sku    TEXT NOT NULL REFERENCES products (sku)
) WITHOUT ROWID;
CREATE INDEX product_barcodes_sku ON product_barcodes (sku);

CREATE TABLE stock (
    store_id TEXT    NOT NULL REFERENCES stores (store_id),
    sku      TEXT    NOT NULL REFERENCES products (sku),
    quantity INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (store_id, sku)
) WITHOUT ROWID;
