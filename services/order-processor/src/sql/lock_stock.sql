-- The tracked SKUs among $1, locked in SKU order (no deadlock between two orders).
SELECT sku, available FROM inventory WHERE sku = ANY($1) ORDER BY sku FOR UPDATE
