UPDATE inventory SET reserved = reserved - $2, available = available + $2, updated_at = now() WHERE sku = $1
