-- The status page's own queries (mvgraph web), loaded by name with
-- mvgraph.db.queries.query(name, "mvgraph.web"). Each runs inside the page's READ ONLY
-- transaction, as the page's role, and reads only the role-filtered views (mvgraph.job,
-- mvgraph.job_step, mvgraph.schedule; never the *_data tables).

-- name: session_read_only
-- The page's session: every transaction read only, a statement never waits long.
SELECT set_config('default_transaction_read_only', 'on', false),
       set_config('statement_timeout', '10s', false),
       set_config('lock_timeout', '2s', false)

-- name: who
SELECT current_database(), current_user, now()

-- name: view_steps
-- Per materialized view: its step running now in an unfinished job, else its last finished
-- step (done, skipped or failed) of a job submitted within the day.
SELECT DISTINCT ON (s.name) s.name, s.status, s.job_id, s.error, s.reason,
       coalesce(s.finished_at, s.started_at)
  FROM mvgraph.job_step s
  JOIN mvgraph.job j ON j.id = s.job_id
 WHERE j.submitted_at > now() - interval '1 day'
   AND (s.status IN ('done', 'skipped', 'failed')
        OR (s.status = 'running' AND j.status = 'running'))
 ORDER BY s.name, s.status = 'running' DESC,
          coalesce(s.finished_at, s.started_at) DESC NULLS LAST, s.job_id DESC

-- name: view_runs
-- The last runs of one view: its steps in the jobs the role may see, newest first.
SELECT s.job_id, s.status, s.planned, s.reason, s.error, s.started_at, s.finished_at,
       coalesce(s.duration_s, extract(epoch FROM s.finished_at - s.started_at))::float8,
       j.owner::text, j.kind, j.status
  FROM mvgraph.job_step s
  JOIN mvgraph.job j ON j.id = s.job_id
 WHERE s.name = %(name)s
 ORDER BY coalesce(s.started_at, j.submitted_at) DESC, s.job_id DESC
 LIMIT %(limit)s

-- name: short_lock_timeout
-- For the rest of the (page's, rolled back) transaction: a view's definition is not worth a
-- wait, the page's other readers queue behind it.
SELECT set_config('lock_timeout', '200ms', true)

-- name: view_definition
-- A view's query (pg_get_viewdef waits while a plain REFRESH holds the view: lock_timeout).
SELECT c.relkind::text, pg_get_viewdef(c.oid, true), pg_get_userbyid(c.relowner)::text,
       obj_description(c.oid, 'pg_class')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s

-- name: workers
-- Running workers: their heartbeat rows (written every lease renewal period; a worker that stops
-- cleanly deletes its row), with the heartbeat's age and period.
SELECT w.name, w.host, w.pid, w.concurrency, w.started_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8, w.heartbeat_s
  FROM mvgraph.worker w
 ORDER BY w.name, w.id

-- name: worker_leases
-- Running background jobs by worker, with the latest lease (renewed by the worker's heartbeat).
SELECT j.worker, array_agg(j.id ORDER BY j.id), max(j.lease_until),
       extract(epoch FROM max(j.lease_until) - now())::float8
  FROM mvgraph.job j
 WHERE j.status = 'running' AND j.worker IS NOT NULL
 GROUP BY j.worker
 ORDER BY j.worker
