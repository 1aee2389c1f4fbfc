-- SQL/JSON (PostgreSQL 16: constructors and IS JSON; 17: query functions and JSON_TABLE).
SET search_path TO corpus, public;

-- requires: 16
CREATE VIEW j_constructors AS
  SELECT JSON_ARRAY(city FORMAT JSON, shop_id RETURNING json) AS a1,
         JSON_ARRAY(city, shop_id ABSENT ON NULL) AS a2,
         JSON_ARRAY(SELECT qty FROM sales RETURNING jsonb) AS a3,
         JSON_OBJECT('c' : city, 'n' VALUE shop_id NULL ON NULL WITH UNIQUE KEYS RETURNING jsonb) AS o1,
         JSON_OBJECT() AS o2
    FROM shops;
-- requires: 16
CREATE VIEW j_aggregates AS
  SELECT shop_id,
         JSON_ARRAYAGG(qty ORDER BY sold_at ABSENT ON NULL RETURNING jsonb) AS a,
         JSON_OBJECTAGG(label : qty NULL ON NULL WITH UNIQUE KEYS) AS o,
         JSON_ARRAYAGG(label) FILTER (WHERE qty > 0) AS f
    FROM sales GROUP BY shop_id;
-- requires: 16
CREATE VIEW j_predicates AS
  SELECT raw IS JSON AS a, raw IS NOT JSON OBJECT AS b, city IS JSON ARRAY WITH UNIQUE KEYS AS c,
         city IS JSON SCALAR AS d, city IS JSON VALUE WITHOUT UNIQUE KEYS AS e
    FROM shops;
-- requires: 17
CREATE VIEW j_functions AS
  SELECT JSON(city WITH UNIQUE KEYS) AS a, JSON_SCALAR(shop_id) AS b,
         JSON_SERIALIZE(raw RETURNING bytea) AS c,
         JSON_QUERY(doc, '$.a' RETURNING text WITH CONDITIONAL WRAPPER
                    EMPTY ARRAY ON EMPTY ERROR ON ERROR) AS d,
         JSON_QUERY(doc, '$.a' OMIT QUOTES) AS d2,
         JSON_VALUE(doc, '$.b' RETURNING int DEFAULT 0 ON EMPTY NULL ON ERROR) AS e,
         JSON_EXISTS(doc, '$.c ? (@ > $x)' PASSING shop_id AS x FALSE ON ERROR) AS f,
         JSON_QUERY(doc, '$.d' PASSING (SELECT max(qty) FROM sales) AS m) AS g
    FROM shops;
-- requires: 17
CREATE VIEW j_table AS
  SELECT s.shop_id, jt.*
    FROM shops s,
         JSON_TABLE(s.doc, '$.items[*]' AS root PASSING s.shop_id AS sid
           COLUMNS (n FOR ORDINALITY,
                    name text PATH '$.name' DEFAULT 'none' ON EMPTY,
                    body jsonb FORMAT JSON PATH '$.body' WITH WRAPPER,
                    present boolean EXISTS PATH '$.p',
                    NESTED PATH '$.parts[*]' AS parts COLUMNS (part text PATH '$'))
           ERROR ON ERROR) AS jt;
-- requires: 17
CREATE VIEW j_at_local AS SELECT stamp AT LOCAL AS here FROM shops;
-- requires: 16
CREATE VIEW j_system_user AS SELECT SYSTEM_USER AS who, any_value(city) AS c FROM shops;
