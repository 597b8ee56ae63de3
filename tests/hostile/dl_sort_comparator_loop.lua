-- hostile: pcall around table.sort whose comparator loops (a C function calling back into Lua)
-- must: the run fails at its deadline; other webhooks answer meanwhile
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
