-- A usage event whose token counts keygate estimated (a stream cut before the provider
-- reported its usage) rather than read from the provider.
ALTER TABLE usage_events ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT FALSE;
