-- Firing stays as fast with a long history (issue 22: hot paths).
--
-- mvgraph.fire_slots asked, per schedule, whether a run of it is still going and whether one
-- waits (overlap rule) by reading every slot row the schedule ever had: a schedule firing every
-- second made each firing slower by the second (the 100-a-second benchmark's lateness grew from
-- ~15 ms to ~300 ms as its slot rows piled up), and nothing ever deleted slot rows.
--
-- * A run still going has a slot row whose end is not yet written (`ended` is set once its job
--   is done, failed or cancelled, which no job leaves), so the check looks at those rows only,
--   through a partial index; waiting rows (fired, no job yet) get one too.
-- * mvgraph.purge_jobs (which workers run after jobs) also deletes the slot rows older than the
--   retention whose run is over (ended, skipped or missed), keeping each schedule's newest
--   clock slot, from which a daemon catches up after a downtime. Only a worker or an
--   administrator purges slots (they are every owner's history).
-- The rest of both functions is kept as it is: the fragments are replaced in their
-- definitions (their owner, rights and settings stay).

CREATE INDEX schedule_slot_unended ON mvgraph.schedule_slot_data (schedule_id)
    WHERE job_id IS NOT NULL AND NOT ended;
CREATE INDEX schedule_slot_waiting ON mvgraph.schedule_slot_data (schedule_id)
    WHERE status = 'fired' AND job_id IS NULL AND NOT ended AND NOT manual;
CREATE INDEX schedule_slot_at ON mvgraph.schedule_slot_data (slot);

DO $$
DECLARE
    old_busy constant text := $old$
                        WHERE ss.schedule_id = u.id
                          AND j.status IN ('queued', 'running', 'suspended')) AS busy,$old$;
    new_busy constant text := $new$
                        WHERE ss.schedule_id = u.id AND ss.job_id IS NOT NULL
                          AND NOT ss.ended
                          AND j.status IN ('queued', 'running', 'suspended')) AS busy,$new$;
    old_purge constant text := $old$
    GET DIAGNOSTICS n = ROW_COUNT;$old$;
    new_purge constant text := $new$
    GET DIAGNOSTICS n = ROW_COUNT;
    IF mvgraph.sees_all() THEN
        DELETE FROM mvgraph.schedule_slot_data ss
         WHERE ss.slot < now() - make_interval(days => coalesce(days,
               (SELECT value::int FROM mvgraph.setting WHERE key = 'retention_days'), 7))
           AND (ss.ended OR ss.status <> 'fired')
           AND (ss.manual
                OR ss.slot < (SELECT max(l.slot) FROM mvgraph.schedule_slot_data l
                               WHERE l.schedule_id = ss.schedule_id AND NOT l.manual));
    END IF;$new$;
    definition text;
BEGIN
    definition := pg_get_functiondef('mvgraph.fire_slots(bigint[], timestamptz[], text[], '
                                     'timestamptz[], text, jsonb, text)'::regprocedure);
    IF strpos(definition, old_busy) = 0 THEN
        RAISE EXCEPTION 'mvgraph.fire_slots is not the definition 0022 made';
    END IF;
    EXECUTE replace(definition, old_busy, new_busy);
    definition := pg_get_functiondef('mvgraph.purge_jobs(integer)'::regprocedure);
    IF strpos(definition, old_purge) = 0 THEN
        RAISE EXCEPTION 'mvgraph.purge_jobs is not the definition 0015 made';
    END IF;
    EXECUTE replace(definition, old_purge, new_purge);
END
$$;
