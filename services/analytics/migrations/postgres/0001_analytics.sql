-- Per-minute rollups of sale and refund events, consumed from the sales outbox.
CREATE TABLE analytics.minute (
    store_id       TEXT   NOT NULL,
    minute_ms      BIGINT NOT NULL,
    currency_code  TEXT   NOT NULL,
    sales_count    BIGINT NOT NULL DEFAULT 0,
    units_sold     BIGINT NOT NULL DEFAULT 0,
    gross_minor    BIGINT NOT NULL DEFAULT 0,
    refund_count   BIGINT NOT NULL DEFAULT 0,
    units_refunded BIGINT NOT NULL DEFAULT 0,
    refunds_minor  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, minute_ms, currency_code)
);

CREATE TABLE analytics.product_minute (
    store_id       TEXT   NOT NULL,
    minute_ms      BIGINT NOT NULL,
    sku            TEXT   NOT NULL,
    currency_code  TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    units_sold     BIGINT NOT NULL DEFAULT 0,
    units_refunded BIGINT NOT NULL DEFAULT 0,
    net_minor      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, minute_ms, sku, currency_code)
);

-- Event ids already counted: a redelivered event is a no-op.
CREATE TABLE analytics.processed (
    event_id UUID PRIMARY KEY,
    store_id TEXT NOT NULL
);

ALTER TABLE analytics.minute ENABLE ROW LEVEL SECURITY;
ALTER TABLE analytics.minute FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON analytics.minute
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));
ALTER TABLE analytics.product_minute ENABLE ROW LEVEL SECURITY;
ALTER TABLE analytics.product_minute FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON analytics.product_minute
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));
ALTER TABLE analytics.processed ENABLE ROW LEVEL SECURITY;
ALTER TABLE analytics.processed FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON analytics.processed
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));
