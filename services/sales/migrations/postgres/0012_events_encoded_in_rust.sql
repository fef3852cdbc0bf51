-- A `sale.completed` event is encoded whole in Rust, without its store sequence, which only the
-- outbox row's `store_seq` column holds: whoever reads an outbox body (the Kafka relay, a watcher's
-- catch-up, analytics' stall sweep) sets the envelope's sequence from that column. So no SQL
-- encodes protocol buffers or knows a field number: the functions below replace those that took
-- an event in two halves and spliced the sequence between them (sales.pb_varint, migration 0002).
-- The saga completing one sale calls complete_sales with that one, so complete_sale goes.
-- Events written before this migration carry their sequence in the body too; it is the same
-- number.

DROP FUNCTION sales.complete_sale(TEXT, TEXT, BYTEA, BOOLEAN, TEXT, UUID, BIGINT, BYTEA, BYTEA, TEXT[], BIGINT[]);
DROP FUNCTION sales.complete_sales(
    TEXT, TEXT[], TEXT[], BYTEA[], BIGINT, UUID[], BYTEA[], BYTEA[], TEXT[], TEXT[], BIGINT[]);
DROP FUNCTION sales.record_completions(TEXT, TEXT[], BIGINT, UUID[], BYTEA[], BYTEA[], TEXT[], TEXT[], BIGINT[]);
DROP FUNCTION sales.record_completed_parts(
    TEXT[], INT[], TEXT[], INT[], TEXT[], BYTEA[], INT[], TEXT[], BIGINT, UUID[], BYTEA[], BYTEA[],
    INT[], TEXT[], TEXT[], BIGINT[]);
DROP FUNCTION sales.record_sales_parts(
    TEXT[], INT[], TEXT[], TEXT[], TEXT[], BYTEA[], BIGINT[], BYTEA[], BIGINT, UUID[], BYTEA[], BYTEA[]);
DROP FUNCTION sales.record_completions_parts(
    TEXT[], INT[], TEXT[], BIGINT, UUID[], BYTEA[], BYTEA[], INT[], TEXT[], TEXT[], BIGINT[]);
DROP FUNCTION sales.pb_varint(BIGINT);
-- Only complete_sale and record_completions called it.
DROP FUNCTION sales.take_from_carts(TEXT, TEXT[], TEXT[], BIGINT[]);

