-- Login throttling, shared by every identity instance and kept across restarts. One row per
-- key (`pair:<email>|<address>`, `address:<address>`, `account:<email>`): the attempts counted
-- since the key was last quiet for a whole window, when the last one was, and the earliest
-- time another may be tried (0: at once).
CREATE TABLE login_throttle (
    key      TEXT PRIMARY KEY,
    attempts BIGINT NOT NULL,
    last_ms  BIGINT NOT NULL,
    next_ms  BIGINT NOT NULL
);

-- Addresses an account signed in from: they are not held back by the throttle on the whole
-- account, so a stranger guessing from elsewhere cannot lock its owner out.
CREATE TABLE known_addresses (
    email   TEXT NOT NULL,
    address TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (email, address)
);
