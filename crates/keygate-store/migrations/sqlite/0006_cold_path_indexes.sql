-- Indexes that let every query a caller's first call makes find its rows directly.
--
-- 0005's (scope, provider, status) index is right for operator keys but, matching two
-- columns of a user's or a workspace's lookup, was chosen for those too: a scan over
-- every customer's key for that provider on each cold call. These match all the columns
-- of those lookups, so they win; they also cover what the single-column indexes did.
DROP INDEX credentials_workspace;
DROP INDEX credentials_owner_user;
CREATE INDEX credentials_owner ON credentials (owner_user_id, workspace_id, scope, provider);
CREATE INDEX credentials_workspace_scope ON credentials (workspace_id, scope, provider, status);
-- What a user's demo or platform use today adds up to (seeding the limits): by user first,
-- not by key source, which would read every user's calls of the day.
DROP INDEX usage_events_source_at;
CREATE INDEX usage_events_user_source_at ON usage_events (user_id, key_source, at);
-- Re-encrypting under a new data key finds the credentials sealed under the old one.
CREATE INDEX credentials_data_key ON credentials (data_key_id);
