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
       n.nspname IN ('pg_catalog', 'information_schema') AS system,
       -- a member of an extension (pg_stat_statements' views): kept only where a view reads it
       EXISTS (SELECT 1 FROM pg_depend e
                WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid
                  AND e.deptype = 'e') AS extension
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE (c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'mvgraph')
        AND NOT (n.nspname = 'scheduler' AND c.relname = 'pg_task')  -- mvgraph's (0008)
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
   -- a view reading itself (CREATE OR REPLACE VIEW v AS TABLE v) is a cycle; before
   -- PostgreSQL 16 every rule also depended on its view (its OLD and NEW entries)
   AND (d.refobjid <> r.ev_class OR current_setting('server_version_num')::int >= 160000)

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
-- rule a new xmin), schema names, inheritance and partition links and user functions'
-- volatility; not what a REFRESH changes (relfilenode, statistics, populated), nor a backend's
-- first temporary table (its pg_temp_N / pg_toast_temp_N namespaces: temporary relations and
-- their rules are left out too). A worker keeps its graph while this stays the same.
SELECT (SELECT count(*) || ':' || coalesce(bit_xor(
               hashtextextended(c.relname, c.oid::bigint << 32 | c.relnamespace::bigint)
               # (c.relowner::bigint << 40) # ascii(c.relkind::text)::bigint), 0)
          FROM pg_class c WHERE c.relpersistence <> 't')
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  r.oid::bigint << 32 | r.xmin::text::bigint), 0)
                    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                   WHERE c.relpersistence <> 't')
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  hashtextextended(n.nspname, n.oid::bigint)), 0) FROM pg_namespace n
                   WHERE n.nspname !~ '^pg_(toast_)?temp_[0-9]+$')
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  i.inhrelid::bigint << 32 | i.inhparent::bigint), 0) FROM pg_inherits i)
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
-- oid, populated flag, CONCURRENTLY-usable unique index and ancestors (partitioned tables and
-- inheritance parents, every level) of relations.
SELECT u.name, c.oid::bigint, c.relkind::text, c.relispopulated,
       EXISTS (SELECT 1 FROM pg_index i
                WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
                  AND i.indpred IS NULL AND i.indexprs IS NULL),
       CASE WHEN c.relkind IN ('r', 'p', 'f') THEN ARRAY(
           WITH RECURSIVE up(oid) AS (
               SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid
               UNION
               SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid)
           SELECT up.oid::bigint FROM up)
       ELSE '{}'::bigint[] END
  FROM unnest(%(names)s::text[]) AS u(name)
  JOIN pg_class c ON c.oid = to_regclass(u.name)

-- name: ensure_mv_state
-- In oid order: concurrent runs inserting the same new rows wait for each other in one order.
SELECT mvgraph.ensure_mv_state(%(oids)s::oid[], %(names)s::text[])

-- name: mv_states
SELECT mv::bigint, refreshed_at, duration_s, early_cutoff, volatile_mode, fingerprint
  FROM mvgraph.mv_state WHERE mv = ANY(%(oids)s::oid[])

-- name: table_modes
-- Tracking mode of base tables as set on each one: an explicit row, else 'always' for foreign
-- tables (their writes happen on another server), else 'untracked' (nobody ran `track`).
SELECT c.oid::bigint,
       coalesce(m.mode, CASE WHEN c.relkind = 'f' THEN 'always' ELSE 'untracked' END), m.since
  FROM pg_class c LEFT JOIN mvgraph.table_mode m ON m.relid = c.oid
 WHERE c.oid = ANY(%(oids)s::oid[])

-- name: input_tracking
-- What readers of each base table know of its writes: its kind, its own tracking row (mode
-- NULL: none) and the topmost tables above it (partitioned tables and inheritance parents that
-- have no parent themselves), each with its name and tracking row: a write routed through one
-- of those fires that table's statement trigger only, so only their tracking sees it.
WITH RECURSIVE up(oid, top) AS (
    SELECT c.oid, c.oid FROM pg_class c WHERE c.oid = ANY(%(oids)s::oid[])
    UNION
    SELECT up.oid, i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.top
)
SELECT c.oid::bigint, format('%%I.%%I', n.nspname, c.relname), c.relkind::text, m.mode, m.since,
       coalesce(array_agg(t.top::bigint ORDER BY t.top) FILTER (WHERE t.top IS NOT NULL),
                '{}'),
       coalesce(array_agg(format('%%I.%%I', tn.nspname, tc.relname) ORDER BY t.top)
                FILTER (WHERE t.top IS NOT NULL), '{}'),
       coalesce(array_agg(coalesce(tm.mode, '') ORDER BY t.top) FILTER (WHERE t.top IS NOT NULL),
                '{}'),
       max(tm.since)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN mvgraph.table_mode m ON m.relid = c.oid
  LEFT JOIN up t ON t.oid = c.oid AND t.top <> c.oid
                AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = t.top)
  LEFT JOIN pg_class tc ON tc.oid = t.top
  LEFT JOIN pg_namespace tn ON tn.oid = tc.relnamespace
  LEFT JOIN mvgraph.table_mode tm ON tm.relid = t.top
 WHERE c.oid = ANY(%(oids)s::oid[])
 GROUP BY c.oid, n.nspname, c.relname, c.relkind, m.mode, m.since

-- name: change_counts
-- Changes to each (view, input) pair that the view's last refresh did not see (mvgraph.changes:
-- one row per relation and transaction, from change_log and the trigger's write_log).
SELECT u.mv::bigint, u.input::bigint, c.kind::text, count(*), max(c.at)
  FROM unnest(%(mvs)s::oid[], %(inputs)s::oid[]) AS u(mv, input)
  JOIN mvgraph.mv_state s ON s.mv = u.mv AND s.snapshot IS NOT NULL
  JOIN mvgraph.changes c ON c.relid = u.input
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
-- Which of mvgraph's event triggers are installed and enabled.
SELECT evtname FROM pg_event_trigger
 WHERE evtname IN ('mvgraph_ddl_end', 'mvgraph_ddl_start', 'mvgraph_sql_drop')
   AND evtenabled <> 'D'

-- name: create_event_trigger_mvgraph_ddl_end
CREATE EVENT TRIGGER mvgraph_ddl_end ON ddl_command_end EXECUTE FUNCTION mvgraph.on_ddl_end()

-- name: create_event_trigger_mvgraph_ddl_start
-- Keeps the snapshot of an outside REFRESH before the REFRESH takes its own (0004).
CREATE EVENT TRIGGER mvgraph_ddl_start ON ddl_command_start
  WHEN TAG IN ('REFRESH MATERIALIZED VIEW') EXECUTE FUNCTION mvgraph.on_ddl_start()

-- name: create_event_trigger_mvgraph_sql_drop
-- Dropping a materialized view, however it is dropped (DROP TABLE ... CASCADE, DROP SCHEMA and
-- DROP OWNED drop views too), cancels the background CREATE populating it (0007) and drops its
-- schedule (0008).
CREATE EVENT TRIGGER mvgraph_sql_drop ON sql_drop EXECUTE FUNCTION mvgraph.on_sql_drop()

-- name: get_setting
SELECT value FROM mvgraph.setting WHERE key = %(key)s

-- name: put_setting
SELECT mvgraph.put_setting(%(key)s, %(value)s)

-- name: set_table_mode
-- "since" is when the current mode began: kept when the mode stays the same.
SELECT mvgraph.set_table_mode(%(oid)s, %(name)s, %(mode)s)

-- name: clear_table_mode
SELECT mvgraph.clear_table_mode(%(oid)s)

-- name: log_tracking_start
-- Views reading a table become stale when its tracking starts: earlier writes were not logged.
-- Logged for the tables and every partitioned table or inheritance parent above them.
SELECT mvgraph.log_tracking_start(%(oids)s::oid[])

