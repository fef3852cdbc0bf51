-- A completed checkout of a cart takes from the cart exactly what it sold, no longer the whole
-- cart: an item scanned while the checkout was under way (in the saga, while inventory was being
-- asked) stays in the cart for the next sale instead of vanishing unsold. A line sold whole goes;
-- a line scanned again meanwhile keeps the units added.
--
-- p_terminals, p_skus and p_quantities are parallel: one entry per sold line (a terminal's cart
-- may appear several times). Runs as the caller: row-level security applies.
CREATE FUNCTION sales.take_from_carts(p_store TEXT, p_terminals TEXT[], p_skus TEXT[], p_quantities BIGINT[])
RETURNS BIGINT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    v_gone BIGINT;
    v_left BIGINT;
BEGIN
    WITH sold AS (
        SELECT u.terminal, u.sku, sum(u.quantity) AS quantity
        FROM unnest(p_terminals, p_skus, p_quantities) AS u (terminal, sku, quantity)
        GROUP BY u.terminal, u.sku)
    DELETE FROM sales.cart_items c USING sold
    WHERE c.store_id = p_store AND c.terminal_id = sold.terminal AND c.sku = sold.sku AND c.quantity <= sold.quantity;
    GET DIAGNOSTICS v_gone = ROW_COUNT;
    WITH sold AS (
        SELECT u.terminal, u.sku, sum(u.quantity) AS quantity
        FROM unnest(p_terminals, p_skus, p_quantities) AS u (terminal, sku, quantity)
        GROUP BY u.terminal, u.sku)
    UPDATE sales.cart_items c SET quantity = c.quantity - sold.quantity FROM sold
    WHERE c.store_id = p_store AND c.terminal_id = sold.terminal AND c.sku = sold.sku;
    GET DIAGNOSTICS v_left = ROW_COUNT;
    RETURN v_gone + v_left;
END
$$;

-- complete_sale (0002) with the sold lines, taken from the cart as above.
DROP FUNCTION sales.complete_sale(TEXT, TEXT, BYTEA, BOOLEAN, TEXT, UUID, BIGINT, BYTEA, BYTEA);
CREATE FUNCTION sales.complete_sale(
    p_store TEXT, p_sale_id TEXT, p_sale BYTEA, p_from_cart BOOLEAN, p_terminal TEXT,
    p_event_id UUID, p_occurred_at_ms BIGINT, p_head BYTEA, p_tail BYTEA,
    p_skus TEXT[], p_quantities BIGINT[])
RETURNS TABLE (o_seq BIGINT, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    v_seq  BIGINT;
    v_body BYTEA;
BEGIN
    -- Never re-scope a transaction that is scoped to another store already.
    IF coalesce(current_setting('redstore.store_id', true), '') NOT IN ('', p_store) THEN
        RAISE EXCEPTION 'sales.complete_sale for store % in a transaction scoped to another store', p_store;
    END IF;
    PERFORM set_config('redstore.store_id', p_store, true);
    UPDATE sales.sales s SET status = 'completed', body = p_sale WHERE s.sale_id = p_sale_id AND s.status = 'pending';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO sales.sale_stores (sale_id, store_id) VALUES (p_sale_id, p_store) ON CONFLICT DO NOTHING;
    IF p_from_cart THEN
        PERFORM sales.take_from_carts(p_store, array_fill(p_terminal, ARRAY[cardinality(p_skus)]), p_skus, p_quantities);
    END IF;
    -- Last: the store's sequence row lock, held only until the commit that follows the call.
    INSERT INTO sales.store_sequences AS q (store_id, last_seq) VALUES (p_store, 1)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq + 1
        RETURNING q.last_seq INTO v_seq;
    v_body := p_head || '\x20'::BYTEA || sales.pb_varint(v_seq) || p_tail;
    INSERT INTO sales.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
        VALUES (p_event_id, p_store, v_seq, 'sale.completed', p_occurred_at_ms, v_body);
    RETURN QUERY SELECT v_seq, v_body;
END
$$;
