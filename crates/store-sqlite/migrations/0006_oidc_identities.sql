-- Sign-in with an OpenID Connect provider: which account an (issuer, subject) pair signs in to.
-- The subject is the provider's stable id of the user; an email can change, the pair cannot.
CREATE TABLE oidc_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX oidc_identities_account ON oidc_identities (account_id);

-- Sign-ins started and not finished: the PKCE verifier and nonce behind a state (stored as its
-- SHA-256), bound to the browser's cookie (its SHA-256), taken once, for ten minutes. In the
-- database so that any API node can finish a sign-in another one started.
CREATE TABLE oidc_pending (
    state_hash   TEXT PRIMARY KEY,
    provider     TEXT NOT NULL,
    binding_hash TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    next_path    TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX oidc_pending_expiry ON oidc_pending (expires_at);
