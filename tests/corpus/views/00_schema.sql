-- The relations the corpus views read. Written for mvgraph (no text taken from elsewhere).
-- A line "-- requires: N" right before a statement: PostgreSQL N or later only.
CREATE SCHEMA corpus;
CREATE SCHEMA "Other Side";
CREATE SCHEMA ops;
SET search_path TO corpus, public;

CREATE TABLE shops (shop_id int PRIMARY KEY, city text, opened date, area box, spot point,
                    net cidr, addr inet, tags text[], doc jsonb, raw json, note xml,
                    hours int4range, stamp timestamptz, flags bit(4), wflags bit varying(8));
CREATE TABLE sales (sale_id bigint, shop_id int, sold_at timestamp, amount numeric(10, 2),
                    qty int, label varchar(20), period tsrange);
CREATE TABLE staff (staff_id int, shop_id int, boss_id int, name text COLLATE "C", seat line,
                    lane lseg, zone polygon, ring circle, route path);
CREATE TABLE "Other Side"."Returns" ("Sale Id" bigint, reason text);
CREATE TABLE ops.weights (w int, grams numeric);
CREATE TABLE parent_t (id int, kind text);
CREATE TABLE child_t (extra int) INHERITS (parent_t);
CREATE UNLOGGED TABLE scratch (k int, v text);

-- A user-defined operator in its own schema: pg_get_viewdef prints OPERATOR(ops.<<<) for it
-- when ops is not on the search path.
CREATE FUNCTION ops.shifted(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a * 1000 + b';
CREATE OPERATOR ops.<<< (LEFTARG = int, RIGHTARG = int, FUNCTION = ops.shifted);
CREATE FUNCTION ops.negated(a int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT -a';
CREATE OPERATOR ops.!- (RIGHTARG = int, FUNCTION = ops.negated);
CREATE TYPE corpus.pair AS (x int, y int);
CREATE FUNCTION corpus.s_helper(n int) RETURNS int LANGUAGE sql STABLE AS 'SELECT n + 1';
