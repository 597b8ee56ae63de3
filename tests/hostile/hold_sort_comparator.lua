-- hostile: table.sort whose comparator loops, under pcall, with a long deadline
-- must: the comparator cannot be paused (it runs inside a C function), so it
-- holds every other run and request: it is ended after max_hold (1 s), long
-- before its 20 s deadline; other webhooks answer again at once
-- expect: max_hold
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/hold_sort_comparator" }, manual() },
  run = function(ctx)
    local t = {}
    for i = 1, 100 do t[i] = 101 - i end
    while true do pcall(table.sort, t, function(a, b) while true do end end) end
  end,
}