-- name: track_triggers
-- The tracking trigger of a table and of each partition and inheritance child below it (every
-- level). "logs": some trigger logs every write to it (the current form, or an older one such
-- as BEFORE instead of AFTER or not ENABLE ALWAYS; see mvgraph.trigger_logs in 0017);
-- "current": it is exactly what create_track_trigger makes (tgtype 60; create_track_trigger_ud:
-- 24). The trigger of a relation with a
-- parent must pass an argument (its writes are logged for every ancestor). tgtype bits: 1 row,
-- 2 before, 4 insert, 8 delete, 16 update, 32 truncate.
WITH RECURSIVE tree(oid) AS (
    SELECT %(oid)s::oid
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid)
SELECT r.oid::bigint, n.nspname, c.relname, r.has_parent,
       coalesce(t.tgenabled IN ('O', 'A') AND t.tgtype & 61 = 60 AND t.tgqual IS NULL
                AND cardinality(t.tgattr::int2[]) = 0 AND (t.tgnargs > 0 OR NOT r.has_parent),
                false) AS logs,
       coalesce(t.tgenabled = 'A' AND t.tgtype = %(tgtype)s AND t.tgqual IS NULL
                AND cardinality(t.tgattr::int2[]) = 0
                AND t.tgnargs = CASE WHEN r.has_parent THEN 1 ELSE 0 END, false) AS current
  FROM (SELECT tree.oid, EXISTS (SELECT FROM pg_inherits p WHERE p.inhrelid = tree.oid)
          FROM tree) r(oid, has_parent)
  JOIN pg_class c ON c.oid = r.oid AND c.relkind IN ('r', 'p', 'f')
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_trigger t ON t.tgrelid = r.oid AND t.tgname = 'mvgraph_track'
                        AND t.tgfoid = 'mvgraph.track_write()'::regprocedure
 ORDER BY r.has_parent, r.oid

-- name: record_tracking
-- Record the tracking triggers of a table's tree as mvgraph's (mode NULL: forget them); logs a
-- tracking start when the record changed. Returns whether it did.
SELECT mvgraph.record_tracking(%(oid)s::oid, %(mode)s::text)

-- name: configure_mv
SELECT mvgraph.configure_view(%(oid)s, %(early_cutoff)s, %(volatile_mode)s)

-- name: compact
-- Every refresh holds ROW EXCLUSIVE on mv_state from before its snapshot until it commits, so
-- holding SHARE ROW EXCLUSIVE (taken NOWAIT by mvgraph.compact) means no refresh is running:
-- none can still need a row deleted. The mode conflicts with itself, so two compactions never
-- both hold it. False: a refresh or another compaction holds the table (a later run compacts).
SELECT mvgraph.compact()

-- name: create_track_trigger
-- ENABLE ALWAYS: writes made under session_replication_role = replica change the table too.
-- (Logical replication's apply worker fires row triggers only: tables fed by it need 'stats' or
-- 'always' mode; see the README.) AFTER: the function logs only statements that wrote rows
-- (0017; a BEFORE trigger of an older version logs every statement).
CREATE TRIGGER mvgraph_track AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION mvgraph.track_write({args});
ALTER TABLE {table} ENABLE ALWAYS TRIGGER mvgraph_track

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

-- name: step_started
-- First in a step's transaction: the session named for the step until COMMIT (others see the
-- step running by that name, and cancel interrupts it), the step marked running (seen once it
-- commits), compaction kept away until COMMIT (see keep_compaction_away).
SELECT pg_catalog.set_config('application_name', %(app)s, true),
       mvgraph.step_running(%(job)s, %(seq)s), mvgraph.keep_compaction_away()

-- name: keep_compaction_away
-- Taken before any snapshot (LOCK needs none) and held until COMMIT: compaction, which needs
-- SHARE ROW EXCLUSIVE on mv_state, cannot delete a change row this refresh may still need.
SELECT mvgraph.keep_compaction_away()

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

-- name: refresh_batch
-- Steps of one connection, each in its own transaction, in one round trip (0013_refresh_batch.sql).
CALL mvgraph.refresh_batch(%(job)s, %(attempt)s, %(run_as)s, %(steps)s, NULL)

-- name: step_state
-- A step's row, read after a batch failed: did its transaction commit before the error?
SELECT status, reason, duration_s, concurrent FROM mvgraph.job_step
 WHERE job_id = %(job)s AND seq = %(seq)s

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: past_durations
-- Average of the last five successful refresh durations of each view: five rows of the
-- job_step_name_done index per view, however long the job history (a window over all of a
-- view's past steps grew with every run).
SELECT u.name, (SELECT avg(recent.duration_s)
                  FROM (SELECT s.duration_s FROM mvgraph.job_step s
                         WHERE s.status = 'done' AND s.name = u.name
                         ORDER BY s.finished_at DESC LIMIT 5) recent)
  FROM unnest(%(names)s::text[]) AS u(name)

-- name: create_job
-- A foreground run's job: running at once, owned by this session's advisory lock (taken by
-- mvgraph.enqueue, so no other session sees the row unlocked).
SELECT mvgraph.enqueue(%(kind)s, %(statement)s, %(options)s::jsonb, %(host)s, true)

-- name: queue_job
-- A background job: queued with its planned steps (written next), a worker runs it.
SELECT mvgraph.enqueue(%(kind)s, %(statement)s, %(options)s::jsonb, %(host)s)

-- name: notify_jobs
SELECT pg_notify('mvgraph_jobs', %(job)s::text)

-- name: listen_jobs
LISTEN mvgraph_jobs

-- name: create_steps
SELECT mvgraph.write_steps(%(job)s, %(seqs)s::int[], %(names)s::text[], %(mvs)s::oid[],
                           %(planned)s::text[], %(reasons)s::text[])

-- name: job_steps
SELECT seq, name, status, reason, error FROM mvgraph.job_step WHERE job_id = %(job)s ORDER BY seq

-- name: replan_steps
-- A worker's fresh plan of a job: unfinished steps take the new verdicts, new steps are added
-- after the others, unfinished steps no longer in the plan are skipped.
SELECT mvgraph.replan_steps(%(job)s, %(names)s::text[], %(mvs)s::oid[], %(planned)s::text[],
                            %(reasons)s::text[])

-- name: step_running
-- Committed before the step's transaction begins: others see the step running, and whom to
-- cancel (its backend).
SELECT mvgraph.step_running(%(job)s, %(seq)s)

-- name: step_finished
SELECT mvgraph.step_finished(%(job)s, %(seq)s, %(status)s, %(reason)s, %(duration)s, %(error)s,
                             %(concurrent)s)

-- name: step_pending
-- A step a suspended or requeued run did not finish: it runs again when the job resumes.
SELECT mvgraph.step_pending(%(job)s, %(seq)s)

-- name: finish_job
-- Close (or suspend, or requeue) this attempt of a job; true when it did. Only a running job
-- goes back to the queue (with its interrupted steps pending again): a worker that took a
-- finished job for lost (its heartbeat raced the end) must not run it again.
SELECT mvgraph.finish_job(%(job)s, %(status)s, %(error)s, %(attempt)s)

-- name: finish_job_notify
-- finish_job for a worker's job, with the notification (sent when it commits) in one statement.
SELECT mvgraph.finish_job(%(job)s, %(status)s, %(error)s, %(attempt)s),
       pg_notify('mvgraph_jobs', %(job)s::text)

-- name: unlock_job
SELECT pg_advisory_unlock(mvgraph.job_lock_key(%(job)s))

-- name: bookkeeping_commit
-- A worker's or daemon's session commits as refresh transactions do (the stored setting).
SELECT pg_catalog.set_config('synchronous_commit',
                             coalesce((SELECT value FROM mvgraph.setting
                                        WHERE key = 'synchronous_commit'), 'off'), false)

-- name: job_attempt_ended
-- Whether this attempt of a job ended by itself (done, failed, cancelled, suspended).
SELECT EXISTS (SELECT FROM mvgraph.job WHERE id = %(job)s AND attempt = %(attempt)s
                                        AND status IN ('done', 'failed', 'cancelled',
                                                       'suspended'))

-- name: job_request
-- What was asked of a job (FOR SHARE: waits for a cancel_job still committing).
SELECT request, status, attempt FROM mvgraph.job_request(%(job)s)

-- name: reap_jobs
SELECT mvgraph.reap_jobs()

-- name: claim_job
SELECT id, kind, statement, options, owner, attempt, login
  FROM mvgraph.claim_job(%(worker)s, %(lease)s)

-- name: claim_jobs_start
-- Up to %(wanted)s queued jobs, oldest first (the cap applies), each with the stored settings,
-- the catalog's fingerprint, its step rows and the event triggers present: what a worker needs
-- to start it.
SELECT id, kind, statement, options, owner, attempt, login, settings, fingerprint, steps,
       event_triggers
  FROM mvgraph.claim_jobs_start(%(worker)s, %(lease)s, %(wanted)s)

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

-- name: sql_job_step
-- The one step of a background statement (kept when the job runs again).
SELECT mvgraph.sql_job_step(%(job)s, %(reason)s)

-- name: sql_job_context
-- The search path recorded at submit, and the statement_timeout and lock_timeout settings
-- where they are set (mvgraph settings; unset: the role's and server's own), for the
-- statement's transaction (local) or for the session (autocommit statements; the connection
-- is reset after).
SELECT pg_catalog.set_config('search_path', %(path)s, %(local)s),
       (SELECT pg_catalog.set_config('statement_timeout', s.value, %(local)s)
          FROM mvgraph.setting s WHERE s.key = 'statement_timeout'),
       (SELECT pg_catalog.set_config('lock_timeout', s.value, %(local)s)
          FROM mvgraph.setting s WHERE s.key = 'lock_timeout')

