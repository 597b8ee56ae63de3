-- hostile: tostring of an object whose __tostring loops, under pcall, in a loop
-- must: LuaJIT calls __tostring from tostring with a continuation frame, not
-- from C, so the run is paused every slice like plain Lua (other webhooks
-- answer meanwhile) and fails at its deadline
-- expect: deadline exceeded
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/fair_tostring_loop" }, manual() },
  run = function(ctx)
    local bad = setmetatable({}, { __tostring = function() while true do end end })
    while true do pcall(tostring, bad) end
  end,
}