-- What every completed sale of a batch gets, in the caller's transaction scoped to the batch's
-- stores (p_parts: each sale's part of p_stores): its directory entry, the cart lines it sold
-- taken from their carts (p_cart_parts, p_cart_terminals, p_cart_skus, p_cart_quantities: one
-- entry per line of a sale of a cart) and its `sale.completed` event (p_event_ids, p_events: one
-- per sale, in order), numbered in its store under the store's sales sequence lock, taken last.
-- Returns the events written with their parts and sequences.
CREATE FUNCTION sales.record_completions_parts(
    p_stores TEXT[], p_parts INT[], p_ids TEXT[], p_occurred_at_ms BIGINT, p_event_ids UUID[], p_events BYTEA[],
    p_cart_parts INT[], p_cart_terminals TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS TABLE (o_part INT, o_event_id UUID, o_seq BIGINT)
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
        SELECT u.part, u.id, u.event,
               h.last_seq - c.n + row_number() OVER (PARTITION BY u.part ORDER BY u.k) AS seq
        FROM unnest(p_parts, p_event_ids, p_events) WITH ORDINALITY AS u (part, id, event, k)
        JOIN counts c ON c.part = u.part
        JOIN heads h ON h.store_id = p_stores[u.part])
    INSERT INTO sales.outbox AS o (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
    SELECT n.id, p_stores[n.part], n.seq, 'sale.completed', p_occurred_at_ms, n.event
    FROM numbered n
    RETURNING array_position(p_stores, o.store_id), o.event_id, o.store_seq;
END
$$;

-- Completes the saga's pending sales of one store that inventory applied (p_ids with their final
-- bodies; a sale no longer pending, finished by a concurrent attempt, is left alone) and deletes
-- the pending sales inventory refused (p_refused). The sales completed get what
-- record_completions_parts gives, with their events (p_event_ids, p_events: one per id of p_ids)
-- and the cart lines they sold (p_cart_sales, p_cart_skus, p_cart_quantities: one entry per line of
-- a sale of a cart, by sale id). Returns the newest sequence written (NULL when none).
CREATE FUNCTION sales.complete_sales(
    p_store TEXT, p_refused TEXT[], p_ids TEXT[], p_bodies BYTEA[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_events BYTEA[], p_cart_sales TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS BIGINT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_done TEXT[];
    v_terminals TEXT[];
    v_from_cart BOOLEAN[];
    v_n BIGINT[];
    v_event_ids UUID[];
    v_events BYTEA[];
    v_cart_terminals TEXT[];
    v_cart_skus TEXT[];
    v_cart_quantities BIGINT[];
    v_newest BIGINT;
BEGIN
    PERFORM sales.scope_to(p_store);
    IF cardinality(p_refused) > 0 THEN
        EXECUTE 'DELETE FROM sales.sales WHERE sale_id = ANY ($1) AND status = ''pending''' USING p_refused;
    END IF;
    IF cardinality(p_ids) > 0 THEN
        EXECUTE 'WITH done AS (
                     UPDATE sales.sales s SET status = ''completed'', body = u.body
                     FROM unnest($1::TEXT[], $2::BYTEA[]) WITH ORDINALITY AS u (id, body, n)
                     WHERE s.sale_id = u.id AND s.status = ''pending''
                     RETURNING s.sale_id, s.terminal_id, s.from_cart, u.n)
                 SELECT array_agg(sale_id ORDER BY n), array_agg(terminal_id ORDER BY n),
                        array_agg(from_cart ORDER BY n), array_agg(n ORDER BY n)
                 FROM done'
            INTO v_done, v_terminals, v_from_cart, v_n USING p_ids, p_bodies;
    END IF;
    IF v_done IS NOT NULL THEN
        -- The events of the sales completed, in order, and the cart lines they sold.
        SELECT array_agg(p_event_ids[d.n] ORDER BY d.k), array_agg(p_events[d.n] ORDER BY d.k)
        INTO v_event_ids, v_events
        FROM unnest(v_n) WITH ORDINALITY AS d (n, k);
        SELECT coalesce(array_agg(d.terminal), '{}'), coalesce(array_agg(l.sku), '{}'),
               coalesce(array_agg(l.quantity), '{}')
        INTO v_cart_terminals, v_cart_skus, v_cart_quantities
        FROM unnest(v_done, v_terminals, v_from_cart) AS d (sale_id, terminal, from_cart)
        JOIN unnest(p_cart_sales, p_cart_skus, p_cart_quantities) AS l (sale_id, sku, quantity)
            ON l.sale_id = d.sale_id
        WHERE d.from_cart;
        SELECT max(c.o_seq) INTO v_newest FROM sales.record_completions_parts(
            ARRAY[p_store], array_fill(1, ARRAY[cardinality(v_done)]), v_done, p_occurred_at_ms, v_event_ids,
            v_events, array_fill(1, ARRAY[cardinality(v_cart_skus)]), v_cart_terminals, v_cart_skus,
            v_cart_quantities) AS c;
    END IF;
    RETURN v_newest;
END
$$;

-- The group commit's completion (sales and inventory in one database and transaction): the batch's
-- sales went in `completed` already; this deletes those inventory refused (p_refused), writes the
-- bodies that changed (p_amended_ids with p_amended_bodies: negative skus), and gives the sales of
-- p_ids what record_completions_parts gives. Returns the events written with their parts.
CREATE FUNCTION sales.record_completed_parts(
    p_stores TEXT[], p_refused_ends INT[], p_refused TEXT[], p_amended_ends INT[], p_amended_ids TEXT[],
    p_amended_bodies BYTEA[], p_id_ends INT[], p_ids TEXT[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_events BYTEA[],
    p_cart_ends INT[], p_cart_terminals TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS TABLE (o_part INT, o_event_id UUID, o_seq BIGINT)
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
        p_stores, platform.part_numbers(p_id_ends), p_ids, p_occurred_at_ms, p_event_ids, p_events,
        platform.part_numbers(p_cart_ends), p_cart_terminals, p_cart_skus, p_cart_quantities);
    PERFORM set_config('redstore.store_id', v_before, true);
END
$$;

-- Inserts the sales completed under their idempotency keys, in store and key order; a key or sale
-- id already recorded is skipped (a retry's, or the reconciler's). The sales inserted get what
-- record_completions_parts gives, without carts. Returns each inserted sale's part and id with its
-- event's sequence.
CREATE FUNCTION sales.record_sales_parts(
    p_stores TEXT[], p_ends INT[], p_ids TEXT[], p_terminals TEXT[], p_keys TEXT[], p_requests BYTEA[],
    p_created_at_ms BIGINT[], p_bodies BYTEA[], p_occurred_at_ms BIGINT, p_event_ids UUID[], p_events BYTEA[])
RETURNS TABLE (o_part INT, o_sale_id TEXT, o_seq BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    v_before    TEXT := platform.scope_to_stores(p_stores);
    v_sale_parts INT[] := platform.part_numbers(p_ends);
    v_parts     INT[];
    v_ids       TEXT[];
    v_event_ids UUID[];
    v_events    BYTEA[];
BEGIN
    WITH inserted AS (
        INSERT INTO sales.sales
            (sale_id, store_id, terminal_id, idempotency_key, request, from_cart, status, created_at_ms, body)
        SELECT u.id, p_stores[u.part], u.terminal, u.key, u.request, false, 'completed', u.created, u.body
        FROM unnest(v_sale_parts, p_ids, p_terminals, p_keys, p_requests, p_created_at_ms, p_bodies)
            AS u (part, id, terminal, key, request, created, body)
        ORDER BY p_stores[u.part], u.key
        ON CONFLICT DO NOTHING
        RETURNING sale_id)
    SELECT array_agg(u.part ORDER BY u.n), array_agg(u.id ORDER BY u.n), array_agg(p_event_ids[u.n] ORDER BY u.n),
           array_agg(p_events[u.n] ORDER BY u.n)
    INTO v_parts, v_ids, v_event_ids, v_events
    FROM inserted i JOIN unnest(v_sale_parts, p_ids) WITH ORDINALITY AS u (part, id, n)
        ON u.id = i.sale_id;
    IF v_ids IS NOT NULL THEN
        RETURN QUERY
        SELECT c.o_part, e.id, c.o_seq
        FROM sales.record_completions_parts(
            p_stores, v_parts, v_ids, p_occurred_at_ms, v_event_ids, v_events, '{}', '{}', '{}', '{}') AS c
        JOIN unnest(v_ids, v_event_ids) AS e (id, event_id) ON e.event_id = c.o_event_id;
    END IF;
    PERFORM set_config('redstore.store_id', v_before, true);
END
$$;
