SELECT sku, available, reserved, shipped FROM inventory WHERE sku = $1
