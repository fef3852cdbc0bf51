-- A batch of many stores' sales in one statement per table (services/inventory/src/pg/batch.rs,
-- `decide_parts` and `PartsWrite`), instead of migration 0009's loop over the stores, which ran
-- every one-store statement once per store, each planned and started on its own: with a terminal
-- or two per store, that was most of a chain's checkout cost in PostgreSQL.
--
-- The functions keep 0009's arguments (each array flattened over the parts, with each part's end)
-- and answers. They scope the transaction to the batch's stores (platform.scope_to_stores,
-- platform migration 0004), every row they touch belongs to its own part's store, and row-level
-- security admits only rows of the batch's stores: a row of a store outside the batch is refused.
-- When they are done the transaction has its scope from before again. Stores' sequence rows are
-- locked in store id order, the order every batch takes them in, so batches queue instead of
-- deadlocking.

-- Row-level security by the transaction's set of stores (one store for every other transaction).
ALTER POLICY store_isolation ON inventory.terminals
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON inventory.stock
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON inventory.store_sequences
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON inventory.outbox
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));
ALTER POLICY store_isolation ON inventory.checkouts
    USING (store_id = ANY (platform.scoped_stores())) WITH CHECK (store_id = ANY (platform.scoped_stores()));

-- Rows, in any order, each of a part (o_part): the checkout keys of p_checkout_keys applied before
-- (o_checkout true, o_key the key, with the stored request and answer); the sale ids of p_keys
-- applied before in scope p_scope (o_checkout false); per store that exists, a header row
-- (o_last_seq, o_policy; o_sku NULL) taken under the store's sequence row lock; per sku of p_skus,
-- read once every lock is held: whether the product exists, is for sale, its price, and its stock
-- in the part's store (NULL: no stock row yet). The lookups plan afresh on each call: a plan cached
-- while the tables were nearly empty would walk them.
CREATE OR REPLACE FUNCTION inventory.lock_sales_parts(
    p_stores TEXT[], p_sku_ends INT[], p_skus TEXT[], p_scope TEXT, p_key_ends INT[], p_keys TEXT[],
    p_checkout_ends INT[], p_checkout_keys TEXT[])
RETURNS TABLE (o_part INT, o_key TEXT, o_request BYTEA, o_response BYTEA, o_last_seq BIGINT, o_policy TEXT,
               o_sku TEXT, o_known BOOLEAN, o_active BOOLEAN, o_currency TEXT, o_price BIGINT, o_quantity BIGINT,
               o_checkout BOOLEAN)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_before TEXT := platform.scope_to_stores(p_stores);
BEGIN
    IF cardinality(p_checkout_keys) > 0 THEN
        RETURN QUERY
            SELECT u.part, c.checkout_key::TEXT, c.request, c.answer, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                   NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, true
            FROM unnest(platform.part_numbers(p_checkout_ends), p_checkout_keys) AS u (part, key)
            JOIN inventory.checkouts c ON c.store_id = p_stores[u.part] AND c.checkout_key = u.key;
    END IF;
    IF cardinality(p_keys) > 0 THEN
        RETURN QUERY
            SELECT u.part, k.key, k.request, k.response, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                   NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, false
            FROM unnest(platform.part_numbers(p_key_ends), p_keys) AS u (part, key)
            JOIN platform.idempotency_keys k ON k.scope = p_scope AND k.key = u.key;
    END IF;
    RETURN QUERY
        WITH known AS (
            SELECT u.part::INT AS part, s.store_id, s.oversell_policy
            FROM unnest(p_stores) WITH ORDINALITY AS u (store_id, part)
            JOIN inventory.stores s ON s.store_id = u.store_id),
        locked AS (
            INSERT INTO inventory.store_sequences AS q (store_id, last_seq)
            SELECT k.store_id, 0 FROM known k ORDER BY k.store_id
            ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq
            RETURNING q.store_id, q.last_seq)
        SELECT k.part, NULL::TEXT, NULL::BYTEA, NULL::BYTEA, l.last_seq, k.oversell_policy, NULL::TEXT,
               NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BOOLEAN
        FROM known k JOIN locked l ON l.store_id = k.store_id;
    RETURN QUERY
        SELECT u.part, NULL::TEXT, NULL::BYTEA, NULL::BYTEA, NULL::BIGINT, NULL::TEXT, u.sku,
               p.sku IS NOT NULL, p.active, p.currency_code, p.price_minor, st.quantity, NULL::BOOLEAN
        FROM unnest(platform.part_numbers(p_sku_ends), p_skus) AS u (part, sku)
        LEFT JOIN inventory.products p ON p.sku = u.sku
        LEFT JOIN inventory.stock st ON st.store_id = p_stores[u.part] AND st.sku = u.sku;
    PERFORM set_config('redstore.store_id', v_before, true);
