-- A webhook's verify function that raises an error object whose __tostring
-- loops: the webhook logs the error after the verify task, outside any
-- deadline (review of issues 14 and 15: it already held; kept as a guard).
-- Must: answer 401 (the request could not be verified), the error named
-- without calling the object's metamethods; other webhooks keep answering
-- (tests/test_hostile_rv.py).
-- expect: could not be verified
return {
  triggers = { webhook {
    path = "/hooks/rv_verify_error_tostring_loops",
    verify = function()
      error(setmetatable({}, { __tostring = function() while true do end end }))
    end,
  } },
  run = function() return "never" end,
}
