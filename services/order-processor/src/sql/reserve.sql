UPDATE inventory SET available = available - $2, reserved = reserved + $2, updated_at = now() WHERE sku = $1
