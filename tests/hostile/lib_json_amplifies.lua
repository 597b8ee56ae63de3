-- json.encode of a table holding one long string ten thousand times (cjson
-- allocates with malloc, outside the Lua heap).
-- Must: fail naming max_string.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_json_amplifies" } },
  run = function()
    local big, t = ("x"):rep(1e6), {}
    for i = 1, 1e4 do t[i] = big end
    return #json.encode(t)
  end,
}
