-- Every SQL statement the package runs with fixed text lives here, under a name.
-- Dynamic identifiers are composed with psycopg.sql where the statement is built.

-- name: relations
-- All user relations (tables, views, materialized views, foreign and partitioned tables,
-- sequences) and the relations of pg_catalog and information_schema ("system": kept only where
-- a user view reads them).
SELECT n.nspname AS schema,
       c.relname AS name,
       c.relkind::text AS relkind,
       pg_get_userbyid(c.relowner) AS owner,
       c.relispopulated AS populated,
       -- pg_get_viewdef waits for a running plain REFRESH: only read when asked for
       CASE WHEN %(with_sql)s AND c.relkind IN ('v', 'm') AND c.oid >= 16384
            THEN pg_get_viewdef(c.oid) END AS definition,
       c.relkind = 'm' AND EXISTS (
           SELECT 1 FROM pg_index i
            WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
              AND i.indpred IS NULL AND i.indexprs IS NULL) AS concurrent_index,
       c.oid::bigint AS oid,
       n.nspname IN ('pg_catalog', 'information_schema') AS system
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE (c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'mvgraph')
        AND n.nspname NOT LIKE 'pg\_toast%%'
        AND n.nspname NOT LIKE 'pg\_temp\_%%')
    OR (c.relkind IN ('r', 'v', 'm', 'f', 'p')
        AND n.nspname IN ('pg_catalog', 'information_schema'))

-- name: dependencies
-- input -> dependent pairs from the rewrite rules of views and materialized views.
SELECT DISTINCT d.refobjid::bigint AS input, r.ev_class::bigint AS dependent
  FROM pg_rewrite r
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
 WHERE d.refclassid = 'pg_class'::regclass
   AND d.deptype = 'n'
   AND d.refobjid <> r.ev_class

-- name: rule_facts
-- From each user view's rewrite rule: (view, function, NULL) for each time-dependent or volatile
-- function it calls (built-in functions have no pg_depend rows), and (view, NULL, relation) for
-- each system relation it reads (pg_depend records nothing for a pinned object such as pg_class,
-- and every system relation has an oid below 16384, FirstNormalObjectId). Each rule tree is turned
-- into text once; functions are looked for only when it contains a call or a CURRENT_DATE-style
-- keyword.
WITH rules AS MATERIALIZED (
    SELECT r.ev_class, r.ev_action::text AS tree
      FROM pg_rewrite r
      JOIN pg_class c ON c.oid = r.ev_class
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('v', 'm')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'mvgraph')
), hits AS (
    SELECT rules.ev_class, m[1]::oid AS fn, m[2]::int AS op
      FROM rules,
           regexp_matches(rules.tree, ':funcid (\d+)|\{SQLVALUEFUNCTION :op (\d+)', 'g') AS m
     WHERE strpos(rules.tree, ':funcid ') > 0 OR strpos(rules.tree, '{SQLVALUEFUNCTION') > 0
)
SELECT hits.ev_class::bigint AS oid, p.proname::text AS function, NULL::bigint AS input
  FROM hits JOIN pg_proc p ON p.oid = hits.fn
 WHERE p.provolatile = 'v' OR p.proname = ANY(%(time_functions)s)
UNION
SELECT ev_class::bigint, (ARRAY['current_date', 'current_time', 'current_time', 'current_timestamp',
       'current_timestamp', 'localtime', 'localtime', 'localtimestamp', 'localtimestamp'])[op + 1],
       NULL
  FROM hits
 WHERE op BETWEEN 0 AND 8
UNION
SELECT rules.ev_class::bigint, NULL, m[1]::bigint
  FROM rules, regexp_matches(rules.tree, ':relid ([0-9]{1,5}) ', 'g') AS m
 WHERE m[1]::bigint < 16384

