-- json.encode of a 15 MB string of control characters: cjson reserves six
-- bytes per byte (charged to the run since runtime/cjson_buf.c) and kept that
-- buffer for the life of the process (encode_keep_buffer): rill stayed
-- 90 MB bigger after the run ended (180 MB for 30 MB, which is now over the
-- run's 256 MiB limit: 30 + 180 + 180).
-- Must: succeed; rill's RSS comes back after the run (tests/test_hostile_rv.py).
-- expect: succeeded
return {
  deadline = "10s",
  triggers = { manual(), webhook { path = "/hooks/rv_json_encode_keeps_buffer" } },
  run = function()
    return #json.encode(("\1"):rep(15e6))
  end,
}
