-- A counter that every write able to change a cached answer moves on. Each keygate
-- process polls it and drops its caches when it has moved: a revocation made through
-- one replica reaches the others within one poll interval.
CREATE TABLE change_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO change_epoch (id, epoch) VALUES (1, 0);
