-- The last step of the checkout saga as one server-side function, so that it is one round trip and
-- one transaction that commits as the call returns: the store's sequence lock, taken inside, is
-- then held for no round trip to the client. It runs as the caller (SECURITY INVOKER), and scopes
-- its own transaction to the store as platform::pg::store_tx does, so row-level security applies.

-- A varint (protocol buffers); a negative int64 takes ten bytes (its 64-bit two's complement).
CREATE FUNCTION sales.pb_varint(v BIGINT) RETURNS BYTEA
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    r BYTEA := ''::BYTEA;
BEGIN
    IF v < 0 THEN
        FOR i IN 0 .. 8 LOOP
            r := r || set_byte('\x00'::BYTEA, 0, (((v >> (7 * i)) & 127) | 128)::INT);
        END LOOP;
        RETURN r || '\x01'::BYTEA;
    END IF;
    LOOP
        IF v < 128 THEN
            RETURN r || set_byte('\x00'::BYTEA, 0, v::INT);
        END IF;
        r := r || set_byte('\x00'::BYTEA, 0, ((v & 127) | 128)::INT);
        v := v >> 7;
    END LOOP;
END
$$;

-- Completes a pending sale whose stock inventory has taken: the sale `completed` with its final
-- body, its directory entry, the cart it came from cleared, the store's next sequence and the
-- `sale.completed` event with it. Only a sale still pending is completed, so of concurrent
-- attempts exactly one does all this and the others change nothing (no row returned).
--
-- The event is encoded by the caller but for its sequence: p_head is EventEnvelope fields 1–3
-- (event id, type, store id), p_tail the fields after 4 (occurred_at, payload); this splices in
-- field 4 (store_seq, a varint), as prost would encode it. Returns the sequence and the body.
CREATE FUNCTION sales.complete_sale(
    p_store TEXT, p_sale_id TEXT, p_sale BYTEA, p_from_cart BOOLEAN, p_terminal TEXT,
    p_event_id UUID, p_occurred_at_ms BIGINT, p_head BYTEA, p_tail BYTEA)
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
        DELETE FROM sales.cart_items c WHERE c.store_id = p_store AND c.terminal_id = p_terminal;
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