-- name: catalog_fingerprint
-- A cheap digest (about 0.6 ms with 1,000 views) of what the catalog graph is made of:
-- relations (oid, name, schema, kind, owner), rewrite rules (a CREATE OR REPLACE VIEW gives its
-- rule a new xmin), schema names and user functions' volatility; not what a REFRESH changes
-- (relfilenode, statistics, populated). A worker keeps its graph while this stays the same.
SELECT (SELECT count(*) || ':' || coalesce(bit_xor(
               hashtextextended(c.relname, c.oid::bigint << 32 | c.relnamespace::bigint)
               # (c.relowner::bigint << 40) # ascii(c.relkind::text)::bigint), 0)
          FROM pg_class c WHERE c.relpersistence <> 't')
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  r.oid::bigint << 32 | r.xmin::text::bigint), 0) FROM pg_rewrite r)
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  hashtextextended(n.nspname, n.oid::bigint)), 0) FROM pg_namespace n)
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  hashtextextended(p.proname || p.provolatile::text, p.oid::bigint)), 0)
                    FROM pg_proc p WHERE p.oid >= 16384)

-- name: schema_version
SELECT coalesce(max(version), 0) FROM mvgraph.schema_version

-- name: schema_version_exists
SELECT to_regclass('mvgraph.schema_version') IS NOT NULL

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtextextended('mvgraph.migrate', 0))

-- name: bootstrap
CREATE SCHEMA IF NOT EXISTS mvgraph;
CREATE TABLE IF NOT EXISTS mvgraph.schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: record_migration
INSERT INTO mvgraph.schema_version (version, name) VALUES (%(version)s, %(name)s)

-- name: relation_info
-- oid, populated flag, CONCURRENTLY-usable unique index and partition ancestors of relations.
SELECT u.name, c.oid::bigint, c.relkind::text, c.relispopulated,
       EXISTS (SELECT 1 FROM pg_index i
                WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
                  AND i.indpred IS NULL AND i.indexprs IS NULL),
       CASE WHEN c.relispartition THEN ARRAY(
           SELECT a::bigint FROM pg_partition_ancestors(c.oid) a WHERE a <> c.oid)
       ELSE '{}'::bigint[] END
  FROM unnest(%(names)s::text[]) AS u(name)
  JOIN pg_class c ON c.oid = to_regclass(u.name)

-- name: ensure_mv_state
-- In oid order: concurrent runs inserting the same new rows wait for each other in one order.
INSERT INTO mvgraph.mv_state (mv, name)
SELECT u.oid, u.name FROM unnest(%(oids)s::oid[], %(names)s::text[]) AS u(oid, name)
 ORDER BY u.oid
ON CONFLICT (mv) DO UPDATE SET name = EXCLUDED.name WHERE mv_state.name <> EXCLUDED.name

-- name: mv_states
SELECT mv::bigint, refreshed_at, duration_s, early_cutoff, volatile_mode, fingerprint
  FROM mvgraph.mv_state WHERE mv = ANY(%(oids)s::oid[])

-- name: table_modes
-- Tracking mode of base tables: an explicit row, else 'always' for foreign tables, else 'stats'.
SELECT c.oid::bigint,
       coalesce(m.mode, CASE WHEN c.relkind = 'f' THEN 'always' ELSE 'stats' END), m.since
  FROM pg_class c LEFT JOIN mvgraph.table_mode m ON m.relid = c.oid
 WHERE c.oid = ANY(%(oids)s::oid[])

-- name: change_counts
-- Changes to each (view, input) pair that the view's last refresh did not see.
SELECT u.mv::bigint, u.input::bigint, c.kind::text, count(*), max(c.at)
  FROM unnest(%(mvs)s::oid[], %(inputs)s::oid[]) AS u(mv, input)
  JOIN mvgraph.mv_state s ON s.mv = u.mv AND s.snapshot IS NOT NULL
  JOIN mvgraph.change_log c ON c.relid = u.input
 WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot)
   AND c.xid IS DISTINCT FROM s.refresh_xid
 GROUP BY 1, 2, 3

-- name: stat_counters
-- Write counters and file node of tables, for 'stats' mode (see mvgraph.write_counters).
SELECT relid::bigint, counter, filenode FROM mvgraph.write_counters(%(oids)s::oid[])

-- name: stat_inputs
-- Recorded counters of 'stats' inputs at each view's last refresh.
SELECT s.mv::bigint, u.input::bigint, u.counter, u.filenode
  FROM mvgraph.mv_state s,
       unnest(s.stat_inputs, s.stat_counters, s.stat_filenodes) AS u(input, counter, filenode)
 WHERE s.mv = ANY(%(oids)s::oid[])

-- name: change_log_intact
-- False when the change log was lost (crash recovery, failover) and every view was reset.
SELECT mvgraph.change_log_intact()

