-- Chain-wide sweeps find the stores with unfinished work in one statement (platform migration
-- 0003, and the functions below) rather than a transaction in every store. They run as the
-- migrating role (SECURITY DEFINER), which row-level security, forced on these tables, would
-- show nothing: these policies let that role (not the application role) read them.
CREATE POLICY chain_sweep ON sales.store_sequences FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY chain_sweep ON sales.sales FOR SELECT TO CURRENT_USER USING (true);

-- The stores with a sale pending since p_before_ms or earlier (the partial index
-- sales_pending_by_store holds only pending sales): store ids only.
CREATE FUNCTION sales.stores_pending(p_before_ms BIGINT)
RETURNS SETOF TEXT
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, sales AS $$
    SELECT DISTINCT s.store_id::TEXT FROM sales.sales s
    WHERE s.status = 'pending' AND s.created_at_ms <= p_before_ms
$$;

-- The stores with a completed sale still keeping its checkout key from before p_before_ms (what
-- the key retention clears): one probe of sales_keyed_by_age per store that keeps keys, hourly.
CREATE FUNCTION sales.stores_keyed_before(p_before_ms BIGINT)
RETURNS SETOF TEXT
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, sales AS $$
    WITH RECURSIVE keyed (store_id) AS (
        (SELECT s.store_id FROM sales.sales s
         WHERE s.idempotency_key IS NOT NULL AND s.status = 'completed' ORDER BY s.store_id LIMIT 1)
        UNION ALL
        SELECT (SELECT s.store_id FROM sales.sales s
                WHERE s.idempotency_key IS NOT NULL AND s.status = 'completed' AND s.store_id > k.store_id
                ORDER BY s.store_id LIMIT 1)
        FROM keyed k WHERE k.store_id IS NOT NULL
    )
    SELECT k.store_id::TEXT FROM keyed k
    WHERE k.store_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM sales.sales s
        WHERE s.store_id = k.store_id AND s.idempotency_key IS NOT NULL AND s.status = 'completed'
          AND s.created_at_ms < p_before_ms)
$$;

-- The stores with a checkout applied in [p_from_ms, p_before_ms) (inventory migration 0010's index
-- by time) whose key no sale here has: what the reconciler must record. Reads the window's
-- checkouts and probes sales' unique (store, key) index for each; store ids only. PL/pgSQL, so
-- that a database holding sales alone (its own tests) can create it: inventory's table is looked
-- up when it runs.
CREATE FUNCTION sales.stores_unrecorded(p_from_ms BIGINT, p_before_ms BIGINT)
RETURNS SETOF TEXT
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, sales AS $$
BEGIN
    RETURN QUERY
        SELECT DISTINCT c.store_id::TEXT FROM inventory.checkouts c
        WHERE c.applied_at_ms >= p_from_ms AND c.applied_at_ms < p_before_ms
          AND NOT EXISTS (SELECT 1 FROM sales.sales s
                          WHERE s.store_id = c.store_id AND s.idempotency_key = c.checkout_key COLLATE "default");
END
$$;

-- How far the chain-wide reconciler has looked through inventory's applied checkouts (by
-- applied_at_ms): each look takes the stores with checkouts applied since, and reconciles those
-- alone (sales.checkouts_reconciled keeps each store's own mark). One row; a replica takes it
-- FOR UPDATE SKIP LOCKED, so one looks at a time.
CREATE TABLE sales.reconcile_sweep (
    one               BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    applied_before_ms BIGINT NOT NULL
);
INSERT INTO sales.reconcile_sweep (applied_before_ms) VALUES (0);
