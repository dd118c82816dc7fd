-- The order saga's state. Stock is tracked for the SKUs listed in `inventory` only.
-- `available` can be reserved; `reserved` is held for orders not shipped yet;
-- `shipped` has left the warehouse. On hand = available + reserved.
CREATE TABLE inventory (
    sku        TEXT        PRIMARY KEY,
    available  BIGINT      NOT NULL CHECK (available >= 0),
    reserved   BIGINT      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    shipped    BIGINT      NOT NULL DEFAULT 0 CHECK (shipped >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per order and tracked SKU: how many units are held for it, and what became of them.
CREATE TABLE reservations (
    order_id   UUID        NOT NULL,
    sku        TEXT        NOT NULL REFERENCES inventory (sku),
    quantity   BIGINT      NOT NULL CHECK (quantity > 0),
    state      TEXT        NOT NULL CHECK (state IN ('reserved', 'shipped', 'released')),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);

-- The shipment created when a reserved order was paid.
CREATE TABLE shipments (
    order_id        UUID        PRIMARY KEY,
    shipment_id     TEXT        NOT NULL UNIQUE,
    tracking_number TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the saga last did for an order, for operators and the demo.
CREATE TABLE saga_outcomes (
    order_id   UUID        PRIMARY KEY,
    outcome    TEXT        NOT NULL,
    detail     TEXT        NOT NULL DEFAULT '',
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