-- name: drop_cancelled_view
-- The view a cancelled background creation made, dropped with this session's rights (the
-- submitter's); its name, or NULL when it is gone already or cannot be dropped (a notice).
SELECT mvgraph.drop_cancelled_view(%(job)s)

-- name: sql_job_guard
-- After a background statement, in its transaction, before its outcome is written: whatever
-- the statement set for its session (timeouts, search path) does not apply to mvgraph's call.
SELECT pg_catalog.set_config('statement_timeout', '0', true),
       pg_catalog.set_config('lock_timeout', '0', true),
       pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)

-- name: sql_job_done
-- A background statement's outcome, with its job done, if the job is still this attempt's and
-- nobody cancelled it (in the statement's transaction: otherwise it is rolled back).
SELECT mvgraph.sql_job_done(%(job)s, %(attempt)s, %(result)s::jsonb, %(duration)s, %(rows)s)

-- name: sql_job_result
SELECT mvgraph.sql_job_result(%(job)s, %(attempt)s, %(result)s::jsonb)

-- name: create_job_view
-- The view a background CREATE populates is still there (its oid under its name).
SELECT to_regclass(%(name)s) IS NOT DISTINCT FROM %(oid)s::oid::regclass

-- name: cancel_pending_steps
SELECT mvgraph.cancel_pending_steps(%(job)s, 'the view was dropped')

-- name: cancel_steps
-- A job's unfinished steps, cancelled for a reason.
SELECT mvgraph.cancel_pending_steps(%(job)s, %(why)s)

-- name: drop_waiting
-- A DROP waits for a lock on the view (a running REFRESH holds it).
SELECT EXISTS (
    SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.relation = %(oid)s::oid AND NOT l.granted AND l.mode = 'AccessExclusiveLock'
       AND a.query ~* '^\s*drop\s')

-- name: set_local_search_path
-- The search path a background REFRESH resolves names through, for this transaction (submit
-- records it).
SELECT pg_catalog.set_config('search_path', %(path)s, true)

-- name: job_result
SELECT mvgraph.job_result(%(job)s)

-- name: list_jobs
-- Jobs (unfinished or finished within the hour; all of them with %(all)s; only the unfinished
-- ones, work in progress, with %(active)s; one with %(id)s), with
-- the seconds they have run and an estimate of the seconds left, both on the server's clock.
-- Elapsed: from start to the end, to now while running, to the last step's end otherwise.
-- Time left: the sum over unfinished steps of the average of the view's last five successful
-- durations (as past_durations; a running step less the time it has run, never below 0), a
-- view without history counting the average of the job's known views; NULL when a step needs
-- an estimate and no view of the job has history. Steps planned as skips count nothing.
WITH j AS (
    SELECT * FROM mvgraph.jobs
     WHERE (%(id)s::bigint IS NULL OR id = %(id)s::bigint)
       AND (%(all)s OR %(id)s::bigint IS NOT NULL OR status IN ('queued', 'running', 'suspended')
            OR finished_at > now() - interval '1 hour')
       AND (NOT %(active)s::boolean OR status IN ('queued', 'running', 'suspended'))
), steps AS (  -- every step of the unfinished jobs
    SELECT st.job_id, st.name, st.status, st.planned, st.started_at
      FROM mvgraph.job_step st JOIN j ON j.id = st.job_id
     WHERE j.status IN ('queued', 'running', 'suspended')
), past AS (
    SELECT n.name, p.avg_s
      FROM (SELECT DISTINCT name FROM steps) n
     CROSS JOIN LATERAL (
           SELECT avg(d.duration_s) AS avg_s
             FROM (SELECT s.duration_s FROM mvgraph.job_step s
                    WHERE s.status = 'done' AND s.name = n.name
                    ORDER BY s.finished_at DESC LIMIT 5) d) p
), known AS (
    SELECT o.job_id, avg(p.avg_s) AS avg_s
      FROM steps o JOIN past p ON p.name = o.name
     GROUP BY o.job_id
), est AS (
    SELECT o.job_id,
           bool_or(o.planned <> 'skip' AND o.status IN ('pending', 'running')
                   AND coalesce(p.avg_s, k.avg_s) IS NULL) AS unknown,
           coalesce(sum(greatest(coalesce(p.avg_s, k.avg_s)
                                 - CASE WHEN o.status = 'running' THEN
                                        extract(epoch FROM clock_timestamp() - o.started_at)
                                   ELSE 0 END, 0))
                    FILTER (WHERE o.planned <> 'skip' AND o.status IN ('pending', 'running')),
                    0) AS left_s
      FROM steps o
      LEFT JOIN past p ON p.name = o.name
      LEFT JOIN known k ON k.job_id = o.job_id
     GROUP BY o.job_id
)
SELECT j.id, j.kind, j.statement, j.status, j.request, j.done_steps, j.total_steps,
       j.submitted_at, j.started_at, j.finished_at, j.owner, j.worker, j.error,
       extract(epoch FROM coalesce(
           j.finished_at,
           CASE WHEN j.status = 'running' THEN clock_timestamp()
                ELSE (SELECT max(s.finished_at) FROM mvgraph.job_step s WHERE s.job_id = j.id)
           END, j.started_at) - j.started_at)::float8 AS elapsed_s,
       CASE WHEN j.status = 'done' THEN 0
            WHEN j.status NOT IN ('queued', 'running', 'suspended') OR e.unknown
                 OR (e.job_id IS NULL AND j.total_steps = 0) THEN NULL
            ELSE coalesce(e.left_s, 0) END::float8 AS eta_s
  FROM j LEFT JOIN est e ON e.job_id = j.id
 ORDER BY j.id

-- name: job_step_info
-- A job's steps as a task-progress view: how many of the job's steps had finished when each
-- finished step ended (for a running step: how many have finished so far), the total, the
-- duration (a running step: so far), the backend and the message. A cancelled step was not
-- done: it counts for none (as in mvgraph.jobs).
SELECT st.seq, st.name, st.status, st.planned,
       CASE WHEN st.status NOT IN ('pending', 'running') THEN
                count(*) FILTER (WHERE st.status NOT IN ('pending', 'running', 'cancelled'))
                    OVER (ORDER BY st.finished_at NULLS LAST, st.seq ROWS UNBOUNDED PRECEDING)
            WHEN st.status = 'running' THEN
                count(*) FILTER (WHERE st.status NOT IN ('pending', 'running', 'cancelled'))
                    OVER ()
       END AS done_at,
       count(*) OVER () AS total,
       st.started_at, st.finished_at,
       coalesce(st.duration_s,
                extract(epoch FROM coalesce(st.finished_at, CASE WHEN st.status = 'running'
                                                                 THEN clock_timestamp() END)
                                   - st.started_at))::float8 AS duration_s,
       st.backend_pid, st.reason, st.error
  FROM mvgraph.job_step st
 WHERE st.job_id = %(job)s
 ORDER BY st.seq

-- name: purge_jobs
-- Finished jobs older than the retention (days; the setting when not given).
SELECT mvgraph.purge_jobs(%(days)s)

-- name: all_settings
SELECT key, value, updated_at FROM mvgraph.setting ORDER BY key

-- name: session_idle_timeout
-- The default of global_lock_idle_timeout: the session's own value, left as it is.
SELECT current_setting('idle_in_transaction_session_timeout')

-- name: set_session
-- The settings a run's refreshes use, for this session; returns the previous values (to restore).
-- A batch of steps (mvgraph.refresh_batch) reports progress by NOTICE and begins each step's
-- transaction with the session's default isolation: READ COMMITTED, like begin_step.
SELECT current_setting('synchronous_commit'), current_setting('lock_timeout'),
       current_setting('statement_timeout'), current_setting('application_name'),
       current_setting('client_min_messages'), current_setting('default_transaction_isolation'),
       set_config('synchronous_commit', %(synchronous_commit)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('application_name', %(application_name)s, false),
       set_config('client_min_messages', %(client_min_messages)s, false),
       set_config('default_transaction_isolation', %(default_transaction_isolation)s, false)

-- name: tracking_problems
-- Relations of tracked tables' trees whose writes would not all be logged (a missing, disabled,
-- altered or foreign tracking trigger; 0017): one row each, with what is wrong.
SELECT p.root::bigint, format('%%I.%%I', n.nspname, c.relname), p.relid = p.root, p.problem
  FROM mvgraph.tracking_problems(%(oids)s::oid[], %(modes)s::text[]) p
  JOIN pg_class c ON c.oid = p.relid
  JOIN pg_namespace n ON n.oid = c.relnamespace

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
-- The server as a parser: limits of the transaction that tries statements (always rolled back);
-- function bodies are stored, not compiled (no language handler runs code from the files).
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       set_config('check_function_bodies', 'off', true)

-- name: probe_search_path
SELECT set_config('search_path', %(search_path)s, true)

-- name: probe_current_schema
SELECT current_schema()

-- name: probe_relation_exists
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %(schema)s AND c.relname = %(name)s)

