-- Claim several queued jobs in one round trip: when twenty schedules fall due at one instant, a
-- worker with free slots takes as many as it can run in one statement instead of one claim per
-- job (the twentieth job started a claim round trip per job before it). Same rules as
-- mvgraph.claim_job: the max_concurrent_jobs cap over all workers, oldest first, one claimer at
-- a time (the same advisory lock), locked jobs skipped.
CREATE FUNCTION mvgraph.claim_jobs(worker_name text, lease_s double precision, wanted integer)
RETURNS SETOF mvgraph.job
LANGUAGE plpgsql AS $$
DECLARE
    cap  integer;
    busy integer;
BEGIN
    PERFORM mvgraph.reap_jobs();
    PERFORM pg_catalog.pg_advisory_xact_lock(mvgraph.job_lock_key(0));
    cap := coalesce((SELECT value::integer FROM mvgraph.setting WHERE key = 'max_concurrent_jobs'), 4);
    SELECT count(*) INTO busy FROM mvgraph.job WHERE status = 'running' AND background;
    IF busy >= cap OR wanted < 1 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE mvgraph.job u
       SET status = 'running', background = true, worker = worker_name, attempt = u.attempt + 1,
           lease_until = now() + pg_catalog.make_interval(secs => lease_s),
           started_at = coalesce(u.started_at, now()), pid = pg_catalog.pg_backend_pid(),
           request = NULL, error = NULL
      FROM (SELECT id FROM mvgraph.job WHERE status = 'queued' ORDER BY id
               FOR UPDATE SKIP LOCKED LIMIT least(wanted, cap - busy)) q
     WHERE u.id = q.id
    RETURNING u.*;
END
$$;
