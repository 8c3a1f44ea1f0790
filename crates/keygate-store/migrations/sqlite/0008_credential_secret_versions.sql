-- Which of a credential's secrets its sealed record holds. The version is bound into the
-- record's associated data (keygate/credential/v2), so a replaced secret's record, written
-- back into the row from an older copy, does not open. 1 when created, one more at each
-- replacement; rows already here are 0: sealed before versions existed
-- (keygate/credential/v1), they open as before until their secret is next replaced.
ALTER TABLE credentials ADD COLUMN secret_version INTEGER NOT NULL DEFAULT 0;

-- The highest secret version ever written for each credential, kept apart from the row:
-- a whole row written back from a backup (its old record and its old version) still
-- reads at the newer version, and fails closed.
CREATE TABLE credential_secret_versions (
    credential_id  BLOB PRIMARY KEY,
    secret_version INTEGER NOT NULL
);
