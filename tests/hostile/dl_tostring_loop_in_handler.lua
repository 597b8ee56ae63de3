-- hostile: tostring of an object whose __tostring loops, inside a message handler
-- must: the run fails at its deadline
-- expect: deadline exceeded
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/dl_tostring_loop_in_handler" }, manual() },
  run = function(ctx)
    local bad = setmetatable({}, { __tostring = function() while true do end end })
    while true do xpcall(function() error(bad) end, function(e) return tostring(e) end) end
  end,
}
