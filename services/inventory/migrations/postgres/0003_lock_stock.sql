-- The locking read of the checkout group commit (services/inventory/src/pg/batch.rs) as one round
-- trip: takes the store's sequence row lock, which every stock writer of the store holds while it
-- reads and changes that store's stock, and only then reads the stock of the skus asked for. In a
-- VOLATILE function each statement takes a new snapshot, so the read sees every change committed
-- before the lock was granted. Runs as the caller (SECURITY INVOKER): row-level security applies;
-- call it in a transaction scoped to the store.
--
-- Rows: none when the store does not exist; else first a header row (the store's last sequence and
-- its oversell policy; sku NULL), then one row per sku asked for: whether the product exists, and
-- its stock in the store (NULL: no stock row yet).
CREATE FUNCTION inventory.lock_stock(p_store TEXT, p_skus TEXT[])
RETURNS TABLE (o_last_seq BIGINT, o_policy TEXT, o_sku TEXT, o_known BOOLEAN, o_quantity BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    v_policy TEXT;
    v_seq    BIGINT;
BEGIN
    SELECT s.oversell_policy INTO v_policy FROM inventory.stores s WHERE s.store_id = p_store;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO inventory.store_sequences AS q (store_id, last_seq) VALUES (p_store, 0)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq
        RETURNING q.last_seq INTO v_seq;
    RETURN QUERY SELECT v_seq, v_policy, NULL::TEXT, NULL::BOOLEAN, NULL::BIGINT;
    RETURN QUERY
        SELECT v_seq, v_policy, u.sku, EXISTS (SELECT 1 FROM inventory.products p WHERE p.sku = u.sku), st.quantity
        FROM unnest(p_skus) AS u (sku)
        LEFT JOIN inventory.stock st ON st.store_id = p_store AND st.sku = u.sku;
END
$$;
