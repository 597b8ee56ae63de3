-- string.format weighed its string arguments, and any other value at 128
-- bytes: a table whose __tostring returns one 8 MB string, given fifteen
-- times to "%s", made 120 MB in one call, holding the loop for 0.8 s
-- (found by the red team of issue 14).
-- Must: fail naming max_string, before building it.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_format_tostring_amplifies" } },
  run = function()
    local big = ("x"):rep(8e6)
    local t = setmetatable({}, { __tostring = function() return big end })
    return #("%s"):rep(15):format(t, t, t, t, t, t, t, t, t, t, t, t, t, t, t)
  end,
}
