-- Sales in the distributed shape: carts, sales (pending while the checkout saga runs, then
-- completed), refunds, per-store sequences and the transactional outbox. The migrator creates the
-- schema.
--
-- Keys that page (`key > $after ORDER BY key`) are COLLATE "C" so that they order bytewise, as
-- SQLite does, whatever the database's default collation.
--
-- Every table is store-owned and has row-level security, forced also for the table owner: a
-- transaction sees and changes only the rows of the store it was scoped to with
-- `set_config('redstore.store_id', .., true)` (platform::pg::store_tx). The one exception to
-- "sees only": `sale_stores`, the directory that says which store a sale id belongs to (get_sale
-- and refunds are addressed by sale id alone), is readable chain-wide; writing it is still
-- store-scoped.

CREATE TABLE sales.cart_items (
    id          BIGSERIAL PRIMARY KEY,
    store_id    TEXT COLLATE "C" NOT NULL,
    terminal_id TEXT COLLATE "C" NOT NULL,
    sku         TEXT COLLATE "C" NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    UNIQUE (store_id, terminal_id, sku)
);

-- A checkout is recorded 'pending' (with the sale as priced, in `body`) before inventory takes the
-- stock, and becomes 'completed' (with the final sale) after. `request` is the checkout's
-- idempotency fingerprint; the unique key makes one sale per (store, idempotency key).
CREATE TABLE sales.sales (
    sale_id         TEXT COLLATE "C" PRIMARY KEY,
    store_id        TEXT COLLATE "C" NOT NULL,
    terminal_id     TEXT COLLATE "C" NOT NULL,
    idempotency_key TEXT   NOT NULL,
    request         BYTEA  NOT NULL,
    from_cart       BOOLEAN NOT NULL DEFAULT false,
    status          TEXT   NOT NULL CHECK (status IN ('pending', 'completed')),
    created_at_ms   BIGINT NOT NULL,
    -- An encoded redstore.sales.v1.Sale.
    body            BYTEA  NOT NULL,
    UNIQUE (store_id, idempotency_key)
);
CREATE INDEX sales_completed_by_store ON sales.sales (store_id, sale_id) WHERE status = 'completed';
-- What the recovery of interrupted checkouts scans.
CREATE INDEX sales_pending_by_store ON sales.sales (store_id, created_at_ms) WHERE status = 'pending';

-- Which store a completed sale belongs to.
CREATE TABLE sales.sale_stores (
    sale_id  TEXT COLLATE "C" PRIMARY KEY,
    store_id TEXT COLLATE "C" NOT NULL
);

CREATE TABLE sales.refunds (
    refund_id     TEXT COLLATE "C" PRIMARY KEY,
    sale_id       TEXT COLLATE "C" NOT NULL REFERENCES sales.sales (sale_id),
    store_id      TEXT COLLATE "C" NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- An encoded redstore.sales.v1.Refund.
    body          BYTEA  NOT NULL
);
CREATE INDEX refunds_by_sale ON sales.refunds (sale_id);

-- The shapes platform::pg::{append_event, events_after, last_seq} expect.
CREATE TABLE sales.store_sequences (
    store_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

CREATE TABLE sales.outbox (
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
CREATE INDEX outbox_unsent ON sales.outbox (position) WHERE sent_at IS NULL;

ALTER TABLE sales.cart_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.cart_items FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON sales.cart_items
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

ALTER TABLE sales.sales ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.sales FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON sales.sales
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

ALTER TABLE sales.sale_stores ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.sale_stores FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON sales.sale_stores
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));
-- Permissive policies add up: any store may read the directory (sale id → store id only).
CREATE POLICY directory_read ON sales.sale_stores FOR SELECT USING (true);

ALTER TABLE sales.refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.refunds FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON sales.refunds
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

ALTER TABLE sales.store_sequences ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.store_sequences FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON sales.store_sequences
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

ALTER TABLE sales.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON sales.outbox
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));
