-- A query whose rows take 320 MB: SQLite's rows are kept in C, outside
-- every memory limit, until the statement is done, and only then turned
-- into Lua values (where the run's limit sees them): a run of
-- zeroblob(900000000) took rill's RSS to 1.8 GB (found by the red team of
-- issue 14). One value over run_memory_limit now fails in SQLite itself
-- ("string or blob too big"); this one takes forty of 8 MB.
-- Must: fail while SQLite makes it, naming run_memory_limit (the result is
-- more than a run may hold); rill's RSS stays far below the value's size.
-- expect: failed: the result is larger than
return {
  deadline = "20s",
  triggers = { manual(), webhook { path = "/hooks/red_sqlite_big_result" } },
  run = function()
    return #db.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40) "
      .. "SELECT randomblob(8000000) AS b FROM c")
  end,
}
