-- A stock level stays within ±10^12 (platform::limits::MAX_STOCK). Rust decides it for every
-- change it computes (inventory::domain::decide_movement); this is the net for the changes
-- inventory.apply_movements computes itself (adjustments, refunds): a violation maps back to
-- INVALID_ARGUMENT, never an overflow. NOT VALID: existing rows are not rescanned.
ALTER TABLE inventory.stock
    ADD CONSTRAINT stock_quantity_range
    CHECK (quantity BETWEEN -1000000000000 AND 1000000000000) NOT VALID;
