-- A result that passes for response() (its metatable says "response") with
-- an __index that loops: the webhook read r.status and r.body after the run,
-- outside its deadline, and rill hung for good (even SIGTERM).
-- Must: answer as any table result is (the JSON of its own fields: {}); other
-- webhooks keep answering (tests/test_hostile_rv.py).
-- expect: succeeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/rv_fake_response_index_loops" } },
  run = function()
    return setmetatable({}, { __metatable = "response", __index = function() while true do end end })
  end,
}
