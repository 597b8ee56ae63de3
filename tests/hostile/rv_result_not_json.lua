-- The run succeeds, but what it returns cannot be stored or sent as JSON
-- (a function inside). Must: a failed run naming why, never a success:
-- `rill run` exits 1; a sync webhook answers 500 with the run id, and the
-- run is in the history (record_sync = "failed") as failed.
return {
  triggers = { webhook { method = "POST", path = "/hooks/rv_result_not_json" }, manual {} },
  run = function() return { total = 3, format = function() end } end,
}
