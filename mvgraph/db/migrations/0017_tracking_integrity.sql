-- Tracking a table owner cannot switch off, and no log row for statements that write nothing
-- (issue 17, items 6, 7 and 9).
--
-- Item 6: the plan verified only that some trigger named mvgraph_track existed on a partition.
-- A table owner could disable it, put a decoy of that name on a new partition, or write to an
-- inheritance child (never tracked). Now every relation of a tracked table's tree (the table,
-- its partitions and its inheritance children, at every level) must carry a trigger that calls
-- mvgraph.track_write(), is enabled (origin or always), fires once per statement for INSERT,
-- UPDATE, DELETE and TRUNCATE with no WHEN condition and no column list, passes an argument
-- when the relation has a parent (its writes are logged for every ancestor), and is the very
-- trigger, unaltered, that `mvgraph track` installed: its oid and the xmin of its pg_trigger row
-- are recorded (mvgraph.track_trigger), so DISABLE then ENABLE, or DROP then CREATE, between
-- two plans is seen too. mvgraph.tracking_problems() says what is wrong, one row per relation;
-- the planner makes the readers stale with that reason.
--
-- Item 7: wal mode used any publication named mvgraph_wal / mvgraph_wal_insert and any slot
-- named like its own. mvgraph.wal_object records the publications mvgraph created (oid, owner;
-- recorded only in the transaction that created them, with mvgraph's options) and its slot;
-- mvgraph.wal_problems() checks them before every use.
--
-- Item 9: the trigger fires AFTER the statement and logs nothing when the transaction has
-- written no row yet (no transaction id) and the table holds its own rows; TRUNCATE, and
-- statements through partitioned or foreign tables, log as before. BEFORE triggers of older
-- versions keep logging every statement until `mvgraph track` replaces them.

-- ---- item 9 (and inheritance children): the writers' trigger --------------------------------

-- A statement that wrote nothing: the transaction has no transaction id yet (writing a row
-- assigns one; PostgreSQL's own test, no settable state) and the table keeps its rows itself
-- (it has storage: not a partitioned table, whose rows are in its partitions, nor a foreign
-- table, whose rows are written elsewhere; a foreign table below a plain inheritance parent is
-- reported by mvgraph.tracking_problems). Both are C calls in a simple expression: no query.
-- Transactions that wrote something log every statement as before (readers count
-- transactions). The transaction-local pg_stat counters were tried first and are not usable:
-- since PostgreSQL 15 they include earlier transactions' counts not yet flushed.
-- TG_NARGS > 0: a partition or an inheritance child; its writes are writes to every ancestor
-- (pg_inherits holds both kinds of parent).
CREATE OR REPLACE FUNCTION mvgraph.track_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_WHEN = 'AFTER' AND TG_OP <> 'TRUNCATE' AND pg_current_xact_id_if_assigned() IS NULL
       AND pg_relation_filenode(TG_RELID) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF TG_NARGS = 0 THEN
        INSERT INTO mvgraph.write_log (relid, xid) VALUES (TG_RELID, pg_current_xact_id());
    ELSE
        INSERT INTO mvgraph.write_log (relid, xid)
        WITH RECURSIVE up(relid) AS (
            SELECT TG_RELID
            UNION
            SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.relid)
        SELECT up.relid, pg_current_xact_id() FROM up;
    END IF;
    RETURN NULL;
END
$$;

-- ---- item 6: the triggers mvgraph installed --------------------------------------------------

CREATE TABLE mvgraph.track_trigger (
    root    oid NOT NULL,  -- the tracked table (mvgraph.table_mode)
    relid   oid NOT NULL,  -- it, or a partition or inheritance child below it
    trigger oid NOT NULL,
    version xid NOT NULL,  -- xmin of the trigger's pg_trigger row when mvgraph recorded it
    PRIMARY KEY (root, relid)
);

-- The tree of a table: it, and every partition and inheritance child below it, with whether
-- each has a parent.
CREATE FUNCTION mvgraph.tracking_tree(root oid)
RETURNS TABLE (relid oid, has_parent boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE tree(relid) AS (
        SELECT root
        UNION
        SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid)
    SELECT t.relid, EXISTS (SELECT FROM pg_inherits p WHERE p.inhrelid = t.relid) FROM tree t
$$;

-- Whether a trigger logs every write of the events in `mask` (tgtype bits: 1 row, 2 before,
-- 4 insert, 8 delete, 16 update, 32 truncate) to its relation: mvgraph's function, enabled
-- for ordinary sessions ('O' origin, 'A' always; 'R' fires only under session_replication_role
-- = replica, 'D' never), statement level, no WHEN condition, no column list, and an argument
-- when the relation has a parent.
CREATE FUNCTION mvgraph.trigger_logs(t pg_trigger, mask integer, has_parent boolean)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.tgfoid = 'mvgraph.track_write()'::regprocedure
       AND t.tgenabled IN ('O', 'A')
       AND t.tgtype & 1 = 0 AND t.tgtype & mask = mask
       AND t.tgqual IS NULL AND cardinality(t.tgattr::int2[]) = 0
       AND (t.tgnargs > 0 OR NOT has_parent)
$$;

-- What is wrong with the tracking of each table: one row per relation of its tree whose writes
-- would not all be logged. modes: each table's tracking mode; 'triggers' needs the full
-- trigger, 'wal' the UPDATE/DELETE one when the table is in mvgraph_wal_insert (no replica
-- identity), other modes nothing. Read by every plan (one call for all inputs).
CREATE FUNCTION mvgraph.tracking_problems(roots oid[], modes text[])
RETURNS TABLE (root oid, relid oid, problem text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH wanted AS (
        SELECT u.root, CASE WHEN u.mode = 'triggers' THEN 60 ELSE 24 END AS mask
          FROM unnest(roots, modes) AS u(root, mode)
         WHERE u.mode = 'triggers'
            OR (u.mode = 'wal' AND EXISTS (
                    SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                     WHERE pr.prrelid = u.root AND p.pubname = 'mvgraph_wal_insert'))
    ), tree AS (
        SELECT w.root, w.mask, t.relid, t.has_parent, c.relkind
          FROM wanted w CROSS JOIN LATERAL mvgraph.tracking_tree(w.root) t
          JOIN pg_class c ON c.oid = t.relid
    )
    SELECT t.root, t.relid,
           'is a foreign table below the plain table ' || p.inhparent::regclass::text
           || ': a write through that table to it is not seen (track it with --mode always)'
      FROM tree t JOIN pg_inherits p ON p.inhrelid = t.relid
      JOIN pg_class pc ON pc.oid = p.inhparent AND pc.relkind = 'r'
     WHERE t.relkind = 'f'
    UNION ALL
    SELECT t.root, t.relid,
           CASE WHEN NOT EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = t.relid
                                    AND g.tgfoid = 'mvgraph.track_write()'::regprocedure)
                THEN 'has no tracking trigger'
                WHEN NOT EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = t.relid
                                    AND g.tgfoid = 'mvgraph.track_write()'::regprocedure
                                    AND g.tgenabled IN ('O', 'A'))
                THEN CASE WHEN EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = t.relid
                                  AND g.tgfoid = 'mvgraph.track_write()'::regprocedure
                                  AND g.tgenabled = 'R')
                          THEN 'has its tracking trigger enabled for replication sessions only'
                          ELSE 'has its tracking trigger disabled' END
                WHEN NOT EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = t.relid
                                    AND mvgraph.trigger_logs(g, t.mask, t.has_parent))
                THEN 'has a tracking trigger that does not log every write (events, level, '
                     'WHEN condition, column list or arguments differ from mvgraph''s)'
                ELSE 'has a tracking trigger that `mvgraph track` did not install, or that was '
                     'altered, disabled or replaced since'
           END
      FROM tree t
     WHERE t.relkind IN ('r', 'p', 'f')
       AND NOT EXISTS (SELECT FROM mvgraph.track_trigger r JOIN pg_trigger g ON g.oid = r.trigger
                        WHERE r.root = t.root AND r.relid = t.relid AND g.tgrelid = t.relid
                          AND g.xmin = r.version AND mvgraph.trigger_logs(g, t.mask, t.has_parent))
    ORDER BY 1, 2
