-- The daemon (mvgraph daemon): a heartbeat row per running daemon, and what it needs to close a
-- schedule's runs exactly once.

-- One row per running daemon, written every few seconds; `mvgraph daemon status` lists the rows
-- whose heartbeat is recent. A daemon that stops cleanly deletes its row; a killed one's row
-- simply goes stale.
CREATE TABLE mvgraph.daemon (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,              -- host:pid, also the name of its jobs' worker
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    workers      integer NOT NULL,           -- jobs it runs at once (0: scheduler only)
    schedules    integer NOT NULL DEFAULT 0, -- clock schedules it fires
    version      text NOT NULL
);
CREATE INDEX daemon_heartbeat ON mvgraph.daemon (heartbeat_at);

-- A slot's job whose end has been written to its schedule (last_end, last_status, failure
-- count): each end is counted once, by whichever daemon sees it first (job ends already
-- NOTIFY mvgraph_jobs with the job's id; daemons also look every second).
ALTER TABLE mvgraph.schedule_slot ADD COLUMN ended boolean NOT NULL DEFAULT false;
CREATE INDEX schedule_slot_open ON mvgraph.schedule_slot (job_id)
    WHERE job_id IS NOT NULL AND NOT ended;

REVOKE ALL ON mvgraph.daemon FROM PUBLIC;
