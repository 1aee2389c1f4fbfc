-- Expressions: casts, COLLATE, operators of every family, user-defined operators, SQL-standard
-- function syntax, time zones, OVERLAPS, normalisation, constructors.
SET search_path TO corpus, public;

CREATE VIEW e_casts AS
  SELECT shop_id::text AS a, CAST(shop_id AS varchar(5)) AS b, text 'lit' AS c, int4(shop_id) AS d,
         stamp::timestamp(3) with time zone AS e, stamp::time without time zone AS f,
         '1 hour'::interval hour to minute AS g, interval '2' day AS h,
         flags::bit varying(8) AS i, wflags::varbit AS j, opened::timestamp AS k,
         1.5::double precision AS l, '3'::"numeric"(10, 2) AS m, tags::varchar[] AS n,
         ROW(shop_id, shop_id)::corpus.pair AS o, 'corpus.shops'::regclass AS p,
         city::character varying(10) AS q
    FROM shops;
CREATE VIEW e_collate AS
  SELECT city COLLATE "C" AS c, name COLLATE "POSIX" < 'x' AS lt FROM shops, staff
   ORDER BY city COLLATE "C";
CREATE VIEW e_text_ops AS
  SELECT label LIKE 'a%' AS a, label NOT ILIKE 'b%' AS b, label SIMILAR TO 'c+' ESCAPE '#' AS c,
         label ~ '^d' AS d, label ~* 'e' AS e, label !~ 'f' AS f, label !~* 'g' AS g,
         label || '!' AS h, label ~~ 'h%' AS i, label !~~* 'j' AS j,
         label IS NOT DISTINCT FROM 'k' AS k, label BETWEEN SYMMETRIC 'a' AND 'z' AS l,
         label LIKE ANY (ARRAY['x%', 'y%']) AS m
    FROM sales;
CREATE VIEW e_geometry AS
  SELECT a.area ?# b.area AS crosses, a.spot <-> b.spot AS dist, a.area && b.area AS overlaps,
         a.area @> b.spot AS holds, b.spot <@ a.area AS inside, a.area << b.area AS left_of,
         a.area >> b.area AS right_of, a.area &< b.area AS a1, a.area &> b.area AS a2,
         a.area <<| b.area AS below, a.area |>> b.area AS above, a.area &<| b.area AS a3,
         a.area |&> b.area AS a4, a.area <^ b.area AS a5, a.area >^ b.area AS a6,
         a.area ~= b.area AS same, a.area # b.area AS meet, a.spot ## b.area AS closest,
         @-@ t.lane AS len, # t.zone AS npoints, @@ a.area AS centre, ?- t.lane AS horizontal,
         ?| t.lane AS vertical, t.lane ?-| t.lane AS perp, t.lane ?|| t.lane AS parallel,
         t.lane ?# t.seat AS crossing, t.ring <-> a.spot AS far
    FROM shops a, shops b, staff t;
CREATE VIEW e_network_range AS
  SELECT net << '10.0.0.0/8'::cidr AS a, net <<= '10.0.0.0/8' AS b, addr >>= net AS c,
         addr >> '1.2.3.4' AS d, net && '10.1.0.0/16'::cidr AS e, ~ addr AS f, addr & addr AS g,
         hours @> 5 AS h, hours -|- int4range(10, 20) AS i, hours * int4range(1, 3) AS j,
         hours + int4range(2, 9) AS k, upper(hours) AS l, period @> sold_at AS m
    FROM shops, sales;
CREATE VIEW e_numeric_json AS
  SELECT |/ 16.0 AS a, ||/ 27.0 AS b, @ -5 AS c, 2 ^ 10 AS d, 7 % 3 AS e, 5 # 3 AS f,
         1 << 4 AS g, doc -> 'a' AS h, doc ->> 'b' AS i, doc #> '{c,d}' AS j, doc #>> '{e}' AS k,
         doc ? 'f' AS l, doc ?| ARRAY['g'] AS m, doc ?& ARRAY['h'] AS n, doc @? '$.i' AS o,
         doc @@ '$.j == 1' AS p, doc #- '{k}' AS q, doc - 'l' AS r,
         to_tsvector(city) @@ to_tsquery('x') AS s, raw::jsonb || doc AS t
    FROM shops;
CREATE VIEW e_user_ops AS
  SELECT w OPERATOR(ops.<<<) 5 AS shifted, OPERATOR(ops.!-) w AS negated,
         w OPERATOR(pg_catalog.+) 1 AS plus
    FROM ops.weights;
CREATE VIEW e_special_forms AS
  SELECT EXTRACT(year FROM opened) AS y, OVERLAY(city PLACING 'x' FROM 2 FOR 1) AS o,
         SUBSTRING(city FROM 2 FOR 3) AS s1, SUBSTRING(city SIMILAR 'a#"b#"c' ESCAPE '#') AS s2,
         POSITION('a' IN city) AS p, TRIM(BOTH 'x' FROM city) AS t1, TRIM(LEADING FROM city) AS t2,
         city IS NORMALIZED AS n1, city IS NOT NFKD NORMALIZED AS n2, normalize(city, NFC) AS n3,
         COLLATION FOR (city) AS coll, NULLIF(city, ''), COALESCE(city, 'none'),
         GREATEST(shop_id, 1), LEAST(shop_id, 2), CURRENT_SCHEMA AS cs, SESSION_USER AS su,
         CURRENT_ROLE AS cr, CURRENT_CATALOG AS cc, USER AS u, CURRENT_TIME(1) AS ct,
         LOCALTIME AS lt, CURRENT_TIMESTAMP(0) AS cts
    FROM shops;
CREATE VIEW e_time AS
  SELECT sold_at AT TIME ZONE 'UTC' AS utc,
         sold_at AT TIME ZONE 'UTC' AT TIME ZONE 'Asia/Tokyo' AS tokyo,
         (sold_at AT TIME ZONE 'UTC', sold_at) OVERLAPS (sold_at, interval '1 day') AS o1,
         (opened, opened + 1) OVERLAPS (opened, opened + 2) AS o2,
         date '2024-01-01' + interval '1 day' AS d, timestamp(2) '2024-01-01 10:00:00.123' AS ts
    FROM sales, shops;
CREATE VIEW e_constructors AS
  SELECT ARRAY[shop_id, 2] AS a, ARRAY[[1, 2], [3, 4]] AS b, ROW(shop_id, city) IS NOT NULL AS r,
         (shop_id, city) = (1, 'x') AS eq, tags[1] AS first, tags[1:2] AS some,
         tags[:1] AS head, (ROW(shop_id, 2)::corpus.pair).x AS px, s.* IS NOT NULL AS full_row,
         CASE WHEN shop_id > 1 THEN 'big' ELSE 'small' END AS size,
         CASE shop_id WHEN 1 THEN true END AS one, (shop_id > 0) IS TRUE IS NOT FALSE AS tf,
         (shop_id > 1) IS UNKNOWN AS unk, NOT (shop_id > 1) AS neg, -shop_id AS minus,
         b'101' AS bits, x'1f' AS hex, e'tab\there' AS esc, U&'\0041' AS uni, $$dollar$$ AS dq
    FROM shops s;
CREATE VIEW e_functions AS
  SELECT pg_catalog.lower(city) AS l, corpus.s_helper(shop_id) AS h, format('%s', city) AS f
    FROM shops;
