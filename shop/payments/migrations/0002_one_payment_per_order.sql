-- One authorization per order, whatever happens: a payment's place among its order's
-- payments (`nth`) is 0 for every payment made from now on, and (order_id, nth) is unique, so
-- a second authorization for the same order finds the first instead of charging again. Data
-- from before may hold more than one payment per order: they keep their places (1, 2, …) and
-- the reconciliation sweep voids the ones no live order stands behind.
ALTER TABLE payments ADD COLUMN nth BIGINT NOT NULL DEFAULT 0;
UPDATE payments SET nth = (
    SELECT COUNT(*) FROM payments AS earlier
    WHERE earlier.order_id = payments.order_id
      AND (earlier.created_ms < payments.created_ms OR (earlier.created_ms = payments.created_ms AND earlier.id < payments.id))
);
CREATE UNIQUE INDEX payments_one_per_order ON payments (order_id, nth);

-- The run holding a key that has no answer yet (the SDK's idempotency holds).
ALTER TABLE idempotency_keys ADD COLUMN holder TEXT NOT NULL DEFAULT '';

-- What became of each order, from the order events payments consumes: the reconciliation
-- sweep voids an authorization whose order was cancelled, or confirmed on another payment.
CREATE TABLE order_outcomes (
    order_id  TEXT PRIMARY KEY,
    outcome   TEXT NOT NULL CHECK (outcome IN ('confirmed', 'cancelled')),
    at_ms     BIGINT NOT NULL
);