-- name: probe_stub_columns
-- The server as a parser, in the caller's database (catalog only): the columns of the relations a
-- view of the files may read that the files do not create; a column of a type outside
-- pg_catalog is given as text in the scratch database.
SELECT n.nspname::text, c.relname::text, a.attname::text,
       CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace
            THEN format_type(a.atttypid, a.atttypmod) ELSE 'text' END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND ((n.nspname, c.relname) IN (SELECT * FROM unnest(%(schemas)s::text[], %(names)s::text[]))
       OR (c.relname = ANY (%(bare)s::text[]) AND n.nspname = ANY (%(search_path)s::text[])))
ORDER BY 1, 2, a.attnum

-- ---- schedules (0008) -------------------------------------------------------------------

-- name: find_relation
-- The first relation called %(name)s in the given schemas, in search-path order.
SELECT c.oid::bigint, c.relkind::text, format('%%I.%%I', n.nspname, c.relname)
  FROM unnest(%(schemas)s::text[]) WITH ORDINALITY AS p(schema, ord)
  JOIN pg_namespace n ON n.nspname = p.schema
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = %(name)s
 ORDER BY p.ord
 LIMIT 1

-- name: check_interval
-- An interval as PostgreSQL reads it, and whether it is an exact duration (no months, years).
-- Every function and operator pg_catalog's (nothing a search_path put first can shadow).
SELECT i, extract(epoch FROM i)::double precision,  -- extract: pg_catalog's by the grammar
       pg_catalog.date_part('month', i) OPERATOR(pg_catalog.=) 0
       AND pg_catalog.date_part('year', i) OPERATOR(pg_catalog.=) 0
  FROM (SELECT CAST(%(text)s AS interval) AS i) x

-- name: eval_interval
-- The value of an EVERY (...) clause of a GaussDB statement: {expr} is the clause rebuilt by
-- mvgraph.scheduler.clauses (values, pg_catalog functions and operators only), never its text.
SELECT i, extract(epoch FROM i)::double precision,  -- extract: pg_catalog's by the grammar
       pg_catalog.date_part('month', i) OPERATOR(pg_catalog.=) 0
       AND pg_catalog.date_part('year', i) OPERATOR(pg_catalog.=) 0
  FROM (SELECT CAST({expr} AS interval) AS i) x

-- name: eval_start
-- The value of a START WITH (...) clause of a GaussDB statement: {expr} is the clause rebuilt
-- by mvgraph.scheduler.clauses (values, pg_catalog functions and operators only).
SELECT CAST({expr} AS timestamp with time zone)

-- name: set_local_time_zone
-- For the rest of the transaction, times without a zone are read in the schedule's time zone.
SELECT pg_catalog.set_config('TimeZone', %(tz)s, true)

-- name: as_timestamptz
-- A start time typed on the command line (read in the time zone set above when it has none).
SELECT CAST(%(ts)s AS timestamp with time zone)

-- name: midnight_today
-- Today's midnight in the session's time zone: the default start of an interval schedule
-- (slots aligned to the clock: every hour on the hour, every day at midnight).
SELECT pg_catalog.date_trunc('day', pg_catalog.now())

-- name: session_time_zone
SELECT pg_catalog.current_setting('TimeZone')

-- name: insert_schedule
SELECT mvgraph.create_schedule(%(name)s, %(view_oid)s, %(behavior)s, %(kind)s, %(start_at)s,
                               %(every)s, %(every_text)s, %(cron)s, %(tz)s, %(target_lag)s,
                               %(overlap)s, %(next_run)s, %(source)s)

-- name: update_schedule
SELECT mvgraph.alter_schedule(%(id)s, %(behavior)s, %(kind)s, %(start_at)s, %(every)s,
                              %(every_text)s, %(cron)s, %(tz)s, %(target_lag)s, %(overlap)s,
                              %(next_run)s, %(source)s)

-- name: schedules
-- Every schedule, with whether its view still exists (as a materialized view).
SELECT s.id, s.name, s.what, s.view_oid::bigint, s.view_name, s.behavior, s.kind, s.start_at,
       s.every, s.every_text, s.cron, s.tz, s.target_lag, s.overlap, s.next_run, s.last_start,
       s.last_end, s.last_status, s.last_error, s.last_job, s.failure_count, s.is_broken,
       s.enabled, s.owner::text, s.source, s.created_at,
       EXISTS (SELECT FROM pg_class c WHERE c.oid = s.view_oid AND c.relkind = 'm')
  FROM mvgraph.schedule s
 WHERE %(id)s::bigint IS NULL OR s.id = %(id)s
 ORDER BY s.name

-- name: schedule_by_view
SELECT id FROM mvgraph.schedule WHERE view_oid = %(oid)s OR name = %(name)s
 ORDER BY view_oid = %(oid)s DESC LIMIT 1

-- name: delete_schedule
SELECT mvgraph.drop_schedule(%(id)s)

-- name: delete_orphan_schedules
-- Schedules whose view is gone (dropped without the sql_drop event trigger installed).
SELECT * FROM mvgraph.drop_orphan_schedules()

-- name: set_schedule_enabled
-- Pause, or resume (which also clears is_broken and the failure count).
SELECT mvgraph.set_schedule_enabled(%(id)s, %(enabled)s, %(next_run)s)

-- name: set_next_run
SELECT mvgraph.set_next_run(%(id)s, %(next_run)s)

-- name: fire_slots
-- Fire the slots due at one instant in one statement: per slot (schedule order), the overlap
-- rule, the claim (exactly once), the job owned by the schedule's owner, its link to the slot,
-- the schedule's last start, last job and next run (0022_hot_firing.sql).
SELECT schedule_id, slot, outcome, job_id, reason, submitted_at
  FROM mvgraph.fire_slots(%(ids)s::bigint[], %(slots)s::timestamptz[], %(reasons)s::text[],
                          %(next_runs)s::timestamptz[], %(by)s, %(options)s::jsonb, %(host)s)

-- name: claim_slot
-- Record a slot once: the unique (schedule, slot) key lets exactly one caller in; a row only
-- when it was this one.
SELECT true WHERE mvgraph.claim_slot(%(id)s, %(slot)s, %(status)s, %(job)s, %(manual)s,
                                     %(reason)s, %(by)s)

-- name: set_slot_job
-- The slot's job, and the schedule's last start and last job.
SELECT mvgraph.set_slot_job(%(id)s, %(slot)s, %(job)s)

-- name: schedule_history
-- One row per slot, newest first, with its job's status and times.
SELECT ss.slot, ss.status, ss.job_id, j.status, j.started_at, j.finished_at, ss.manual,
       ss.reason, j.error
  FROM mvgraph.schedule_slot ss
  LEFT JOIN mvgraph.job j ON j.id = ss.job_id
 WHERE ss.schedule_id = %(id)s
 ORDER BY ss.slot DESC
 LIMIT %(limit)s

-- name: listen_schedules
LISTEN mvgraph_schedules

