-- The catalog queries of a rebuild's prepare step (mvgraph.rebuild.closure), loaded by name
-- like mvgraph/db/queries.sql. Statements that name the read relation take %(oid)s.

-- name: rb_relation
-- The relation itself, and the facts that forbid a rebuild.
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
       c.oid::regclass::text AS display,  -- schema-qualified: read with search_path ''
       pg_get_userbyid(c.relowner) AS owner, c.relpersistence::text AS persistence,
       c.relispartition AS partition,
       (SELECT p.oid::regclass::text FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
         WHERE i.inhrelid = c.oid ORDER BY i.inhseqno LIMIT 1) AS parent,
       (SELECT string_agg(k.oid::regclass::text, ', ' ORDER BY k.oid)
          FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid
         WHERE i.inhparent = c.oid AND NOT k.relispartition) AS children,
       (SELECT e.refobjid::regnamespace::text FROM pg_depend e
         WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e'
         LIMIT 1) IS NOT NULL AS extension,
       nullif(c.reloftype, 0)::regtype::text AS typed_as
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = %(oid)s

-- name: rb_columns
-- The relation's columns, in order (dropped ones left out).
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type_sql,
       a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default_sql,
       a.attgenerated <> '' AS generated,
       a.attidentity::text AS identity,
       CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
            THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END AS collation
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
 WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum

-- name: rb_primary_key
-- The primary key's name and columns, in key order.
SELECT con.conname AS name,
       array_agg(a.attname ORDER BY k.ord) AS columns
  FROM pg_constraint con
  CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
 WHERE con.conrelid = %(oid)s AND con.contype = 'p'
 GROUP BY con.conname

-- name: rb_closure_edges
-- (input, dependent) for every view and materialized view that reads the relation, directly
-- or through others, found by the _RETURN rules' dependencies on a relation or on its row type;
-- every edge between members of that closure (the relation included).
WITH RECURSIVE edges AS (
    SELECT DISTINCT coalesce(t.typrelid, d.refobjid) AS input, r.ev_class AS dependent
      FROM pg_depend d
      JOIN pg_rewrite r ON r.oid = d.objid
      JOIN pg_class v ON v.oid = r.ev_class
      LEFT JOIN pg_type t ON d.refclassid = 'pg_type'::regclass
                         AND (t.oid = d.refobjid
                              OR t.typarray = d.refobjid AND t.typrelid <> 0)
     WHERE d.classid = 'pg_rewrite'::regclass AND d.deptype = 'n'
       AND r.rulename = '_RETURN' AND v.relkind IN ('v', 'm')
       AND (d.refclassid = 'pg_class'::regclass OR t.typrelid <> 0)
), closure(oid) AS (
    SELECT %(oid)s::oid
    UNION
    SELECT e.dependent FROM edges e JOIN closure c ON e.input = c.oid
)
SELECT e.input::bigint AS input, e.dependent::bigint AS dependent
  FROM edges e
 WHERE e.input IN (SELECT oid FROM closure) AND e.dependent IN (SELECT oid FROM closure)
   AND e.input <> e.dependent

-- name: rb_dependents
-- Each dependent's facts and definition (read with search_path = '': every name qualified).
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
       pg_get_userbyid(c.relowner) AS owner, c.relispopulated AS populated,
       pg_get_viewdef(c.oid) AS definition
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY(%(oids)s)

