-- The same through the string metatable (s:match), with captures.
-- Must: fail with "pattern too complex"; the method is the bounded one too.
-- expect: failed: pattern too complex
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_match_method_backtrack" } },
  run = function()
    local s = ("a"):rep(2e5)
    return { m = s:match("(.-)(.-)(.-)(.-)b") }
  end,
}
