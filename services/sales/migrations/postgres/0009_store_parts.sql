-- Checkout batches of several stores in one transaction (services/sales/src/pg/batch.rs): claim
-- and record_completed for many stores in one statement each. As inventory's migration 0009: each
-- takes its one-store twin's arguments flattened over the batch's stores, with, per store (a
-- part), the end of its run in each array (1-based, inclusive), and scopes the transaction to the
-- part's store before the part, so row-level security checks every part against its own store.
-- Callers sort the parts by store id (one lock order for every batch).

CREATE FUNCTION sales.claim_sales_parts(
    p_stores TEXT[], p_ends INT[], p_status TEXT, p_ids TEXT[], p_terminals TEXT[], p_keys TEXT[],
    p_requests BYTEA[], p_from_cart BOOLEAN[], p_created_at_ms BIGINT[], p_bodies BYTEA[])
RETURNS TABLE (o_part INT, o_key TEXT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    s INT;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_stores), 0) LOOP
        PERFORM set_config('redstore.store_id', p_stores[i], true);
        s := coalesce(p_ends[i - 1], 0) + 1;
        RETURN QUERY SELECT i, k FROM sales.claim_sales(
            p_stores[i], p_status, p_ids[s : p_ends[i]], p_terminals[s : p_ends[i]], p_keys[s : p_ends[i]],
            p_requests[s : p_ends[i]], p_from_cart[s : p_ends[i]], p_created_at_ms[s : p_ends[i]],
            p_bodies[s : p_ends[i]]) AS k;
    END LOOP;
END
$$;

CREATE FUNCTION sales.record_completed_parts(
    p_stores TEXT[], p_refused_ends INT[], p_refused TEXT[], p_amended_ends INT[], p_amended_ids TEXT[],
    p_amended_bodies BYTEA[], p_id_ends INT[], p_ids TEXT[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[],
    p_cart_ends INT[], p_cart_terminals TEXT[], p_cart_skus TEXT[], p_cart_quantities BIGINT[])
RETURNS TABLE (o_part INT, o_event_id UUID, o_seq BIGINT, o_body BYTEA)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    r INT; a INT; d INT; c INT;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_stores), 0) LOOP
        PERFORM set_config('redstore.store_id', p_stores[i], true);
        r := coalesce(p_refused_ends[i - 1], 0) + 1;
        a := coalesce(p_amended_ends[i - 1], 0) + 1;
        d := coalesce(p_id_ends[i - 1], 0) + 1;
        c := coalesce(p_cart_ends[i - 1], 0) + 1;
        RETURN QUERY SELECT i, x.o_event_id, x.o_seq, x.o_body FROM sales.record_completed(
            p_stores[i], p_refused[r : p_refused_ends[i]],
            p_amended_ids[a : p_amended_ends[i]], p_amended_bodies[a : p_amended_ends[i]],
            p_ids[d : p_id_ends[i]], p_occurred_at_ms,
            p_event_ids[d : p_id_ends[i]], p_heads[d : p_id_ends[i]], p_tails[d : p_id_ends[i]],
            p_cart_terminals[c : p_cart_ends[i]], p_cart_skus[c : p_cart_ends[i]],
            p_cart_quantities[c : p_cart_ends[i]]) AS x;
    END LOOP;
END
$$;

CREATE FUNCTION sales.record_sales_parts(
    p_stores TEXT[], p_ends INT[], p_ids TEXT[], p_terminals TEXT[], p_keys TEXT[], p_requests BYTEA[],
    p_created_at_ms BIGINT[], p_bodies BYTEA[], p_occurred_at_ms BIGINT,
    p_event_ids UUID[], p_heads BYTEA[], p_tails BYTEA[])
RETURNS TABLE (o_part INT, o_sale_id TEXT, o_seq BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    s INT;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_stores), 0) LOOP
        PERFORM set_config('redstore.store_id', p_stores[i], true);
        s := coalesce(p_ends[i - 1], 0) + 1;
        RETURN QUERY SELECT i, x.o_sale_id, x.o_seq FROM sales.record_sales(
            p_stores[i], p_ids[s : p_ends[i]], p_terminals[s : p_ends[i]], p_keys[s : p_ends[i]],
            p_requests[s : p_ends[i]], p_created_at_ms[s : p_ends[i]], p_bodies[s : p_ends[i]], p_occurred_at_ms,
            p_event_ids[s : p_ends[i]], p_heads[s : p_ends[i]], p_tails[s : p_ends[i]]) AS x;
    END LOOP;
END
$$;