-- name: rb_outside_dependencies
-- Objects that depend (normally) on a member of the closure (its relation, row type or the
-- array of it; %(oids)s) or on a partition of the relation, with the relation each belongs to
-- (0: none) and, for a foreign key, the table it references.
WITH watched AS (
    SELECT unnest(%(oids)s::oid[]) AS oid
    UNION
    SELECT relid FROM pg_partition_tree(%(oid)s::oid::regclass) WHERE relid <> %(oid)s::oid
), targets AS (
    SELECT 'pg_class'::regclass AS classid, w.oid, w.oid AS relation FROM watched w
    UNION ALL
    SELECT 'pg_type'::regclass, t.oid, w.oid
      FROM watched w JOIN pg_class c ON c.oid = w.oid
      JOIN pg_type t ON t.oid IN (c.reltype, (SELECT typarray FROM pg_type
                                               WHERE oid = c.reltype))
)
SELECT DISTINCT d.classid::regclass::text AS classid,
       pg_describe_object(d.classid, d.objid, 0) AS object,
       pg_describe_object(d.refclassid, d.refobjid, 0) AS target,
       tg.relation::bigint AS target_relation,
       coalesce(CASE d.classid
           WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = d.objid)
           WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = d.objid)
           WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = d.objid)
           WHEN 'pg_constraint'::regclass
               THEN (SELECT conrelid FROM pg_constraint WHERE oid = d.objid)
           WHEN 'pg_statistic_ext'::regclass
               THEN (SELECT stxrelid FROM pg_statistic_ext WHERE oid = d.objid)
           WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = d.objid)
           WHEN 'pg_class'::regclass THEN d.objid
       END, 0)::bigint AS owner_relation,
       (SELECT confrelid FROM pg_constraint
         WHERE oid = d.objid AND d.classid = 'pg_constraint'::regclass
           AND contype = 'f')::bigint AS references
  FROM targets tg
  JOIN pg_depend d ON d.refclassid = tg.classid AND d.refobjid = tg.oid
 WHERE d.deptype = 'n'
   AND NOT EXISTS (SELECT 1 FROM pg_inherits i  -- an inheritance child: said on its own
                    WHERE d.classid = 'pg_class'::regclass AND i.inhrelid = d.objid
                      AND i.inhparent = d.refobjid)
 ORDER BY 2

-- name: rb_referencing_fks
-- Foreign keys of other tables that reference the relation (clones on partitions left out).
SELECT n.nspname AS schema, c.relname AS name, con.conname AS constraint,
       pg_get_constraintdef(con.oid) AS definition
  FROM pg_constraint con
  JOIN pg_class c ON c.oid = con.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE con.contype = 'f' AND con.confrelid = %(oid)s AND con.conrelid <> %(oid)s
   AND con.conparentid = 0
 ORDER BY n.nspname, c.relname, con.conname

-- name: rb_owned_sequences
-- Sequences owned by a column of the relation (serial: 'a'; identity: 'i').
SELECT n.nspname AS schema, s.relname AS name, a.attname AS column
  FROM pg_depend d
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_namespace n ON n.oid = s.relnamespace
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
   AND d.refobjid = %(oid)s AND d.deptype IN ('a', 'i')
 ORDER BY a.attnum, s.relname

-- name: rb_publications
-- Publications that list the relation by name (FOR ALL TABLES ones need nothing).
SELECT p.pubname AS name
  FROM pg_publication_rel r
  JOIN pg_publication p ON p.oid = r.prpubid
 WHERE r.prrelid = %(oid)s
 ORDER BY p.pubname

-- name: rb_set_search_path
-- SET LOCAL search_path (inside the reading transaction); returns the one it replaces.
SELECT current_setting('search_path') AS old, set_config('search_path', %(path)s, true) AS new

-- name: rb_attached_relation
-- What attached_ddl needs of the relation itself.
SELECT c.relkind::text AS kind, n.nspname AS schema, c.relname AS name,
       pg_get_userbyid(c.relowner) AS owner,
       coalesce(c.reloptions, '{}') AS options,
       coalesce((SELECT t.reloptions FROM pg_class t WHERE t.oid = c.reltoastrelid), '{}')
           AS toast_options,
       c.relrowsecurity AS row_security, c.relforcerowsecurity AS force_row_security,
       c.relreplident::text AS replica_identity,
       (SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         WHERE x.indrelid = c.oid AND x.indisreplident) AS replica_index,
       c.relacl IS NOT NULL AS has_acl,
       obj_description(c.oid, 'pg_class') AS comment
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = %(oid)s

-- name: rb_column_facts
-- Per column: options (n_distinct...), statistics target, comment, and a view's column
-- default (ALTER VIEW ... SET DEFAULT); only the columns that have any.
SELECT a.attname AS name, coalesce(a.attoptions, '{}') AS options,
       nullif(a.attstattarget, -1)::int AS stattarget,
       col_description(a.attrelid, a.attnum) AS comment,
       CASE WHEN c.relkind = 'v' THEN pg_get_expr(d.adbin, d.adrelid) END AS view_default
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
   AND (a.attoptions IS NOT NULL OR a.attstattarget >= 0
        OR col_description(a.attrelid, a.attnum) IS NOT NULL
        OR (c.relkind = 'v' AND d.adbin IS NOT NULL))
 ORDER BY a.attnum

