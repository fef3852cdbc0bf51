-- Checkout batches of many stores in one statement per table (services/sales/src/pg/batch.rs), as
-- inventory's migration 0011: the `*_parts` functions keep migration 0009's arguments and answers,
-- scope the transaction to the batch's stores (platform.scope_to_stores), put every row in its own
-- part's store, and give the transaction its scope from before back when they are done. Row-level
-- security admits rows of the batch's stores only. Stores' sequence rows are locked in store id
-- order, and keys within a store in key order, as every batch takes them.

ALTER POLICY store_isolation ON sales.cart_items
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON sales.sales
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON sales.sale_stores
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON sales.refunds
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON sales.store_sequences
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON sales.outbox
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON sales.checkouts_reconciled
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));

-- Inserts sales under their idempotency keys (one part per store), in store and key order; a key
-- already taken in its store is skipped. Returns the keys inserted with their parts.
CREATE OR REPLACE FUNCTION sales.claim_sales_parts(
    p_stores TEXT[], p_ends INT[], p_status TEXT, p_ids TEXT[], p_terminals TEXT[], p_keys TEXT[],
    p_requests BYTEA[], p_from_cart BOOLEAN[], p_created_at_ms BIGINT[], p_bodies BYTEA[])
RETURNS TABLE (o_part INT, o_key TEXT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_before TEXT := platform.scope_to_stores(p_stores);
BEGIN
    RETURN QUERY
    INSERT INTO sales.sales AS s
        (sale_id, store_id, terminal_id, idempotency_key, request, from_cart, status, created_at_ms, body)
    SELECT u.id, p_stores[u.part], u.terminal, u.key, u.request, u.from_cart, p_status, u.created, u.body
    FROM unnest(platform.part_numbers(p_ends), p_ids, p_terminals, p_keys, p_requests, p_from_cart, p_created_at_ms,
                p_bodies) AS u (part, id, terminal, key, request, from_cart, created, body)
    ORDER BY p_stores[u.part], u.key
    ON CONFLICT (store_id, idempotency_key) DO NOTHING
    RETURNING array_position(p_stores, s.store_id::TEXT), s.idempotency_key;
    PERFORM set_config('redstore.store_id', v_before, true);
END
$$;

-- What every completed sale of a batch gets, in the caller's transaction scoped to the batch's
-- stores (p_parts: each sale's part of p_stores): its directory entry, the cart lines it sold
-- taken from their carts (p_cart_parts, p_cart_terminals, p_cart_skus, p_cart_quantities: one
-- entry per line of a sale of a cart) and its `sale.completed` event (p_event_ids, p_heads,
-- p_tails: one per sale, in order), numbered in its store under the store's sales sequence lock,
-- taken last, and spliced between its head and tail as migration 0005's record_completions does.
-- Returns the events written with their parts.
CREATE FUNCTION sales.record_completions_parts(
    p_stores TEXT[], p_parts INT[], p_ids TEXT[], p_occurred_at_ms BIGINT, p_event_ids UUID[], p_heads BYTEA[],
    p_tails BYTEA[], p_cart_parts INT[], p_cart_terminals TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS TABLE (o_part INT, o_event_id UUID, o_seq BIGINT, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
BEGIN
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO sales.sale_stores (sale_id, store_id)
    SELECT u.id, p_stores[u.part] FROM unnest(p_parts, p_ids) AS u (part, id);
    IF cardinality(p_cart_skus) > 0 THEN
        -- Planned on each use: these find cart lines (see migration 0005).
        EXECUTE 'WITH sold AS (
                     SELECT $1[u.part] AS store_id, u.terminal, u.sku, sum(u.quantity) AS quantity
                     FROM unnest($2::INT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[]) AS u (part, terminal, sku, quantity)
                     GROUP BY 1, 2, 3)
                 DELETE FROM sales.cart_items c USING sold
                 WHERE c.store_id = sold.store_id AND c.terminal_id = sold.terminal AND c.sku = sold.sku
                   AND c.quantity <= sold.quantity'
            USING p_stores, p_cart_parts, p_cart_terminals, p_cart_skus, p_cart_quantities;
        EXECUTE 'WITH sold AS (
                     SELECT $1[u.part] AS store_id, u.terminal, u.sku, sum(u.quantity) AS quantity
                     FROM unnest($2::INT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[]) AS u (part, terminal, sku, quantity)
                     GROUP BY 1, 2, 3)
                 UPDATE sales.cart_items c SET quantity = c.quantity - sold.quantity FROM sold
                 WHERE c.store_id = sold.store_id AND c.terminal_id = sold.terminal AND c.sku = sold.sku'
            USING p_stores, p_cart_parts, p_cart_terminals, p_cart_skus, p_cart_quantities;
    END IF;
    RETURN QUERY
    WITH counts AS (
        SELECT u.part, count(*) AS n FROM unnest(p_parts) AS u (part) GROUP BY u.part),
    heads AS (
        INSERT INTO sales.store_sequences AS q (store_id, last_seq)
        SELECT p_stores[c.part], c.n FROM counts c ORDER BY p_stores[c.part]
        ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq + excluded.last_seq
        RETURNING q.store_id, q.last_seq),
    numbered AS (
        SELECT u.part, u.id, u.head, u.tail,
               h.last_seq - c.n + row_number() OVER (PARTITION BY u.part ORDER BY u.k) AS seq
        FROM unnest(p_parts, p_event_ids, p_heads, p_tails) WITH ORDINALITY AS u (part, id, head, tail, k)
        JOIN counts c ON c.part = u.part
        JOIN heads h ON h.store_id = p_stores[u.part])
    INSERT INTO sales.outbox AS o (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
    SELECT n.id, p_stores[n.part], n.seq, 'sale.completed', p_occurred_at_ms,
           n.head || '\x20'::BYTEA || sales.pb_varint(n.seq) || n.tail
    FROM numbered n
    RETURNING array_position(p_stores, o.store_id), o.event_id, o.store_seq, o.body;
END
$$;

-- The group commit's completion (sales and inventory in one database and transaction): the batch's
-- sales went in `completed` already; this deletes those inventory refused (p_refused), writes the
-- bodies that changed (p_amended_ids with p_amended_bodies: negative skus), and gives the sales of
-- p_ids what record_completions_parts gives. Returns the events written with their parts.
CREATE OR REPLACE FUNCTION sales.record_completed_parts(
    p_stores TEXT[], p_refused_ends INT[], p_refused TEXT[], p_amended_ends INT[], p_amended_ids TEXT[],
    p_amended_bodies BYTEA[], p_id_ends INT[], p_ids TEXT[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[],
    p_cart_ends INT[], p_cart_terminals TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS TABLE (o_part INT, o_event_id UUID, o_seq BIGINT, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_before TEXT := platform.scope_to_stores(p_stores);
BEGIN
    IF cardinality(p_refused) > 0 THEN
        EXECUTE 'DELETE FROM sales.sales WHERE sale_id = ANY ($1)' USING p_refused;
    END IF;
    IF cardinality(p_amended_ids) > 0 THEN
        EXECUTE 'UPDATE sales.sales s SET body = u.body FROM unnest($1::TEXT[], $2::BYTEA[]) AS u (id, body)
                 WHERE s.sale_id = u.id' USING p_amended_ids, p_amended_bodies;
    END IF;
    RETURN QUERY SELECT * FROM sales.record_completions_parts(
        p_stores, platform.part_numbers(p_id_ends), p_ids, p_occurred_at_ms, p_event_ids, p_heads, p_tails,
        platform.part_numbers(p_cart_ends), p_cart_terminals, p_cart_skus, p_cart_quantities);
    PERFORM set_config('redstore.store_id', v_before, true);
END
$$;

-- Inserts the sales completed under their idempotency keys, in store and key order; a key or sale
-- id already recorded is skipped (a retry's, or the reconciler's). The sales inserted get what
-- record_completions_parts gives, without carts. Returns each inserted sale's part and id with its
-- event's sequence.
CREATE OR REPLACE FUNCTION sales.record_sales_parts(
    p_stores TEXT[], p_ends INT[], p_ids TEXT[], p_terminals TEXT[], p_keys TEXT[], p_requests BYTEA[],
    p_created_at_ms BIGINT[], p_bodies BYTEA[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[])
RETURNS TABLE (o_part INT, o_sale_id TEXT, o_seq BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_before    TEXT := platform.scope_to_stores(p_stores);
    v_parts     INT[];
    v_ids       TEXT[];
    v_event_ids UUID[];
    v_heads     BYTEA[];
    v_tails     BYTEA[];
BEGIN
    WITH inserted AS (
        INSERT INTO sales.sales
            (sale_id, store_id, terminal_id, idempotency_key, request, from_cart, status, created_at_ms, body)
        SELECT u.id, p_stores[u.part], u.terminal, u.key, u.request, false, 'completed', u.created, u.body
        FROM unnest(platform.part_numbers(p_ends), p_ids, p_terminals, p_keys, p_requests, p_created_at_ms, p_bodies)
            AS u (part, id, terminal, key, request, created, body)
        ORDER BY p_stores[u.part], u.key
        ON CONFLICT DO NOTHING
        RETURNING sale_id)
    SELECT array_agg(u.part ORDER BY u.n), array_agg(u.id ORDER BY u.n), array_agg(p_event_ids[u.n] ORDER BY u.n),
           array_agg(p_heads[u.n] ORDER BY u.n), array_agg(p_tails[u.n] ORDER BY u.n)
    INTO v_parts, v_ids, v_event_ids, v_heads, v_tails
    FROM inserted i JOIN unnest(platform.part_numbers(p_ends), p_ids) WITH ORDINALITY AS u (part, id, n)
        ON u.id = i.sale_id;
    IF v_ids IS NOT NULL THEN
        RETURN QUERY
        SELECT c.o_part, e.id, c.o_seq
        FROM sales.record_completions_parts(
            p_stores, v_parts, v_ids, p_occurred_at_ms, v_event_ids, v_heads, v_tails, '{}', '{}', '{}', '{}') AS c
        JOIN unnest(v_ids, v_event_ids) AS e (id, event_id) ON e.event_id = c.o_event_id;
    END IF;
    PERFORM set_config('redstore.store_id', v_before, true);
END
$$;

-- 0009's loops called these once per store; nothing else does.
DROP FUNCTION sales.claim_sales(TEXT, TEXT, TEXT[], TEXT[], TEXT[], BYTEA[], BOOLEAN[], BIGINT[], BYTEA[]);
DROP FUNCTION sales.record_completed(
    TEXT, TEXT[], TEXT[], BYTEA[], TEXT[], BIGINT, UUID[], BYTEA[], BYTEA[], TEXT[], TEXT[], BIGINT[]);
DROP FUNCTION sales.record_sales(TEXT, TEXT[], TEXT[], TEXT[], BYTEA[], BIGINT[], BYTEA[], BIGINT, UUID[], BYTEA[], BYTEA[]);
