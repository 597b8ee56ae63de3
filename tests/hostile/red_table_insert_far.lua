-- table.insert(t, pos, v) shifts t's items from #t down to pos in C, where
-- the hook cannot stop it: LuaJIT read NaN (or 2^31, 1e10, -2^31) as
-- INT_MIN, and the 2^31 shifts held the loop 19 s; the run then returned
-- and succeeded past its 2 s deadline (found by the red team of issue 14).
-- Must: fail at once, the position out of bounds; in-bounds inserts work.
-- expect: failed: position out of bounds
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/red_table_insert_far" } },
  run = function()
    local t = { "a", "c" }
    table.insert(t, 2, "b")
    table.insert(t, 4, "d")
    table.insert(t, "e")
    if table.concat(t) ~= "abcde" then error("inserts in bounds broke: " .. table.concat(t)) end
    for _, pos in ipairs { 2 ^ 31, 1e10, -2 ^ 31, 0, 7 } do
      local ok = pcall(table.insert, {}, pos, "x")
      if ok then error("table.insert at " .. pos .. " was not refused") end
    end
    table.insert({}, 0 / 0, "x")
    return { done = true }
  end,
}
