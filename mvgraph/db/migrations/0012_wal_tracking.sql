-- Tracking mode 'wal': changes read from the write-ahead log through a logical replication slot
-- (see mvgraph/tracking/wal.py) instead of triggers. The slot and the publications are created
-- and dropped by mvgraph as tables enter and leave the mode; this only admits the mode.
ALTER TABLE mvgraph.table_mode DROP CONSTRAINT table_mode_mode_check;
ALTER TABLE mvgraph.table_mode
    ADD CONSTRAINT table_mode_mode_check CHECK (mode IN ('triggers', 'stats', 'always', 'wal'));
