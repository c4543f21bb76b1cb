-- The orders' events: the source of truth. An order's events are numbered from 1; the
-- primary key makes two writers of one order conflict instead of interleaving, and each kind
-- of event happens once per order, so a step that runs again after a crash adds nothing.
CREATE TABLE order_events (
    order_id  TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    type      TEXT NOT NULL,
    data      TEXT NOT NULL,
    at_ms     BIGINT NOT NULL,
    PRIMARY KEY (order_id, seq)
);
CREATE UNIQUE INDEX order_events_once ON order_events (order_id, type);

-- The read model (CQRS): one row per order, written with every event, rebuilt from the
-- events on demand. Lists come from here; one order is folded from its events.
CREATE TABLE orders_view (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    status       TEXT NOT NULL,
    items        BIGINT NOT NULL,
    total_minor  BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL
);
CREATE INDEX orders_view_by_user ON orders_view (user_id, created_ms);
