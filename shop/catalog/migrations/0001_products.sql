-- Products of the catalog. Prices are integer minor units (cents) with an ISO 4217 currency,
-- never floating point.
CREATE TABLE products (
    id          BIGINT PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    category    TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency    TEXT NOT NULL,
    image_url   TEXT NOT NULL
);

CREATE INDEX products_category ON products (category, id);