-- name: event_triggers
-- Which of mvgraph's two event triggers are installed and enabled.
SELECT evtname FROM pg_event_trigger
 WHERE evtname IN ('mvgraph_ddl_end', 'mvgraph_ddl_start') AND evtenabled <> 'D'

-- name: create_event_trigger_mvgraph_ddl_end
CREATE EVENT TRIGGER mvgraph_ddl_end ON ddl_command_end EXECUTE FUNCTION mvgraph.on_ddl_end()

-- name: create_event_trigger_mvgraph_ddl_start
-- Keeps the snapshot of an outside REFRESH before the REFRESH takes its own (0004).
CREATE EVENT TRIGGER mvgraph_ddl_start ON ddl_command_start
  WHEN TAG IN ('REFRESH MATERIALIZED VIEW') EXECUTE FUNCTION mvgraph.on_ddl_start()

-- name: get_setting
SELECT value FROM mvgraph.setting WHERE key = %(key)s

-- name: put_setting
INSERT INTO mvgraph.setting (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()

-- name: set_table_mode
-- "since" is when the current mode began: kept when the mode stays the same.
INSERT INTO mvgraph.table_mode (relid, name, mode) VALUES (%(oid)s, %(name)s, %(mode)s)
ON CONFLICT (relid) DO UPDATE
   SET mode = EXCLUDED.mode, name = EXCLUDED.name,
       since = CASE WHEN table_mode.mode = EXCLUDED.mode THEN table_mode.since ELSE now() END

-- name: clear_table_mode
DELETE FROM mvgraph.table_mode WHERE relid = %(oid)s

-- name: log_tracking_start
-- Views reading a table become stale when its tracking starts: earlier writes were not logged.
-- Logged for the tables and, for partitions, every partitioned table above them.
INSERT INTO mvgraph.change_log (relid, xid, kind)
SELECT DISTINCT t.oid, pg_current_xact_id(), 't'
  FROM unnest(%(oids)s::oid[]) AS u(oid)
 CROSS JOIN LATERAL (SELECT u.oid UNION SELECT a FROM pg_partition_ancestors(u.oid) a) t(oid)
ON CONFLICT (relid, xid) DO UPDATE SET kind = 't'

-- name: track_triggers
-- The tracking trigger of a table and of each partition below it. "logs": some trigger logs
-- every write to it (the current form, or an older one such as AFTER instead of BEFORE or not
-- ENABLE ALWAYS); "current": it is exactly what create_track_trigger makes. A partition's
-- trigger must pass an argument (its writes are logged for the partitioned tables above it).
-- tgtype bits: 1 row, 2 before, 4 insert, 8 delete, 16 update, 32 truncate.
SELECT r.oid::bigint, n.nspname, c.relname, c.relispartition,
       coalesce(t.tgenabled IN ('O', 'A') AND t.tgtype & 61 = 60
                AND (t.tgnargs > 0) = c.relispartition, false) AS logs,
       coalesce(t.tgenabled = 'A' AND t.tgtype = 62
                AND t.tgnargs = CASE WHEN c.relispartition THEN 1 ELSE 0 END, false) AS current
  FROM (SELECT %(oid)s::oid UNION SELECT relid FROM pg_partition_tree(%(oid)s::oid)) r(oid)
  JOIN pg_class c ON c.oid = r.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_trigger t ON t.tgrelid = r.oid AND t.tgname = 'mvgraph_track'
                        AND t.tgfoid = 'mvgraph.track_write()'::regprocedure
 ORDER BY c.relispartition, r.oid

-- name: configure_mv
UPDATE mvgraph.mv_state
   SET early_cutoff = coalesce(%(early_cutoff)s, early_cutoff),
       volatile_mode = coalesce(%(volatile_mode)s, volatile_mode)
 WHERE mv = %(oid)s

-- name: compaction_lock
-- Every refresh holds ROW EXCLUSIVE on mv_state from before its snapshot until it commits, so
-- holding SHARE ROW EXCLUSIVE here means no refresh is running: none can still need a row
-- deleted below. The mode conflicts with itself, so two compactions never both hold it and then
-- wait for each other to delete (SHARE would let both in: a lock-upgrade deadlock). NOWAIT: when
-- a refresh or another compaction holds the table, this run leaves compaction to a later one.
LOCK TABLE mvgraph.mv_state IN SHARE ROW EXCLUSIVE MODE NOWAIT

-- name: forget_dropped_views
DELETE FROM mvgraph.mv_state s
 WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = s.mv AND c.relkind = 'm')

