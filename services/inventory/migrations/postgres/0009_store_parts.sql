-- Batches of several stores in one transaction: group commit across a chain, where a store with a
-- terminal or two rarely has two sales to batch but many stores sell at once
-- (services/inventory/src/pg/batch.rs, `decide_parts`).
--
-- Each function takes its one-store twin's arguments flattened over the batch's stores, with, per
-- store (a part), the end of its run in each array (`p_*_ends`, 1-based and inclusive; a part with
-- nothing in an array ends where the previous one did). Before each part it scopes the
-- transaction to that part's store (`set_config(.., true)`, as platform::pg::store_tx does), so
-- every statement of the part runs under row-level security for its own store: a row of another
-- store is refused inside a mixed batch exactly as in a one-store transaction, and once the batch
-- is done the transaction is scoped to its last store, no wider. Parts run in the order given:
-- callers sort them by store id, so that batches take stores' locks in one order and queue
-- instead of deadlocking.
--
-- The parts' calls plan once per connection (`plan_cache_mode = auto`: they only pass slices of
-- their arguments on, and planning them afresh for every part of every batch was much of the
-- batch's cost in PostgreSQL); lock_sales keeps planning its lookups on each use, as before.

CREATE FUNCTION inventory.lock_sales_parts(
    p_stores TEXT[], p_sku_ends INT[], p_skus TEXT[], p_scope TEXT, p_key_ends INT[], p_keys TEXT[],
    p_checkout_ends INT[], p_checkout_keys TEXT[])
RETURNS TABLE (o_part INT, o_key TEXT, o_request BYTEA, o_response BYTEA, o_last_seq BIGINT, o_policy TEXT,
               o_sku TEXT, o_known BOOLEAN, o_active BOOLEAN, o_currency TEXT, o_price BIGINT, o_quantity BIGINT,
               o_checkout BOOLEAN)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_stores), 0) LOOP
        PERFORM set_config('redstore.store_id', p_stores[i], true);
        RETURN QUERY SELECT i, l.* FROM inventory.lock_sales(
            p_stores[i],
            p_skus[coalesce(p_sku_ends[i - 1], 0) + 1 : p_sku_ends[i]],
            p_scope,
            p_keys[coalesce(p_key_ends[i - 1], 0) + 1 : p_key_ends[i]],
            p_checkout_keys[coalesce(p_checkout_ends[i - 1], 0) + 1 : p_checkout_ends[i]]) AS l;
    END LOOP;
END
$$;

CREATE FUNCTION inventory.write_sales_parts(
    p_stores TEXT[], p_sku_ends INT[], p_skus TEXT[], p_deltas BIGINT[], p_seqs BIGINT[], p_occurred_at_ms BIGINT,
    p_event_ends INT[], p_event_ids UUID[], p_event_seqs BIGINT[], p_bodies BYTEA[],
    p_scope TEXT, p_key_ends INT[], p_keys TEXT[], p_requests BYTEA[], p_answers BYTEA[], p_last_seqs BIGINT[],
    p_checkout_ends INT[], p_checkout_keys TEXT[], p_checkout_requests BYTEA[], p_checkout_answers BYTEA[])
RETURNS TABLE (o_part INT, o_sku TEXT, o_quantity BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = auto AS $$
DECLARE
    s INT; e INT; k INT; c INT;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_stores), 0) LOOP
        PERFORM set_config('redstore.store_id', p_stores[i], true);
        s := coalesce(p_sku_ends[i - 1], 0) + 1;
        e := coalesce(p_event_ends[i - 1], 0) + 1;
        k := coalesce(p_key_ends[i - 1], 0) + 1;
        c := coalesce(p_checkout_ends[i - 1], 0) + 1;
        RETURN QUERY SELECT i, w.o_sku, w.o_quantity FROM inventory.write_sales(
            p_stores[i],
            p_skus[s : p_sku_ends[i]], p_deltas[s : p_sku_ends[i]], p_seqs[s : p_sku_ends[i]],
            p_occurred_at_ms,
            p_event_ids[e : p_event_ends[i]], p_event_seqs[e : p_event_ends[i]], p_bodies[e : p_event_ends[i]],
            p_scope,
            p_keys[k : p_key_ends[i]], p_requests[k : p_key_ends[i]], p_answers[k : p_key_ends[i]],
            p_last_seqs[i],
            p_checkout_keys[c : p_checkout_ends[i]], p_checkout_requests[c : p_checkout_ends[i]],
            p_checkout_answers[c : p_checkout_ends[i]]) AS w;
    END LOOP;
END
$$;

ALTER FUNCTION inventory.lock_sales(TEXT, TEXT[], TEXT, TEXT[], TEXT[]) SET plan_cache_mode = force_custom_plan;
