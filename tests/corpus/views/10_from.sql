-- FROM clauses: joins of every kind, LATERAL, table functions, VALUES, sampling, inheritance.
SET search_path TO corpus, public;

CREATE VIEW j_inner AS SELECT s.city, x.amount FROM shops s INNER JOIN sales x ON x.shop_id = s.shop_id;
CREATE VIEW j_outer AS
  SELECT s.city, x.qty, t.name
    FROM shops s LEFT OUTER JOIN sales x USING (shop_id) RIGHT JOIN staff t ON t.shop_id = s.shop_id
         FULL JOIN "Other Side"."Returns" r ON r."Sale Id" = x.sale_id;
CREATE VIEW j_natural AS SELECT * FROM parent_t NATURAL JOIN child_t CROSS JOIN scratch;
CREATE VIEW j_using_alias AS
  SELECT u.shop_id, city FROM shops JOIN sales USING (shop_id) AS u WHERE u.shop_id > 0;
CREATE VIEW j_nested_alias AS
  SELECT q.shop_id FROM (shops LEFT JOIN staff USING (shop_id) AS inner_u) AS q;
CREATE VIEW j_lateral AS
  SELECT s.shop_id, top.amount
    FROM shops s, LATERAL (SELECT x.amount FROM sales x WHERE x.shop_id = s.shop_id
                           ORDER BY x.amount DESC LIMIT 1) top;
CREATE VIEW j_lateral_join AS
  SELECT s.shop_id, n FROM shops s LEFT JOIN LATERAL unnest(s.tags) AS n ON true;
CREATE VIEW f_rows_from AS
  SELECT r.* FROM ROWS FROM (generate_series(1, 3), unnest(ARRAY['a', 'b'])) WITH ORDINALITY
    AS r(num, letter, ord);
CREATE VIEW f_ordinality AS
  SELECT s.shop_id, t.tag, t.pos FROM shops s, unnest(s.tags) WITH ORDINALITY AS t(tag, pos);
CREATE VIEW f_record AS
  SELECT s.shop_id, r.k, r.n
    FROM shops s, jsonb_to_recordset(s.doc) AS r(k text, n int);
CREATE VIEW f_values AS
  SELECT v.code, v.label FROM (VALUES (1, 'one'), (2, 'two')) AS v(code, label);
CREATE VIEW f_values_top AS VALUES (1, 'x'::text), (2, 'y');
CREATE VIEW f_table AS TABLE sales;
CREATE VIEW f_sample AS SELECT * FROM sales TABLESAMPLE BERNOULLI (10) REPEATABLE (42);
CREATE VIEW f_only AS SELECT p.id FROM ONLY parent_t p UNION ALL SELECT id FROM child_t *;
CREATE VIEW f_sqlfuncs AS
  SELECT * FROM CURRENT_DATE AS d(d), LOCALTIMESTAMP(2) AS l(l), CURRENT_USER AS u(u),
                COLLATION FOR ('abc'::text) AS c(c), shops;
CREATE VIEW f_quoted AS SELECT "Sale Id" AS sale, reason FROM "Other Side"."Returns";
CREATE VIEW f_qualified AS SELECT w.grams FROM ops.weights w JOIN corpus.sales s ON s.qty = w.w;
CREATE VIEW f_no_columns AS SELECT FROM scratch;
CREATE VIEW f_unused AS SELECT 1 AS one FROM staff;