-- name: compact_changes
-- Drop change rows that every dependent view has already seen.
WITH readers AS MATERIALIZED (
    SELECT unnest(s.inputs) AS input, s.snapshot, s.refresh_xid FROM mvgraph.mv_state s
)
DELETE FROM mvgraph.change_log c
 WHERE NOT EXISTS (
       SELECT 1 FROM readers r
        WHERE r.input = c.relid
          AND (r.snapshot IS NULL
               OR (NOT pg_visible_in_snapshot(c.xid, r.snapshot)
                   AND c.xid IS DISTINCT FROM r.refresh_xid)))
   AND c.xid < pg_snapshot_xmin(pg_current_snapshot())

-- name: create_track_trigger
-- ENABLE ALWAYS: writes made under session_replication_role = replica change the table too.
-- (Logical replication's apply worker fires row triggers only: tables fed by it need 'stats' or
-- 'always' mode; see the README.)
CREATE TRIGGER mvgraph_track BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION mvgraph.track_write({args});
ALTER TABLE {table} ENABLE ALWAYS TRIGGER mvgraph_track

-- name: own_ddl
-- For the rest of the transaction the event trigger ignores DDL (mvgraph's trigger changes are
-- not definition changes of the table).
SELECT set_config('mvgraph.refreshing', 'on', true)

-- name: drop_track_trigger
DROP TRIGGER IF EXISTS mvgraph_track ON {table}

-- name: lock_holders
-- Who holds (or waits on) the advisory lock of a view or a lock on the view itself.
SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unknown application'),
       a.usename, coalesce(left(a.query, 80), '')
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.granted AND a.pid <> pg_backend_pid()
   AND ((l.locktype = 'advisory' AND l.classid::bigint = (%(key)s::bigint >> 32)
         AND l.objid::bigint = (%(key)s::bigint & 4294967295) AND l.objsubid = 1)
        OR (l.locktype = 'relation' AND l.relation = %(oid)s::oid))
 ORDER BY (l.locktype = 'advisory') DESC
 LIMIT 1

-- name: begin_rr
BEGIN ISOLATION LEVEL REPEATABLE READ

-- name: begin_step
-- A refresh step's transaction: READ COMMITTED, so that each statement of mvgraph.refresh_step
-- sees what committed before it (see 0003_refresh_step.sql).
BEGIN ISOLATION LEVEL READ COMMITTED

-- name: keep_compaction_away
-- Taken before any snapshot (LOCK needs none) and held until COMMIT: compaction, which needs
-- SHARE on mv_state, cannot delete a change row this refresh may still need.
LOCK TABLE mvgraph.mv_state IN ROW EXCLUSIVE MODE

-- name: lock_view
-- The view's advisory lock: no two processes refresh one view at once.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: lock_views
-- An atomic run's advisory locks on all its views, at session level and outside any
-- transaction (so before its snapshot), in the order given (oid order).
SELECT pg_advisory_lock(k) FROM unnest(%(keys)s::bigint[]) AS k

-- name: unlock_views
-- Release an atomic run's session-level locks (a key not held only raises a warning).
SELECT pg_advisory_unlock(k) FROM unnest(%(keys)s::bigint[]) AS k

-- name: refresh_step
SELECT outcome, duration_s, content_changed, recorded_reason
  FROM mvgraph.refresh_step(%(oid)s, %(name)s, %(key)s, %(concurrently)s, %(job)s, %(seq)s,
                            %(reason)s, %(inputs)s::oid[], %(stats)s::oid[],
                            %(counters)s::bigint[], %(filenodes)s::bigint[],
                            %(check)s, %(seen)s, %(attempt)s, %(run_as)s)

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: past_durations
-- Average of the last five successful refresh durations of each view.
SELECT name, avg(duration_s)
  FROM (SELECT name, duration_s,
               row_number() OVER (PARTITION BY name ORDER BY finished_at DESC) AS rn
          FROM mvgraph.job_step
         WHERE status = 'done' AND name = ANY(%(names)s::text[])) recent
 WHERE rn <= 5
 GROUP BY name