-- name: current_schemas
-- The session's search path, as PostgreSQL resolves names with it.
SELECT pg_catalog.current_schemas(false)::pg_catalog.text[]

-- name: first_changes
-- Freshness targets: the earliest change to each (view, input) pair that the view's last
-- refresh did not see (as change_counts, with min(at)): its data lacks everything since then.
SELECT u.mv::bigint, u.input::bigint, min(c.at)
  FROM unnest(%(mvs)s::oid[], %(inputs)s::oid[]) AS u(mv, input)
  JOIN mvgraph.mv_state s ON s.mv = u.mv AND s.snapshot IS NOT NULL
  JOIN mvgraph.changes c ON c.relid = u.input
 WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot)
   AND c.xid IS DISTINCT FROM s.refresh_xid
 GROUP BY 1, 2

-- name: lag_probe
-- The freshness tick's "did anything change" (mvgraph.scheduler.lagwatch adds the catalog
-- fingerprint in front): digests of what the targets' facts were read from: the targets with
-- their latest jobs; the refresh records and populated flags of their cascades' views
-- (%(mvs)s); the changes those refreshes did not see, for the (view, input) pairs whose changes
-- count (as first_changes); the tracking modes and the triggers of tracked tables; mvgraph's
-- event triggers; and the server's clock. Each digest is small and read by index or from a
-- small table, so an idle tick costs one cheap round trip.
SELECT (SELECT md5(coalesce(string_agg(concat_ws(',', s.id, s.view_oid, s.view_name,
                                                 s.target_lag, s.owner, s.created_at, s.last_job,
                                                 j.status, j.finished_at), ';' ORDER BY s.id),
                            ''))
          FROM mvgraph.schedule s
          LEFT JOIN mvgraph.job j ON j.id = s.last_job
         WHERE s.kind = 'lag' AND s.enabled AND NOT s.is_broken),
       (SELECT count(*) || ':' || coalesce(bit_xor(s.xmin::text::bigint), 0)
          FROM mvgraph.mv_state s WHERE s.mv = ANY(%(mvs)s::oid[]))
       || '/' || (SELECT count(*) FILTER (WHERE c.relispopulated)
                    FROM pg_class c WHERE c.oid = ANY(%(mvs)s::oid[])),
       (SELECT count(*) || ':' || coalesce(min(c.at)::text, '') || ':'
               || coalesce(max(c.at)::text, '')
          FROM unnest(%(pair_mvs)s::oid[], %(pair_inputs)s::oid[]) AS u(mv, input)
          JOIN mvgraph.mv_state s ON s.mv = u.mv AND s.snapshot IS NOT NULL
          JOIN mvgraph.changes c ON c.relid = u.input
         WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot)
           AND c.xid IS DISTINCT FROM s.refresh_xid),
       (SELECT count(*) || ':' || coalesce(bit_xor(m.xmin::text::bigint), 0)
          FROM mvgraph.table_mode m)
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(t.xmin::text::bigint), 0)
                    FROM pg_trigger t WHERE t.tgrelid IN (SELECT relid FROM mvgraph.table_mode)),
       (SELECT coalesce(string_agg(e.evtname || ':' || e.evtenabled::text, ',' ORDER BY e.evtname), '')
          FROM pg_event_trigger e),
       clock_timestamp()

-- name: lag_schedules
-- Freshness targets that may fire (enabled, not broken, view present), with the status and
-- end of the latest job each one submitted (its last_job).
SELECT s.id, s.view_name, s.target_lag, s.owner::text, s.created_at, j.status, j.finished_at
  FROM mvgraph.schedule s
  LEFT JOIN mvgraph.job j ON j.id = s.last_job
 WHERE s.kind = 'lag' AND s.enabled AND NOT s.is_broken
   AND EXISTS (SELECT FROM pg_class c WHERE c.oid = s.view_oid AND c.relkind = 'm')
 ORDER BY s.id

-- ---- the daemon (mvgraph daemon) ------------------------------------------------------------

-- name: daemon_register
SELECT mvgraph.daemon_register(%(name)s, %(host)s, %(pid)s, %(workers)s, %(version)s)

-- name: daemon_heartbeat
SELECT id FROM mvgraph.daemon_heartbeat(%(id)s, %(schedules)s) AS id WHERE id IS NOT NULL

-- name: daemon_remove
SELECT mvgraph.daemon_remove(%(id)s)

-- name: live_daemons
-- Daemons whose heartbeat is recent, with the jobs their workers run now.
SELECT d.id, d.name, d.host, d.pid, d.started_at, d.heartbeat_at, d.workers, d.schedules,
       d.version,
       coalesce((SELECT array_agg(j.id ORDER BY j.id) FROM mvgraph.job j
                  WHERE j.worker = d.name AND j.status = 'running'), '{}')
  FROM mvgraph.daemon d
 WHERE d.heartbeat_at > now() - make_interval(secs => %(within)s)
 ORDER BY d.started_at, d.id

-- name: worker_register
SELECT mvgraph.worker_register(%(name)s, %(host)s, %(pid)s, %(concurrency)s, %(heartbeat_s)s,
                               %(version)s)

-- name: worker_heartbeat
SELECT id FROM mvgraph.worker_heartbeat(%(id)s) AS id WHERE id IS NOT NULL

-- name: worker_remove
SELECT mvgraph.worker_remove(%(id)s)

-- name: raise_alert
-- Claim an event and NOTIFY mvgraph_events (at commit); false: claimed before.
SELECT mvgraph.raise_alert(%(kind)s, %(key)s, %(payload)s::jsonb, %(sender)s)

-- name: purge_alerts
SELECT mvgraph.purge_alerts()

-- name: alert_recent_target_miss
-- Whether the view's target had a target_missed alert lately (other than this very episode).
SELECT EXISTS (SELECT FROM mvgraph.alert_sent a
                WHERE a.kind = 'target_missed' AND starts_with(a.key, %(prefix)s)
                  AND a.key <> %(key)s
                  AND a.sent_at > now() - make_interval(secs => %(within)s))

