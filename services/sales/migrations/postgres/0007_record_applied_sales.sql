-- A checkout with lines is recorded once inventory applied it, with no pending row before
-- (services/sales/src/pg/batch.rs): inventory knows the checkout by its key and keeps the sale, so
-- a retry or the reconciler (`PgSales::record_applied`) records what an interrupted attempt left
-- applied and unrecorded. One statement per batch, committing on its own.

-- Inserts the sales completed under their idempotency keys, in key order; a key or sale id already
-- recorded is skipped (a retry's, or the reconciler's). The sales inserted get what
-- record_completions (migration 0005) gives, without carts: their directory entries and
-- `sale.completed` events (p_event_ids, p_heads, p_tails: one per id of p_ids, in order). Returns
-- each inserted sale's id with its event's sequence.
CREATE FUNCTION sales.record_sales(
    p_store TEXT, p_ids TEXT[], p_terminals TEXT[], p_keys TEXT[], p_requests BYTEA[],
    p_created_at_ms BIGINT[], p_bodies BYTEA[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[])
RETURNS TABLE (o_sale_id TEXT, o_seq BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_ids       TEXT[];
    v_event_ids UUID[];
    v_heads     BYTEA[];
    v_tails     BYTEA[];
BEGIN
    PERFORM sales.scope_to(p_store);
    WITH inserted AS (
        INSERT INTO sales.sales
            (sale_id, store_id, terminal_id, idempotency_key, request, from_cart, status, created_at_ms, body)
        SELECT u.id, p_store, u.terminal, u.key, u.request, false, 'completed', u.created, u.body
        FROM unnest(p_ids, p_terminals, p_keys, p_requests, p_created_at_ms, p_bodies)
            AS u (id, terminal, key, request, created, body)
        ORDER BY u.key
        ON CONFLICT DO NOTHING
        RETURNING sale_id)
    SELECT array_agg(u.id ORDER BY u.n), array_agg(p_event_ids[u.n] ORDER BY u.n),
           array_agg(p_heads[u.n] ORDER BY u.n), array_agg(p_tails[u.n] ORDER BY u.n)
    INTO v_ids, v_event_ids, v_heads, v_tails
    FROM inserted i JOIN unnest(p_ids) WITH ORDINALITY AS u (id, n) ON u.id = i.sale_id;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT e.id, c.o_seq
    FROM sales.record_completions(p_store, v_ids, p_occurred_at_ms, v_event_ids, v_heads, v_tails, '{}', '{}', '{}') AS c
    JOIN unnest(v_ids, v_event_ids) AS e (id, event_id) ON e.event_id = c.o_event_id;
END
$$;

-- How far the reconciler has looked through each store's applied checkouts (inventory's
-- applied_at_ms): it records what it finds unrecorded before this time, then moves it on.
CREATE TABLE sales.checkouts_reconciled (
    store_id          TEXT PRIMARY KEY,
    applied_before_ms BIGINT NOT NULL
);
ALTER TABLE sales.checkouts_reconciled ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.checkouts_reconciled FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON sales.checkouts_reconciled
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));