-- name: create_job
-- A foreground run's job: running at once, owned by this session's advisory lock (taken in the
-- same statement, so no other session sees the row unlocked).
WITH j AS (
    INSERT INTO mvgraph.job (kind, statement, status, options, started_at, pid, host)
    VALUES (%(kind)s, %(statement)s, 'running', %(options)s, now(), pg_backend_pid(), %(host)s)
    RETURNING id)
SELECT id, pg_advisory_lock(mvgraph.job_lock_key(id)) FROM j

-- name: queue_job
-- A background job: queued with its planned steps (written next), a worker runs it.
INSERT INTO mvgraph.job (kind, statement, status, background, options, host)
VALUES (%(kind)s, %(statement)s, 'queued', true, %(options)s, %(host)s)
RETURNING id

-- name: notify_jobs
SELECT pg_notify('mvgraph_jobs', %(job)s::text)

-- name: listen_jobs
LISTEN mvgraph_jobs

-- name: create_steps
INSERT INTO mvgraph.job_step (job_id, seq, name, mv, planned, reason)
SELECT %(job)s, u.seq, u.name, u.mv, u.planned, u.reason
  FROM unnest(%(seqs)s::int[], %(names)s::text[], %(mvs)s::oid[], %(planned)s::text[],
              %(reasons)s::text[]) AS u(seq, name, mv, planned, reason)

-- name: job_steps
SELECT seq, name, status, reason, error FROM mvgraph.job_step WHERE job_id = %(job)s ORDER BY seq

-- name: replan_steps
-- A worker's fresh plan of a job: unfinished steps take the new verdicts, new steps are added
-- after the others, unfinished steps no longer in the plan are skipped.
WITH plan AS (
    SELECT * FROM unnest(%(names)s::text[], %(mvs)s::oid[], %(planned)s::text[],
                         %(reasons)s::text[]) AS u(name, mv, planned, reason)
), upd AS (
    UPDATE mvgraph.job_step s
       SET planned = p.planned, reason = p.reason, mv = p.mv, status = 'pending',
           started_at = NULL, backend_pid = NULL
      FROM plan p
     WHERE s.job_id = %(job)s AND s.name = p.name AND s.status IN ('pending', 'running')
), gone AS (
    UPDATE mvgraph.job_step s
       SET status = 'skipped', reason = 'no longer in the plan', finished_at = clock_timestamp()
     WHERE s.job_id = %(job)s AND s.status IN ('pending', 'running')
       AND s.name <> ALL(%(names)s::text[])
)
INSERT INTO mvgraph.job_step (job_id, seq, name, mv, planned, reason)
SELECT %(job)s, coalesce((SELECT max(seq) FROM mvgraph.job_step WHERE job_id = %(job)s), 0)
                + row_number() OVER (ORDER BY ord),
       p.name, p.mv, p.planned, p.reason
  FROM unnest(%(names)s::text[], %(mvs)s::oid[], %(planned)s::text[], %(reasons)s::text[])
       WITH ORDINALITY AS p(name, mv, planned, reason, ord)
 WHERE NOT EXISTS (SELECT 1 FROM mvgraph.job_step s WHERE s.job_id = %(job)s AND s.name = p.name)

-- name: step_running
-- Committed before the step's transaction begins: others see the step running, and whom to
-- cancel (its backend).
UPDATE mvgraph.job_step
   SET status = 'running', started_at = clock_timestamp(), backend_pid = pg_backend_pid()
 WHERE job_id = %(job)s AND seq = %(seq)s

-- name: step_finished
UPDATE mvgraph.job_step
   SET status = %(status)s, reason = %(reason)s, finished_at = clock_timestamp(),
       duration_s = %(duration)s, error = %(error)s, concurrent = %(concurrent)s,
       started_at = coalesce(started_at, clock_timestamp()),
       backend_pid = coalesce(backend_pid, pg_backend_pid())
 WHERE job_id = %(job)s AND seq = %(seq)s

-- name: step_pending
-- A step a suspended or requeued run did not finish: it runs again when the job resumes.
UPDATE mvgraph.job_step SET status = 'pending', started_at = NULL, backend_pid = NULL
 WHERE job_id = %(job)s AND seq = %(seq)s

