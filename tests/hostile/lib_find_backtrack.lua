-- Backtracking in string.find: 2e5 characters, five lazy items, no match.
-- Must: fail within the step limit (no deadline needed), "pattern too complex".
-- expect: failed: pattern too complex
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_find_backtrack" } },
  run = function() return { found = string.find(("a"):rep(2e5), ".-.-.-.-.-b") } end,
}
