-- Backtracking in a gmatch iterator.
-- Must: fail with "pattern too complex".
-- expect: failed: pattern too complex
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_gmatch_backtrack" } },
  run = function()
    local n = 0
    for _ in (("a"):rep(2e5)):gmatch(".-.-.-.-b") do n = n + 1 end
    return n
  end,
}
