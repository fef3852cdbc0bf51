-- Checkout batches' writes as functions.
--
-- * One round trip per saga step: recording a batch's sales as pending and completing them each
--   took three (BEGIN with the store scope, the statement, COMMIT). These functions scope
--   themselves to the store, so each step is one statement that commits on its own; called inside
--   a transaction they join it, as complete_sale does.
-- * Planned once per connection where no plan can go wrong: the connections plan every statement
--   afresh (plan_cache_mode=force_custom_plan, see platform::pg::connect), which for the batch's
--   writes cost as much as running them. These functions plan once (`auto`) the statements that
--   only insert from their arguments. A statement that finds rows (the update of the saga's pending
--   sales, the rare delete of refused ones) runs through EXECUTE, planned on each use: a plan
--   cached while a table was nearly empty walks a store's every row through the row-level-security
--   qual (store_id = …) once the table has grown, measured at five times the cost. keyed_sales is
--   a lookup, custom-planned likewise; so is take_from_carts when these call it.
--
-- All run as the caller (row-level security applies) and refuse to re-scope a transaction that is
-- scoped to another store.

CREATE FUNCTION sales.scope_to(p_store TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
BEGIN
    IF coalesce(current_setting('redstore.store_id', true), '') NOT IN ('', p_store) THEN
        RAISE EXCEPTION 'store % in a transaction scoped to another store', p_store;
    END IF;
    PERFORM set_config('redstore.store_id', p_store, true);
END
$$;

-- Inserts sales under their idempotency keys, in key order (so that concurrent batches wait for
-- each other instead of deadlocking); a key already taken is skipped. Returns the keys inserted.
CREATE FUNCTION sales.claim_sales(
    p_store TEXT, p_status TEXT, p_ids TEXT[], p_terminals TEXT[], p_keys TEXT[], p_requests BYTEA[],
    p_from_cart BOOLEAN[], p_created_at_ms BIGINT[], p_bodies BYTEA[])
RETURNS SETOF TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
BEGIN
    PERFORM sales.scope_to(p_store);
    RETURN QUERY
    INSERT INTO sales.sales
        (sale_id, store_id, terminal_id, idempotency_key, request, from_cart, status, created_at_ms, body)
    SELECT u.id, p_store, u.terminal, u.key, u.request, u.from_cart, p_status, u.created, u.body
    FROM unnest(p_ids, p_terminals, p_keys, p_requests, p_from_cart, p_created_at_ms, p_bodies)
        AS u (id, terminal, key, request, from_cart, created, body)
    ORDER BY u.key
    ON CONFLICT (store_id, idempotency_key) DO NOTHING
    RETURNING idempotency_key;
END
$$;

-- The sales these idempotency keys point at.
CREATE FUNCTION sales.keyed_sales(p_store TEXT, p_keys TEXT[])
RETURNS TABLE (o_key TEXT, o_sale_id TEXT, o_request BYTEA, o_completed BOOLEAN, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
BEGIN
    PERFORM sales.scope_to(p_store);
    RETURN QUERY
    SELECT s.idempotency_key, s.sale_id, s.request, s.status = 'completed', s.body FROM sales.sales s
    WHERE s.store_id = p_store AND s.idempotency_key = ANY (p_keys);
END
$$;

-- What every completed sale of a batch gets, in the caller's transaction (scoped to the store):
-- its directory entry (p_ids), the cart lines it sold taken from their carts (p_cart_terminals,
-- p_cart_skus, p_cart_quantities: one entry per line of a sale of a cart) and its
-- `sale.completed` event (p_event_ids, p_heads, p_tails: one per id of p_ids, in order), numbered
-- under the store's sales sequence lock, taken last, and spliced between its head and tail.
-- Returns the events written.
CREATE FUNCTION sales.record_completions(
    p_store TEXT, p_ids TEXT[], p_occurred_at_ms BIGINT, p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[],
    p_cart_terminals TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS TABLE (o_event_id UUID, o_seq BIGINT, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_n BIGINT := cardinality(p_ids);
BEGIN
    PERFORM sales.scope_to(p_store);
    IF v_n = 0 THEN
        RETURN;
    END IF;
    INSERT INTO sales.sale_stores (sale_id, store_id) SELECT unnest(p_ids), p_store;
    IF cardinality(p_cart_skus) > 0 THEN
        PERFORM sales.take_from_carts(p_store, p_cart_terminals, p_cart_skus, p_cart_quantities);
    END IF;
    RETURN QUERY
    WITH seq AS (
        INSERT INTO sales.store_sequences AS q (store_id, last_seq) VALUES (p_store, v_n)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq + excluded.last_seq
        RETURNING q.last_seq - v_n AS base)
    INSERT INTO sales.outbox AS o (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
    SELECT u.id, p_store, seq.base + u.n, 'sale.completed', p_occurred_at_ms,
           u.head || '\x20'::BYTEA || sales.pb_varint(seq.base + u.n) || u.tail
    FROM seq, unnest(p_event_ids, p_heads, p_tails) WITH ORDINALITY AS u (id, head, tail, n)
    RETURNING o.event_id, o.store_seq, o.body;
END
$$;

-- Completes the saga's pending sales inventory applied (p_ids with their final bodies; a sale no
-- longer pending, finished by a concurrent attempt, is left alone) and deletes the pending sales
-- inventory refused (p_refused). The sales completed get what record_completions gives, with
-- their events (p_event_ids, p_heads, p_tails: one per id of p_ids) and the cart lines they sold
-- (p_cart_sales, p_cart_skus, p_cart_quantities: one entry per line of a sale of a cart, by sale
-- id). Returns the newest sequence written (NULL when none).
CREATE FUNCTION sales.complete_sales(
    p_store TEXT, p_refused TEXT[], p_ids TEXT[], p_bodies BYTEA[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[],
    p_cart_sales TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS BIGINT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_done TEXT[];
    v_terminals TEXT[];
    v_from_cart BOOLEAN[];
    v_n BIGINT[];
    v_event_ids UUID[];
    v_heads BYTEA[];
    v_tails BYTEA[];
    v_cart_terminals TEXT[];
    v_cart_skus TEXT[];
    v_cart_quantities BIGINT[];
BEGIN
    PERFORM sales.scope_to(p_store);
    IF cardinality(p_refused) > 0 THEN
        EXECUTE 'DELETE FROM sales.sales WHERE sale_id = ANY ($1) AND status = ''pending''' USING p_refused;
    END IF;
    IF cardinality(p_ids) = 0 THEN
        RETURN NULL;
    END IF;
    EXECUTE 'WITH done AS (
                 UPDATE sales.sales s SET status = ''completed'', body = u.body
                 FROM unnest($1::TEXT[], $2::BYTEA[]) WITH ORDINALITY AS u (id, body, n)
                 WHERE s.sale_id = u.id AND s.status = ''pending''
                 RETURNING s.sale_id, s.terminal_id, s.from_cart, u.n)
             SELECT array_agg(sale_id ORDER BY n), array_agg(terminal_id ORDER BY n),
                    array_agg(from_cart ORDER BY n), array_agg(n ORDER BY n)
             FROM done'
        INTO v_done, v_terminals, v_from_cart, v_n USING p_ids, p_bodies;
    IF v_done IS NULL THEN
        RETURN NULL;
    END IF;
    -- The events of the sales completed, in order, and the cart lines they sold.
    SELECT array_agg(p_event_ids[d.n] ORDER BY d.k), array_agg(p_heads[d.n] ORDER BY d.k),
           array_agg(p_tails[d.n] ORDER BY d.k)
    INTO v_event_ids, v_heads, v_tails
    FROM unnest(v_n) WITH ORDINALITY AS d (n, k);
    SELECT coalesce(array_agg(d.terminal), '{}'), coalesce(array_agg(l.sku), '{}'), coalesce(array_agg(l.quantity), '{}')
    INTO v_cart_terminals, v_cart_skus, v_cart_quantities
    FROM unnest(v_done, v_terminals, v_from_cart) AS d (sale_id, terminal, from_cart)
    JOIN unnest(p_cart_sales, p_cart_skus, p_cart_quantities) AS l (sale_id, sku, quantity) ON l.sale_id = d.sale_id
    WHERE d.from_cart;
    RETURN (SELECT max(c.o_seq) FROM sales.record_completions(
        p_store, v_done, p_occurred_at_ms, v_event_ids, v_heads, v_tails,
        v_cart_terminals, v_cart_skus, v_cart_quantities) AS c);
END
$$;

-- The group commit's completion (sales and inventory in one database and transaction): the batch's
-- sales went in `completed` already; this deletes those inventory refused (p_refused), writes the
-- bodies that changed (p_amended_ids with p_amended_bodies: negative skus), and gives the sales of
-- p_ids what record_completions gives (the other arguments are its). Returns the events written.
CREATE FUNCTION sales.record_completed(
    p_store TEXT, p_refused TEXT[], p_amended_ids TEXT[], p_amended_bodies BYTEA[], p_ids TEXT[],
    p_occurred_at_ms BIGINT, p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[],
    p_cart_terminals TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS TABLE (o_event_id UUID, o_seq BIGINT, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
BEGIN
    PERFORM sales.scope_to(p_store);
    IF cardinality(p_refused) > 0 THEN
        EXECUTE 'DELETE FROM sales.sales WHERE sale_id = ANY ($1)' USING p_refused;
    END IF;
    IF cardinality(p_amended_ids) > 0 THEN
        EXECUTE 'UPDATE sales.sales s SET body = u.body FROM unnest($1::TEXT[], $2::BYTEA[]) AS u (id, body)
                 WHERE s.sale_id = u.id' USING p_amended_ids, p_amended_bodies;
    END IF;
    RETURN QUERY SELECT * FROM sales.record_completions(
        p_store, p_ids, p_occurred_at_ms, p_event_ids, p_heads, p_tails,
        p_cart_terminals, p_cart_skus, p_cart_quantities);
END
$$;

-- Custom plans for take_from_carts whatever its caller set (it finds cart lines).
ALTER FUNCTION sales.take_from_carts(TEXT, TEXT[], TEXT[], BIGINT[]) SET plan_cache_mode = force_custom_plan;
