-- What customers are told about their orders: one row per (order, kind), so an order event
-- handled twice (even past the inbox) tells its customer once.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE UNIQUE INDEX notifications_once_per_order_and_kind ON notifications (order_id, kind);

CREATE INDEX notifications_by_user ON notifications (user_id, created_ms);