$$;

-- Record the triggers of a table's tree as they are now (`mvgraph track`, after installing
-- them; mode NULL: forget them). Operators only (they may write the change logs anyway): the
-- caller logs a tracking start when some relation had no trusted trigger before (see
-- mvgraph.tracking_problems). Returns whether the record changed.
CREATE FUNCTION mvgraph.record_tracking(table_oid oid, mode text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    before text;
    after  text;
    mask   integer := CASE WHEN mode = 'triggers' THEN 60 ELSE 24 END;
BEGIN
    PERFORM mvgraph.require_level('operator', 'recording tracking triggers');
    SELECT string_agg(r.relid || ':' || r.trigger || ':' || r.version, ',' ORDER BY r.relid)
      INTO before FROM mvgraph.track_trigger r WHERE r.root = table_oid;
    DELETE FROM mvgraph.track_trigger r WHERE r.root = table_oid;
    IF mode IS NOT NULL THEN
        INSERT INTO mvgraph.track_trigger (root, relid, trigger, version)
        SELECT DISTINCT ON (t.relid) table_oid, t.relid, g.oid, g.xmin
          FROM mvgraph.tracking_tree(table_oid) t
          JOIN pg_trigger g ON g.tgrelid = t.relid AND mvgraph.trigger_logs(g, mask, t.has_parent)
         ORDER BY t.relid, g.oid;
    END IF;
    SELECT string_agg(r.relid || ':' || r.trigger || ':' || r.version, ',' ORDER BY r.relid)
      INTO after FROM mvgraph.track_trigger r WHERE r.root = table_oid;
    -- a relation also in another tracked table's tree (a partition tracked itself, below a
    -- tracked parent): the trigger just installed is that table's too
    UPDATE mvgraph.track_trigger o SET trigger = n.trigger, version = n.version
      FROM mvgraph.track_trigger n
     WHERE n.root = table_oid AND o.relid = n.relid AND o.root <> table_oid;
    RETURN before IS DISTINCT FROM after;