-- name: finish_job
-- Close (or suspend, or requeue) this attempt of a job.
UPDATE mvgraph.job
   SET status = %(status)s, error = %(error)s, request = NULL, lease_until = NULL,
       finished_at = CASE WHEN %(status)s IN ('done', 'failed', 'cancelled')
                          THEN clock_timestamp() END,
       worker = CASE WHEN %(status)s = 'queued' THEN NULL ELSE worker END
 WHERE id = %(job)s AND (%(attempt)s::int IS NULL OR attempt = %(attempt)s::int)

-- name: requeue_steps
-- A job handed back to the queue: its interrupted steps run again.
UPDATE mvgraph.job_step SET status = 'pending', started_at = NULL, backend_pid = NULL
 WHERE job_id = %(job)s AND status = 'running'

-- name: unlock_job
SELECT pg_advisory_unlock(mvgraph.job_lock_key(%(job)s))

-- name: job_request
-- What was asked of a job (FOR SHARE: waits for a cancel_job still committing).
SELECT coalesce(request, ''), status, attempt FROM mvgraph.job WHERE id = %(job)s FOR SHARE

-- name: reap_jobs
SELECT mvgraph.reap_jobs()

-- name: claim_job
SELECT id, kind, statement, options, owner, attempt FROM mvgraph.claim_job(%(worker)s, %(lease)s)

-- name: job_heartbeat
SELECT mvgraph.job_heartbeat(%(job)s, %(attempt)s, %(lease)s)

-- name: cancel_job
SELECT mvgraph.cancel_job(%(job)s)

-- name: suspend_job
SELECT mvgraph.suspend_job(%(job)s)

-- name: resume_job
SELECT mvgraph.resume_job(%(job)s)

-- name: submit
SELECT mvgraph.submit(%(statement)s)

-- name: job_result
SELECT mvgraph.job_result(%(job)s)

-- name: list_jobs
SELECT id, kind, statement, status, request, done_steps, total_steps, submitted_at,
       started_at, finished_at, owner, worker, error
  FROM mvgraph.jobs
 WHERE %(all)s OR status IN ('queued', 'running', 'suspended')
       OR finished_at > now() - interval '1 hour'
 ORDER BY id

-- name: can_assume
-- Whether this session's login can act with a role's rights (SET ROLE).
SELECT pg_has_role(session_user, %(role)s, 'MEMBER'), session_user

-- name: purge_jobs
-- Finished jobs older than the retention (days; the setting when not given).
WITH gone AS (
    DELETE FROM mvgraph.job
     WHERE finished_at < now() - make_interval(days => coalesce(%(days)s::int,
           (SELECT value::int FROM mvgraph.setting WHERE key = 'retention_days'), 7))
    RETURNING 1)
SELECT count(*) FROM gone

-- name: all_settings
SELECT key, value, updated_at FROM mvgraph.setting ORDER BY key

-- name: set_session
-- The settings a run's refreshes use, for this session; returns the previous values (to restore).
SELECT current_setting('synchronous_commit'), current_setting('lock_timeout'),
       current_setting('statement_timeout'), current_setting('application_name'),
       set_config('synchronous_commit', %(synchronous_commit)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('application_name', %(application_name)s, false)

-- name: untracked_partitions
-- Partitions of trigger-tracked tables that lack the tracking trigger (created after `track`).
SELECT u.oid::bigint, n.nspname, c.relname
  FROM unnest(%(oids)s::oid[]) AS u(oid)
  JOIN pg_partition_tree(u.oid) p ON p.relid <> u.oid
  JOIN pg_class c ON c.oid = p.relid AND c.relkind IN ('r', 'f')
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t
                    WHERE t.tgrelid = p.relid AND t.tgname = 'mvgraph_track')

-- name: try_setting
SELECT set_config(%(key)s, %(value)s, true)

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %(name)s

-- name: connection_room
-- Connection slots of the server: max_connections, the reserved ones (superuser and, on
-- PostgreSQL 16+, reserved_connections) and the client backends connected now (this one too).
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
           + coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int

-- name: probe_limits
-- The server as a parser: limits of the transaction that tries statements (always rolled back).
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true)

-- name: probe_search_path
SELECT set_config('search_path', %(search_path)s, true)

-- name: probe_current_schema
SELECT current_schema()

-- name: probe_relation_exists
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %(schema)s AND c.relname = %(name)s)
