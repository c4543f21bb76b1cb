-- Stock per product. What may be reserved is on_hand - reserved; the checks make the database
-- itself refuse to oversell, whatever the code above it does.
CREATE TABLE stock (
    product_id BIGINT PRIMARY KEY,
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved   BIGINT NOT NULL CHECK (reserved >= 0),
    updated_ms BIGINT NOT NULL,
    CHECK (reserved <= on_hand)
);

-- One row per order: reserved, released or committed. Its primary key makes every operation
-- idempotent by order id.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE reservation_lines (
    order_id   TEXT NOT NULL REFERENCES reservations (order_id),
    product_id BIGINT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