END
$$;

-- Tables tracked before this version: their current triggers, as they are, are mvgraph's
-- (no tracking start is logged; a relation without a valid trigger is reported by the plans).
INSERT INTO mvgraph.track_trigger (root, relid, trigger, version)
SELECT DISTINCT ON (m.relid, t.relid) m.relid, t.relid, g.oid, g.xmin
  FROM mvgraph.table_mode m
 CROSS JOIN LATERAL mvgraph.tracking_tree(m.relid) t
  JOIN pg_trigger g ON g.tgrelid = t.relid
   AND mvgraph.trigger_logs(g, CASE WHEN m.mode = 'triggers' THEN 60 ELSE 24 END, t.has_parent)
 WHERE m.mode IN ('triggers', 'wal') AND EXISTS (SELECT FROM pg_class c WHERE c.oid = m.relid)
 ORDER BY m.relid, t.relid, g.oid;

-- ---- item 7: the publications and the slot mvgraph made --------------------------------------

CREATE TABLE mvgraph.wal_object (
    kind    text NOT NULL CHECK (kind IN ('publication', 'slot')),
    name    text NOT NULL,
    oid     oid,   -- a publication's
    owner   oid,   -- a publication's owner
    publish text,  -- what a publication publishes (mvgraph's options)
    version xid,   -- xmin of a publication's pg_publication row (ALTER PUBLICATION makes another)
    created timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);

-- What a publication publishes, in mvgraph's words ("insert, update, delete, truncate").
CREATE FUNCTION mvgraph.publication_publishes(p pg_publication) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END,
                                     CASE WHEN p.pubupdate THEN 'update' END,
                                     CASE WHEN p.pubdelete THEN 'delete' END,
                                     CASE WHEN p.pubtruncate THEN 'truncate' END), ''), 'nothing')
$$;

