-- A batch of sales (services/inventory/src/pg/batch.rs) in two calls instead of three statements:
--
-- * lock_sales: the sale ids applied before (their stored requests and answers), then what
--   lock_stock (migration 0003, dropped below) read under the store's sequence row lock, with each
--   product's price and whether it is for sale, so a sale priced from a copy of the catalog is held to the catalog's prices in the
--   same transaction as its stock. The key lookup was a round trip of its own, before the lock.
-- * write_sales: the batch's writes (stock deltas, inventory.changed events, the sale ids with
--   their answers, the sequence). A function, so that it plans once per connection: every
--   statement in it inserts from its arguments (the stock and sequence rows are found through
--   their ON CONFLICT unique indexes, whatever the plan), which is where a cached plan cannot go
--   wrong (see sales migration 0005). And so that sales, beside inventory in one database, can
--   write its half of a checkout batch in the same statement (a round trip fewer).
--
-- Both run as the caller (row-level security applies): call them in a transaction scoped to the
-- store.

-- Rows, in this order: one per sale id of p_keys applied before in scope p_scope (o_key set); then,
-- when the store exists, a header row (o_last_seq, o_policy; o_sku NULL) taken under the store's
-- sequence row lock, and one row per sku of p_skus (o_sku set): whether the product exists, is for
-- sale, its price, and its stock in the store (NULL: no stock row yet).
CREATE FUNCTION inventory.lock_sales(p_store TEXT, p_skus TEXT[], p_scope TEXT, p_keys TEXT[])
RETURNS TABLE (o_key TEXT, o_request BYTEA, o_response BYTEA, o_last_seq BIGINT, o_policy TEXT, o_sku TEXT,
               o_known BOOLEAN, o_active BOOLEAN, o_currency TEXT, o_price BIGINT, o_quantity BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    v_policy TEXT;
    v_seq    BIGINT;
BEGIN
    RETURN QUERY
        SELECT k.key, k.request, k.response, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
               NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT
        FROM platform.idempotency_keys k WHERE k.scope = p_scope AND k.key = ANY (p_keys);
    SELECT s.oversell_policy INTO v_policy FROM inventory.stores s WHERE s.store_id = p_store;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO inventory.store_sequences AS q (store_id, last_seq) VALUES (p_store, 0)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = q.last_seq
        RETURNING q.last_seq INTO v_seq;
    RETURN QUERY SELECT NULL::TEXT, NULL::BYTEA, NULL::BYTEA, v_seq, v_policy, NULL::TEXT,
                        NULL::BOOLEAN, NULL::BOOLEAN, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
    RETURN QUERY
        SELECT NULL::TEXT, NULL::BYTEA, NULL::BYTEA, v_seq, v_policy, u.sku,
               p.sku IS NOT NULL, p.active, p.currency_code, p.price_minor, st.quantity
        FROM unnest(p_skus) AS u (sku)
        LEFT JOIN inventory.products p ON p.sku = u.sku
        LEFT JOIN inventory.stock st ON st.store_id = p_store AND st.sku = u.sku;
END
$$;

-- Writes a decided batch: per sku the net delta and the sequence of the last sale that touched it
-- (p_skus, p_deltas, p_seqs); per applied sale its event (p_event_ids, p_event_seqs, p_bodies) and
-- its id with the request and answer (p_keys, p_requests, p_answers in scope p_scope); the store's
-- newest sequence p_last_seq. Returns each written sku's quantity, for the caller to check against
-- its decision.
CREATE FUNCTION inventory.write_sales(
    p_store TEXT, p_skus TEXT[], p_deltas BIGINT[], p_seqs BIGINT[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_event_seqs BIGINT[], p_bodies BYTEA[],
    p_scope TEXT, p_keys TEXT[], p_requests BYTEA[], p_answers BYTEA[], p_last_seq BIGINT)
RETURNS TABLE (o_sku TEXT, o_quantity BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
BEGIN
    INSERT INTO inventory.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
    SELECT u.id, p_store, u.seq, 'inventory.changed', p_occurred_at_ms, u.body
    FROM unnest(p_event_ids, p_event_seqs, p_bodies) AS u (id, seq, body);
    INSERT INTO platform.idempotency_keys (scope, key, request, response)
    SELECT p_scope, u.key, u.request, u.response FROM unnest(p_keys, p_requests, p_answers) AS u (key, request, response);
    INSERT INTO inventory.store_sequences AS q (store_id, last_seq) VALUES (p_store, p_last_seq)
        ON CONFLICT (store_id) DO UPDATE SET last_seq = excluded.last_seq WHERE q.last_seq < excluded.last_seq;
    RETURN QUERY
        INSERT INTO inventory.stock AS s (store_id, sku, quantity, last_seq)
        SELECT p_store, u.sku, u.delta, u.seq FROM unnest(p_skus, p_deltas, p_seqs) AS u (sku, delta, seq)
        ON CONFLICT (store_id, sku) DO UPDATE SET quantity = s.quantity + excluded.quantity, last_seq = excluded.last_seq
        RETURNING s.sku, s.quantity;
END
$$;

-- lock_sales does what lock_stock (migration 0003) did, and more; nothing calls lock_stock now.
DROP FUNCTION inventory.lock_stock(TEXT, TEXT[]);
