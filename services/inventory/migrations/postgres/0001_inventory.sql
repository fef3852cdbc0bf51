-- Inventory in the distributed shape: stores, terminals, the catalog with its barcodes, stock per
-- store, per-store sequences and the transactional outbox. The migrator creates the schema.
--
-- Keys are COLLATE "C" so that `key > $after ORDER BY key` pages in byte order, as SQLite does,
-- whatever the database's default collation. Money is integer minor units.
--
-- Store-owned tables (terminals, stock, store_sequences, outbox) have row-level security, forced
-- also for the table owner: a transaction sees and changes only the rows of the store it was
-- scoped to with `set_config('redstore.store_id', .., true)` (platform::pg::store_tx). Stores,
-- products and barcodes are chain-wide.

CREATE TABLE inventory.stores (
    store_id        TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT   NOT NULL,
    oversell_policy TEXT   NOT NULL CHECK (oversell_policy IN ('strict', 'allow_negative')),
    created_at_ms   BIGINT NOT NULL
);

CREATE TABLE inventory.terminals (
    store_id    TEXT COLLATE "C" NOT NULL REFERENCES inventory.stores (store_id),
    terminal_id TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    PRIMARY KEY (store_id, terminal_id)
);

CREATE TABLE inventory.products (
    sku           TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT    NOT NULL,
    currency_code TEXT    NOT NULL,
    price_minor   BIGINT  NOT NULL CHECK (price_minor >= 0),
    active        BOOLEAN NOT NULL DEFAULT true,
    updated_at_ms BIGINT  NOT NULL
);

CREATE TABLE inventory.product_barcodes (
    gtin13 TEXT COLLATE "C" PRIMARY KEY,
    sku    TEXT COLLATE "C" NOT NULL REFERENCES inventory.products (sku)
);
CREATE INDEX product_barcodes_sku ON inventory.product_barcodes (sku);

CREATE TABLE inventory.stock (
    store_id TEXT COLLATE "C" NOT NULL REFERENCES inventory.stores (store_id),
    sku      TEXT COLLATE "C" NOT NULL REFERENCES inventory.products (sku),
    quantity BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (store_id, sku)
);

-- The shapes platform::pg::{next_seq, append_event_at, events_after, last_seq} expect.
CREATE TABLE inventory.store_sequences (
    store_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

CREATE TABLE inventory.outbox (
    position       BIGSERIAL PRIMARY KEY,
    event_id       UUID   NOT NULL UNIQUE,
    store_id       TEXT   NOT NULL,
    store_seq      BIGINT NOT NULL,
    event_type     TEXT   NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    body           BYTEA  NOT NULL,
    sent_at        TIMESTAMPTZ,
    UNIQUE (store_id, store_seq)
);
-- What the relay scans: unsent events in commit order.
CREATE INDEX outbox_unsent ON inventory.outbox (position) WHERE sent_at IS NULL;

ALTER TABLE inventory.terminals ENABLE ROW LEVEL SECURITY;
ALTER TABLE inventory.terminals FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON inventory.terminals
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

ALTER TABLE inventory.stock ENABLE ROW LEVEL SECURITY;
ALTER TABLE inventory.stock FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON inventory.stock
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

ALTER TABLE inventory.store_sequences ENABLE ROW LEVEL SECURITY;
ALTER TABLE inventory.store_sequences FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON inventory.store_sequences
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

ALTER TABLE inventory.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE inventory.outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON inventory.outbox
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));
