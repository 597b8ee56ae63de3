-- json.encode of a 60 MB string (under max_string): cjson reserves six bytes
-- per byte for escapes, 360 MB of C memory outside the run's memory limit,
-- and calls exit() when that malloc fails: with rill's address space capped
-- (tests/test_hostile_rv.py), the whole process exited, every run with it.
-- Must: fail naming the memory limit; rill goes on.
-- expect: failed: memory limit
return {
  deadline = "10s",
  triggers = { manual(), webhook { path = "/hooks/rv_json_encode_c_memory" } },
  run = function()
    return #json.encode(("x"):rep(60e6))
  end,
}
