-- A completed sale keeps its checkout's idempotency key (and the request's fingerprint) for the
-- key retention (platform::retention, at least 7 days); then both are cleared and a retry with the
-- key is a new checkout. The partial index holds only the keys still kept, so the cleanup reads
-- what it clears and nothing else.
ALTER TABLE sales.sales ALTER COLUMN idempotency_key DROP NOT NULL, ALTER COLUMN request DROP NOT NULL;
CREATE INDEX sales_keyed_by_age ON sales.sales (store_id, created_at_ms)
    WHERE idempotency_key IS NOT NULL AND status = 'completed';
