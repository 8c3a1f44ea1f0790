-- Who signs in through OpenID Connect: an issuer's subject (`iss`, `sub` of its ID
-- tokens) linked to one keygate user. A user may hold several identities (one per
-- issuer, say Google and a company's Keycloak); an identity belongs to one user.
CREATE TABLE user_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id),
    created_at TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
