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
