-- Query shapes: CTEs, set operations, subqueries in every position, grouping, windows, ordering.
SET search_path TO corpus, public;

CREATE VIEW q_cte AS
  WITH big AS (SELECT * FROM sales WHERE amount > 100),
       per_shop AS MATERIALIZED (SELECT shop_id, count(*) AS n FROM big GROUP BY shop_id),
       names AS NOT MATERIALIZED (SELECT shop_id, city FROM shops)
  SELECT names.city, per_shop.n FROM per_shop JOIN names USING (shop_id);
CREATE VIEW q_cte_unused AS WITH spare AS (SELECT * FROM scratch) SELECT 1 AS one;
CREATE VIEW q_cte_shadow AS WITH sales AS (SELECT 1 AS qty) SELECT qty FROM sales;
CREATE VIEW q_recursive AS
  WITH RECURSIVE chain(staff_id, boss_id, depth) AS (
      SELECT staff_id, boss_id, 0 FROM staff WHERE boss_id IS NULL
    UNION ALL
      SELECT s.staff_id, s.boss_id, c.depth + 1 FROM staff s JOIN chain c ON s.boss_id = c.staff_id
  ) SEARCH DEPTH FIRST BY staff_id SET walk
    CYCLE staff_id SET looped USING trail
  SELECT staff_id, depth, looped FROM chain ORDER BY walk;
CREATE RECURSIVE VIEW q_recursive_view (n) AS
  SELECT 1 UNION ALL SELECT n + 1 FROM q_recursive_view WHERE n < (SELECT max(qty) FROM sales);
CREATE VIEW q_setops AS
  (SELECT shop_id FROM shops UNION SELECT shop_id FROM sales)
  INTERSECT ALL SELECT shop_id FROM staff EXCEPT SELECT k FROM scratch ORDER BY 1;
CREATE VIEW q_subqueries AS
  SELECT s.shop_id,
         (SELECT max(x.amount) FROM sales x WHERE x.shop_id = s.shop_id) AS best,
         ARRAY(SELECT t.name FROM staff t WHERE t.shop_id = s.shop_id) AS names,
         EXISTS (SELECT FROM "Other Side"."Returns") AS any_returns
    FROM (SELECT * FROM shops) s
   WHERE s.shop_id IN (SELECT shop_id FROM sales)
     AND s.shop_id <> ALL (SELECT k FROM scratch WHERE k IS NOT NULL)
     AND s.shop_id = ANY (ARRAY[1, 2, 3])
     AND (s.shop_id, s.city) NOT IN (SELECT id, kind FROM parent_t)
GROUP BY s.shop_id HAVING count(*) < (SELECT count(*) FROM ops.weights);
CREATE VIEW q_grouping AS
  SELECT shop_id, label, sum(amount) AS total, grouping(shop_id, label) AS g
    FROM sales GROUP BY DISTINCT ROLLUP (shop_id), CUBE (label), GROUPING SETS ((shop_id), ());
CREATE VIEW q_aggregates AS
  SELECT shop_id,
         count(*) FILTER (WHERE qty > 1) AS many,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) AS median,
         mode() WITHIN GROUP (ORDER BY label) AS usual,
         rank(10) WITHIN GROUP (ORDER BY qty DESC) AS r,
         string_agg(DISTINCT label, ', ' ORDER BY label) AS labels,
         array_agg(qty ORDER BY sold_at) FILTER (WHERE qty IS NOT NULL) AS qtys
    FROM sales GROUP BY shop_id;
CREATE VIEW q_windows AS
  SELECT sale_id,
         row_number() OVER w AS rn,
         sum(amount) OVER (PARTITION BY shop_id ORDER BY sold_at
                           RANGE BETWEEN '1 day'::interval PRECEDING AND CURRENT ROW
                           EXCLUDE TIES) AS day_total,
         avg(qty) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 FOLLOWING
                        EXCLUDE CURRENT ROW) AS running,
         count(*) OVER (ORDER BY qty GROUPS BETWEEN 1 PRECEDING AND 1 FOLLOWING
                        EXCLUDE GROUP) AS near,
         lag(amount, 1) OVER (PARTITION BY shop_id ORDER BY sold_at) AS previous
    FROM sales WINDOW w AS (PARTITION BY shop_id ORDER BY sold_at);
CREATE VIEW q_ordering AS
  SELECT DISTINCT ON (shop_id) shop_id, amount FROM sales
   ORDER BY shop_id, amount DESC NULLS LAST, sold_at USING < OFFSET 1 ROWS
   FETCH FIRST 10 ROWS WITH TIES;
CREATE VIEW q_limit AS SELECT * FROM sales ORDER BY sale_id LIMIT ALL OFFSET 0;
CREATE VIEW q_view_over_view AS SELECT j.city FROM j_inner j JOIN q_cte c USING (city);
CREATE VIEW q_options WITH (security_barrier = true, check_option = local) AS
  SELECT * FROM shops WHERE city IS NOT NULL;
CREATE VIEW q_check AS SELECT * FROM sales WHERE qty > 0 WITH CASCADED CHECK OPTION;
CREATE VIEW q_local_check AS SELECT * FROM q_check WHERE qty < 100 WITH LOCAL CHECK OPTION;
CREATE VIEW q_invoker WITH (security_invoker) AS SELECT name FROM staff;
CREATE MATERIALIZED VIEW q_matview AS SELECT shop_id, sum(amount) AS total FROM sales
  GROUP BY shop_id WITH NO DATA;
CREATE MATERIALIZED VIEW q_matview_over AS SELECT m.total, s.city FROM q_matview m
  JOIN q_view_over_view s ON true WITH NO DATA;
CREATE VIEW "Quoted View" AS SELECT "m".total AS "Total" FROM q_matview AS "m";
CREATE VIEW "Other Side".across AS SELECT * FROM "Quoted View", corpus.q_limit;