END
$$;

-- Writes the decided batches (arguments as migration 0009's): stock deltas, inventory.changed
-- events, the sale ids and checkout keys with their answers, each store's newest sequence. Returns
-- each written sku's part and quantity, for the caller to check against its decision. Every
-- statement inserts from its arguments (rows found through their ON CONFLICT unique indexes), so
-- it plans once per connection.
CREATE OR REPLACE FUNCTION inventory.write_sales_parts(
    p_stores TEXT[], p_sku_ends INT[], p_skus TEXT[], p_deltas BIGINT[], p_seqs BIGINT[], p_occurred_at_ms BIGINT,
    p_event_ends INT[], p_event_ids UUID[], p_event_seqs BIGINT[], p_bodies BYTEA[],
    p_scope TEXT, p_key_ends INT[], p_keys TEXT[], p_requests BYTEA[], p_answers BYTEA[], p_last_seqs BIGINT[],
    p_checkout_ends INT[], p_checkout_keys TEXT[], p_checkout_requests BYTEA[], p_checkout_answers BYTEA[])
RETURNS TABLE (o_part INT, o_sku TEXT, o_quantity BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_before TEXT := platform.scope_to_stores(p_stores);
BEGIN
    INSERT INTO inventory.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
    SELECT u.id, p_stores[u.part], u.seq, 'inventory.changed', p_occurred_at_ms, u.body
    FROM unnest(platform.part_numbers(p_event_ends), p_event_ids, p_event_seqs, p_bodies) AS u (part, id, seq, body);
    IF cardinality(p_keys) > 0 THEN
        INSERT INTO platform.idempotency_keys (scope, key, request, response)
        SELECT p_scope, u.key, u.request, u.response
        FROM unnest(p_keys, p_requests, p_answers) AS u (key, request, response);
    END IF;
    IF cardinality(p_checkout_keys) > 0 THEN
        INSERT INTO inventory.checkouts (store_id, checkout_key, request, answer, applied_at_ms)
        SELECT p_stores[u.part], u.key, u.request, u.answer, p_occurred_at_ms
        FROM unnest(platform.part_numbers(p_checkout_ends), p_checkout_keys, p_checkout_requests, p_checkout_answers)
            AS u (part, key, request, answer);
    END IF;
    INSERT INTO inventory.store_sequences AS q (store_id, last_seq)
    SELECT u.store_id, u.last_seq FROM unnest(p_stores, p_last_seqs) AS u (store_id, last_seq) ORDER BY u.store_id
    ON CONFLICT (store_id) DO UPDATE SET last_seq = excluded.last_seq WHERE q.last_seq < excluded.last_seq;
    RETURN QUERY
        INSERT INTO inventory.stock AS s (store_id, sku, quantity, last_seq)
        SELECT p_stores[u.part], u.sku, u.delta, u.seq
        FROM unnest(platform.part_numbers(p_sku_ends), p_skus, p_deltas, p_seqs) AS u (part, sku, delta, seq)
        ON CONFLICT (store_id, sku) DO UPDATE SET quantity = s.quantity + excluded.quantity, last_seq = excluded.last_seq
        RETURNING array_position(p_stores, s.store_id::TEXT), s.sku::TEXT, s.quantity;
    PERFORM set_config('redstore.store_id', v_before, true);
END
$$;

-- 0009's loop called these once per store; nothing else does.
DROP FUNCTION inventory.lock_sales(TEXT, TEXT[], TEXT, TEXT[], TEXT[]);
DROP FUNCTION inventory.write_sales(
    TEXT, TEXT[], BIGINT[], BIGINT[], BIGINT, UUID[], BIGINT[], BYTEA[], TEXT, TEXT[], BYTEA[], BYTEA[], BIGINT,
    TEXT[], BYTEA[], BYTEA[]);
