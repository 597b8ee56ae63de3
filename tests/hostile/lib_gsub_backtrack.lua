-- Backtracking in gsub, with a replacement string (all in C).
-- Must: fail with "pattern too complex".
-- expect: failed: pattern too complex
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_gsub_backtrack" } },
  run = function() return (string.gsub(("a"):rep(2e5), ".-.-.-.-b", "x")) end,
}
