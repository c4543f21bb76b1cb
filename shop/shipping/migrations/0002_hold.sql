-- A shipment can wait for its order to be confirmed: a held shipment stays `created` and the
-- ticker leaves it alone until a `shop.order.confirmed` event releases it (1 held, 0 not).
-- `cancelled` is a status like the others, so it needs no column.
ALTER TABLE shipments ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
