-- hostile: pcall around table.sort whose comparator loops (LuaJIT's own sort would
-- call it from C, where it cannot be paused: flows get rill.bounded's sort, in Lua)
-- must: the run is paused every slice, fails at its deadline; other webhooks answer meanwhile
-- expect: deadline exceeded
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/dl_sort_comparator_loop" }, manual() },
  run = function(ctx)
    local t = {}
    for i = 1, 100 do t[i] = 101 - i end
    while true do pcall(table.sort, t, function(a, b) while true do end end) end
  end,
}
