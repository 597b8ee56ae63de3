-- json.decode of a 20 MB string followed by ten million numbers: the run's
-- memory limit is reached while cjson builds the result, and the error
-- unwound past cjson's malloc'd scratch buffer (the input's size, 20 MB of it
-- written): every such run left it behind, rill grew ~20 MB a run, for ever.
-- Must: fail at the run's memory limit; rill's RSS comes back after each
-- run (tests/test_hostile_rv.py runs it several times).
-- expect: failed: memory limit exceeded
return {
  deadline = "20s",
  triggers = { manual(), webhook { path = "/hooks/rv_json_decode_leaks_buffer" } },
  run = function()
    local body = table.concat({ '["', ("d"):rep(20e6), '",[', ("1,"):rep(10e6), '1]]' })
    return #json.decode(body)[1]
  end,
}
