-- A flow's SQLite database could ATTACH any file by its path (rill's store
-- at data/rill.db among them) and read or write its tables (found by the
-- red team of issue 14). (VACUUM INTO, which attaches its target, cannot
-- run inside the transaction every statement of a flow runs in.)
-- Must: fail, no database can be attached to a flow's connection.
-- expect: failed: not authorized
return {
  triggers = { manual(), webhook { path = "/hooks/red_db_attach" } },
  run = function()
    db.exec("ATTACH DATABASE 'data/rill.db' AS store")
    return db.query("SELECT count(*) AS n FROM store.runs")
  end,
}
