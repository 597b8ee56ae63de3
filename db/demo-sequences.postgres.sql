-- After demo.sql on Postgres: the id sequences continue after the demo's ids.
SELECT setval(pg_get_serial_sequence('companies', 'id'), (SELECT max(id) FROM companies));
SELECT setval(pg_get_serial_sequence('contacts', 'id'), (SELECT max(id) FROM contacts));
SELECT setval(pg_get_serial_sequence('leads', 'id'), (SELECT max(id) FROM leads));
SELECT setval(pg_get_serial_sequence('quotes', 'id'), (SELECT max(id) FROM quotes));
SELECT setval(pg_get_serial_sequence('invoices', 'id'), (SELECT max(id) FROM invoices));
