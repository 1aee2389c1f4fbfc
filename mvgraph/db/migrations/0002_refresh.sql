-- Change tracking, refresh state, and the job / step history of every run.

-- One row per (relation, transaction) that changed it: written by the statement-level tracking
-- triggers, by mvgraph's own refreshes (kind 'r'), and by the DDL event trigger ('o' = refreshed
-- outside mvgraph, 'd' = definition changed, 't' = tracking started).
CREATE TABLE mvgraph.change_log (
    relid oid NOT NULL,
    xid   xid8 NOT NULL,
    kind  "char" NOT NULL DEFAULT 'w',
    at    timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (relid, xid)
);

-- The statement trigger of tracked tables: one row per table and writing transaction (later
-- statements of the same transaction find the row and insert nothing).
CREATE FUNCTION mvgraph.track_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_NARGS = 0 THEN
        INSERT INTO mvgraph.change_log (relid, xid) VALUES (TG_RELID, pg_current_xact_id())
        ON CONFLICT DO NOTHING;
    ELSE  -- on a partition: a write here is a write to every partitioned table above it
        INSERT INTO mvgraph.change_log (relid, xid)
        SELECT a, pg_current_xact_id() FROM pg_partition_ancestors(TG_RELID) a
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- Body of the optional event trigger (installing it needs superuser; see changes.py): notes
-- refreshes done outside mvgraph ('o') and definition changes ('d') of relations.
CREATE FUNCTION mvgraph.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd record;
BEGIN
    IF current_setting('mvgraph.refreshing', true) = 'on' THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT objid, command_tag FROM pg_event_trigger_ddl_commands()
                WHERE classid = 'pg_class'::regclass AND objsubid = 0 LOOP
        INSERT INTO mvgraph.change_log (relid, xid, kind)
        VALUES (cmd.objid, pg_current_xact_id(),
                CASE WHEN cmd.command_tag = 'REFRESH MATERIALIZED VIEW' THEN 'o' ELSE 'd' END)
        ON CONFLICT (relid, xid) DO UPDATE SET kind = EXCLUDED.kind;
    END LOOP;
END
$$;

-- How each base table's changes are known: 'triggers' (exact), 'stats' (pg_stat counters,
-- approximate) or 'always' (every MV reading it is always stale). No row means 'stats'.
CREATE TABLE mvgraph.table_mode (
    relid oid PRIMARY KEY,
    name  text NOT NULL,
    mode  text NOT NULL CHECK (mode IN ('triggers', 'stats', 'always')),
    since timestamptz NOT NULL DEFAULT now()
);

-- What the last successful mvgraph refresh of each materialized view saw.
CREATE TABLE mvgraph.mv_state (
    mv            oid PRIMARY KEY,
    name          text NOT NULL,
    snapshot      pg_snapshot,
    refresh_xid   xid8,
    refreshed_at  timestamptz,
    duration_s    double precision,
    fingerprint   text,
    early_cutoff  boolean NOT NULL DEFAULT false,
    volatile_mode text NOT NULL DEFAULT 'auto' CHECK (volatile_mode IN ('auto', 'always', 'never'))
);

-- The inputs each view had at its last refresh, with pg_stat counters for 'stats' inputs.
CREATE TABLE mvgraph.mv_input (
    mv           oid NOT NULL,
    input        oid NOT NULL,
    stat_counter bigint,
    filenode     bigint,  -- sum of the file nodes of the table and its partitions
    PRIMARY KEY (mv, input)
);

-- Every run (foreground, background, scheduled) is a job; its steps are persisted.
CREATE TABLE mvgraph.job (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL DEFAULT 'refresh',
    statement    text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled', 'suspended')),
    owner        name NOT NULL DEFAULT current_user,
    options      jsonb NOT NULL DEFAULT '{}',
    submitted_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    pid          integer,
    host         text,
    error        text
);

CREATE TABLE mvgraph.job_step (
    job_id       bigint NOT NULL REFERENCES mvgraph.job (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    name         text NOT NULL,
    mv           oid,
    planned      text NOT NULL CHECK (planned IN ('refresh', 'skip')),
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'skipped', 'failed', 'cancelled',
                                   'blocked')),
    reason       text,
    concurrent   boolean,
    started_at   timestamptz,
    finished_at  timestamptz,
    duration_s   double precision,
    backend_pid  integer,
    error        text,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX mv_input_input ON mvgraph.mv_input (input);
CREATE INDEX job_step_name_done ON mvgraph.job_step (name, finished_at) WHERE status = 'done';
CREATE INDEX job_finished ON mvgraph.job (finished_at);

INSERT INTO mvgraph.setting (key, value) VALUES
    ('retention_days', '30'),
    ('lock_timeout', '10s'),
    ('statement_timeout', '0'),
    ('synchronous_commit', 'off');
