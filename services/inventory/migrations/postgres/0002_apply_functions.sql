-- Server-side steps of the hot paths, so that each is one round trip instead of one per statement.
-- They run as the caller (SECURITY INVOKER): row-level security applies to them exactly as to the
-- statements they replace.

-- Protocol-buffers helpers for apply_movements, which writes the outbox event and the key's
-- answer itself (so that the store's sequence lock is held for no further round trip). The caller
-- encodes every part that does not depend on the sequence or the quantities; these add the rest,
-- canonically (fields in number order, defaults omitted), as prost would.

-- A varint; a negative int64 takes ten bytes (its 64-bit two's complement).
CREATE FUNCTION inventory.pb_varint(v BIGINT) RETURNS BYTEA
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

-- A length-delimited field: its tag byte, the length, the bytes.
CREATE FUNCTION inventory.pb_len(tag INTEGER, b BYTEA) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT set_byte('\x00'::BYTEA, 0, tag) || inventory.pb_varint(length(b)) || b
$$;

-- A varint field (its tag byte and value), omitted when the value is 0 as proto3 does.
CREATE FUNCTION inventory.pb_int(tag INTEGER, v BIGINT) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN v = 0 THEN ''::BYTEA ELSE set_byte('\x00'::BYTEA, 0, tag) || inventory.pb_varint(v) END
$$;

-- Claims the idempotency key of a change, checks the store and the skus, takes the store's next
-- sequence (row-locking the store's sequence row first, which serialises the store's stock
-- writers), applies the movements in order, each as one conditional UPDATE (strict stores:
-- `quantity + delta >= 0`), never read-modify-write, then appends the `inventory.changed` event to
-- the outbox and stores the key's answer. It scopes its transaction to the store itself (as
-- platform::pg::store_tx does), so that it can be called on its own, in autocommit: the whole
-- change is then one round trip and one transaction, committed as soon as the function returns —
-- the store's sequence lock is held for no round trip to the client. The caller then notifies.
--
-- The event and the answer are assembled from parts the caller encoded:
--   p_env_head  EventEnvelope fields 1–3 (event id, type, store id);
--   p_env_mid   EventEnvelope field 5 (occurred_at);
--   p_ic_head   InventoryChanged fields 1–3 (reason, reference id, terminal id);
--   p_sc_heads  per movement, StockChange fields 1–2 (sku, delta);
--   p_sl_heads  per movement, StockLevel fields 1–2 (store id, sku);
--   p_ns        per movement, ApplySaleResponse field 2 (the sku as a negative sku);
--   p_adjust_tail  NULL for an ApplySaleResponse answer; else the answer is an
--               AdjustStockResponse of the one movement, and this is its field 2 (adjustment id).
--
-- Rows: `replay` (o_response: the stored answer) when the key was done before with the same
-- request — nothing changed; else one `ok` row per movement applied (sequence, sku, quantity
-- after), then `done` (the sequence, the answer, the event body). A refusal raises SQLSTATE P0001
-- (so the whole transaction rolls back: claim, sequence and all) with MESSAGE:
--   `redstore.conflict`     the key was used for a different request;
--   `redstore.unanswered`   the key was claimed with the same request but has no stored answer;
--   `redstore.no_store`     the store does not exist;
--   `redstore.no_product`   (DETAIL: the sku) a sku does not exist;
--   `redstore.insufficient` (DETAIL: the sku, HINT: `<movement index from 1>:<available>`) a strict
--                           store would go below zero.
CREATE FUNCTION inventory.apply_movements(
    p_scope TEXT, p_key TEXT, p_request BYTEA, p_store TEXT, p_skus TEXT[], p_deltas BIGINT[],
    p_event_id UUID, p_event_type TEXT, p_occurred_at_ms BIGINT,
    p_env_head BYTEA, p_env_mid BYTEA, p_ic_head BYTEA,
    p_sc_heads BYTEA[], p_sl_heads BYTEA[], p_ns BYTEA[], p_adjust_tail BYTEA)
RETURNS TABLE (outcome TEXT, o_seq BIGINT, o_sku TEXT, o_quantity BIGINT, o_response BYTEA, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    v_claimed  BIGINT;
    v_request  BYTEA;
    v_response BYTEA;
    v_policy   TEXT;
    v_seq      BIGINT;
    v_qty      BIGINT;
    v_guard    BOOLEAN;
    v_n        INTEGER := coalesce(array_length(p_skus, 1), 0);
    v_changes  BYTEA := ''::BYTEA;
    v_levels   BYTEA := ''::BYTEA;
    v_negative BYTEA := ''::BYTEA;
    v_level    BYTEA;
    v_body     BYTEA;
BEGIN
    IF v_n <> coalesce(array_length(p_deltas, 1), 0) OR v_n <> coalesce(array_length(p_sc_heads, 1), 0)
       OR v_n <> coalesce(array_length(p_sl_heads, 1), 0) OR v_n <> coalesce(array_length(p_ns, 1), 0) THEN
        RAISE EXCEPTION 'inventory.apply_movements: the per-movement arrays differ in length';
    END IF;
    -- Scope the transaction to the store, as platform::pg::store_tx does; never re-scope one that
    -- is scoped to another store already.
    IF coalesce(current_setting('redstore.store_id', true), '') NOT IN ('', p_store) THEN
        RAISE EXCEPTION 'inventory.apply_movements for store % in a transaction scoped to another store', p_store;
    END IF;
    PERFORM set_config('redstore.store_id', p_store, true);
    -- A concurrent claim of the same key waits here until the other transaction ends.
    INSERT INTO platform.idempotency_keys (scope, key, request) VALUES (p_scope, p_key, p_request)
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_claimed = ROW_COUNT;
    IF v_claimed = 0 THEN
        SELECT k.request, k.response INTO v_request, v_response
            FROM platform.idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
        IF v_request IS DISTINCT FROM p_request THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'redstore.conflict';
        ELSIF v_response IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'redstore.unanswered';
        ELSE
            RETURN QUERY SELECT 'replay'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, v_response, NULL::BYTEA;
        END IF;
        RETURN;
    END IF;

    SELECT s.oversell_policy INTO v_policy FROM inventory.stores s WHERE s.store_id = p_store;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'redstore.no_store';
    END IF;
    FOR i IN 1 .. v_n LOOP
        IF NOT EXISTS (SELECT 1 FROM inventory.products p WHERE p.sku = p_skus[i]) THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'redstore.no_product', DETAIL = p_skus[i];
        END IF;
    END LOOP;

    -- First: this row-locks the store's sequence row and so serialises the store's stock writers.
    INSERT INTO inventory.store_sequences AS q (store_id, last_seq) VALUES (p_store, 1)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq + 1
        RETURNING q.last_seq INTO v_seq;
    FOR i IN 1 .. v_n LOOP
        v_guard := v_policy <> 'allow_negative' AND p_deltas[i] < 0;
        UPDATE inventory.stock st SET quantity = st.quantity + p_deltas[i], last_seq = v_seq
            WHERE st.store_id = p_store AND st.sku = p_skus[i]
              AND (NOT v_guard OR st.quantity + p_deltas[i] >= 0)
            RETURNING st.quantity INTO v_qty;
        IF NOT FOUND THEN
            SELECT st.quantity INTO v_qty FROM inventory.stock st WHERE st.store_id = p_store AND st.sku = p_skus[i];
            IF v_guard OR FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'redstore.insufficient', DETAIL = p_skus[i],
                    HINT = i || ':' || coalesce(v_qty, 0);
            END IF;
            INSERT INTO inventory.stock (store_id, sku, quantity, last_seq)
                VALUES (p_store, p_skus[i], p_deltas[i], v_seq);
            v_qty := p_deltas[i];
        END IF;
        -- StockChange {sku, delta, quantity_after = 3, negative = 4} as InventoryChanged.changes (4).
        v_changes := v_changes || inventory.pb_len(x'22'::INT, p_sc_heads[i] || inventory.pb_int(x'18'::INT, v_qty)
            || CASE WHEN v_qty < 0 THEN '\x2001'::BYTEA ELSE ''::BYTEA END);
        -- StockLevel {store id, sku, quantity = 3, last_seq = 4}.
        v_level := p_sl_heads[i] || inventory.pb_int(x'18'::INT, v_qty) || inventory.pb_int(x'20'::INT, v_seq);
        v_levels := v_levels || inventory.pb_len(x'0a'::INT, v_level);
        IF v_qty < 0 THEN
            v_negative := v_negative || p_ns[i];
        END IF;
        RETURN QUERY SELECT 'ok'::TEXT, v_seq, p_skus[i], v_qty, NULL::BYTEA, NULL::BYTEA;
    END LOOP;

    -- EventEnvelope {1–3, store_seq = 4, occurred_at = 5, inventory_changed = 10}.
    v_body := p_env_head || inventory.pb_int(x'20'::INT, v_seq) || p_env_mid
        || inventory.pb_len(x'52'::INT, p_ic_head || v_changes);
    INSERT INTO inventory.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
        VALUES (p_event_id, p_store, v_seq, p_event_type, p_occurred_at_ms, v_body);
    IF p_adjust_tail IS NULL THEN
        -- ApplySaleResponse {stock = 1, negative_skus = 2, store_seq = 3}.
        v_response := v_levels || v_negative || inventory.pb_int(x'18'::INT, v_seq);
    ELSE
        -- AdjustStockResponse {stock = 1, adjustment_id = 2}.
        v_response := v_levels || p_adjust_tail;
    END IF;
    UPDATE platform.idempotency_keys k SET response = v_response WHERE k.scope = p_scope AND k.key = p_key;
    RETURN QUERY SELECT 'done'::TEXT, v_seq, NULL::TEXT, NULL::BIGINT, v_response, v_body;
END
$$;

-- Whether a terminal is registered in a store, in one round trip: `ok`, `no_terminal` (the store
-- exists) or `no_store`. It scopes its own transaction to the store it is asked about, as
-- platform::pg::store_tx would, so row-level security applies; call it outside a transaction.
CREATE FUNCTION inventory.terminal_status(p_store TEXT, p_terminal TEXT)
RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
BEGIN
    PERFORM set_config('redstore.store_id', p_store, true);
    IF EXISTS (SELECT 1 FROM inventory.terminals t WHERE t.store_id = p_store AND t.terminal_id = p_terminal) THEN
        RETURN 'ok';
    ELSIF EXISTS (SELECT 1 FROM inventory.stores s WHERE s.store_id = p_store) THEN
        RETURN 'no_terminal';
    END IF;
    RETURN 'no_store';
END
$$;
