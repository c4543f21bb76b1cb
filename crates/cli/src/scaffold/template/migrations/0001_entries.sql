-- The service's own tables: its database is its alone (SQLite in the data dir, or
-- PostgreSQL by DATABASE_URL). Add a file 0002_….sql for each change; never edit one that ran.
CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    subject TEXT NOT NULL,
    text TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE INDEX entries_by_owner ON entries (owner, created_ms);
