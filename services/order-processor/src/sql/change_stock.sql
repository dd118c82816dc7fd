-- Per SKU, the sum of a group's changes to its available, reserved and shipped units.
UPDATE inventory AS i
SET available = i.available + c.available,
    reserved = i.reserved + c.reserved,
    shipped = i.shipped + c.shipped,
    updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS c (sku, available, reserved, shipped)
WHERE i.sku = c.sku
