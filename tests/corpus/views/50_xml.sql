-- XML functions: "requires: xml" means a server built with libxml (the embedded one is not).
SET search_path TO corpus, public;

-- requires: xml
CREATE VIEW x_functions AS
  SELECT XMLELEMENT(NAME shop, XMLATTRIBUTES(shop_id AS id, city), note) AS a,
         XMLFOREST(city, shop_id AS id) AS b, XMLPARSE(DOCUMENT '<a/>') AS c,
         XMLPARSE(CONTENT city) AS d, XMLSERIALIZE(CONTENT note AS text) AS e,
         XMLCONCAT(note, note) AS f, XMLPI(NAME php, 'echo') AS g,
         XMLROOT(note, VERSION '1.0', STANDALONE YES) AS h, note IS DOCUMENT AS i,
         XMLEXISTS('//a' PASSING BY REF note) AS j, xmlcomment('c') AS k,
         xpath('/a', note) AS l, (SELECT xmlagg(o.note ORDER BY o.shop_id) FROM staff t2, shops o WHERE t2.shop_id = o.shop_id) AS m
    FROM shops;
-- requires: xml
CREATE VIEW x_table AS
  SELECT s.shop_id, x.*
    FROM shops s,
         XMLTABLE('/items/item' PASSING BY VALUE s.note
                  COLUMNS pos FOR ORDINALITY, name text PATH 'name' NOT NULL,
                          price numeric PATH '@price' DEFAULT 0) AS x;
-- requires: 16 xml
CREATE VIEW x_serialize_indent AS SELECT XMLSERIALIZE(DOCUMENT note AS text INDENT) AS t FROM shops;
