UPDATE inventory SET reserved = reserved - $2, shipped = shipped + $2, updated_at = now() WHERE sku = $1
