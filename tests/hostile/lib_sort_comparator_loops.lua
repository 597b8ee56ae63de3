-- A table.sort comparator that never returns (a C sort calling back into
-- Lua held the loop: it could not yield).
-- Must: stop at the deadline; other webhooks answer meanwhile.
-- expect: failed: deadline exceeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_sort_comparator_loops" } },
  run = function()
    local t = { 3, 2, 1 }
    table.sort(t, function() while true do end end)
    return t
  end,
}
