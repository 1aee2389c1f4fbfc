-- A refresh step records its job row in one write (issue 22: hot paths in one round trip).
--
-- mvgraph.record_refresh closed a step with two calls, mvgraph.step_finished and then
-- mvgraph.step_started_at, each a SECURITY DEFINER call with its own check of the job
-- (mvgraph.job_to_run) and its own UPDATE of the step's row. It now checks the job once and
-- writes the row once, with the same values: status done, the reason as recorded, finished
-- now, the duration, no error, whether it ran CONCURRENTLY, started when the REFRESH started,
-- by this backend. The rest of the function (0016_refresh_integrity.sql) is kept as it is:
-- only those two calls are replaced in its definition (its owner, rights and settings stay).
DO $$
DECLARE
    old_calls constant text := $old$
        PERFORM mvgraph.step_finished(job, step_seq, 'done', step_reason, took, NULL,
                                      use_concurrently);
        PERFORM mvgraph.step_started_at(job, step_seq, started);$old$;
    one_write constant text := $new$
        PERFORM mvgraph.job_to_run(job);
        UPDATE mvgraph.job_step_data
           SET status = 'done', reason = step_reason, finished_at = clock_timestamp(),
               duration_s = took, error = NULL, concurrent = use_concurrently,
               started_at = started, backend_pid = pg_backend_pid()
         WHERE job_id = job AND seq = step_seq;$new$;
    definition text;
BEGIN
    SELECT pg_get_functiondef(p.oid) INTO definition FROM pg_proc p
     WHERE p.oid = 'mvgraph.record_refresh(oid, text, pg_snapshot, double precision, oid[], '
                   'oid[], bigint[], bigint[], bigint, integer, text, boolean, timestamptz)'
                   ::regprocedure;
    IF strpos(definition, old_calls) = 0 THEN
        RAISE EXCEPTION 'mvgraph.record_refresh is not the definition 0016 made';
    END IF;
    EXECUTE replace(definition, old_calls, one_write);
END
$$;
