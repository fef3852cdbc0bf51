-- A store's sales were listed through an index on (store_id, sale_id) kept in every checkout's
-- transaction: with one terminal in each of many stores, each sale of a group commit wrote
-- another store's index page (and its neighbours when a full page rebalanced). The listing is now
-- a table the `sales-listing` log consumer fills a batch at a time (sales::listing); the sales
-- it has not reached yet are read from the log's tail.
DROP INDEX sales_by_store;
CREATE TABLE store_sales (
    store_id TEXT NOT NULL,
    sale_id  TEXT NOT NULL,
    PRIMARY KEY (store_id, sale_id)
) WITHOUT ROWID;
INSERT INTO store_sales (store_id, sale_id) SELECT store_id, sale_id FROM sales;
INSERT INTO consumer_offsets (group_name, position)
    SELECT 'sales-listing', COALESCE(MAX(position), 0) FROM event_log WHERE true
    ON CONFLICT (group_name) DO UPDATE SET position = excluded.position;