-- name: alert_look
-- One look for alerts (mvgraph.scheduler.alerts), a row per finding, in the order to send them:
-- 'broken' every broken schedule (for the metrics) and whether its breaking is still to be
-- alerted (one event per breaking, keyed by the schedule and when it broke); 'failed' failed
-- background jobs (a foreground run's failure goes to its caller) not yet alerted, oldest first,
-- an hour back at most, with the schedules that submitted them; with %(silence)s, 'daemon' and
-- 'worker' rows whose heartbeat stopped %(silent)s seconds (or three of their heartbeats) ago or
-- more, not yet alerted (one event per silence, keyed by the row and its last heartbeat; a
-- daemon's own worker, its name, is left to the daemon's alert); 'live' the daemons (num) and
-- workers (job) heard from within that time. Events are looked for at most a day back and
-- never before the schema had alerts (no flood of old events after the upgrade that added them).
-- Columns: part, ord, id, name, num, job, at, key, new, names.
WITH c AS (
    SELECT greatest(now() - interval '1 day',
                    (SELECT min(v.applied_at) FROM mvgraph.schema_version v
                      WHERE v.name = 'alerts')) AS since
)
SELECT * FROM (
SELECT 1 AS part, s.id AS ord, s.id, s.name::text, s.failure_count::int AS num, s.last_job AS job,
       coalesce(s.broken_at, s.updated_at) AS at, k.key,
       coalesce(s.broken_at, s.updated_at) >= c.since
       AND NOT EXISTS (SELECT FROM mvgraph.alert_sent a
                        WHERE a.kind = 'schedule_broken' AND a.key = k.key) AS new,
       NULL::text[] AS names
  FROM c, mvgraph.schedule s
 CROSS JOIN LATERAL (SELECT s.id::text || ':' || coalesce(
                            (extract(epoch FROM s.broken_at) * 1000000)::bigint::text, '')
                            AS key) k
 WHERE s.is_broken
UNION ALL
SELECT 2, row_number() OVER (ORDER BY f.finished_at, f.id), f.id, f.kind::text, NULL, NULL,
       f.finished_at, NULL, true, f.names
  FROM (SELECT j.id, j.kind, j.finished_at,
               coalesce((SELECT array_agg(DISTINCT s.name::text ORDER BY s.name::text)
                           FROM mvgraph.schedule_slot ss
                           JOIN mvgraph.schedule s ON s.id = ss.schedule_id
                          WHERE ss.job_id = j.id), '{}') AS names
          FROM c, mvgraph.job j
         WHERE j.status = 'failed' AND j.background
           AND j.finished_at >= greatest(c.since, now() - interval '1 hour')
           AND NOT EXISTS (SELECT FROM mvgraph.alert_sent a
                            WHERE a.kind = 'job_failed' AND a.key = j.id::text)
         ORDER BY j.finished_at, j.id
         LIMIT 100) f
UNION ALL
SELECT 3, row_number() OVER (ORDER BY d.heartbeat_at, d.id), d.id, d.name::text, NULL, NULL,
       d.heartbeat_at, k.key, true, NULL
  FROM c, mvgraph.daemon d
 CROSS JOIN LATERAL (SELECT d.id::text || ':'
                            || (extract(epoch FROM d.heartbeat_at) * 1000000)::bigint::text
                            AS key) k
 WHERE %(silence)s
   AND d.heartbeat_at < now() - make_interval(secs => greatest(%(silent)s, 3 * %(beat)s))
   AND d.heartbeat_at >= c.since
   AND NOT EXISTS (SELECT FROM mvgraph.alert_sent a
                    WHERE a.kind = 'daemon_silent' AND a.key = k.key)
UNION ALL
SELECT 4, row_number() OVER (ORDER BY w.heartbeat_at, w.id), w.id, w.name::text, NULL, NULL,
       w.heartbeat_at, k.key, true, NULL
  FROM c, mvgraph.worker w
 CROSS JOIN LATERAL (SELECT w.id::text || ':'
                            || (extract(epoch FROM w.heartbeat_at) * 1000000)::bigint::text
                            AS key) k
 WHERE %(silence)s
   AND w.heartbeat_at < now() - make_interval(secs => greatest(%(silent)s, 3 * w.heartbeat_s))
   AND w.heartbeat_at >= c.since
   AND NOT EXISTS (SELECT FROM mvgraph.daemon d WHERE d.name = w.name)
   AND NOT EXISTS (SELECT FROM mvgraph.alert_sent a
                    WHERE a.kind = 'worker_silent' AND a.key = k.key)
UNION ALL
SELECT 5, 0, NULL, NULL,
       (SELECT count(*) FROM mvgraph.daemon d
         WHERE d.heartbeat_at >= now() - make_interval(secs => greatest(%(silent)s,
                                                                         3 * %(beat)s)))::int,
       (SELECT count(*) FROM mvgraph.worker w
         WHERE w.heartbeat_at >= now() - make_interval(secs => greatest(%(silent)s,
                                                                         3 * w.heartbeat_s))),
       NULL, NULL, NULL, NULL
) look
ORDER BY part, ord

-- name: last_clock_slots
-- The latest slot recorded by a daemon (not by run-now) of each schedule, in one statement.
SELECT schedule_id, slot FROM mvgraph.last_clock_slots(%(ids)s::bigint[])

-- name: record_slots
-- Slots that do not run (missed), recorded once each in one statement; returns those recorded
-- by this call.
SELECT schedule_id, slot
  FROM mvgraph.record_slots(%(ids)s::bigint[], %(slots)s::timestamptz[], %(status)s, %(reason)s,
                            %(by)s)

-- name: clock_now
SELECT clock_timestamp()

-- name: schedule_work
-- Whether a run of a schedule ended and was not closed yet, or a waiting slot (overlap queue)
-- exists: the daemon's look every check_s (one statement; the closing is done only then).
SELECT EXISTS (SELECT FROM mvgraph.schedule_ends()) OR EXISTS (SELECT FROM mvgraph.waiting_slots())

-- name: close_schedule_ends
-- The runs that ended (at most 100), each written to its schedule once across daemons, in one
-- statement (0022_hot_firing.sql); `broke`: this very failure made the schedule broken.
SELECT schedule_id, slot, job_id, status, error, name, failure_count, broke
  FROM mvgraph.close_schedule_ends()

-- name: waiting_slots
-- Slots kept waiting (overlap queue) whose schedule has no unfinished run any more.
SELECT schedule_id, slot FROM mvgraph.waiting_slots()

-- name: drop_waiting_slot
-- A waiting slot whose schedule is paused, broken or gone: it will not run.
SELECT mvgraph.drop_waiting_slot(%(id)s, %(slot)s, %(reason)s)

-- name: demo_pause_schedules
-- `mvgraph demo` leaves its schedules paused: nothing fires in the demo database until asked.
SELECT mvgraph.pause_all_schedules()

-- name: wal_level
SELECT current_setting('wal_level'), (SELECT oid::bigint FROM pg_database
                                      WHERE datname = current_database())

-- name: wal_in_use
-- Whether this database has wal-mode tracking: a table in 'wal' mode, or its slot (the
-- daemon reads the slot every second only then).
SELECT EXISTS (SELECT FROM mvgraph.table_mode m WHERE m.mode = 'wal')
    OR EXISTS (SELECT FROM pg_replication_slots
                WHERE slot_name = 'mvgraph_' || (SELECT oid FROM pg_database
                                                  WHERE datname = current_database()))

-- name: wal_slot
-- The database's slot, if any, and the WAL it keeps (bytes from its restart point to now).
SELECT slot_name::text, plugin::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
  FROM pg_replication_slots WHERE slot_name = %(slot)s

-- name: wal_slot_status
-- 'lost' once the server invalidated the slot (max_slot_wal_keep_size).
SELECT wal_status FROM pg_replication_slots WHERE slot_name = %(slot)s

-- name: wal_publications
SELECT pubname::text FROM pg_publication WHERE pubname = ANY(%(pubs)s::text[])

-- name: wal_create_slot
-- Its own transaction (one that wrote cannot create a slot); waits for the transactions
-- running at that moment to end.
SELECT pg_create_logical_replication_slot(%(slot)s, 'pgoutput')

-- name: wal_drop_slot
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %(slot)s

-- name: wal_lock
-- One consumer of the slot at a time (a slot serves one backend at a time); classid 0x6d76
-- ("mv"), two-key form: never the same lock as a view's (bigint form).
SELECT pg_advisory_lock(28022, 7823724)

-- name: wal_unlock
SELECT pg_advisory_unlock(28022, 7823724)

-- name: wal_target
-- How far to consume: everything inserted in the WAL so far (each committed transaction's
-- commit record is below it), whether it is flushed yet (decoding reads flushed WAL only), and
-- whether the slot already confirmed all of it (nothing to read: an idle server).
SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn(),
       coalesce((SELECT s.confirmed_flush_lsn >= pg_current_wal_insert_lsn()
                   FROM pg_replication_slots s WHERE s.slot_name = %(slot)s), false)

-- name: wal_flush
-- A commit that wrote WAL, with synchronous_commit on, flushes the WAL up to its record (see
-- mvgraph.wal_flush in 0012).
SELECT set_config('synchronous_commit', 'on', true);
UPDATE mvgraph.wal_flush SET at = now()

-- name: wal_snapshot_due
-- Whether to log a running-transactions record (the one the background writer logs every 15 s)
-- before reading: the slot's restart point trails the WAL by more than 1 MB. The next advance
-- can then move the restart point up to the previous such record, so each read decodes again
-- about one interval of WAL instead of up to 30 s of it (a peek queues every change from the
-- restart point on and only then skips the ones already consumed). Only when the role may run
-- it (superusers; others need EXECUTE granted: the check is made before the call, which would
-- fail; PostgreSQL 16 and later) and not on a standby; exactness does not depend on it.
SELECT pg_current_wal_insert_lsn() - s.restart_lsn > 1048576
       AND has_function_privilege(to_regprocedure('pg_catalog.pg_log_standby_snapshot()'),
                                  'EXECUTE')
       AND NOT pg_is_in_recovery()
  FROM pg_replication_slots s
 WHERE s.slot_name = %(slot)s

-- name: wal_log_snapshot
SELECT pg_log_standby_snapshot()

-- name: wal_consume
-- Decode the slot up to %(upto)s without moving it (peek: wal_advance moves it once this
-- committed, so a failure loses nothing; a repeat adds a row mvgraph.changes deduplicates, as it
-- does the trigger's). Into the index-less write_log, as the tracking trigger: no primary key
-- to probe per row (a quarter of the reader's CPU per transaction, benchmarks/wal_tracking.py;
-- the reader writes with its own rights, which change_log asked for as well). pgoutput,
-- protocol 1: only the first byte and the relation oids are read. 'B' (begin): Int64 final LSN,
-- Int64 commit time (microseconds since 2000), Int32 xid. 'I', 'U', 'D': Int32 relation oid.
-- 'T' (truncate): Int32 count, Int8 options, Int32 oid each. The 32-bit xid becomes an xid8 by
-- the current epoch (the transaction committed, so it is below the snapshot's xmax). A
-- partition's or inheritance child's row also goes to every table above it, as with the trigger.
WITH x AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
m AS (
    SELECT c.xid::text::bigint AS xid32, get_byte(c.data, 0) AS kind, c.data
      FROM pg_logical_slot_peek_binary_changes(%(slot)s, %(upto)s::pg_lsn, NULL,
               'proto_version', '1', 'publication_names', %(pubs)s) c
     WHERE get_byte(c.data, 0) IN (66, 73, 85, 68, 84)),           -- B I U D T
b AS (
    SELECT xid32, max(timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond'
                      * ('x' || encode(substr(data, 10, 8), 'hex'))::bit(64)::bigint) AS at
      FROM m WHERE kind = 66 GROUP BY xid32),
r AS (
    SELECT xid32, ('x' || encode(substr(data, 2, 4), 'hex'))::bit(32)::bigint::oid AS relid
      FROM m WHERE kind IN (73, 85, 68)
    UNION
    SELECT xid32, ('x' || encode(substr(data, 7 + 4 * i, 4), 'hex'))::bit(32)::bigint::oid
      FROM m, generate_series(0, ('x' || encode(substr(data, 2, 4), 'hex'))::bit(32)::int - 1) i
     WHERE kind = 84),
up AS (  -- each relation written, with the partitioned tables above it (looked up once each)
    SELECT DISTINCT d.relid, t.oid
      FROM (SELECT DISTINCT relid FROM r) d
     CROSS JOIN LATERAL (WITH RECURSIVE a(oid) AS (
                             SELECT d.relid
                             UNION
                             SELECT i.inhparent FROM pg_inherits i JOIN a ON i.inhrelid = a.oid)
                         SELECT a.oid FROM a) t(oid))
INSERT INTO mvgraph.write_log (relid, xid, at)
SELECT DISTINCT up.oid,
       (x.xmax - ((x.xmax %% 4294967296 - r.xid32) %% 4294967296 + 4294967296)
                 %% 4294967296)::text::xid8,
       coalesce(b.at, statement_timestamp())
  FROM r JOIN up ON up.relid = r.relid CROSS JOIN x LEFT JOIN b ON b.xid32 = r.xid32

-- name: wal_advance
-- Move the slot once the rows are committed (never backwards: a slot refuses that).
SELECT pg_replication_slot_advance(slot_name, %(upto)s::pg_lsn)
  FROM pg_replication_slots
 WHERE slot_name = %(slot)s AND confirmed_flush_lsn < %(upto)s::pg_lsn

-- name: wal_replica_identity
-- Whether UPDATE and DELETE on the table, and on every partition below it, can be published:
-- a replica identity (the primary key, a chosen unique index, or FULL). Without one, publishing
-- them would make those statements fail.
SELECT bool_and(c.relkind = 'p'
                OR c.relreplident = 'f'
                OR (c.relreplident = 'd' AND EXISTS (SELECT FROM pg_index i
                     WHERE i.indrelid = c.oid AND i.indisprimary))
                OR (c.relreplident = 'i' AND EXISTS (SELECT FROM pg_index i
                     WHERE i.indrelid = c.oid AND i.indisreplident)))
  FROM (WITH RECURSIVE tree(oid) AS (
            SELECT %(oid)s::oid
            UNION
            SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid)
        SELECT tree.oid FROM tree) r(oid)
  JOIN pg_class c ON c.oid = r.oid

-- name: wal_membership
-- The table and each inheritance child below it (partitions are published through their
-- partitioned table), with the mvgraph publication each is in directly (NULL: none).
WITH RECURSIVE tree(oid) AS (
    SELECT %(oid)s::oid
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid)
SELECT n.nspname, c.relname, p.pubname::text
  FROM tree JOIN pg_class c ON c.oid = tree.oid AND NOT c.relispartition
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_publication_rel pr ON pr.prrelid = c.oid
       AND pr.prpubid IN (SELECT p2.oid FROM pg_publication p2
                           WHERE p2.pubname = ANY(%(pubs)s::text[]))
  LEFT JOIN pg_publication p ON p.oid = pr.prpubid
 ORDER BY tree.oid = %(oid)s::oid DESC, c.oid

-- name: wal_problems
-- What is wrong with wal mode's publications and slot (0017): one line each, none when all is
-- as mvgraph made it.
SELECT w FROM mvgraph.wal_problems(%(slot)s, %(pubs)s::text[], %(publishes)s::text[],
                                   %(existing_only)s) AS w

-- name: wal_record_publication
-- In the transaction that created it.
SELECT mvgraph.record_wal_publication(%(pub)s, %(publish)s)

-- name: wal_record_slot
SELECT mvgraph.record_wal_slot(%(slot)s)

-- name: wal_forget
SELECT mvgraph.forget_wal_objects()

-- name: wal_recorded_publications
-- mvgraph's publications that are still the ones it made (the ones it may drop).
SELECT mvgraph.wal_own_publications()

-- name: wal_tables
-- Tables in 'wal' mode that still exist.
SELECT m.relid::bigint FROM mvgraph.table_mode m JOIN pg_class c ON c.oid = m.relid
 WHERE m.mode = 'wal'

-- name: create_track_trigger_ud
-- For a 'wal' table without replica identity: its inserts and truncates come from the WAL, its
-- updates and deletes from this trigger (the same function and name as create_track_trigger).
CREATE TRIGGER mvgraph_track AFTER UPDATE OR DELETE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION mvgraph.track_write({args});
ALTER TABLE {table} ENABLE ALWAYS TRIGGER mvgraph_track

-- name: size_bytes
SELECT pg_size_bytes(%(size)s)

-- name: drop_database_slots
-- The replication slots of a database about to be dropped (tracking mode wal's among them).
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
 WHERE database = %(name)s AND NOT active

-- name: submit_for_schedules
-- A schedule's job (or one job for several freshness targets of one owner), owned by the
-- schedules' owner.
SELECT mvgraph.submit_for_schedules(%(ids)s::bigint[], %(statement)s, %(options)s::jsonb, %(host)s)

-- name: discard_all
-- A worker's job connection between two jobs of the same submitter: back to how it started.
DISCARD ALL

-- ---- privilege levels (mvgraph/security/levels.py) -------------------------------------------

-- name: grant_privileges
-- The commands run come back as INFO messages ("Executed command: ...").
SELECT mvgraph.grant_privileges(%(role)s, %(level)s, true)

-- name: revoke_privileges
SELECT mvgraph.revoke_privileges(%(role)s, true)

-- name: privilege_levels
SELECT role::text, level FROM mvgraph.privilege ORDER BY role

-- ---- lock modes (mvgraph/refresh/locks.py) --------------------------------------------------

-- name: set_lock_timeout
SELECT set_config('lock_timeout', %(value)s, false)

-- name: lock_global
-- lock_mode global: one refresh at a time in the database; held at session level for a whole
-- run (a key no view has: oid 0).
SELECT pg_advisory_lock(%(key)s)

-- name: unlock_global
SELECT pg_advisory_unlock(%(key)s)

-- name: global_lock_holder
-- Who holds the global refresh lock: pid, application name (a run's is "mvgraph job N"), user.
SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unknown application'), a.usename
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.granted AND a.pid <> pg_backend_pid() AND l.locktype = 'advisory'
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::bigint = (%(key)s::bigint >> 32)
   AND l.objid::bigint = (%(key)s::bigint & 4294967295) AND l.objsubid = 1
 LIMIT 1

-- name: job_activity
-- The running job of a session (by the job id its application name gives, else by its pid) and
-- what it refreshes now: its running steps, else its statement.
SELECT j.id, coalesce((SELECT string_agg(s.name, ', ' ORDER BY s.seq) FROM mvgraph.job_step s
                        WHERE s.job_id = j.id AND s.status = 'running'), j.statement)
  FROM mvgraph.job j
 WHERE j.status = 'running'
   AND (j.id = %(job)s::bigint OR j.pid = %(pid)s::integer
        OR j.id IN (SELECT s.job_id FROM mvgraph.job_step s
                     WHERE s.status = 'running' AND s.backend_pid = %(pid)s::integer))
 ORDER BY j.id = %(job)s::bigint DESC NULLS LAST
 LIMIT 1

-- name: set_global_lock_session
-- A session of a run holding the global lock: its idle-in-transaction timeout (NULL: as it is),
-- and (PostgreSQL 14+; NULL before) how often a running statement checks that the client is
-- still there, so a killed client's lock goes within that interval rather than when its
-- statement ends. Returns the previous values (to restore).
SELECT current_setting('idle_in_transaction_session_timeout'),
       current_setting('client_connection_check_interval', true),
       set_config('idle_in_transaction_session_timeout',
                  coalesce(%(idle)s, current_setting('idle_in_transaction_session_timeout')),
                  false),
       (SELECT set_config('client_connection_check_interval', %(check)s, false)
         WHERE current_setting('client_connection_check_interval', true) IS NOT NULL)

-- name: job_needs_a_runner
-- Whether a job waits for a worker that nobody runs: it is queued (or running in the
-- background with its lease expired, so only a worker's claim would requeue it), and no worker
-- is connected to this database (each holds a session named "mvgraph worker NAME" while it
-- runs, a daemon's workers too: a killed one's session ends with it) and no daemon with
-- workers sent a heartbeat within %(within)s seconds.
SELECT j.status = 'queued' OR (j.status = 'running' AND j.background
                               AND coalesce(j.lease_until < now(), true)),
       EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
                WHERE a.datname = pg_catalog.current_database()
                  AND a.application_name LIKE 'mvgraph worker %%')
    OR EXISTS (SELECT FROM mvgraph.daemon d
                WHERE d.workers > 0
                  AND d.heartbeat_at > now() - make_interval(secs => %(within)s))
  FROM mvgraph.job j
 WHERE j.id = %(job)s

-- name: rebuild_steps
SELECT seq, name, status, progress_done, progress_total, message, state
  FROM mvgraph.rebuild_steps(%(job)s)

-- name: step_progress
SELECT mvgraph.step_progress(%(job)s, %(seq)s, %(done)s, %(total)s, %(message)s,
                             %(state)s::jsonb)

-- name: rebuild_made
SELECT mvgraph.rebuild_made(%(job)s, %(kind)s, %(oid)s, %(schema)s, %(name)s)

-- name: rebuild_forget
SELECT mvgraph.rebuild_forget(%(job)s)

-- name: rebuild_objects
SELECT kind, obj, schema, name FROM mvgraph.rebuild_objects(%(job)s)

-- name: rebuild_pause
SELECT mvgraph.rebuild_pause(%(job)s, %(on)s)

-- name: rebuild_cleaned
SELECT mvgraph.rebuild_cleaned(%(job)s)

-- name: rebuild_follow
SELECT mvgraph.rebuild_follow(%(old)s::oid[], %(new)s::oid[])

-- name: rebuild_target
-- The relation a rebuild names (through the session's search path), its kind and whether
-- the caller can act as its owner.
SELECT c.oid, n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner),
       pg_has_role(current_user, c.relowner, 'USAGE')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%(name)s)

-- name: rebuild_oid
SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s

-- name: rebuild_function_oid
SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = %(schema)s AND p.proname = %(name)s AND p.pronargs = 0

-- name: rebuild_row_estimate
SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c WHERE c.oid = %(oid)s

-- name: rebuild_table_mode
SELECT mode FROM mvgraph.table_mode WHERE relid = %(oid)s

-- name: rebuild_lock_holders
SELECT string_agg(DISTINCT b::text, ', ') FROM unnest(pg_blocking_pids(%(pid)s)) b

-- name: rebuild_set_guc
SELECT set_config(%(name)s, %(value)s, false)

-- name: rebuild_partitions
-- The partitions of a partitioned table, with their bounds.
SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid)
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.inhparent = %(oid)s ORDER BY c.relname

-- name: rebuild_regclass
SELECT %(oid)s::oid::regclass::text

-- name: rebuild_relkind
SELECT relkind::text FROM pg_class WHERE oid = %(oid)s

-- name: repeatable_read
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ

-- name: rebuild_lock_timeout
SELECT set_config('lock_timeout', %(ms)s, true)

-- name: rebuild_partkey
SELECT pg_get_partkeydef(%(oid)s)

-- name: rebuild_unlogged
SELECT relpersistence = 'u' FROM pg_class WHERE oid = %(oid)s

-- name: rebuild_identity_position
-- An identity column's new sequence continues where the old table's left off.
SELECT setval(pg_get_serial_sequence(%(new)s, %(column)s), v, true)
  FROM pg_sequence_last_value(%(old)s::regclass) v WHERE v IS NOT NULL

-- name: rebuild_hold
-- A rebuild's session-level hold on a relation (bigint key: namespace << 32 | oid).
SELECT pg_try_advisory_lock(%(key)s)

-- name: rebuild_holder
-- The sessions holding a rebuild's hold on a relation: "application_name (pid)".
SELECT string_agg(DISTINCT format('%%s (backend pid %%s)', a.application_name, l.pid), ', ')
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
           SELECT oid FROM pg_database WHERE datname = current_database())
   AND ((l.classid::bigint << 32) | l.objid::bigint) = %(key)s

-- name: rebuild_capture_triggers
-- The change-capture triggers of rebuilds on a table (<name>__rbtg<job>, <name>__rbtg<job>_t).
SELECT tgname FROM pg_trigger WHERE tgrelid = %(oid)s AND tgname ~ '__rbtg[0-9]+(_t)?$'

-- name: rebuild_progress
SELECT job_name, step_id, step, status, progress, start_time, end_time, pid, message
  FROM mvgraph.rebuild_progress(%(job)s)

-- name: current_search_path
SELECT current_setting('search_path')

-- name: job_error
SELECT error FROM mvgraph.job WHERE id = %(job)s

-- name: rebuild_index_names
SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = %(schema)s AND t.relname = %(name)s

-- name: step_backend
SELECT mvgraph.step_backend(%(job)s, %(seq)s, %(pid)s)

-- name: rebuild_fingerprint
-- What a rebuild copied of these relations (columns, defaults, constraints, indexes, triggers
-- but its own capture, policies, partitions, grants, comments, definitions): DDL made meanwhile
-- changes it.
SELECT md5(concat_ws('|',
  (SELECT string_agg(concat_ws(',', a.attrelid, a.attname, a.atttypid, a.atttypmod,
                               a.attnotnull, a.attisdropped, pg_get_expr(d.adbin, d.adrelid),
                               a.attacl::text, col_description(a.attrelid, a.attnum)),
                     ';' ORDER BY a.attrelid, a.attnum)
     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = ANY (%(oids)s::oid[]) AND a.attnum > 0),
  (SELECT string_agg(pg_get_constraintdef(c.oid) || c.conname::text, ';' ORDER BY c.conname)
     FROM pg_constraint c WHERE c.conrelid = ANY (%(oids)s::oid[])),
  (SELECT string_agg(pg_get_indexdef(i.indexrelid), ';' ORDER BY i.indexrelid)
     FROM pg_index i WHERE i.indrelid = ANY (%(oids)s::oid[])),
  (SELECT string_agg(t.tgname || t.tgenabled::text, ';' ORDER BY t.tgname)
     FROM pg_trigger t WHERE t.tgrelid = ANY (%(oids)s::oid[]) AND NOT t.tgisinternal
      AND t.tgname !~ '__rbtg[0-9]+(_t)?$'),
  (SELECT string_agg(p.polname::text || coalesce(pg_get_expr(p.polqual, p.polrelid), ''), ';'
                     ORDER BY p.polname)
     FROM pg_policy p WHERE p.polrelid = ANY (%(oids)s::oid[])),
  (SELECT string_agg(h.inhrelid::text, ',' ORDER BY h.inhrelid)
     FROM pg_inherits h WHERE h.inhparent = ANY (%(oids)s::oid[])),
  (SELECT string_agg(concat_ws(',', c.oid, c.relname, c.relacl::text, c.reloptions::text,
                               c.relowner, obj_description(c.oid, 'pg_class'),
                               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END),
                     ';' ORDER BY c.oid)
     FROM pg_class c WHERE c.oid = ANY (%(oids)s::oid[]))))
