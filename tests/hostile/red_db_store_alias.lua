-- rill's own store was one of the flows' databases, as db.use("rill"),
-- read-write: a flow read every flow's payloads and requests, and stored a
-- queued run of another flow with a forged payload, which the queue ran
-- without its webhook's signature check (found by the red team of issue 14).
-- Must: fail, the store is not a database flows can name.
-- expect: failed: no database "rill"
return {
  triggers = { manual(), webhook { path = "/hooks/red_db_store_alias" } },
  run = function()
    return db.use("rill").query("SELECT flow, payload FROM runs")
  end,
}
