-- Per-minute rollups of sale and refund events; reports at minute, hour and day read these.
CREATE TABLE analytics_minute (
    store_id       TEXT    NOT NULL,
    minute_ms      INTEGER NOT NULL,
    currency_code  TEXT    NOT NULL,
    sales_count    INTEGER NOT NULL DEFAULT 0,
    units_sold     INTEGER NOT NULL DEFAULT 0,
    gross_minor    INTEGER NOT NULL DEFAULT 0,
    refund_count   INTEGER NOT NULL DEFAULT 0,
    units_refunded INTEGER NOT NULL DEFAULT 0,
    refunds_minor  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, minute_ms, currency_code)
) WITHOUT ROWID;

CREATE TABLE analytics_product_minute (
    store_id       TEXT    NOT NULL,
    minute_ms      INTEGER NOT NULL,
    sku            TEXT    NOT NULL,
    currency_code  TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    units_sold     INTEGER NOT NULL DEFAULT 0,
    units_refunded INTEGER NOT NULL DEFAULT 0,
    net_minor      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, minute_ms, sku, currency_code)
) WITHOUT ROWID;

-- Event ids already counted: a redelivered event is a no-op.
CREATE TABLE analytics_processed (
    event_id TEXT PRIMARY KEY
) WITHOUT ROWID;