-- Record a publication mvgraph has just made: only in the transaction that created it, with
-- the options mvgraph gives (publish, not FOR ALL TABLES, publish_via_partition_root off).
CREATE FUNCTION mvgraph.record_wal_publication(pub_name text, pub_publish text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p    pg_publication;
    made xid;
BEGIN
    PERFORM mvgraph.require_level('operator', 'recording a publication');
    SELECT * INTO p FROM pg_publication WHERE pubname = pub_name;
    SELECT xmin INTO made FROM pg_publication WHERE pubname = pub_name;
    IF NOT FOUND OR made::text <> (pg_current_xact_id()::text::numeric % 4294967296)::text
       OR mvgraph.publication_publishes(p) <> pub_publish OR p.puballtables OR p.pubviaroot THEN
        RAISE EXCEPTION 'publication % was not made by this transaction with mvgraph''s options',
              pub_name USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO mvgraph.wal_object (kind, name, oid, owner, publish, version)
    VALUES ('publication', pub_name, p.oid, p.pubowner, pub_publish, made)
    ON CONFLICT (kind, name) DO UPDATE
       SET oid = EXCLUDED.oid, owner = EXCLUDED.owner, publish = EXCLUDED.publish,
           version = EXCLUDED.version, created = now();
END
$$;

-- Record the replication slot mvgraph has just made (a logical pgoutput slot of this database).
CREATE FUNCTION mvgraph.record_wal_slot(slot text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM mvgraph.require_level('operator', 'recording a replication slot');
    IF NOT EXISTS (SELECT FROM pg_replication_slots s
                    WHERE s.slot_name = slot AND s.plugin = 'pgoutput' AND s.slot_type = 'logical'
                      AND s.database = current_database() AND NOT s.temporary) THEN
        RAISE EXCEPTION 'replication slot % is not a pgoutput slot of this database', slot
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO mvgraph.wal_object (kind, name) VALUES ('slot', slot)
    ON CONFLICT (kind, name) DO UPDATE SET created = now();
END
$$;

-- mvgraph's publications that are still the ones it made: the only ones it may drop.
CREATE FUNCTION mvgraph.wal_own_publications() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.pubname::text FROM pg_publication p
      JOIN mvgraph.wal_object o ON o.kind = 'publication' AND o.name = p.pubname
       AND o.oid = p.oid
$$;

-- Forget what mvgraph made (it dropped the slot and the publications: no table in wal mode).
CREATE FUNCTION mvgraph.forget_wal_objects() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM mvgraph.require_level('operator', 'forgetting wal-mode objects');
    DELETE FROM mvgraph.wal_object;
END
$$;

-- Everything wrong with wal mode's publications and slot, one line each (none: all is as
-- mvgraph made it). pubs: mvgraph's publications and what each must publish; existing only:
-- the publications and slot are checked when they exist (before `track` makes them), else
-- each must exist. Tables: every wal-mode table, and each inheritance child below it (not
-- partitions: a partitioned table publishes its partitions' rows), must be in exactly one of
-- the publications, with no row filter or column list; nothing else may be in them.
CREATE FUNCTION mvgraph.wal_problems(slot text, pubs text[], publishes text[],
                                     existing_only boolean)
RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH want AS (
        SELECT u.name, u.publish FROM unnest(pubs, publishes) AS u(name, publish)
    ), pub AS (
        SELECT w.name, w.publish, p.oid, p.pubowner, p.puballtables, p.pubviaroot,
               CASE WHEN p.oid IS NOT NULL THEN mvgraph.publication_publishes(p) END AS has,
               p.xmin AS version, o.oid AS rec_oid, o.owner AS rec_owner,
               o.version AS rec_version
          FROM want w
          LEFT JOIN pg_publication p ON p.pubname = w.name
          LEFT JOIN mvgraph.wal_object o ON o.kind = 'publication' AND o.name = w.name
    ), tables AS (  -- wal-mode tables and the inheritance children below them
        SELECT DISTINCT t.relid
          FROM mvgraph.table_mode m CROSS JOIN LATERAL mvgraph.tracking_tree(m.relid) t
          JOIN pg_class c ON c.oid = t.relid
         WHERE m.mode = 'wal' AND NOT c.relispartition
    ), members AS (
        SELECT pr.prrelid AS relid, p.pubname::text AS name
          FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
         WHERE p.pubname = ANY (pubs)
    )
    SELECT x.line FROM (
        SELECT 1 AS o, format('publication %I was not created by mvgraph (owner %s, publishes '
                              '%s)', x.name, pg_get_userbyid(x.pubowner), x.has) AS line
          FROM pub x WHERE x.oid IS NOT NULL AND x.rec_oid IS NULL
        UNION ALL
        SELECT 2, format('publication %I is missing', x.name)
          FROM pub x WHERE x.oid IS NULL AND NOT existing_only
        UNION ALL
        SELECT 3, format('publication %I was dropped and made again (owner %s)', x.name,
                         pg_get_userbyid(x.pubowner))
          FROM pub x WHERE x.rec_oid IS NOT NULL AND x.oid <> x.rec_oid
        UNION ALL
        SELECT 4, format('publication %I changed owner to %s', x.name, pg_get_userbyid(x.pubowner))
          FROM pub x WHERE x.oid = x.rec_oid AND x.pubowner <> x.rec_owner
        UNION ALL
        SELECT 5, format('publication %I publishes %s instead of %s', x.name, x.has, x.publish)
          FROM pub x WHERE x.oid IS NOT NULL AND x.has <> x.publish
        UNION ALL
        SELECT 15, format('publication %I was altered since mvgraph made it (writes made '
                          'meanwhile may be missing)', x.name)
          FROM pub x WHERE x.oid = x.rec_oid AND x.version <> x.rec_version
        UNION ALL
        SELECT 6, format('publication %I has publish_via_partition_root on', x.name)
          FROM pub x WHERE x.pubviaroot
        UNION ALL
        SELECT 7, format('publication %I is FOR ALL TABLES', x.name)
          FROM pub x WHERE x.puballtables
        UNION ALL
        SELECT 11, format('table %s is in wal mode but in no mvgraph publication',
                          t.relid::regclass)
          FROM tables t WHERE NOT EXISTS (SELECT FROM members m WHERE m.relid = t.relid)
           AND EXISTS (SELECT FROM pub x WHERE x.oid IS NOT NULL)
        UNION ALL
        SELECT 12, format('publication %I holds %s, which is not in wal mode', m.name,
                          m.relid::regclass)
          FROM members m WHERE NOT EXISTS (SELECT FROM tables t WHERE t.relid = m.relid)
        UNION ALL
        SELECT 13, format('replication slot %s was not created by mvgraph', s.slot_name)
          FROM pg_replication_slots s
         WHERE s.slot_name = slot AND NOT EXISTS (
               SELECT FROM mvgraph.wal_object o WHERE o.kind = 'slot' AND o.name = slot)
        UNION ALL
        SELECT 14, format('replication slot %s is not a pgoutput slot of this database',
                          s.slot_name)
          FROM pg_replication_slots s
         WHERE s.slot_name = slot AND (s.plugin IS DISTINCT FROM 'pgoutput'
               OR s.slot_type <> 'logical' OR s.database IS DISTINCT FROM current_database()
               OR s.temporary)
    ) x ORDER BY x.o, x.line;
    IF current_setting('server_version_num')::int >= 150000 THEN  -- row filters, column lists
        RETURN QUERY EXECUTE $q$                                     -- and schemas (15+)
            SELECT format('publication %I filters the rows of %s or lists its columns',
                          p.pubname, pr.prrelid::regclass)
              FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
             WHERE p.pubname = ANY ($1) AND (pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL)
            UNION ALL
            SELECT format('publication %I publishes schema %I', p.pubname, n.nspname)
              FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid
              JOIN pg_namespace n ON n.oid = pn.pnnspid
             WHERE p.pubname = ANY ($1)$q$ USING pubs;
    END IF;
END
$$;

-- Installs with wal mode before this version: the publications and slot that are as mvgraph
-- makes them are recorded as its own; any other is reported by wal_problems() until fixed.
INSERT INTO mvgraph.wal_object (kind, name, oid, owner, publish, version)
SELECT 'publication', p.pubname, p.oid, p.pubowner, mvgraph.publication_publishes(p), p.xmin
  FROM pg_publication p
 WHERE (p.pubname, mvgraph.publication_publishes(p)) IN (
           ('mvgraph_wal', 'insert, update, delete, truncate'),
           ('mvgraph_wal_insert', 'insert, truncate'))
   AND NOT p.puballtables AND NOT p.pubviaroot
   AND EXISTS (SELECT FROM mvgraph.table_mode m WHERE m.mode = 'wal');
INSERT INTO mvgraph.wal_object (kind, name)
SELECT 'slot', s.slot_name
  FROM pg_replication_slots s
 WHERE s.slot_name = 'mvgraph_' || (SELECT d.oid FROM pg_database d
                                     WHERE d.datname = current_database())
   AND s.plugin = 'pgoutput' AND s.slot_type = 'logical' AND NOT s.temporary
   AND s.database = current_database()
   AND EXISTS (SELECT FROM mvgraph.table_mode m WHERE m.mode = 'wal');

-- ---- rights: no table is open; the functions check the caller's level themselves ------------

REVOKE ALL ON mvgraph.track_trigger, mvgraph.wal_object FROM PUBLIC;
REVOKE ALL ON FUNCTION mvgraph.tracking_tree(oid), mvgraph.trigger_logs(pg_trigger, integer, boolean),
                       mvgraph.publication_publishes(pg_publication) FROM PUBLIC;
-- Read-only reports of catalog facts, for every planner (viewer level and up).
GRANT EXECUTE ON FUNCTION mvgraph.tracking_problems(oid[], text[]), mvgraph.wal_own_publications(),
                          mvgraph.wal_problems(text, text[], text[], boolean) TO PUBLIC;
-- Writers of the records: each refuses callers below mvgraph's operator level.
GRANT EXECUTE ON FUNCTION mvgraph.record_tracking(oid, text),
                          mvgraph.record_wal_publication(text, text),
                          mvgraph.record_wal_slot(text), mvgraph.forget_wal_objects() TO PUBLIC;
