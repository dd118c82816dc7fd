SELECT sku, available, reserved, shipped FROM inventory ORDER BY sku
