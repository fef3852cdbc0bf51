-- Chain-wide sweeps find the stores with unfinished work in one statement (platform migration
-- 0003, and the functions below) rather than a transaction in every store. They run as the
-- migrating role (SECURITY DEFINER), which row-level security, forced on these tables, would
-- show nothing: these policies let that role (not the application role) read them.
CREATE POLICY chain_sweep ON inventory.store_sequences FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY chain_sweep ON inventory.checkouts FOR SELECT TO CURRENT_USER USING (true);

-- Checkouts by time across stores: sales' reconciler looks at the checkouts applied since its last
-- look, and the retention at the expired ones, reading only those rows.
CREATE INDEX checkouts_by_applied_at ON inventory.checkouts (applied_at_ms);

-- The stores with a checkout applied in [p_from_ms, p_before_ms): store ids only.
CREATE FUNCTION inventory.stores_applied_between(p_from_ms BIGINT, p_before_ms BIGINT)
RETURNS SETOF TEXT
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, inventory AS $$
    SELECT DISTINCT c.store_id::TEXT FROM inventory.checkouts c
    WHERE c.applied_at_ms >= p_from_ms AND c.applied_at_ms < p_before_ms
$$;
