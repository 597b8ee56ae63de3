-- Five queries of 200 MB of rows each, all kept: the rows were made into
-- Lua values outside the run's meter (on the loop, after the statement),
-- so a run under a 256 MiB limit held 1 GB and succeeded (found by the
-- red team of issue 14).
-- Must: fail at the run's memory limit.
-- expect: failed: run_memory_limit
return {
  deadline = "20s",
  triggers = { manual(), webhook { path = "/hooks/red_db_rows_uncharged" } },
  run = function()
    local keep = {}
    for i = 1, 5 do
      keep[i] = db.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 25) "
        .. "SELECT randomblob(8000000) AS b FROM c")
    end
    return #keep
  end,
}
