-- Chain-wide sweeps (relays, consumers, the stock-cache check) ask which stores have unfinished
-- work in one statement instead of opening a transaction in every store: the stores whose
-- sequence head in `<schema>.store_sequences` is past a consumer's offset in
-- platform.consumer_offsets (group, topic = schema). Store sequences are row-level secured, so
-- this runs as its owner (the migrating role; inventory and sales migrations 0010 let that role
-- read the head rows) and reveals store ids and sequence numbers only, never a row's data.
-- It reads one head row per store: a join of two small tables, not a walk through any history.
CREATE FUNCTION platform.stores_behind(p_schema TEXT, p_group TEXT)
RETURNS TABLE (o_store_id TEXT, o_head BIGINT, o_position BIGINT)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, platform AS $$
BEGIN
    IF p_schema NOT IN ('inventory', 'sales') THEN
        RAISE EXCEPTION 'no store sequences in schema %', p_schema;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT q.store_id::TEXT, q.last_seq, COALESCE(c.last_seq, 0)
         FROM %I.store_sequences q
         LEFT JOIN platform.consumer_offsets c
                ON c.group_name = $1 AND c.topic = $2 AND c.store_id = q.store_id
         WHERE q.last_seq > COALESCE(c.last_seq, 0)', p_schema)
    USING p_group, p_schema;
END
$$;

-- The heads of the given stores (the live feed's sweep of the stores it has watchers for): one
-- statement for all of them instead of a read in each.
CREATE FUNCTION platform.store_heads(p_schema TEXT, p_stores TEXT[])
RETURNS TABLE (o_store_id TEXT, o_head BIGINT)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, platform AS $$
BEGIN
    IF p_schema NOT IN ('inventory', 'sales') THEN
        RAISE EXCEPTION 'no store sequences in schema %', p_schema;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT q.store_id::TEXT, q.last_seq FROM %I.store_sequences q WHERE q.store_id = ANY ($1)', p_schema)
    USING p_stores;
END
$$;
