-- json.encode of a 30 MB string of control characters: cjson reserves six
-- bytes per byte with malloc (outside the run's memory limit) and kept that
-- buffer for the life of the process (encode_keep_buffer): rill stayed
-- 180 MB bigger after the run ended.
-- Must: succeed; rill's RSS comes back after the run (tests/test_hostile_rv.py).
-- expect: succeeded
return {
  deadline = "10s",
  triggers = { manual(), webhook { path = "/hooks/rv_json_encode_keeps_buffer" } },
  run = function()
    return #json.encode(("\1"):rep(30e6))
  end,
}
