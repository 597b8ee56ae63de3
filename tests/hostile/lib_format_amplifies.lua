-- string.format repeating one long string through many %s.
-- Must: fail naming max_string.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_format_amplifies" } },
  run = function()
    local big, args = ("x"):rep(1e6), {}
    for i = 1, 200 do args[i] = big end
    return #string.format(("%s"):rep(200), unpack(args))
  end,
}
