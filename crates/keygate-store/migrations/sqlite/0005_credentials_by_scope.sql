-- Operator keys are looked up by scope and provider on every cold call: without this
-- index that lookup scans every stored credential.
CREATE INDEX credentials_scope_provider ON credentials (scope, provider, status);
