-- Shipments, one per order, and the timeline of each: created → packed → shipped → delivered.
CREATE TABLE shipments (
    id          TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL UNIQUE,
    recipient   TEXT NOT NULL,
    address     TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

CREATE INDEX shipments_by_status ON shipments (status, updated_ms);

CREATE TABLE shipment_events (
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    status      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (shipment_id, status)
);
