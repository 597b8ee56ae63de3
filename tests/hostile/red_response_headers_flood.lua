-- A sync webhook's run answers with a million headers: rill read them after
-- the run, outside its deadline and slices, and the listener wrote them all
-- (another webhook waited 2 s meanwhile; the client got a 200 with a
-- million headers) (found by the red team of issue 14).
-- Must: under serve, the answer is a 500 naming the bad header, the
-- headers read stop at max_header_size (tests/test_hostile_red.py); under
-- rill run, which prints the result as JSON, it is over max_string.
-- expect: failed: max_string
return {
  deadline = "5s",
  triggers = { manual(), webhook { path = "/hooks/red_response_headers_flood" } },
  run = function()
    local h = {}
    for i = 1, 1e6 do h[i] = "X-A" .. i .. ": v" end
    return response(200, "ok", h)
  end,
}
