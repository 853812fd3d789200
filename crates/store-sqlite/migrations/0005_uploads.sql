-- Files users uploaded to name in runs' inputs (POST /api/v1/files). The bytes are in the file
-- storage at `path`; a run may name an upload only from the account that owns it.
CREATE TABLE uploads (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    path         TEXT NOT NULL UNIQUE,
    content_type TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX uploads_by_account ON uploads (account_id, created_at);
