-- Checkouts applied under their idempotency key (ApplySaleRequest.checkout_key): sales records a
-- sale only once inventory applied it, with no pending row before (services/sales/src/pg/batch.rs),
-- so a retry of a checkout carries a fresh sale id and inventory must know the checkout by its key.
-- Each row keeps the request's fingerprint and the answer, which names the sale and keeps it:
-- a retry is answered from it, and sales' reconciler lists a window of them (by applied_at_ms) to
-- record a sale it applied and never recorded.

CREATE TABLE inventory.checkouts (
    store_id      TEXT COLLATE "C" NOT NULL,
    checkout_key  TEXT COLLATE "C" NOT NULL,
    request       BYTEA  NOT NULL,
    answer        BYTEA  NOT NULL,
    applied_at_ms BIGINT NOT NULL,
    PRIMARY KEY (store_id, checkout_key)
);
CREATE INDEX checkouts_by_time ON inventory.checkouts (store_id, applied_at_ms, checkout_key);

ALTER TABLE inventory.checkouts ENABLE ROW LEVEL SECURITY;
ALTER TABLE inventory.checkouts FORCE ROW LEVEL SECURITY;
CREATE POLICY store_isolation ON inventory.checkouts
    USING (store_id = current_setting('redstore.store_id', true))
    WITH CHECK (store_id = current_setting('redstore.store_id', true));

-- lock_sales (migration 0005) also finds the checkout keys of p_checkout_keys applied before: their
-- rows come first with o_checkout true (o_key the checkout key), then the sale ids' (o_checkout
-- false), then the header and sku rows as before.
DROP FUNCTION inventory.lock_sales(TEXT, TEXT[], TEXT, TEXT[]);
CREATE FUNCTION inventory.lock_sales(p_store TEXT, p_skus TEXT[], p_scope TEXT, p_keys TEXT[], p_checkout_keys TEXT[])
RETURNS TABLE (o_key TEXT, o_request BYTEA, o_response BYTEA, o_last_seq BIGINT, o_policy TEXT, o_sku TEXT,
               o_known BOOLEAN, o_active BOOLEAN, o_currency TEXT, o_price BIGINT, o_quantity BIGINT,
               o_checkout BOOLEAN)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    v_policy TEXT;
    v_seq    BIGINT;
BEGIN
    IF cardinality(p_checkout_keys) > 0 THEN
        RETURN QUERY
            SELECT c.checkout_key::TEXT, c.request, c.answer, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                   NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, true
            FROM inventory.checkouts c WHERE c.store_id = p_store AND c.checkout_key = ANY (p_checkout_keys);
    END IF;
    RETURN QUERY
        SELECT k.key, k.request, k.response, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
               NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, false
        FROM platform.idempotency_keys k WHERE k.scope = p_scope AND k.key = ANY (p_keys);
    SELECT s.oversell_policy INTO v_policy FROM inventory.stores s WHERE s.store_id = p_store;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO inventory.store_sequences AS q (store_id, last_seq) VALUES (p_store, 0)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq
        RETURNING q.last_seq INTO v_seq;
    RETURN QUERY SELECT NULL::TEXT, NULL::BYTEA, NULL::BYTEA, v_seq, v_policy, NULL::TEXT,
                        NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BOOLEAN;
    RETURN QUERY
        SELECT NULL::TEXT, NULL::BYTEA, NULL::BYTEA, v_seq, v_policy, u.sku,
               p.sku IS NOT NULL, p.active, p.currency_code, p.price_minor, st.quantity, NULL::BOOLEAN
        FROM unnest(p_skus) AS u (sku)
        LEFT JOIN inventory.products p ON p.sku = u.sku
        LEFT JOIN inventory.stock st ON st.store_id = p_store AND st.sku = u.sku;
END
$$;

-- write_sales (migration 0005) also records the checkouts applied under their keys (p_checkout_keys,
-- p_checkout_requests, p_checkout_answers); their sale ids are not recorded as keys of p_scope.
DROP FUNCTION inventory.write_sales(TEXT, TEXT[], BIGINT[], BIGINT[], BIGINT, UUID[], BIGINT[], BYTEA[], TEXT, TEXT[], BYTEA[], BYTEA[], BIGINT);
CREATE FUNCTION inventory.write_sales(
    p_store TEXT, p_skus TEXT[], p_deltas BIGINT[], p_seqs BIGINT[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_event_seqs BIGINT[], p_bodies BYTEA[],
    p_scope TEXT, p_keys TEXT[], p_requests BYTEA[], p_answers BYTEA[], p_last_seq BIGINT,
    p_checkout_keys TEXT[], p_checkout_requests BYTEA[], p_checkout_answers BYTEA[])
RETURNS TABLE (o_sku TEXT, o_quantity BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
BEGIN
    INSERT INTO inventory.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
    SELECT u.id, p_store, u.seq, 'inventory.changed', p_occurred_at_ms, u.body
    FROM unnest(p_event_ids, p_event_seqs, p_bodies) AS u (id, seq, body);
    IF cardinality(p_keys) > 0 THEN
        INSERT INTO platform.idempotency_keys (scope, key, request, response)
        SELECT p_scope, u.key, u.request, u.response FROM unnest(p_keys, p_requests, p_answers) AS u (key, request, response);
    END IF;
    IF cardinality(p_checkout_keys) > 0 THEN
        INSERT INTO inventory.checkouts (store_id, checkout_key, request, answer, applied_at_ms)
        SELECT p_store, u.key, u.request, u.answer, p_occurred_at_ms
        FROM unnest(p_checkout_keys, p_checkout_requests, p_checkout_answers) AS u (key, request, answer);
    END IF;
    INSERT INTO inventory.store_sequences AS q (store_id, last_seq) VALUES (p_store, p_last_seq)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = excluded.last_seq WHERE q.last_seq < excluded.last_seq;
    RETURN QUERY
        INSERT INTO inventory.stock AS s (store_id, sku, quantity, last_seq)
        SELECT p_store, u.sku, u.delta, u.seq FROM unnest(p_skus, p_deltas, p_seqs) AS u (sku, delta, seq)
        ON CONFLICT (store_id, sku) DO UPDATE SET quantity = s.quantity + excluded.quantity, last_seq = excluded.last_seq
        RETURNING s.sku, s.quantity;
END
$$;
