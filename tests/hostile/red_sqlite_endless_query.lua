-- A recursive query with no end, on the flows' SQLite database: the run
-- ended at its deadline, but the statement went on on SQLite's worker
-- thread for ever (flows' SQLite connections had no timeout): `rill run`
-- never exited, and under serve every other flow's query on that database
-- waited behind it (found by the red team of issue 14).
-- Must: the run fails at its deadline; the statement is interrupted after
-- db_statement_timeout, and the database answers the other flows again.
-- expect: failed: deadline exceeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/red_sqlite_endless_query" } },
  run = function()
    return db.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c")
  end,
}
