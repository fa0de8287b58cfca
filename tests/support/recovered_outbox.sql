-- What an operator's `.recover` rebuild of a corrupt outbox looks like (synthetic): the
-- module's tables of before the `statistics` column, `.recover`'s lost_and_found table, no
-- auto_vacuum, 1 KB pages, a rollback journal, and free pages from a delete. The caller fills
-- `pending`. Shared by the unit test in src/outbox/sqlite.rs and tests/outbox_faults.rs.
PRAGMA page_size = 1024;
PRAGMA auto_vacuum = NONE;
CREATE TABLE pending (seq INTEGER PRIMARY KEY, queue INTEGER NOT NULL, json TEXT NOT NULL);
CREATE TABLE windows (seq INTEGER PRIMARY KEY, queue INTEGER NOT NULL, json TEXT NOT NULL);
CREATE TABLE messages (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL, high_events INTEGER NOT NULL, low_events INTEGER NOT NULL);
CREATE TABLE lost_and_found (rootpgno INTEGER, pgno INTEGER, nfield INTEGER, id INTEGER, c0, c1);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
    INSERT INTO lost_and_found (id, c0) SELECT i, randomblob(900) FROM n;
DELETE FROM lost_and_found WHERE id > 10;
