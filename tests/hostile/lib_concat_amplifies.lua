-- table.concat of a table holding one long string a million times (a
-- terabyte from a megabyte).
-- Must: fail naming max_string.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_concat_amplifies" } },
  run = function()
    local big, t = ("x"):rep(1e6), {}
    for i = 1, 1e6 do t[i] = big end
    return #table.concat(t)
  end,
}
