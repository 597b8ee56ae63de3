-- string.rep asked for ten gigabytes.
-- Must: fail at once naming max_string.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_rep_huge" } },
  run = function() return #("x"):rep(1e10) end,
}
