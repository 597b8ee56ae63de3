-- gsub multiplying its output a hundredfold each round (issue 14: a gsub
-- growing to gigabytes ran 29 s past a 3 s deadline and reported success).
-- Must: fail naming max_string, long before gigabytes.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_gsub_grows" } },
  run = function()
    local s = ("x"):rep(1e6)
    while true do s = s:gsub("x", ("x"):rep(100)) end
  end,
}
