-- Host applications name their workspaces (the JWT `workspace` claim); keygate maps
-- each to one of its own.
ALTER TABLE workspaces ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX workspaces_external_id ON workspaces (external_id);
