-- A response() whose header value holds a NUL byte: the webhook's check let
-- it through, the listener refused it by raising after the run, and the
-- request was answered only at request_timeout (504), the run never recorded.
-- Must: a 500 naming the bad header, at once (tests/test_hostile_rv.py).
-- expect: succeeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/rv_response_header_nul" } },
  run = function()
    return response(200, "hi", { ["x-a"] = "a\0b" })
  end,
}
