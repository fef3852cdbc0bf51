-- A transaction scoped to a set of stores: a chain's group commit writes one batch of many stores'
-- sales with one statement per table (the `*_parts` functions, inventory and sales migrations
-- 0011), not one per store. The scope `redstore.store_id` may name several stores, separated by
-- commas (a store id is an identifier and never holds one: platform::pg::check_store_id), and
-- the row-level-security policies admit a row of any store it names. One-store transactions set
-- one store id, as before, and see exactly that store.

-- The stores the transaction is scoped to (NULL when it is not scoped: no row is admitted). A SQL
-- function of one expression, so the planner inlines it into the policies.
CREATE FUNCTION platform.scoped_stores() RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT string_to_array(current_setting('redstore.store_id', true), ',')
$$;

-- Scopes the transaction to a batch's stores and returns the scope it had, which the batch puts
-- back once its statements ran: a mixed batch never leaves its transaction wider than it was.
CREATE FUNCTION platform.scope_to_stores(p_stores TEXT[]) RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    v_before TEXT := coalesce(current_setting('redstore.store_id', true), '');
BEGIN
    IF EXISTS (SELECT FROM unnest(p_stores) AS s (id) WHERE coalesce(s.id, '') = '' OR strpos(s.id, ',') > 0) THEN
        RAISE EXCEPTION 'store ids % cannot scope a transaction', p_stores USING ERRCODE = '42501';
    END IF;
    PERFORM set_config('redstore.store_id', array_to_string(p_stores, ','), true);
    RETURN v_before;
END
$$;

-- The part (1-based) of each element of a `*_parts` function's flattened array, from where each
-- part's run ends (`p_ends`, 1-based and inclusive; a part with no element ends where the
-- previous one did): ends {2,2,5} give {1,1,3,3,3}.
CREATE FUNCTION platform.part_numbers(p_ends INT[]) RETURNS INT[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(i ORDER BY i, j), '{}')
    FROM generate_subscripts(p_ends, 1) AS i, generate_series(coalesce(p_ends[i - 1], 0) + 1, p_ends[i]) AS j
$$;
