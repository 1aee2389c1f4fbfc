-- Tracking mode 'wal': changes read from the write-ahead log through a logical replication slot
-- (see mvgraph/tracking/wal.py) instead of triggers. The slot and the publications are created
-- and dropped by mvgraph as tables enter and leave the mode; this only admits the mode.
ALTER TABLE mvgraph.table_mode DROP CONSTRAINT table_mode_mode_check;
ALTER TABLE mvgraph.table_mode
    ADD CONSTRAINT table_mode_mode_check CHECK (mode IN ('triggers', 'stats', 'always', 'wal'));

-- One logged row that the slot's consumer updates with synchronous_commit on when the WAL it
-- wants to read is not flushed yet (an asynchronous commit is visible before it is flushed, and
-- decoding reads flushed WAL only): a commit that wrote WAL flushes everything before it.
CREATE TABLE mvgraph.wal_flush (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO mvgraph.wal_flush DEFAULT VALUES;
