-- A response() whose headers hold a table with a __tostring that loops: the
-- webhook's message about the bad header called tostring on it after the
-- run, outside its deadline, and rill hung for good.
-- Must: a 500 naming the bad header; other webhooks keep answering
-- (tests/test_hostile_rv.py).
-- expect: succeeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/rv_response_header_tostring_loops" } },
  run = function()
    local evil = setmetatable({}, { __tostring = function() while true do end end })
    return response(200, "hi", { evil })
  end,
}
