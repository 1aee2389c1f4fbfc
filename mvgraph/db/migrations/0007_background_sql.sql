-- Background SQL: mvgraph.submit accepts any statement. A REFRESH form is a 'refresh' job (as
-- before); CREATE MATERIALIZED VIEW is created WITH NO DATA at once, in the submitter's
-- session, and a 'create' job populates it; anything else is a 'sql' job that a worker runs
-- with the submitter's rights, keeping its command tag, notices and first rows in job.result.
-- Dropping a view being created cancels its job (mvgraph.on_sql_drop, an event trigger
-- installed with the others where permitted; workers notice it too).

-- A 'sql' job has one step, planned 'run'.
ALTER TABLE mvgraph.job_step DROP CONSTRAINT job_step_planned_check,
    ADD CONSTRAINT job_step_planned_check CHECK (planned IN ('refresh', 'skip', 'run'));

-- The statement's kind, as submit plans it: a REFRESH in mvgraph's forms (PostgreSQL's own
-- WITH [NO] DATA form runs as plain SQL), CREATE MATERIALIZED VIEW, or any other statement.
CREATE FUNCTION mvgraph.statement_kind(statement text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN statement ~* '^\s*refresh\s+materialized\s+view\s'
             AND statement !~* '\swith\s+(no\s+)?data\s*;?\s*$' THEN 'refresh'
        WHEN statement ~* '^\s*create\s+materialized\s+view\s' THEN 'create'
        ELSE 'sql' END
$$;

-- Queue a statement as a background job; returns its id. Names resolve through the
-- submitter's search_path, recorded here. SECURITY INVOKER: a CREATE runs with the caller's
-- rights, and its errors are the caller's at once.
CREATE OR REPLACE FUNCTION mvgraph.submit(statement text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    kind    text := mvgraph.statement_kind(statement);
    body    text;
    before  oid[];
    made    record;
    opts    jsonb := pg_catalog.jsonb_build_object(
                         'search_path', pg_catalog.current_schemas(false)::text[],
                         'search_path_setting', pg_catalog.current_setting('search_path'));
    new_id  bigint;
BEGIN
    IF statement IS NULL OR statement !~ '\S' THEN
        RAISE EXCEPTION 'mvgraph.submit: the statement is empty'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind = 'create' THEN
        -- Created now WITH NO DATA: its definition persists and its errors are reported here.
        body := pg_catalog.regexp_replace(statement, '\s*;\s*$', '');
        body := pg_catalog.regexp_replace(body, '\s+with\s+(no\s+)?data\s*$', '', 'i');
        SELECT pg_catalog.array_agg(c.oid) INTO before FROM pg_catalog.pg_class c
         WHERE c.relkind = 'm';
        EXECUTE body || E'\nWITH NO DATA';
        SELECT c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name INTO made
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'm' AND c.oid <> ALL (coalesce(before, '{}'))
           AND c.xmin::text = (pg_catalog.pg_current_xact_id()::text::numeric % 4294967296)::text
         LIMIT 1;
        IF NOT FOUND THEN  -- IF NOT EXISTS, and it existed: nothing to populate
            INSERT INTO mvgraph.job (kind, statement, status, background, options, started_at,
                                     finished_at, result)
            VALUES ('create', statement, 'done', true, opts, now(), now(),
                    pg_catalog.jsonb_build_object(
                        'tag', 'CREATE MATERIALIZED VIEW',
                        'notices', pg_catalog.jsonb_build_array(
                            'the materialized view already exists; nothing to populate')));
            RETURN pg_catalog.currval('mvgraph.job_id_seq'::regclass);
        END IF;
        opts := opts || pg_catalog.jsonb_build_object('mv', made.oid::bigint, 'name', made.name);
    END IF;
    INSERT INTO mvgraph.job (kind, statement, status, background, options)
    VALUES (kind, statement, 'queued', true, opts);
    new_id := pg_catalog.currval('mvgraph.job_id_seq'::regclass);  -- no SELECT right needed
    PERFORM pg_catalog.pg_notify('mvgraph_jobs', new_id::text);
    RETURN new_id;
END
$$;

-- DROP of a view a 'create' job is populating cancels the job (RisingWave: cancel a background
-- creation by dropping its target). A queued or suspended job is closed here; a running one is
-- asked to cancel (its REFRESH cannot be running: the DROP holds the view's lock).
CREATE FUNCTION mvgraph.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    FOR j IN SELECT job.id, job.status, d.object_identity
               FROM pg_event_trigger_dropped_objects() d
               JOIN mvgraph.job job ON job.kind = 'create'
                AND job.status IN ('queued', 'suspended', 'running')
                AND job.options ? 'mv' AND (job.options ->> 'mv')::oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
                AND d.object_type = 'materialized view' LOOP
        IF j.status = 'running' THEN
            UPDATE mvgraph.job SET request = 'cancel' WHERE id = j.id;
        ELSE
            UPDATE mvgraph.job_step
               SET status = 'cancelled', finished_at = clock_timestamp(),
                   reason = 'the view was dropped'
             WHERE job_id = j.id AND status IN ('pending', 'running');
            UPDATE mvgraph.job
               SET status = 'cancelled', request = NULL, lease_until = NULL,
                   finished_at = clock_timestamp(),
                   error = format('cancelled: materialized view %s was dropped', j.object_identity)
             WHERE id = j.id;
        END IF;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION mvgraph.submit(text) FROM PUBLIC;
