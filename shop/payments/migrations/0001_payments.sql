-- Payments and the idempotency keys that guard every operation on them. Amounts are integer
-- minor units with an ISO 4217 currency.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    state           TEXT NOT NULL,
    refunded_minor  BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    provider_ref    TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    CHECK (refunded_minor <= amount_minor)
);

CREATE INDEX payments_by_order ON payments (order_id, created_ms);

-- One row per Idempotency-Key: the request it was first used for (a fingerprint), and, once
-- done, the answer every repeat gets. A row still in progress after its lease is taken over.
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    status       BIGINT,
    response     TEXT,
    locked_until BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL
);