-- name: rb_constraints
-- The relation's own constraints but NOT NULL ones (they come with the columns): definition,
-- index, whether valid and enforced (PostgreSQL 18's NOT ENFORCED), comment.
SELECT con.conname AS name, con.contype::text AS type, pg_get_constraintdef(con.oid) AS definition,
       (SELECT relname FROM pg_class WHERE oid = con.conindid AND con.contype IN ('p', 'u', 'x'))
           AS index, con.convalidated AS valid,
       coalesce((to_jsonb(con) ->> 'conenforced')::boolean, true) AS enforced,
       obj_description(con.oid, 'pg_constraint') AS comment,
       (SELECT indisclustered FROM pg_index WHERE indexrelid = con.conindid
           AND con.contype IN ('p', 'u', 'x')) AS clustered
  FROM pg_constraint con
 WHERE con.conrelid = %(oid)s AND con.contype IN ('p', 'u', 'x', 'c', 'f')
   AND con.conparentid = 0
 ORDER BY con.contype, con.conname

-- name: rb_indexes
-- Indexes that back no constraint of the relation.
SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition,
       x.indisclustered AS clustered, obj_description(i.oid, 'pg_class') AS comment
  FROM pg_index x
  JOIN pg_class i ON i.oid = x.indexrelid
 WHERE x.indrelid = %(oid)s
   AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                    WHERE con.conindid = x.indexrelid AND con.conrelid = x.indrelid
                      AND con.contype IN ('p', 'u', 'x'))
 ORDER BY i.relname

-- name: rb_triggers
-- User triggers (not those behind foreign keys), their enabled state and comment.
SELECT t.tgname AS name, pg_get_triggerdef(t.oid) AS definition,
       t.tgenabled::text AS enabled, obj_description(t.oid, 'pg_trigger') AS comment
  FROM pg_trigger t
 WHERE t.tgrelid = %(oid)s AND NOT t.tgisinternal AND t.tgparentid = 0
 ORDER BY t.tgname

-- name: rb_rules
-- Rules other than a view's _RETURN, their enabled state and comment.
SELECT r.rulename AS name, pg_get_ruledef(r.oid) AS definition,
       r.ev_enabled::text AS enabled, obj_description(r.oid, 'pg_rewrite') AS comment
  FROM pg_rewrite r
 WHERE r.ev_class = %(oid)s AND r.rulename <> '_RETURN'
 ORDER BY r.rulename

-- name: rb_policies
-- Row security policies: roles by name (NULL: PUBLIC), expressions as the server writes them.
SELECT p.polname AS name, p.polpermissive AS permissive, p.polcmd::text AS command,
       ARRAY(SELECT CASE WHEN r = 0 THEN NULL ELSE pg_get_userbyid(r) END
               FROM unnest(p.polroles) AS r ORDER BY 1) AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS qual,
       pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
       obj_description(p.oid, 'pg_policy') AS comment
  FROM pg_policy p
 WHERE p.polrelid = %(oid)s
 ORDER BY p.polname

-- name: rb_grants
-- The relation's privileges (column NULL) and its columns', one row per grantee, grant option
-- and column; grantee NULL: PUBLIC.
WITH acl AS (
    SELECT NULL::name AS column_name, NULL::smallint AS attnum, (aclexplode(c.relacl)).*
      FROM pg_class c WHERE c.oid = %(oid)s
    UNION ALL
    SELECT a.attname, a.attnum, (aclexplode(a.attacl)).*
      FROM pg_attribute a
     WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
)
SELECT CASE WHEN grantee = 0 THEN NULL ELSE pg_get_userbyid(grantee) END AS grantee,
       is_grantable AS grantable, column_name AS column,
       array_agg(privilege_type ORDER BY privilege_type) AS privileges
  FROM acl
 GROUP BY grantee, is_grantable, column_name, attnum
 ORDER BY attnum NULLS FIRST, 1 NULLS FIRST, grantable

-- name: rb_statistics
-- Extended statistics objects on the relation.
SELECT n.nspname AS schema, s.stxname AS name, pg_get_statisticsobjdef(s.oid) AS definition,
       nullif(s.stxstattarget, -1)::int AS stattarget,
       obj_description(s.oid, 'pg_statistic_ext') AS comment
  FROM pg_statistic_ext s
  JOIN pg_namespace n ON n.oid = s.stxnamespace
 WHERE s.stxrelid = %(oid)s
 ORDER BY n.nspname, s.stxname
