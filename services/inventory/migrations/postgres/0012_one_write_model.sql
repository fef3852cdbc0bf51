-- Refunds and adjustments are decided in Rust and written as batches of one
-- (services/inventory/src/pg/batch.rs, `decide_changes`), like sales: no SQL decides a stock change
-- or encodes an event any more. apply_movements (migration 0002) did both, with protocol-buffers
-- helpers that knew the events' field numbers; nothing calls them now.
DROP FUNCTION inventory.apply_movements(
    TEXT, TEXT, BYTEA, TEXT, TEXT[], BIGINT[], UUID, TEXT, BIGINT, BYTEA, BYTEA, BYTEA, BYTEA[], BYTEA[], BYTEA[], BYTEA);
DROP FUNCTION inventory.pb_int(INTEGER, BIGINT);
DROP FUNCTION inventory.pb_len(INTEGER, BYTEA);
DROP FUNCTION inventory.pb_varint(BIGINT);
