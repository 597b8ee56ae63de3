-- Many searches, each under the step limit, forever (the loop is flow code,
-- each call costs milliseconds in C).
-- Must: stop at the deadline, "deadline exceeded".
-- expect: failed: deadline exceeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_find_many_calls" } },
  run = function()
    local s = ("a"):rep(1500) -- about a million steps a call
    while true do s:find(".-b") end
  end,
}
