-- Limit counters live in PostgreSQL or Redis; on SQLite (one node) keygate keeps them in
-- the process. This migration only keeps both backends' numbering in step.
SELECT 1;
